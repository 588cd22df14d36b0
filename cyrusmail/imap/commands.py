"""The typed IMAP commands that :mod:`cyrusmail.imap.wire` parses into.

One frozen dataclass per command, each with the client's ``tag`` first.
The values are as the client sent them, with the grammar checked but no
policy applied:

* mailbox names are ``str`` in their wire form (modified UTF-7, or UTF-8
  if the client sent 8-bit; after ENABLE UTF8=ACCEPT the parser turns the
  UTF-8 names into modified UTF-7); the session decodes them with
  :func:`cyrusmail.imap.mutf7.decode` and applies its INBOX rules;
* credentials and SEARCH strings are ``bytes`` (their charset is the
  session's business);
* atoms that are case-insensitive keywords (status items, capabilities,
  return options) are upper-cased; system flags get their canonical case
  (``\\seen`` -> ``\\Seen``), keywords are kept as sent;
* sequence sets are :class:`~cyrusmail.imap.sequence.SequenceSet`.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Protocol

from cyrusmail.imap.sequence import SequenceSet


class LiteralSink(Protocol):
    """Where the bytes of an APPEND message literal go as they arrive.

    The parser calls :meth:`write` with each chunk, in order, and
    :meth:`close` if the command is abandoned (a later syntax error).  On
    success the sink is handed to the session inside
    :class:`AppendMessage`, which then owns it (and closes it).
    """

    def write(self, data: bytes, /) -> object: ...

    def close(self) -> None: ...


# -- generic values ---------------------------------------------------------

ParameterValue = str | bytes | int | None | tuple["ParameterValue", ...]
"""A value in an RFC 4466 parameter list: an atom (``str``), a string
(``bytes``), a number, NIL, or a parenthesised list of those."""


@dataclass(frozen=True)
class Command:
    """Base of every parsed command."""

    tag: str
    name: ClassVar[str] = ""


# -- any state ----------------------------------------------------------------


@dataclass(frozen=True)
class Capability(Command):
    name: ClassVar[str] = "CAPABILITY"


@dataclass(frozen=True)
class Noop(Command):
    name: ClassVar[str] = "NOOP"


@dataclass(frozen=True)
class Logout(Command):
    name: ClassVar[str] = "LOGOUT"


@dataclass(frozen=True)
class Id(Command):
    """RFC 2971; ``parameters`` is None for ``ID NIL``."""

    parameters: tuple[tuple[str, bytes | None], ...] | None
    name: ClassVar[str] = "ID"


@dataclass(frozen=True)
class Compress(Command):
    """RFC 4978; ``mechanism`` upper-cased (only ``DEFLATE`` is defined)."""

    mechanism: str
    name: ClassVar[str] = "COMPRESS"


@dataclass(frozen=True)
class Enable(Command):
    """RFC 5161; capability names upper-cased."""

    capabilities: tuple[str, ...]
    name: ClassVar[str] = "ENABLE"


# -- not authenticated --------------------------------------------------------


@dataclass(frozen=True)
class StartTLS(Command):
    name: ClassVar[str] = "STARTTLS"


@dataclass(frozen=True)
class Authenticate(Command):
    """``mechanism`` upper-cased; ``initial_response`` is the RFC 4959
    SASL-IR argument as sent (base64, or ``b"="`` for an empty one)."""

    mechanism: str
    initial_response: bytes | None = None
    name: ClassVar[str] = "AUTHENTICATE"


@dataclass(frozen=True)
class Login(Command):
    username: bytes
    password: bytes
    name: ClassVar[str] = "LOGIN"


# -- authenticated ------------------------------------------------------------


@dataclass(frozen=True)
class QresyncParameters:
    """RFC 7162 ``(QRESYNC (uidvalidity modseq [known-uids [seq-match-data]]))``.

    ``seq_match``: (message numbers, UIDs), the same count in each.
    """

    uid_validity: int
    modseq: int
    known_uids: SequenceSet | None = None
    seq_match: tuple[SequenceSet, SequenceSet] | None = None


@dataclass(frozen=True)
class Unauthenticate(Command):
    """RFC 8437: back to the not-authenticated state on the same connection."""

    name: ClassVar[str] = "UNAUTHENTICATE"



@dataclass(frozen=True)
class _Opening(Command):
    """``parameters``: RFC 4466 select-params, names upper-cased, e.g.
    ``(("CONDSTORE", None),)``; only CONDSTORE and QRESYNC are accepted,
    the latter's value checked into ``qresync``."""

    mailbox: str
    parameters: tuple[tuple[str, ParameterValue], ...] = ()
    qresync: QresyncParameters | None = None

    @property
    def condstore(self) -> bool:
        return any(name == "CONDSTORE" for name, _ in self.parameters)


