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
  base64 and quoted-printable (:mod:`cyrusmail.mime.transfer`), 7bit, 8bit
  and binary need nothing, any other encoding is ``NO [UNKNOWN-CTE]``
  (RFC 3516); a multipart or message/rfc822 part is sent as stored, as
  Dovecot does.  Decoded data holding a NUL goes as ``~{n}`` (RFC 3516
  ``literal8``), other data as an ordinary literal (RFC 3516 4.4: 8bit
  data without NUL SHOULD be a string);
* a part larger than :data:`INLINE_LIMIT` is never decoded in memory: its
  decoded size and whether it holds a NUL are found by one decoding pass
  in chunks (remembered per message and part, :data:`BINARY_FACTS_LIMIT`
  of them, so ``BINARY.SIZE`` then ``BINARY`` decode it once more, not
  twice), and the decoded bytes are streamed, chunk by chunk, as the
  client reads them (:class:`DecodedSlice`);
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
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

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
from cyrusmail.mime import transfer
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
    preview: str | None = None  # the RFC 8970 preview, fetched in bulk when PREVIEW is asked


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


@dataclass(frozen=True)
class DecodedSlice:
    """Bytes ``[origin, origin + size)`` of the decoding of file range
    ``[start, end)`` (in Content-Transfer-Encoding ``encoding``), decoded
    chunk by chunk as they are sent (:func:`stream_decoded`)."""

    uid: int
    start: int
    end: int
    encoding: bytes
    origin: int
    size: int


DECODE_CHUNK = 64 * 1024
"""Encoded bytes read at a time when decoding a part for BINARY."""


def _decoded_chunks(source, start: int, end: int, encoding: bytes) -> Iterator[bytes]:
    """The decoding of ``[start, end)`` of the open file ``source``, in chunks."""
    decoder = transfer.decoder_for(encoding)
    assert decoder is not None
    position = start
    while position < end:
        source.seek(position)
        raw = source.read(min(DECODE_CHUNK, end - position))
        if not raw:
            break
        position += len(raw)
        out = decoder.feed(raw)
        if out:
            yield out
    out = decoder.finish()
    if out:
        yield out


def stream_decoded(source, piece: DecodedSlice) -> Iterator[bytes]:
    """The bytes of ``piece``, exactly ``piece.size`` of them."""
    skip, left = piece.origin, piece.size
    for out in _decoded_chunks(source, piece.start, piece.end, piece.encoding):
        if skip:
            dropped = min(skip, len(out))
            out = out[dropped:]
            skip -= dropped
        out = out[:left]
        left -= len(out)
        if out:
            yield out
        if not left:
            return
    if left:  # the file changed under us (it never should): keep the promised length
        yield b" " * left


class _BinaryFacts(NamedTuple):
    size: int
    has_nul: bool


BINARY_FACTS_LIMIT = 10_000
"""How many (message, part) decoded sizes are remembered, least recently used first out."""

_binary_facts: OrderedDict[tuple[str, tuple[int, ...]], _BinaryFacts] = OrderedDict()


def _measure(mailbox: IMailbox, record: MessageRecord, part: tuple[int, ...],
             span: tuple[int, int], encoding: bytes) -> _BinaryFacts:
    """Decoded size of a big part and whether it holds a NUL, decoded once and remembered
    (a message file never changes, and its guid is never reused)."""
    key = (record.guid, part)
    facts = _binary_facts.get(key)
    if facts is not None:
        _binary_facts.move_to_end(key)
        return facts
    size, has_nul = 0, False
    with mailbox.open_file(record.uid) as source:
        for out in _decoded_chunks(source, span[0], span[1], encoding):
            size += len(out)
            has_nul = has_nul or b"\x00" in out
    facts = _binary_facts[key] = _BinaryFacts(size, has_nul)
    while len(_binary_facts) > BINARY_FACTS_LIMIT:
        _binary_facts.popitem(last=False)
    return facts


@dataclass(frozen=True)
class _BigPart:
    """A BINARY part too big to decode in memory: where it is and what decoding gives."""

    span: tuple[int, int]
    encoding: bytes
    facts: _BinaryFacts


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
    :ivar needs_preview: PREVIEW is asked: the caller fetches previews in bulk.
    """

    items: tuple[FetchItem, ...]
    sets_seen: bool
    needs_mime: bool
    needs_file: bool
    #: The attribute names, in order, when every item is a small value; else None.
    simple: tuple[str, ...] | None = None
    needs_preview: bool = False


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
    return FetchPlan(items, sets_seen, needs_mime, needs_file, simple,
                     needs_preview=FetchAttribute("PREVIEW") in items)


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


def body_source(view: MessageView, section: Section,
                partial: tuple[int, int] | None = None) -> bytes | tuple[int, int] | None:
    """The data ``BODY.PEEK[section]<partial>`` of ``view`` sends (as bytes, a range
    of the file, or None for ``""``), for CATENATE's URLs; NUL octets not yet replaced."""
    try:
        return _Response(view).body_source(section, partial)
    except (NoSuchMessage, FileNotFoundError) as error:
        raise FetchError("the message has been expunged", "EXPUNGEISSUED") from error


def _info_of(view: MessageView):
    try:
        return load_info(view.mailbox, view.record.uid, cache=view.cache)
    except (NoSuchMessage, FileNotFoundError) as error:
        raise FetchError("the message has been expunged", "EXPUNGEISSUED") from error


