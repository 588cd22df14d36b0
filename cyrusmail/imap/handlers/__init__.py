"""The one table of IMAP commands: name, allowed states, handler, flags.

A handler is ``handler(session, command)`` and returns a
:class:`~cyrusmail.imap.codes.Reply`, None, or a Deferred of either.  It
parses nothing (the wire layer did) and decides no policy (the account and
the store do); it asks, and turns the answer into responses.

``expunges``: whether EXPUNGE responses for other sessions' expunges may be
sent when the command completes.  False for FETCH, STORE, SEARCH, SORT,
THREAD and COPY in both their plain and UID forms (RFC 3501 7.4.1; see
:mod:`cyrusmail.imap.selected`).

``pipelined``: whether commands after it may be run as soon as it is done
without the client waiting for its answer; False for the commands after
which the parser pauses (AUTHENTICATE, STARTTLS, IDLE, COMPRESS) and LOGOUT.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cyrusmail.imap import commands as c
from cyrusmail.imap import state as s
from cyrusmail.imap.handlers import (
    acl,
    append,
    auth,
    compress,
    general,
    idle,
    mailboxes,
    messages,
    quota,
    select,
    sort,
)


@dataclass(frozen=True)
class CommandSpec:
    name: str
    states: frozenset
    handler: Callable
    expunges: bool = True
    pipelined: bool = True


_TABLE = (
    (c.Capability, CommandSpec("CAPABILITY", s.ANY, general.capability)),
    (c.Noop, CommandSpec("NOOP", s.ANY, general.noop)),
    (c.Logout, CommandSpec("LOGOUT", s.ANY, general.logout, pipelined=False)),
    (c.Id, CommandSpec("ID", s.ANY, general.id_)),
    (c.StartTLS, CommandSpec("STARTTLS", s.NOT_AUTHENTICATED, auth.starttls, pipelined=False)),
    (c.Authenticate, CommandSpec("AUTHENTICATE", s.NOT_AUTHENTICATED, auth.authenticate, pipelined=False)),
    (c.Login, CommandSpec("LOGIN", s.NOT_AUTHENTICATED, auth.login)),
    (c.Enable, CommandSpec("ENABLE", s.AUTHENTICATED, general.enable)),
    (c.Unauthenticate, CommandSpec("UNAUTHENTICATE", s.AUTHENTICATED, auth.unauthenticate)),
    (c.Compress, CommandSpec("COMPRESS", s.AUTHENTICATED, compress.compress, pipelined=False)),
    (c.Namespace, CommandSpec("NAMESPACE", s.AUTHENTICATED, general.namespace)),
    (c.Select, CommandSpec("SELECT", s.AUTHENTICATED, select.select)),
    (c.Examine, CommandSpec("EXAMINE", s.AUTHENTICATED, select.examine)),
    (c.Create, CommandSpec("CREATE", s.AUTHENTICATED, mailboxes.create)),
    (c.Delete, CommandSpec("DELETE", s.AUTHENTICATED, mailboxes.delete)),
    (c.Rename, CommandSpec("RENAME", s.AUTHENTICATED, mailboxes.rename)),
    (c.Subscribe, CommandSpec("SUBSCRIBE", s.AUTHENTICATED, mailboxes.subscribe)),
    (c.Unsubscribe, CommandSpec("UNSUBSCRIBE", s.AUTHENTICATED, mailboxes.unsubscribe)),
    (c.List, CommandSpec("LIST", s.AUTHENTICATED, mailboxes.list_)),
    (c.Lsub, CommandSpec("LSUB", s.AUTHENTICATED, mailboxes.lsub)),
    (c.Status, CommandSpec("STATUS", s.AUTHENTICATED, mailboxes.status)),
    (c.Append, CommandSpec("APPEND", s.AUTHENTICATED, append.append)),
    (c.SetAcl, CommandSpec("SETACL", s.AUTHENTICATED, acl.setacl)),
    (c.DeleteAcl, CommandSpec("DELETEACL", s.AUTHENTICATED, acl.deleteacl)),
    (c.GetAcl, CommandSpec("GETACL", s.AUTHENTICATED, acl.getacl)),
    (c.ListRights, CommandSpec("LISTRIGHTS", s.AUTHENTICATED, acl.listrights)),
    (c.MyRights, CommandSpec("MYRIGHTS", s.AUTHENTICATED, acl.myrights)),
    (c.GetQuota, CommandSpec("GETQUOTA", s.AUTHENTICATED, quota.getquota)),
    (c.GetQuotaRoot, CommandSpec("GETQUOTAROOT", s.AUTHENTICATED, quota.getquotaroot)),
    (c.SetQuota, CommandSpec("SETQUOTA", s.AUTHENTICATED, quota.setquota)),
    (c.Idle, CommandSpec("IDLE", s.AUTHENTICATED, idle.idle, pipelined=False)),
    (c.Check, CommandSpec("CHECK", s.SELECTED, select.check)),
    (c.Close, CommandSpec("CLOSE", s.SELECTED, select.close)),
    (c.Unselect, CommandSpec("UNSELECT", s.SELECTED, select.unselect)),
    (c.Expunge, CommandSpec("EXPUNGE", s.SELECTED, select.expunge)),
    (c.Search, CommandSpec("SEARCH", s.SELECTED, messages.search, expunges=False)),
    (c.CancelUpdate, CommandSpec("CANCELUPDATE", s.SELECTED, messages.cancelupdate)),
    (c.Sort, CommandSpec("SORT", s.SELECTED, sort.sort, expunges=False)),
    (c.Thread, CommandSpec("THREAD", s.SELECTED, sort.thread, expunges=False)),
    (c.Fetch, CommandSpec("FETCH", s.SELECTED, messages.fetch, expunges=False)),
    (c.Store, CommandSpec("STORE", s.SELECTED, messages.store, expunges=False)),
    (c.Copy, CommandSpec("COPY", s.SELECTED, messages.copy, expunges=False)),
    (c.Move, CommandSpec("MOVE", s.SELECTED, messages.move)),
)

COMMANDS: dict[type, CommandSpec] = dict(_TABLE)
"""Command class -> spec; a parsed command missing here is ``BAD not supported``."""