@dataclass(frozen=True)
class Select(_Opening):
    name: ClassVar[str] = "SELECT"


@dataclass(frozen=True)
class Examine(_Opening):
    """Like SELECT, read-only (not a subclass, so dispatch on type is exact)."""

    name: ClassVar[str] = "EXAMINE"


@dataclass(frozen=True)
class Create(Command):
    """``special_use``: the RFC 6154 ``USE`` attributes, e.g. ``("\\Sent",)``."""

    mailbox: str
    special_use: tuple[str, ...] = ()
    name: ClassVar[str] = "CREATE"


@dataclass(frozen=True)
class Delete(Command):
    mailbox: str
    name: ClassVar[str] = "DELETE"


@dataclass(frozen=True)
class Rename(Command):
    mailbox: str
    new_name: str
    name: ClassVar[str] = "RENAME"


@dataclass(frozen=True)
class Subscribe(Command):
    mailbox: str
    name: ClassVar[str] = "SUBSCRIBE"


@dataclass(frozen=True)
class Unsubscribe(Command):
    mailbox: str
    name: ClassVar[str] = "UNSUBSCRIBE"


@dataclass(frozen=True)
class List(Command):
    """LIST with the RFC 5258 extensions.

    ``selection``: selection options upper-cased (``SUBSCRIBED``,
    ``REMOTE``, ``RECURSIVEMATCH``, ``SPECIAL-USE``); ``return_options``:
    return options upper-cased (``SUBSCRIBED``, ``CHILDREN``,
    ``SPECIAL-USE``, ``STATUS``); ``return_status``: the RFC 5819 status
    items when ``STATUS`` is among them.  ``patterns`` has one element for
    the RFC 3501 form.
    """

    reference: str
    patterns: tuple[str, ...]
    selection: tuple[str, ...] = ()
    return_options: tuple[str, ...] = ()
    return_status: tuple[str, ...] = ()
    name: ClassVar[str] = "LIST"


@dataclass(frozen=True)
class Lsub(Command):
    reference: str
    pattern: str
    name: ClassVar[str] = "LSUB"


@dataclass(frozen=True)
class Namespace(Command):
    name: ClassVar[str] = "NAMESPACE"


STATUS_ITEMS = frozenset(
    {
        "MESSAGES",
        "RECENT",
        "UIDNEXT",
        "UIDVALIDITY",
        "UNSEEN",
        "HIGHESTMODSEQ",
        "SIZE",
        "DELETED",
        "APPENDLIMIT",
        "MAILBOXID",
    }
)


@dataclass(frozen=True)
class Status(Command):
    """``items`` upper-cased, from :data:`STATUS_ITEMS`."""

    mailbox: str
    items: tuple[str, ...]
    name: ClassVar[str] = "STATUS"


@dataclass(frozen=True)
class CatenateText:
    """An RFC 4469 ``TEXT`` part: a literal's bytes, in the sink they went to."""

    size: int
    content: LiteralSink = field(compare=False)


@dataclass(frozen=True)
class CatenateUrl:
    """An RFC 4469 ``URL`` part, as sent (an RFC 5092 IMAP URL, checked by the session)."""

    url: str


CatenatePart = CatenateText | CatenateUrl


