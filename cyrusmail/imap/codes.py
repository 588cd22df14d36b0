"""IMAP response codes, and how every store error maps to a tagged reply.

The one place that knows ``MailboxNotFound`` means ``NO [NONEXISTENT]``
(RFC 5530).  Handlers raise :class:`CommandFailed` or let a
:class:`~cyrusmail.store.errors.StoreError` through; the session turns
either into a tagged response with :func:`reply_for`.  Tests assert against
these names rather than copying strings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cyrusmail.store import errors

# RFC 3501
ALERT = "ALERT"
PARSE = "PARSE"
PERMANENTFLAGS = "PERMANENTFLAGS"
READ_ONLY = "READ-ONLY"
READ_WRITE = "READ-WRITE"
TRYCREATE = "TRYCREATE"
UIDNEXT = "UIDNEXT"
UIDVALIDITY = "UIDVALIDITY"
UNSEEN = "UNSEEN"
CAPABILITY = "CAPABILITY"
# RFC 4315 UIDPLUS
APPENDUID = "APPENDUID"
COPYUID = "COPYUID"
# RFC 7162 CONDSTORE
HIGHESTMODSEQ = "HIGHESTMODSEQ"
NOMODSEQ = "NOMODSEQ"
MODIFIED = "MODIFIED"
# RFC 5530
UNAVAILABLE = "UNAVAILABLE"
AUTHENTICATIONFAILED = "AUTHENTICATIONFAILED"
AUTHORIZATIONFAILED = "AUTHORIZATIONFAILED"
EXPIRED = "EXPIRED"
PRIVACYREQUIRED = "PRIVACYREQUIRED"
CONTACTADMIN = "CONTACTADMIN"
NOPERM = "NOPERM"
INUSE = "INUSE"
EXPUNGEISSUED = "EXPUNGEISSUED"
CORRUPTION = "CORRUPTION"
SERVERBUG = "SERVERBUG"
CLIENTBUG = "CLIENTBUG"
CANNOT = "CANNOT"
LIMIT = "LIMIT"
OVERQUOTA = "OVERQUOTA"
ALREADYEXISTS = "ALREADYEXISTS"
NONEXISTENT = "NONEXISTENT"
# RFC 3516 / 6154 / 7889 / 4469
UNKNOWN_CTE = "UNKNOWN-CTE"
USEATTR = "USEATTR"
TOOBIG = "TOOBIG"
BADURL = "BADURL"  # RFC 4469
BADCHARSET = "BADCHARSET"
# RFC 5267 CONTEXT=SEARCH
NOUPDATE = "NOUPDATE"
CLOSED = "CLOSED"
# RFC 8474 OBJECTID
MAILBOXID = "MAILBOXID"
COMPRESSIONACTIVE = "COMPRESSIONACTIVE"  # RFC 4978


class CommandFailed(Exception):
    """A handler's refusal: ``tag NO|BAD [code] text``."""

    def __init__(self, text: str, code: str | None = None, status: str = "NO") -> None:
        super().__init__(text)
        self.text = text
        self.code = code
        self.status = status


def bad(text: str, code: str | None = None) -> CommandFailed:
    return CommandFailed(text, code, "BAD")


@dataclass(frozen=True)
class Reply:
    """The tagged completion of a command."""

    status: str = "OK"
    text: str = ""
    code: str | None = None
    #: run once the tagged line is queued (STARTTLS's handshake, LOGOUT's hang-up)
    after: Callable[[], None] | None = field(default=None, compare=False)


_STORE_ERRORS: tuple[tuple[type[Exception], str | None], ...] = (
    (errors.MailboxNotFound, NONEXISTENT),
    (errors.MailboxExists, ALREADYEXISTS),
    (errors.PermissionDenied, NOPERM),
    (errors.OverQuota, OVERQUOTA),
    (errors.NotSelectable, CANNOT),
    (errors.HasChildren, CANNOT),
    (errors.Refused, CANNOT),
    (errors.InvalidName, CANNOT),
    (errors.NoSuchMessage, EXPUNGEISSUED),
    (errors.NoSuchQuotaRoot, NONEXISTENT),
)
#: Errors in what the client sent (RFC 4314: an undefined right or identifier is BAD).
_CLIENT_ERRORS = (errors.InvalidRights, errors.InvalidIdentifier)


def reply_for(error: Exception) -> Reply:
    """The tagged NO/BAD for a handler's exception (None code: not ours)."""
    if isinstance(error, CommandFailed):
        return Reply(error.status, error.text, error.code)
    if isinstance(error, _CLIENT_ERRORS):
        return Reply("BAD", str(error) or type(error).__name__)
    for kind, code in _STORE_ERRORS:
        if isinstance(error, kind):
            return Reply("NO", str(error) or kind.__name__, code)
    if isinstance(error, errors.StoreError):
        return Reply("NO", str(error) or "Store error", SERVERBUG)
    return Reply("NO", "Internal server error, logged", SERVERBUG)
