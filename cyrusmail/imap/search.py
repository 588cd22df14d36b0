"""SEARCH: which messages of the session's view match a criteria tree.

The tree (:mod:`cyrusmail.imap.commands`, nested at most 100 deep by the
parser) is compiled once: each key gets a cost, by what it must read,

* the index record (flags, sequence numbers, UIDs, size, internal date,
  modseq),
* the MIME cache kept in the index (header keys, SENT* dates),
* the message file (BODY, TEXT),

and the operands of every AND, OR and NOT are ordered cheapest first.
Each message is then tested with short-circuit evaluation on an explicit
stack, so ``UNSEEN BODY x`` opens only the unseen messages' files, and a
file is read, and its text parts decoded, at most once per message per
search, however many BODY and TEXT keys test it.

:func:`search` is a generator for :func:`cyrusmail.slices.run_in_slices`:
it yields after each message what testing it cost (:data:`MESSAGE_COST`,
:data:`INFO_COST` if it needed the MIME cache, :data:`FILE_BYTE_COST` per
byte of file read and one per character a key scanned), so a session can
return to the reactor between slices.  A message that another session
expunges while the search runs (its index entry or file gone when it is
reached) is left out of the result.

Matching follows RFC 3501 section 6.4.4: strings match as case-insensitive
substrings of the raw and of the decoded text (RFC 2047 words in headers;
transfer encodings and charsets in bodies); BEFORE/ON/SINCE compare the
internal date's day in :data:`cyrusmail.imap.dates.ZONE`, SENT* the day
written in the Date: field (a message without a usable one matches none).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from cyrusmail.imap import commands as c
from cyrusmail.imap.dates import internal_day
from cyrusmail.imap.fetch import email_id, load_info, mime
from cyrusmail.imap.flags import RECENT, system_flag
from cyrusmail.mime.addresses import MISSING_DOMAIN, Address, parse_address_list
from cyrusmail.slices import Steps
from cyrusmail.store.errors import NoSuchMessage
from cyrusmail.store.interfaces import IMailbox
from cyrusmail.store.records import MessageRecord

CHARSETS = ("UTF-8", "US-ASCII")


class BadCharset(Exception):
    """A SEARCH CHARSET other than :data:`CHARSETS`: ``NO [BADCHARSET (...)]``."""

    code = "BADCHARSET (" + " ".join(CHARSETS) + ")"


def check_charset(charset: str | None) -> None:
    """Accept no charset, UTF-8 or US-ASCII in any case; else BadCharset."""
    if charset is not None and charset.upper() not in CHARSETS:
        raise BadCharset(f"unsupported charset {charset}")


MESSAGE_COST = 2_000
"""The cost of testing one message on its index record alone (a unit is about a
nanosecond of a small server's time)."""
INFO_COST = 40_000
"""The cost of loading a message's MIME cache (header keys, SENT* dates)."""
FILE_BYTE_COST = 8
"""The cost of a byte of message file read and decoded (a scanned character costs 1)."""


def search(
    criteria: c.SearchKey,
    mailbox: IMailbox,
    records: list[MessageRecord],
    seqs: dict[int, int],
    recent: set[int],
    highest_uid: int | None = None,
    *,
    saved: Collection[int] = (),
    now: float | None = None,
    gone: set[int] | None = None,
) -> Steps[list[MessageRecord]]:
    """The records, in their order, that match ``criteria``, as work for
    :func:`cyrusmail.slices.run_in_slices` (or :func:`~cyrusmail.slices.run_all`):
    yields each message's cost, returns the matches.

    ``records`` is the session's view (ascending UID) or the part of it
    :func:`header_candidates` left; ``seqs`` maps every UID of the view to
    its message sequence number (so ``*`` means ``len(seqs)``), and
    ``recent`` holds the UIDs recent in this session. ``highest_uid`` is the
    view's highest UID (``*`` in UID sets) when ``records`` is only a part.
    ``saved`` holds the UIDs ``$`` stands for (RFC 5182), ``now`` is the
    time OLDER and YOUNGER count back from (default: the clock), and the
    UIDs of messages found expunged on the way are added to ``gone``.
    """
    if highest_uid is None:
        highest_uid = records[-1].uid if records else 0
    view = _View(
        mailbox=mailbox,
        seqs=seqs,
        recent=recent,
        messages=len(seqs),
        highest_uid=highest_uid,
        caches=_CacheWindow(mailbox, records),
        saved=saved if isinstance(saved, (set, frozenset)) else frozenset(saved),
        now=time.time() if now is None else now,
    )
    root = _compile(criteria, view)
    found: list[MessageRecord] = []
    for record in records:
        message = _Message(view, record)
        try:
            if _matches(root, message):
                found.append(record)
        except _Gone:
            # expunged while the search ran: neither a match nor a NOT match
            if gone is not None:
                gone.add(record.uid)
        yield message.cost
    return found


def header_candidates(criteria: c.SearchKey, mailbox: IMailbox) -> set[int] | None:
    """Messages that may match the header keys every match needs, found by the index.

    Each required HEADER/FROM/SUBJECT/... key with an ASCII value must have
    its words (a fold only ever falls between words) in the cached header;
    a header with encoded words may hide them, so those messages stay in.
    None when no key qualifies (every message is a candidate).
    """
    keys = criteria.keys if isinstance(criteria, c.SearchAnd) else (criteria,)
    words: list[bytes] = []
    hiding = [b"=?"]
    for key in keys:
        if not (isinstance(key, (c.SearchHeader, c.SearchAddress)) and key.value and key.value.isascii()):
            continue
        if isinstance(key, c.SearchAddress):
            # The envelope form drops comments, quotes and quoted-pair
            # backslashes, so only its letter-and-digit runs are surely in the
            # header as written, unless a backslash split one.
            words += _ADDRESS_WORD.findall(key.value)
            hiding = [b"=?", b"\\"]
        else:
            words += key.value.split()
    if not words:
        return None
    return mailbox.cache_may_contain(words, any_of=hiding)


# -- compiling ------------------------------------------------------------------

INDEX, CACHE, FILE = 0, 1, 2
"""Costs: what a key reads."""

_LEAF, _AND, _OR, _NOT = range(4)
_FOLDING = re.compile(rb"\r?\n(?=[ \t])")
_ADDRESS_WORD = re.compile(rb"[A-Za-z0-9]+")


@dataclass(frozen=True)
class _View:
    mailbox: IMailbox
    seqs: dict[int, int]
    recent: set[int]
    messages: int
    highest_uid: int
    caches: _CacheWindow
    saved: Collection[int]
    now: float


class _CacheWindow:
    """MIME caches read from the index a window at a time, as the search walks the records."""

    WINDOW = 500

    def __init__(self, mailbox: IMailbox, records: list[MessageRecord]) -> None:
        self.mailbox = mailbox
        self.records = records
        self.position: dict[int, int] | None = None
        self.fetched: set[int] = set()
        self.caches: dict[int, bytes] = {}

    def get(self, uid: int) -> bytes | None:
        if uid not in self.fetched:
            if self.position is None:
                self.position = {record.uid: index for index, record in enumerate(self.records)}
            start = self.position.get(uid)
            if start is None:
                return None
            batch = [record.uid for record in self.records[start:start + self.WINDOW]]
            self.caches = self.mailbox.mime_caches(batch)
            self.fetched = set(batch)
        return self.caches.get(uid)


@dataclass(frozen=True)
class _Node:
    op: int
    cost: int
    test: Callable[[_Message], bool] | None = None
    children: tuple[_Node, ...] = ()


def _operands(key: c.SearchKey) -> tuple[c.SearchKey, ...]:
    if isinstance(key, c.SearchAnd):
        return key.keys
    if isinstance(key, c.SearchOr):
        return (key.left, key.right)
    if isinstance(key, c.SearchNot):
        return (key.key,)
    return ()


def _compile(root: c.SearchKey, view: _View) -> _Node:
    """Post-order walk with an explicit stack: operands before operators."""
    compiled: dict[int, _Node] = {}
    stack: list[tuple[c.SearchKey, bool]] = [(root, False)]
    while stack:
        key, expanded = stack.pop()
        operands = _operands(key)
        if operands and not expanded:
            stack.append((key, True))
            stack.extend((operand, False) for operand in operands)
            continue
        if isinstance(key, c.SearchNot):
            child = compiled[id(key.key)]
            node = _Node(_NOT, child.cost, children=(child,))
        elif isinstance(key, (c.SearchAnd, c.SearchOr)):
            children = tuple(
                sorted(
                    (compiled[id(operand)] for operand in operands),
                    key=lambda node: node.cost,
                )
            )
            op = _AND if isinstance(key, c.SearchAnd) else _OR
            node = _Node(
                op,
                max((child.cost for child in children), default=INDEX),
                children=children,
            )
        else:
            cost, test = _leaf(key, view)
            node = _Node(_LEAF, cost, test)
        compiled[id(key)] = node
    return compiled[id(root)]


def _leaf(key: c.SearchKey, view: _View) -> tuple[int, Callable[[_Message], bool]]:
    if isinstance(key, c.SearchAll):
        return INDEX, lambda message: True
    if isinstance(key, c.SearchFlag):
        return INDEX, _flag_test(key.flag, view)
    if isinstance(key, c.SearchSequence):
        numbers = key.sequence_set
        if numbers.saved:  # $ holds UIDs, whether the key says UID or not
            saved = view.saved
            return INDEX, lambda message: message.record.uid in saved
        if key.uid:
            highest = view.highest_uid
            return INDEX, lambda message: numbers.contains(message.record.uid, highest)
        count, seqs = view.messages, view.seqs
        return INDEX, lambda message: numbers.contains(seqs[message.record.uid], count)
    if isinstance(key, c.SearchSize):
        size = key.size
        if key.relation == "larger":
            return INDEX, lambda message: message.record.size > size
        return INDEX, lambda message: message.record.size < size
    if isinstance(key, c.SearchWithin):
        # As Dovecot: OLDER n matches n seconds ago and before, YOUNGER n since then.
        limit = view.now - key.seconds
        if key.relation == "older":
            return INDEX, lambda message: message.record.internal_date <= limit
        return INDEX, lambda message: message.record.internal_date >= limit
    if isinstance(key, c.SearchModSeq):
        modseq = key.modseq  # no per-flag modseqs: the entry is the message's
        return INDEX, lambda message: message.record.modseq >= modseq
    if isinstance(key, c.SearchDate):
        compare = _DAY_RELATIONS[key.relation]
        day = key.date
        if key.sent:

            def sent(message: _Message) -> bool:
                written = message.info().sent_date()
                return written is not None and compare(written, day)

            return CACHE, sent
        return INDEX, lambda message: compare(
            internal_day(message.record.internal_date), day
        )
    if isinstance(key, c.SearchSaveDate):
        compare, day = _DAY_RELATIONS[key.relation], key.date
        return INDEX, lambda message: compare(
            internal_day(_save_date(message.record)), day
        )
    if isinstance(key, c.SearchObjectId):
        if key.kind == "THREADID":
            return INDEX, lambda message: False  # no thread ids: none matches (RFC 8474 5.2)
        wanted = key.object_id
        return INDEX, lambda message: email_id(message.record) == wanted
    if isinstance(key, c.SearchHeader):
        field, needle = key.field, _needle(key.value)
        if not needle:
            return CACHE, lambda message: bool(message.info().header(field))
        return CACHE, lambda message: message.header_may_hold(needle) and any(
            needle in value for value in message.header_values(field)
        )
    if isinstance(key, c.SearchAddress):
        field, needle = key.field, _needle(key.value)
        if not needle:
            return CACHE, lambda message: bool(message.info().header(field))
        return CACHE, lambda message: any(needle in value for value in message.address_values(field))
    if isinstance(key, c.SearchBody):
        needle = _needle(key.value)
        return FILE, lambda message: message.scan(needle, message.body_text())
    if isinstance(key, c.SearchText):
        needle = _needle(key.value)
        return (
            FILE,
            lambda message: (
                message.scan(needle, message.header_text())
                or message.scan(needle, message.body_text())
            ),
        )
    raise TypeError(f"not a search key: {key!r}")


def _save_date(record: MessageRecord) -> float:
    """The save date, or the internal date where a store keeps none (RFC 8514)."""
    return record.internal_date if record.save_date is None else record.save_date


_DAY_RELATIONS = {
    "before": lambda day, wanted: day < wanted,
    "on": lambda day, wanted: day == wanted,
    "since": lambda day, wanted: day >= wanted,
}


def _flag_test(flag: str, view: _View) -> Callable[[_Message], bool]:
    bit = system_flag(flag)
    if bit is not None:
        return lambda message: bool(message.record.flags & bit)
    if flag.lower() == RECENT.lower():
        recent = view.recent
        return lambda message: message.record.uid in recent
    if flag.startswith("\\"):
        return lambda message: False  # no other system flag exists
    folded = flag.casefold()
    return lambda message: any(
        keyword.casefold() == folded for keyword in message.record.keywords
    )


def _needle(value: bytes) -> str:
    return value.decode("utf-8", "replace").casefold()


def _envelope_text(addresses: list[Address]) -> str:
    """The text SEARCH FROM/TO/CC/BCC match, from ENVELOPE address structures,
    written as Dovecot writes them for the same purpose: ``name <spec>``, the
    name quoted as an RFC 5322 phrase needs (``"Jo Name" <jo@x>``), or
    ``<spec>`` with no name (Dovecot 2.3 finds ``<a@b>`` in ``From: a@b``)."""
    parts: list[str] = []
    for name, _adl, mailbox, host in addresses:
        if host is None:  # a group's start (its name in ``mailbox``) or end
            parts.append(";" if mailbox is None else _text(mailbox) + ":")
            continue
        spec = _text(mailbox or b"")
        if host != MISSING_DOMAIN:
            spec += "@" + _text(host)
        parts.append(f"{_phrase(mime.text.decode_header_value(name))} <{spec}>" if name else f"<{spec}>")
    return ", ".join(parts)


_ATEXT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~")


def _phrase(name: str) -> str:
    """``name`` as one atom when it is one, else a quoted string (non-ASCII passes as it is)."""
    if name and all(char in _ATEXT or ord(char) > 127 for char in name):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


# -- evaluating -------------------------------------------------------------------


def _matches(root: _Node, message: _Message) -> bool:
    """Short-circuit evaluation without recursion.

    Each stack entry is ``[node, operands tried]``; ``value`` carries the
    result of the node just finished up to its parent.
    """
    value = False
    stack: list[list] = [[root, 0]]
    while stack:
        frame = stack[-1]
        node: _Node = frame[0]
        if node.op == _LEAF:
            value = node.test(message)  # type: ignore[misc]
            stack.pop()
        elif node.op == _NOT:
            if frame[1]:
                value = not value
                stack.pop()
            else:
                frame[1] = 1
                stack.append([node.children[0], 0])
        else:
            # The operand value that decides an AND (False) or an OR (True).
            decided = node.op == _OR
            if frame[1] and value == decided:
                stack.pop()  # value is already the answer
            elif frame[1] == len(node.children):
                value = not decided
                stack.pop()
            else:
                stack.append([node.children[frame[1]], 0])
                frame[1] += 1
    return value


class _Gone(Exception):
    """The message was expunged (index entry or file) after the search began."""


class _Message:
    """One message during a search, reading and decoding each source at most
    once, however many keys test it."""

    __slots__ = ("_body_text", "_data", "_header_text", "_header_values", "_info", "_plain_header",
                 "cost", "record", "view")

    def __init__(self, view: _View, record: MessageRecord) -> None:
        self.view = view
        self.record = record
        self.cost = MESSAGE_COST
        self._data: bytes | None = None
        self._info = None
        self._plain_header: bytes | None = None
        self._header_values: dict[str, list[str]] = {}
        self._header_text: str | None = None
        self._body_text: str | None = None

    def data(self) -> bytes:
        if self._data is None:
            try:
                self._data = self.view.mailbox.read(self.record.uid)
            except (NoSuchMessage, FileNotFoundError):
                raise _Gone from None
            self.cost += FILE_BYTE_COST * len(self._data)
        return self._data

    def info(self):
        if self._info is None:
            # Without a MIME cache the file is read here, and kept for BODY.
            cache = self.view.caches.get(self.record.uid)
            self.cost += INFO_COST
            if cache is None:
                self.cost += FILE_BYTE_COST * self.record.size  # parsed from the file
            try:
                self._info = load_info(self.view.mailbox, self.record.uid, self.data, cache=cache)
            except (NoSuchMessage, FileNotFoundError):
                raise _Gone from None
        return self._info

    def scan(self, needle: str, text: str) -> bool:
        """Whether ``needle`` is in ``text``, counting the scan in :attr:`cost`."""
        self.cost += len(text)
        return needle in text

    def header_may_hold(self, needle: str) -> bool:
        """A quick no for most messages: the unfolded raw header lacks an ASCII needle
        and has no encoded words that could hide it."""
        if not needle.isascii():
            return True
        if self._plain_header is None:
            header = self.info().header_bytes()
            # Encoded words may hide any needle: "=?" stands for the whole header then.
            self._plain_header = b"=?" if b"=?" in header else _FOLDING.sub(b"", header).lower()
        return self._plain_header == b"=?" or needle.encode("ascii") in self._plain_header

    def header_values(self, field: str) -> list[str]:
        """Each value of ``field``, raw and RFC 2047 decoded, case-folded."""
        values = self._header_values.get(field)
        if values is None:
            values = []
            for raw in self.info().header(field):
                values.append(_text(raw).casefold())
                values.append(mime.text.decode_header_value(raw).casefold())
            self._header_values[field] = values
        return values

    def address_values(self, field: str) -> list[str]:
        """Each value of the address field ``field`` as its ENVELOPE
        structures read: ``name <mailbox@host>`` per address (the name
        RFC 2047 decoded; comments gone unless one stands for a missing
        name), ``group:`` and ``;`` around a group's members; case-folded."""
        key = "address " + field
        values = self._header_values.get(key)
        if values is None:
            values = [_envelope_text(parse_address_list(raw)).casefold()
                      for raw in self.info().header(field)]
            self._header_values[key] = values
        return values

    def header_text(self) -> str:
        if self._header_text is None:
            header = _FOLDING.sub(b"", self.info().header_bytes())
            self._header_text = (
                _text(header) + "\n" + mime.text.decode_header_value(header)
            ).casefold()
        return self._header_text

    def body_text(self) -> str:
        if self._body_text is None:
            self._body_text = mime.body_text(self.data(), self.info()).casefold()
        return self._body_text