@dataclass(frozen=True)
class AppendMessage:
    """One message of an APPEND (several with RFC 3502 MULTIAPPEND).

    ``flags`` is None when the client gave no flag list; ``internal_date``
    is an aware datetime or None; ``content`` is the sink the literal was
    written to; ``binary`` is true for an RFC 3516 ``~{n}`` literal.  An
    RFC 4469 ``CATENATE`` message has its ``parts`` instead (``content``
    None, ``size`` 0); ``utf8`` marks RFC 6855 ``UTF8 (literal8)`` data.
    """

    flags: tuple[str, ...] | None
    internal_date: datetime.datetime | None
    size: int
    content: LiteralSink | None = field(compare=False)
    binary: bool = False
    parts: tuple[CatenatePart, ...] | None = None
    utf8: bool = False  # RFC 6855 UTF8 data item

    def sinks(self) -> list[LiteralSink]:
        """Every sink this message's literals went to."""
        found = [] if self.content is None else [self.content]
        found += [part.content for part in self.parts or () if isinstance(part, CatenateText)]
        return found


@dataclass(frozen=True)
class Append(Command):
    mailbox: str
    messages: tuple[AppendMessage, ...]
    name: ClassVar[str] = "APPEND"


@dataclass(frozen=True)
class Idle(Command):
    name: ClassVar[str] = "IDLE"


@dataclass(frozen=True)
class GetQuota(Command):
    root: str
    name: ClassVar[str] = "GETQUOTA"


@dataclass(frozen=True)
class GetQuotaRoot(Command):
    mailbox: str
    name: ClassVar[str] = "GETQUOTAROOT"


@dataclass(frozen=True)
class SetQuota(Command):
    """``limits``: ``(resource upper-cased, limit)`` pairs."""

    root: str
    limits: tuple[tuple[str, int], ...]
    name: ClassVar[str] = "SETQUOTA"


@dataclass(frozen=True)
class SetAcl(Command):
    """``rights`` as sent, possibly starting with ``+`` or ``-`` (RFC 4314)."""

    mailbox: str
    identifier: str
    rights: str
    name: ClassVar[str] = "SETACL"


@dataclass(frozen=True)
class DeleteAcl(Command):
    mailbox: str
    identifier: str
    name: ClassVar[str] = "DELETEACL"


@dataclass(frozen=True)
class GetAcl(Command):
    mailbox: str
    name: ClassVar[str] = "GETACL"


@dataclass(frozen=True)
class ListRights(Command):
    mailbox: str
    identifier: str
    name: ClassVar[str] = "LISTRIGHTS"


@dataclass(frozen=True)
class MyRights(Command):
    mailbox: str
    name: ClassVar[str] = "MYRIGHTS"


# -- selected -----------------------------------------------------------------


@dataclass(frozen=True)
class Check(Command):
    name: ClassVar[str] = "CHECK"


@dataclass(frozen=True)
class Close(Command):
    name: ClassVar[str] = "CLOSE"


@dataclass(frozen=True)
class Unselect(Command):
    name: ClassVar[str] = "UNSELECT"


@dataclass(frozen=True)
class Expunge(Command):
    """EXPUNGE, or UID EXPUNGE (RFC 4315) when ``uid`` is true."""

    uid: bool = False
    sequence_set: SequenceSet | None = None
    name: ClassVar[str] = "EXPUNGE"


@dataclass(frozen=True)
class Section:
    """A BODY[...] section (RFC 3501 ``section``).

    :ivar part: the part path, e.g. ``(1, 2)`` for ``1.2``; ``()`` for the
        whole message.
    :ivar text: ``None``, ``"HEADER"``, ``"HEADER.FIELDS"``,
        ``"HEADER.FIELDS.NOT"``, ``"TEXT"`` or ``"MIME"``.
    :ivar fields: header field names (upper-cased) for the
        ``HEADER.FIELDS`` kinds.
    """

    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class FetchAttribute:
    """A plain fetch item: ENVELOPE, FLAGS, INTERNALDATE, RFC822,
    RFC822.HEADER, RFC822.SIZE, RFC822.TEXT, BODY, BODYSTRUCTURE, UID,
    MODSEQ, SAVEDATE (RFC 8514), EMAILID, THREADID (RFC 8474), PREVIEW
    (RFC 8970; its LAZY modifier changes nothing here, since every preview is
    made once and kept) (upper-cased)."""

    attribute: str