#: The small FETCH attributes, answered on the fast path (the mail-list FETCH).
_SIMPLE = frozenset({"UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "MODSEQ", "ENVELOPE", "BODYSTRUCTURE", "BODY",
                     "SAVEDATE", "EMAILID", "THREADID", "PREVIEW"})
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
    if name == "SAVEDATE":  # RFC 8514: NIL only where the mailbox keeps no save dates
        return b"NIL" if record.save_date is None else date_time_wire(record.save_date)
    if name == "EMAILID":
        return b"(%s)" % email_id(record).encode("ascii")
    if name == "THREADID":
        return b"NIL"  # no thread ids are kept: RFC 8474 5.2 says NIL then
    if name == "PREVIEW":
        return imapform.nstring(view.preview)
    # A NUL in a header is inside a literal of the cached value: made 0x80 here.
    if name == "ENVELOPE":
        return without_nul(info().envelope_wire())
    if name == "BODYSTRUCTURE":
        return without_nul(info().bodystructure_wire())
    return without_nul(info().body_wire())  # BODY


def email_id(record: MessageRecord) -> str:
    """The RFC 8474 EMAILID of a message: ``M`` and its content's id, which copies share."""
    return "M" + (record.email_id or record.guid)


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
        self._binary: dict[tuple[int, ...], bytes | _BigPart | None] = {}

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

    def _range(self, name: bytes, span: tuple[int, int] | None) -> None:
        """Literal data that is a byte range of the file: inline or streamed."""
        if span is None or span[1] <= span[0]:
            self._data(name, None)
        elif span[1] - span[0] <= INLINE_LIMIT:
            self._data(name, self.view.mailbox.read(self.uid, span[0], span[1]))
        else:
            self._literal_piece(name, FileSlice(self.uid, span[0], span[1]))

    def _literal_piece(self, name: bytes, piece: FileSlice | DecodedSlice, binary: bool = False) -> None:
        """A literal whose bytes are streamed: ``{n}`` (``~{n}``) now, the bytes from ``piece``."""
        self._name(name)
        self.pending += b"%s{%d}\r\n" % (b"~" if binary else b"", piece.size)
        self.pieces.append(bytes(self.pending))
        self.pending = bytearray()
        self.pieces.append(piece)

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
        name = b"BODY[" + section_spec(item.section) + b"]"
        if item.partial is not None:
            name += b"<%d>" % item.partial[0]
        source = self.body_source(item.section, item.partial)
        if isinstance(source, tuple):
            self._range(name, source)
        else:
            self._data(name, source)

    def body_source(self, section: Section, partial: tuple[int, int] | None) -> bytes | tuple[int, int] | None:
        """What ``BODY[section]<partial>`` sends: bytes, a file range, or None (``""``)."""
        if section.text in _FIELDS_TEXTS:
            header = self._header(section.part)
            if header is not None:
                names = [field.encode("ascii", "replace") for field in section.fields]
                header = mime.header_fields(
                    header, names, section.text.endswith(".NOT")
                )
            return _cut(header, partial)
        if section.text == "HEADER" and not section.part:
            return _cut(self.info.header_bytes(), partial)
        return _clip(self._section_span(section.part, section.text or ""), partial)

    def _decoded(self, part: tuple[int, ...]) -> bytes | _BigPart | None:
        """BINARY[part]: the decoded bytes, or a :class:`_BigPart` to stream."""
        if part in self._binary:
            return self._binary[part]
        if not part:
            span: tuple[int, int] | None = (0, self.view.record.size)
            encoding = b"binary"
        else:
            span = self.info.section_range(part, "")
            encoding = self._encoding(part) if span is not None else b"7bit"
        if transfer.decoder_for(encoding) is None:
            raise FetchError(
                f"cannot decode Content-Transfer-Encoding {encoding.decode('ascii', 'replace')}",
                "UNKNOWN-CTE",
            )
        found: bytes | _BigPart | None = None
        if span is not None and span[1] > span[0]:
            if span[1] - span[0] <= INLINE_LIMIT:
                found = transfer.decode(self.view.mailbox.read(self.uid, *span), encoding)
            else:
                facts = _measure(self.view.mailbox, self.view.record, part, span, encoding)
                found = _BigPart(span, encoding, facts)
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
        if not isinstance(found, _BigPart):
            self._data(name, _cut(found, item.partial), binary=True)
            return
        origin, length = item.partial or (0, found.facts.size)
        origin = min(origin, found.facts.size)
        length = min(length, found.facts.size - origin)
        if length <= INLINE_LIMIT and found.encoding in transfer.IDENTITY:
            start = found.span[0] + origin
            self._data(name, self.view.mailbox.read(self.uid, start, start + length), binary=True)
            return
        if not length:
            self._data(name, None)
            return
        has_nul = found.facts.has_nul
        if found.encoding in transfer.IDENTITY:
            start = found.span[0] + origin
            self._literal_piece(name, FileSlice(self.uid, start, start + length, has_nul), has_nul)
        else:
            piece = DecodedSlice(self.uid, *found.span, found.encoding, origin, length)
            self._literal_piece(name, piece, has_nul)

    def _binary_size(self, item: FetchBinarySize) -> None:
        found = self._decoded(item.part)
        if isinstance(found, _BigPart):
            size = found.facts.size
        else:
            size = len(found) if found else 0
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
