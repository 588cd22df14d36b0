"""CAPABILITY, NOOP, LOGOUT, ID (RFC 2971), ENABLE (RFC 5161), NAMESPACE (RFC 2342)."""

from __future__ import annotations

from cyrusmail.imap.codes import Reply
from cyrusmail.imap.state import LoggedOut
from cyrusmail.imapform import nstring, string

ENABLEABLE = frozenset({"CONDSTORE"})


def capability(session, command) -> None:
    session.untagged("CAPABILITY " + " ".join(session.capabilities()))


def noop(session, command) -> None:
    """Nothing; the session sends the mailbox's updates on completion."""


def logout(session, command) -> Reply:
    session.untagged("BYE Logging out")
    session.state = LoggedOut()
    return Reply(text="LOGOUT completed", after=session.transport.loseConnection)


def id_(session, command) -> None:
    if command.parameters is not None:
        session.client_id = dict(command.parameters[:30])
    pairs = [string("name"), string("cyrusmail"), string("vendor"), string("cyrusmail")]
    session.untagged(b"ID (" + b" ".join(pairs) + b")")


def enable(session, command) -> None:
    turned_on = [name for name in command.capabilities if name in ENABLEABLE and name not in session.enabled]
    session.enabled.update(turned_on)
    session.untagged(" ".join(["ENABLED", *turned_on]))
    view = getattr(session.state, "view", None)
    if view is not None and "CONDSTORE" in session.enabled:
        view.condstore = True


def namespace(session, command) -> None:
    """Personal namespace only until ACLs give other users' and shared ones."""
    session.untagged(b"NAMESPACE ((" + string("") + b" " + nstring("/") + b")) NIL NIL")