@dataclass(frozen=True)
class FetchBody:
    """``BODY[section]<origin.length>`` or ``BODY.PEEK[...]``.

    ``partial`` is ``(origin, length)`` or None.
    """

    section: Section
    peek: bool = False
    partial: tuple[int, int] | None = None


@dataclass(frozen=True)
class FetchBinary:
    """RFC 3516 ``BINARY[part]<partial>`` / ``BINARY.PEEK[...]``."""

    part: tuple[int, ...]
    peek: bool = False
    partial: tuple[int, int] | None = None


@dataclass(frozen=True)
class FetchBinarySize:
    """RFC 3516 ``BINARY.SIZE[part]``."""

    part: tuple[int, ...]


FetchItem = FetchAttribute | FetchBody | FetchBinary | FetchBinarySize


@dataclass(frozen=True)
class Fetch(Command):
    """FETCH / UID FETCH.  Macros (ALL, FAST, FULL) arrive expanded.

    For UID FETCH the UID item is implied (RFC 3501 section 6.4.8) but not
    added here; ``changedsince`` and ``vanished`` are the RFC 7162
    modifiers.
    """

    uid: bool
    sequence_set: SequenceSet
    items: tuple[FetchItem, ...]
    changedsince: int | None = None
    vanished: bool = False
    name: ClassVar[str] = "FETCH"


StoreMode = Literal["replace", "add", "remove"]


@dataclass(frozen=True)
class Store(Command):
    """STORE / UID STORE: ``FLAGS`` is ``replace``, ``+FLAGS`` ``add``,
    ``-FLAGS`` ``remove``; ``silent`` for ``.SILENT``."""

    uid: bool
    sequence_set: SequenceSet
    mode: StoreMode
    silent: bool
    flags: tuple[str, ...]
    unchangedsince: int | None = None
    name: ClassVar[str] = "STORE"


@dataclass(frozen=True)
class Copy(Command):
    uid: bool
    sequence_set: SequenceSet
    mailbox: str
    name: ClassVar[str] = "COPY"


@dataclass(frozen=True)
class Move(Command):
    uid: bool
    sequence_set: SequenceSet
    mailbox: str
    name: ClassVar[str] = "MOVE"


# -- SEARCH keys -------------------------------------------------------------
# The RFC 3501 keys map onto a small tree: UN-flags and UNKEYWORD are Not(Flag),
# NEW is And(Flag(\Recent), Not(Flag(\Seen))), OLD is Not(Flag(\Recent)),
# KEYWORD is Flag, SUBJECT is Header, BCC/CC/FROM/TO are Address.


@dataclass(frozen=True)
class SearchAll:
    pass


@dataclass(frozen=True)
class SearchAnd:
    keys: tuple[SearchKey, ...]


@dataclass(frozen=True)
class SearchOr:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True)
class SearchNot:
    key: SearchKey


@dataclass(frozen=True)
class SearchFlag:
    """The message has ``flag`` (system flag canonical case, or keyword)."""

    flag: str


@dataclass(frozen=True)
class SearchHeader:
    """``field`` (upper-cased) contains ``value``; empty value: has the field."""

    field: str
    value: bytes


@dataclass(frozen=True)
class SearchAddress:
    """BCC/CC/FROM/TO: ``field`` (upper-cased) holds an address whose ENVELOPE
    form contains ``value`` (RFC 3501 6.4.4); empty value: has the field."""

    field: str
    value: bytes


@dataclass(frozen=True)
class SearchBody:
    value: bytes


@dataclass(frozen=True)
class SearchText:
    value: bytes


@dataclass(frozen=True)
class SearchDate:
    """``sent`` false: internal date (BEFORE/ON/SINCE); true: the Date:
    header (SENTBEFORE/SENTON/SENTSINCE)."""

    relation: Literal["before", "on", "since"]
    date: datetime.date
    sent: bool = False


@dataclass(frozen=True)
class SearchSaveDate:
    """RFC 8514 SAVEDBEFORE/SAVEDON/SAVEDSINCE: the day the message was saved here."""

    relation: Literal["before", "on", "since"]
    date: datetime.date


