"""One pass over message bytes that finds every MIME part and its byte ranges.

:func:`scan` returns a tree of :class:`Part`: for each entity the offsets
of its header, its body and what its Content-* fields say, and for
message/rfc822 parts the encapsulated message as a child.  No byte is
copied but headers.  The work is linear in the message size times the
nesting depth, which is capped at :data:`MAX_DEPTH`; deeper multipart and
message/rfc822 entities are reported as opaque application/octet-stream
leaves.

Multipart bodies follow RFC 2046 5.1.1 strictly: a delimiter line is
``--boundary`` (or ``--boundary--`` to close) alone on its line but for
trailing blanks, at the start of a line; the line ending before it belongs
to the delimiter.  A multipart without delimiters (or without a boundary)
gets one empty text/plain part, as both Dovecot and Cyrus answer for
``error_emails__missing_body``; a multipart that is never closed ends with
its enclosing entity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cyrusmail.mime.envelope import ENVELOPE_FIELDS, envelope_wire
from cyrusmail.mime.headers import header_end, iter_fields, unfold
from cyrusmail.mime.params import (
    Params,
    param,
    parse_content_type,
    parse_disposition,
    transfer_encoding_token,
)

MAX_DEPTH = 100

LEAF = 0
MULTIPART = 1
MESSAGE = 2

_CONTENT_FIELDS = (
    b"content-type", b"content-transfer-encoding", b"content-id",
    b"content-description", b"content-md5", b"content-disposition",
    b"content-language", b"content-location",
)
_PART_FIELDS = frozenset(_CONTENT_FIELDS)
_MESSAGE_FIELDS = frozenset(_CONTENT_FIELDS + ENVELOPE_FIELDS)

DEFAULT_TEXT: tuple[bytes, bytes, Params] = (b"TEXT", b"PLAIN", [(b"CHARSET", b"us-ascii")])
DEFAULT_DIGEST: tuple[bytes, bytes, Params] = (b"MESSAGE", b"RFC822", [])


@dataclass(slots=True)
class Part:
    """One MIME entity: where it lies and what its header says about it."""

    header_start: int
    body_start: int
    body_end: int
    kind: int
    media_type: bytes
    subtype: bytes
    params: Params
    content_id: bytes | None = None
    description: bytes | None = None
    encoding: bytes = b"7BIT"
    md5: bytes | None = None
    disposition: tuple[bytes, Params] | None = None
    language: list[bytes] | None = None
    location: bytes | None = None
    lines: int = 0
    envelope: bytes | None = None          # set on message entities
    children: list[Part] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.body_end - self.body_start


def _first(fields: dict[bytes, list[bytes]], name: bytes) -> bytes | None:
    values = fields.get(name)
    return unfold(values[0]).strip(b" \t") if values else None


def _collect(header: bytes, wanted: frozenset[bytes]) -> dict[bytes, list[bytes]]:
    found: dict[bytes, list[bytes]] = {}
    for name, value in iter_fields(header):
        if name in wanted:
            found.setdefault(name, []).append(value)
    return found


def _encoding(value: bytes | None) -> bytes:
    """The Content-Transfer-Encoding token, upper-cased.

    Absent, empty or not a single token (``quoted printable``, ``text/html``,
    ``quoted-printable;``) means 7BIT, as both Dovecot and Cyrus answer.
    """
    if not value:
        return b"7BIT"
    return transfer_encoding_token(value) or b"7BIT"


def _language(value: bytes | None) -> list[bytes] | None:
    if value is None:
        return None
    tags = [tag.strip(b" \t") for tag in value.split(b",")]
    tags = [tag for tag in tags if tag]
    return tags or None


def _delimiters(data: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int, bool]]:
    """``(line_start, next_line_start, is_close)`` of each delimiter line, up to the close."""
    marker = b"--" + boundary
    marker_length = len(marker)
    found: list[tuple[int, int, bool]] = []
    pos = start
    while True:
        hit = data.find(marker, pos, end)
        if hit < 0:
            return found
        pos = hit + 1
        if hit != start and data[hit - 1] != 0x0A:
            continue
        after = hit + marker_length
        is_close = data.startswith(b"--", after) and after + 2 <= end
        if is_close:
            after += 2
        while after < end and data[after] in (0x20, 0x09):
            after += 1
        if after >= end:
            line_end = end
        elif data[after] == 0x0A:
            line_end = after + 1
        elif data[after] == 0x0D and (after + 1 == end or data[after + 1] == 0x0A):
            line_end = min(after + 2, end)
        else:
            continue
        # The line ending before the delimiter is part of it.
        if hit == start:
            line_start = hit
        elif hit - 2 >= start and data[hit - 2] == 0x0D:
            line_start = hit - 2
        else:
            line_start = hit - 1
        found.append((line_start, line_end, is_close))
        if is_close:
            return found
        pos = line_end


def scan(data: bytes, start: int = 0, end: int | None = None, *, is_message: bool = True,
         default: tuple[bytes, bytes, Params] = DEFAULT_TEXT, depth: int = 0,
         limit: int | None = None) -> Part:
    """The entity in ``data[start:end]`` and, recursively, all it holds.

    ``is_message`` makes it collect the ENVELOPE too (the top level and each
    message/rfc822 body); ``default`` is the content type when the header
    has none or an unusable one (RFC 2045 5.2; message/rfc822 in a digest).
    ``limit`` is how far a header without an empty line may reach (see
    :func:`header_end`); the part then ends there too.
    """
    if end is None:
        end = len(data)
    body_start = header_end(data, start, end, limit)
    end = max(end, body_start)
    header = data[start:body_start]
    fields = _collect(header, _MESSAGE_FIELDS if is_message else _PART_FIELDS)

    content_type = None
    raw_type = fields.get(b"content-type")
    if raw_type:
        content_type = parse_content_type(unfold(raw_type[0]))
    media_type, subtype, params = content_type or default

    raw_disposition = _first(fields, b"content-disposition")
    part = Part(
        header_start=start, body_start=body_start, body_end=end, kind=LEAF,
        media_type=media_type, subtype=subtype, params=params,
        content_id=_first(fields, b"content-id"),
        description=_first(fields, b"content-description"),
        encoding=_encoding(_first(fields, b"content-transfer-encoding")),
        md5=_first(fields, b"content-md5"),
        disposition=parse_disposition(raw_disposition) if raw_disposition else None,
        language=_language(_first(fields, b"content-language")),
        location=_first(fields, b"content-location"),
    )
    if is_message:
        part.envelope = envelope_wire(fields)

    if media_type == b"MULTIPART":
        if depth >= MAX_DEPTH:
            _make_opaque(part)
        else:
            part.kind = MULTIPART
            _scan_multipart(data, part, depth)
    elif media_type == b"MESSAGE" and subtype == b"RFC822":
        if depth >= MAX_DEPTH:
            _make_opaque(part)
        else:
            part.kind = MESSAGE
            inner = scan(data, body_start, end, depth=depth + 1, limit=limit)
            part.body_end = end = inner.body_end
            part.lines = data.count(b"\n", body_start, end)
            part.children.append(inner)
    elif media_type == b"TEXT":
        part.lines = data.count(b"\n", body_start, end)
    return part


def _make_opaque(part: Part) -> None:
    """Past the depth cap: the entity becomes a leaf the client may fetch whole."""
    part.media_type, part.subtype, part.params = b"APPLICATION", b"OCTET-STREAM", []


def _scan_multipart(data: bytes, part: Part, depth: int) -> None:
    boundary = param(part.params, b"BOUNDARY")
    child_default = DEFAULT_DIGEST if part.subtype == b"DIGEST" else DEFAULT_TEXT
    delimiters = _delimiters(data, part.body_start, part.body_end, boundary) if boundary else []
    for index, (_, content_start, is_close) in enumerate(delimiters):
        if is_close:
            break
        if index + 1 < len(delimiters):
            content_end = delimiters[index + 1][0]
            limit = delimiters[index + 1][1]
        else:
            content_end = limit = part.body_end
        # Back-to-back delimiter lines leave an empty part between them.
        content_end = max(content_end, content_start)
        limit = min(limit, content_end + 2)
        part.children.append(scan(data, content_start, content_end, is_message=False,
                                  default=child_default, depth=depth + 1, limit=limit))
    if not part.children:
        part.children.append(scan(data, part.body_end, part.body_end, is_message=False,
                                  default=child_default, depth=depth + 1))
