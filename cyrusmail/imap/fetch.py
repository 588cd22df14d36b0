"""FETCH: one message's record, MIME cache and bytes as one untagged response.

The session resolves the sequence set, sets ``\\Seen`` when
:attr:`FetchPlan.sets_seen` says so, and calls :func:`render_fetch` for
each message.  Nothing here does I/O beyond small reads through
:class:`~cyrusmail.store.interfaces.IMailbox`: every body section is a byte
range given by the MIME cache (``MessageInfo.section_range``), so nothing
is parsed again, and a range above :data:`INLINE_LIMIT` is handed back as a
:class:`FileSlice` for the session to stream from ``mailbox.open_file``.

Decisions, each as a mature server does:

* a section that does not exist, and a partial whose origin is past the
  end, are the empty string ``""`` (Dovecot, Cyrus);
* ``BODY[section]<origin>`` echoes the origin, not the length (RFC 3501
  section 7.4.2); HEADER.FIELDS names are echoed as the parser keeps them,
  upper-cased, as in RFC 3501's own examples;
* ``BINARY[]`` (no part) is the message as stored; BINARY of a part undoes
  base64 and quoted-printable, other unknown encodings are
  ``NO [UNKNOWN-CTE]`` (RFC 3516); BINARY data with a NUL goes as
  ``~{n}`` (RFC 3516 ``literal8``), and so does a streamed one, whose bytes
  are not looked at;
* no other literal ever carries a NUL (RFC 3501's CHAR8 excludes it): a
  message stored with one (imported, or from an old store) is sent with
  each NUL replaced by 0x80, as Dovecot does, so the literal keeps its
  length and the message its size.  Delivery refuses NUL, so this is rare.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cyrusmail import imapform
from cyrusmail.imap.commands import (
    FetchAttribute,
    FetchBinary,
    FetchBinarySize,
    FetchBody,
    FetchItem,
    Section,
)
from cyrusmail.imap.dates import date_time_wire
from cyrusmail.imap.flags import flags_wire
from cyrusmail.store.errors import NoSuchMessage
from cyrusmail.store.interfaces import IMailbox
from cyrusmail.store.records import MessageRecord

try:
    from cyrusmail import mime
except ImportError:  # merged on its own branch; the items that need no MIME still work
    mime = None

INLINE_LIMIT = 64 * 1024
"""Body data up to this size is read and sent inline; above it, a FileSlice."""

_UID = FetchAttribute("UID")
_FLAGS = FetchAttribute("FLAGS")
_SEEN_ATTRIBUTES = frozenset({"RFC822", "RFC822.TEXT"})
_MIME_ATTRIBUTES = frozenset(
    {"ENVELOPE", "BODY", "BODYSTRUCTURE", "RFC822.HEADER", "RFC822.TEXT"}
)
_FILE_ATTRIBUTES = frozenset({"RFC822", "RFC822.TEXT"})
_FIELDS_TEXTS = frozenset({"HEADER.FIELDS", "HEADER.FIELDS.NOT"})
_PLAIN_ENCODINGS = frozenset({b"7bit", b"8bit", b"binary"})
_DECODED_ENCODINGS = frozenset({b"base64", b"quoted-printable"})
_ATOM = re.compile(rb'[^(){ \x00-\x1f\x7f%*"\\\]\x80-\xff]+')
_ENCODING_TOKEN = re.compile(rb"[^\s;()]+")


@dataclass(frozen=True)
class MessageView:
    """One message as the session sees it: its number, record and mailbox."""

    seq: int
    record: MessageRecord
    mailbox: IMailbox
    recent: bool
    cache: bytes | None = None  # the MIME cache when the caller fetched it in bulk


@dataclass(frozen=True)
class FileSlice:
    """Literal bytes ``[start, end)`` to stream from ``mailbox.open_file(uid)``.

    ``binary``: the literal is a ``~{n}`` literal8, sent as stored; any
    other is sent through :class:`NulFree`.
    """

    uid: int
    start: int
    end: int
    binary: bool = False

    @property
    def size(self) -> int:
        return self.end - self.start


NUL_STAND_IN = b"\x80"
"""What a NUL octet becomes in a (non-binary) literal: one octet, as in Dovecot."""


def without_nul(data: bytes) -> bytes:
    """``data`` with each NUL replaced by :data:`NUL_STAND_IN` (same length)."""
    return data.replace(b"\x00", NUL_STAND_IN) if b"\x00" in data else data


class NulFree:
    """A message file whose reads never return a NUL (see :func:`without_nul`)."""

    def __init__(self, source) -> None:
        self.source = source

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.source.seek(offset, whence)

    def read(self, size: int = -1) -> bytes:
        return without_nul(self.source.read(size))


class FetchError(Exception):
    """A FETCH the server refuses for this message: ``NO [code] text``.

    ``code`` is ``UNKNOWN-CTE`` for BINARY of an encoding it cannot undo,
    ``EXPUNGEISSUED`` when the message went away under the session.
    """

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class FetchPlan:
    """What one FETCH command asks of every message.

    :ivar items: the items in response order (UID first for UID FETCH).
    :ivar sets_seen: a non-PEEK body item is present, so the session sets
        ``\\Seen`` on each message before rendering it.
    :ivar needs_mime: some item reads the MIME cache.
    :ivar needs_file: some item reads the message file.
    """

    items: tuple[FetchItem, ...]
    sets_seen: bool
    needs_mime: bool
    needs_file: bool
    #: The attribute names, in order, when every item is a small value; else None.
    simple: tuple[str, ...] | None = None


def plan_fetch(items: tuple[FetchItem, ...], uid_command: bool) -> FetchPlan:
    """Look at the items once per command rather than once per message.

    An item asked for twice is answered once."""
    items = tuple(dict.fromkeys(items))
    if uid_command and _UID not in items:
        items = (_UID, *items)
    sets_seen = needs_mime = needs_file = False
    for item in items:
        if isinstance(item, FetchAttribute):
            sets_seen |= item.attribute in _SEEN_ATTRIBUTES
            needs_mime |= item.attribute in _MIME_ATTRIBUTES
            needs_file |= item.attribute in _FILE_ATTRIBUTES
        elif isinstance(item, FetchBody):
            section = item.section
            sets_seen |= not item.peek
            needs_mime |= section != Section()
            # The top-level header is in the MIME cache itself.
            needs_file |= not (
                section.part == ()
                and section.text is not None
                and section.text.startswith("HEADER")
            )
        elif isinstance(item, FetchBinary):
            sets_seen |= not item.peek
            needs_mime |= item.part != ()
            needs_file = True
        elif isinstance(item, FetchBinarySize):
            needs_mime |= item.part != ()
            needs_file |= item.part != ()
    simple = None
    if all(isinstance(item, FetchAttribute) and item.attribute in _SIMPLE for item in items):
        # Only small values (the mail-list FETCH): one line per message, no general builder.
        simple = tuple(item.attribute for item in items)
    return FetchPlan(items, sets_seen, needs_mime, needs_file, simple)


def load_info(mailbox: IMailbox, uid: int, data: Callable[[], bytes] | None = None,
              cache: bytes | None = None):
    """The ``MessageInfo`` of ``uid``: its MIME cache, or a parse of the file.

    The one place an old index without a cache (or a damaged cache) is
    handled: the message is parsed from ``data()`` when the caller already
    has, or will need, its bytes; else the file is mapped and parsed once.
    """
    if mime is None:
        raise RuntimeError("the MIME layer (cyrusmail.mime) is not installed")
    if cache is None:
        cache = mailbox.mime_cache(uid)
    if cache is not None:
        try:
            return mime.MessageInfo.from_bytes(cache)
        except (ValueError, struct.error):
            pass  # not a blob this version reads: parse the message again
    if data is not None:
        return mime.parse(data())
    with mailbox.open_file(uid) as source:
        if os.fstat(source.fileno()).st_size == 0:
            return mime.parse(b"")
        with mmap.mmap(source.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return mime.parse(mapped)


def render_fetch(
    plan: FetchPlan, view: MessageView, flags_changed: bool = False
) -> list[bytes | FileSlice]:
    """``* seq FETCH (...)`` CRLF for one message, as bytes and FileSlices.

    Each FileSlice follows a bytes piece ending in its literal's ``{n}``
    CRLF.  ``flags_changed`` (the session has just set ``\\Seen``) adds FLAGS
    when the client did not ask for it.  Raises :class:`FetchError`.
    """
    if plan.simple is not None and not (flags_changed and _FLAGS not in plan.items):
        return [_render_simple(plan.simple, view)]
    response = _Response(view)
    try:
        for item in plan.items:
            response.add(item)
        if flags_changed and _FLAGS not in plan.items:
            response.add(_FLAGS)
    except (NoSuchMessage, FileNotFoundError) as error:
        raise FetchError("the message has been expunged", "EXPUNGEISSUED") from error
    return response.finish()


def _info_of(view: MessageView):
    try:
        return load_info(view.mailbox, view.record.uid, cache=view.cache)
    except (NoSuchMessage, FileNotFoundError) as error:
        raise FetchError("the message has been expunged", "EXPUNGEISSUED") from error


#: The small FETCH attributes, answered on the fast path (the mail-list FETCH).
_SIMPLE = frozenset({"UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "MODSEQ", "ENVELOPE", "BODYSTRUCTURE", "BODY"})
_FROM_INFO = frozenset({"ENVELOPE", "BODYSTRUCTURE", "BODY"})


def _small_value(name: str, view: MessageView, info) -> bytes:
    """The value of a small FETCH attribute (one of :data:`_SIMPLE`); ``info()`` gives the MIME info."""
    record = view.record
    if name == "UID":
        return b"%d" % record.uid
    if name == "FLAGS":
        return flags_wire(record, view.recent)
    if name == "RFC822.SIZE":
        return b"%d" % record.size
    if name == "INTERNALDATE":
        return date_time_wire(record.internal_date)
    if name == "MODSEQ":
        return b"(%d)" % record.modseq
    # A NUL in a header is inside a literal of the cached value: made 0x80 here.
    if name == "ENVELOPE":
        return without_nul(info().envelope_wire())
    if name == "BODYSTRUCTURE":
        return without_nul(info().bodystructure_wire())
    return without_nul(info().body_wire())  # BODY


def _render_simple(attributes: tuple[str, ...], view: MessageView) -> bytes:
    """One message's response for small attributes only, without the general builder."""
    info = _info_of(view) if not _FROM_INFO.isdisjoint(attributes) else None
    parts = [name.encode("ascii") + b" " + _small_value(name, view, lambda: info) for name in attributes]
    return b"* %d FETCH (%s)\r\n" % (view.seq, b" ".join(parts))