@dataclass(frozen=True)
class SearchObjectId:
    """RFC 8474 ``EMAILID id`` or ``THREADID id``; ``kind`` is the key, upper-cased."""

    kind: Literal["EMAILID", "THREADID"]
    object_id: str


@dataclass(frozen=True)
class SearchSize:
    relation: Literal["larger", "smaller"]
    size: int


@dataclass(frozen=True)
class SearchSequence:
    """A bare sequence set (message numbers) or ``UID set``."""

    sequence_set: SequenceSet
    uid: bool = False


@dataclass(frozen=True)
class SearchWithin:
    """RFC 5032 ``OLDER n`` / ``YOUNGER n``: the internal date is at least /
    at most ``seconds`` before the time of the search."""

    relation: Literal["older", "younger"]
    seconds: int


@dataclass(frozen=True)
class SearchModSeq:
    """RFC 7162 ``MODSEQ [entry-name entry-type] n``."""

    modseq: int
    entry: tuple[str, str] | None = None


SearchKey = (
    SearchAll
    | SearchAnd
    | SearchOr
    | SearchNot
    | SearchFlag
    | SearchHeader
    | SearchAddress
    | SearchBody
    | SearchText
    | SearchDate
    | SearchSaveDate
    | SearchObjectId
    | SearchSize
    | SearchSequence
    | SearchModSeq
    | SearchWithin
)


SEARCH_RETURN_OPTIONS = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE", "CONTEXT", "UPDATE", "PARTIAL"})
"""RFC 4731 (ESEARCH), RFC 5182 (SEARCHRES) and RFC 5267 (CONTEXT=SEARCH) return options."""


@dataclass(frozen=True)
class Search(Command):
    """SEARCH / UID SEARCH.  ``charset`` upper-cased or None (the session
    decides on BADCHARSET); ``return_options`` is None without RETURN,
    else the options of :data:`SEARCH_RETURN_OPTIONS` upper-cased, each once,
    as sent (``()`` means ALL).  ``partial`` is the range of ``PARTIAL``,
    ``(first, last)`` with ``first <= last`` (RFC 5267), or both negative
    counting from the last result with ``-1`` first (RFC 9394)."""

    uid: bool
    criteria: SearchKey
    charset: str | None = None
    return_options: tuple[str, ...] | None = None
    partial: tuple[int, int] | None = None
    name: ClassVar[str] = "SEARCH"


SORT_KEYS = frozenset({"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO",
                       "DISPLAYFROM", "DISPLAYTO"})
"""RFC 5256's sort keys and RFC 5957's DISPLAYFROM and DISPLAYTO."""

THREAD_ALGORITHMS = frozenset({"ORDEREDSUBJECT", "REFERENCES"})


@dataclass(frozen=True)
class SortCriterion:
    """One sort key (upper-cased, in :data:`SORT_KEYS`), maybe reversed."""

    key: str
    reverse: bool = False


@dataclass(frozen=True)
class Sort(Command):
    """SORT / UID SORT (RFC 5256).  ``charset`` upper-cased; the session
    decides on BADCHARSET, as for SEARCH."""

    uid: bool
    criteria: tuple[SortCriterion, ...]
    charset: str
    search: SearchKey
    #: RFC 5267 ESORT: as :class:`Search`'s, None without RETURN
    return_options: tuple[str, ...] | None = None
    partial: tuple[int, int] | None = None
    name: ClassVar[str] = "SORT"


@dataclass(frozen=True)
class Thread(Command):
    """THREAD / UID THREAD (RFC 5256); ``algorithm`` upper-cased, in :data:`THREAD_ALGORITHMS`."""

    uid: bool
    algorithm: str
    charset: str
    search: SearchKey
    name: ClassVar[str] = "THREAD"


@dataclass(frozen=True)
class CancelUpdate(Command):
    """RFC 5267 CANCELUPDATE: the tags of the searches whose updates stop."""

    tags: tuple[str, ...]
    name: ClassVar[str] = "CANCELUPDATE"