class _Response:
    """The pieces of one message's FETCH response, built item by item."""

    def __init__(self, view: MessageView) -> None:
        self.view = view
        self.uid = view.record.uid
        self.pieces: list[bytes | FileSlice] = []
        self.pending = bytearray(b"* %d FETCH (" % view.seq)
        self.first = True
        self._info = None
        self._binary: dict[tuple[int, ...], tuple[int, int] | bytes | None] = {}

    # -- output ------------------------------------------------------------

    def _name(self, name: bytes) -> None:
        if not self.first:
            self.pending += b" "
        self.first = False
        self.pending += name + b" "

    def _value(self, name: bytes, value: bytes) -> None:
        self._name(name)
        self.pending += value

    def _data(self, name: bytes, data: bytes | None, binary: bool = False) -> None:
        """Literal data held in memory; ``""`` for none or empty."""
        self._name(name)
        if not data:
            self.pending += b'""'
        elif binary and b"\x00" in data:
            self.pending += b"~" + imapform.literal(data)
        else:
            self.pending += imapform.literal(without_nul(data))

    def _range(
        self, name: bytes, span: tuple[int, int] | None, binary: bool = False
    ) -> None:
        """Literal data that is a byte range of the file: inline or streamed."""
        if span is None or span[1] <= span[0]:
            self._data(name, None)
        elif span[1] - span[0] <= INLINE_LIMIT:
            self._data(name, self.view.mailbox.read(self.uid, span[0], span[1]), binary)
        else:
            self._name(name)
            self.pending += b"%s{%d}\r\n" % (b"~" if binary else b"", span[1] - span[0])
            self.pieces.append(bytes(self.pending))
            self.pending = bytearray()
            self.pieces.append(FileSlice(self.uid, span[0], span[1], binary))

    def finish(self) -> list[bytes | FileSlice]:
        self.pending += b")\r\n"
        self.pieces.append(bytes(self.pending))
        return self.pieces

    # -- the message -------------------------------------------------------

    @property
    def info(self):
        if self._info is None:
            self._info = load_info(self.view.mailbox, self.uid, cache=self.view.cache)
        return self._info

    def _section_span(self, part: tuple[int, ...], text: str) -> tuple[int, int] | None:
        if not part and not text:
            return (0, self.view.record.size)  # the whole message needs no cache
        return self.info.section_range(part, text)

    def _header(self, part: tuple[int, ...]) -> bytes | None:
        if not part:
            return self.info.header_bytes()
        span = self.info.section_range(part, "HEADER")
        return None if span is None else self.view.mailbox.read(self.uid, *span)

    # -- items -------------------------------------------------------------

    def add(self, item: FetchItem) -> None:
        if isinstance(item, FetchAttribute):
            self._attribute(item.attribute)
        elif isinstance(item, FetchBody):
            self._body(item)
        elif isinstance(item, FetchBinary):
            self._binary_item(item)
        elif isinstance(item, FetchBinarySize):
            self._binary_size(item)
        else:
            raise TypeError(f"not a fetch item: {item!r}")

    def _attribute(self, name: str) -> None:
        wire = name.encode("ascii")
        if name in _SIMPLE:
            self._value(wire, _small_value(name, self.view, lambda: self.info))
        elif name == "RFC822":
            self._range(wire, (0, self.view.record.size))
        elif name == "RFC822.HEADER":
            self._data(wire, self.info.header_bytes())
        elif name == "RFC822.TEXT":
            self._range(wire, self._section_span((), "TEXT"))
        else:
            raise ValueError(f"unknown fetch attribute {name}")

    def _body(self, item: FetchBody) -> None:
        section = item.section
        name = b"BODY[" + section_spec(section) + b"]"
        if item.partial is not None:
            name += b"<%d>" % item.partial[0]
        if section.text in _FIELDS_TEXTS:
            header = self._header(section.part)
            if header is not None:
                names = [field.encode("ascii", "replace") for field in section.fields]
                header = mime.header_fields(
                    header, names, section.text.endswith(".NOT")
                )
            self._data(name, _cut(header, item.partial))
        elif section.text == "HEADER" and not section.part:
            self._data(name, _cut(self.info.header_bytes(), item.partial))
        else:
            span = self._section_span(section.part, section.text or "")
            self._range(name, _clip(span, item.partial))

    def _decoded(self, part: tuple[int, ...]) -> tuple[int, int] | bytes | None:
        """BINARY[part]: a file range when nothing is encoded, else the decoded bytes."""
        if part in self._binary:
            return self._binary[part]
        if not part:
            found: tuple[int, int] | bytes | None = (0, self.view.record.size)
        else:
            found = span = self.info.section_range(part, "")
            if span is not None:
                encoding = self._encoding(part)
                if encoding in _DECODED_ENCODINGS:
                    raw = self.view.mailbox.read(self.uid, *span)
                    found = mime.text.decode_transfer(raw, encoding)
                elif encoding not in _PLAIN_ENCODINGS:
                    raise FetchError(
                        f"cannot decode Content-Transfer-Encoding {encoding.decode('ascii', 'replace')}",
                        "UNKNOWN-CTE",
                    )
        self._binary[part] = found
        return found

    def _encoding(self, part: tuple[int, ...]) -> bytes:
        span = self.info.section_range(part, "MIME")
        if span is None:
            return b"7bit"
        header = self.view.mailbox.read(self.uid, *span)
        value = mime.headers.first_field(header, b"content-transfer-encoding")
        if value is None:
            return b"7bit"
        token = _ENCODING_TOKEN.search(mime.headers.unfold(value))
        return token.group().lower() if token else b"7bit"

    def _binary_item(self, item: FetchBinary) -> None:
        name = b"BINARY[" + _dotted(item.part) + b"]"
        if item.partial is not None:
            name += b"<%d>" % item.partial[0]
        found = self._decoded(item.part)
        if isinstance(found, bytes):
            self._data(name, _cut(found, item.partial), binary=True)
        else:
            self._range(name, _clip(found, item.partial), binary=True)

    def _binary_size(self, item: FetchBinarySize) -> None:
        found = self._decoded(item.part)
        if found is None:
            size = 0
        elif isinstance(found, bytes):
            size = len(found)
        else:
            size = found[1] - found[0]
        self._value(b"BINARY.SIZE[" + _dotted(item.part) + b"]", b"%d" % size)


def _dotted(part: tuple[int, ...]) -> bytes:
    return ".".join(str(number) for number in part).encode("ascii")


def _field_name(name: str) -> bytes:
    wire = name.encode("utf-8")
    return wire if _ATOM.fullmatch(wire) else imapform.string(wire)


def section_spec(section: Section) -> bytes:
    """The inside of ``BODY[...]`` as the response echoes it."""
    spec = _dotted(section.part)
    if section.text:
        spec += (b"." if section.part else b"") + section.text.encode("ascii")
    if section.text in _FIELDS_TEXTS:
        spec += b" (" + b" ".join(_field_name(name) for name in section.fields) + b")"
    return spec


def _clip(
    span: tuple[int, int] | None, partial: tuple[int, int] | None
) -> tuple[int, int] | None:
    """``<origin.length>`` applied to a file range."""
    if span is None or partial is None:
        return span
    origin, length = partial
    start = min(span[0] + origin, span[1])
    return (start, min(start + length, span[1]))


def _cut(data: bytes | None, partial: tuple[int, int] | None) -> bytes | None:
    """``<origin.length>`` applied to bytes in memory."""
    if data is None or partial is None:
        return data
    origin, length = partial
    return data[origin : origin + length]
