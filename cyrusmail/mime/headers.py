"""Finding and reading an RFC 5322 header block inside stored message bytes.

Everything here works on byte offsets and never rewrites a header: the
header's end is where the first empty line is, fields are named by what
precedes their colon, and values are returned as on the wire (folded) or
unfolded by removing CR and LF only, as RFC 5322 section 2.2.3 says.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

# A field starts at the beginning of a line with a name (no white space, no
# colon) then optional obsolete white space and a colon (RFC 5322 4.5.3).  Its
# value runs over the continuation lines that begin with SP or HTAB.  Lines
# that are neither a field nor a continuation are ignored, as is text after a
# header's last line ending.
_FIELD = re.compile(
    rb"^([^\s:][^:\r\n]*?)[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)", re.MULTILINE
)


def header_end(data: bytes, start: int, end: int, limit: int | None = None) -> int:
    """Offset just past the empty line ending the header that starts at ``start``.

    The empty line belongs to the header (IMAP's ``BODY[HEADER]`` includes it).
    A part that begins with an empty line has a header of just that line; a part
    with no empty line at all is all header and has an empty body.

    ``limit`` (at most ``end + 2``) lets the header claim the line ending that
    follows ``end``: in a multipart, ``...\r\n\r\n--boundary`` after header
    lines is read as the header's empty line then the delimiter, as both
    Dovecot and Cyrus do, so such a part has a complete header and an empty
    body (and is 2 octets longer than the span before the delimiter).
    """
    if start >= end:
        return end
    if data.startswith(b"\r\n", start) and start + 2 <= end:
        return start + 2
    if data[start:start + 1] == b"\n":
        return start + 1
    crlf = data.find(b"\n\r\n", start, end)
    bare_limit = end if crlf < 0 else crlf + 1
    bare = data.find(b"\n\n", start, bare_limit)
    if bare >= 0:
        return bare + 2
    if crlf >= 0:
        return crlf + 3
    if limit is not None and limit > end and data[end - 1] == 0x0A:
        if data.startswith(b"\r\n", end) and end + 2 <= limit:
            return end + 2
        if data[end:end + 1] == b"\n":
            return end + 1
    return end


def iter_fields(header: bytes) -> Iterator[tuple[bytes, bytes]]:
    """``(lower-case name, raw folded value)`` for each field, in order.

    The raw value is everything after the colon up to, not including, the
    line ending of the field's last line.
    """
    for match in _FIELD.finditer(header):
        value = match.group(2)
        if value.endswith(b"\r"):
            value = value[:-1]
        yield match.group(1).lower(), value


def unfold(value: bytes) -> bytes:
    """Remove the CR and LF of folding, leaving the white space that followed."""
    if b"\n" in value or b"\r" in value:
        return value.replace(b"\r\n", b"").replace(b"\n", b"").replace(b"\r", b"")
    return value


def fields_by_name(header: bytes, wanted: Iterable[bytes]) -> dict[bytes, list[bytes]]:
    """Raw values of the wanted (lower-case) field names, in header order."""
    wanted_set = frozenset(wanted)
    found: dict[bytes, list[bytes]] = {}
    for name, value in iter_fields(header):
        if name in wanted_set:
            found.setdefault(name, []).append(value)
    return found


def first_field(header: bytes, name: bytes) -> bytes | None:
    """The raw value of the first field called ``name`` (lower-case), or None."""
    for field_name, value in iter_fields(header):
        if field_name == name:
            return value
    return None


def header_fields(header_bytes: bytes, names: list[bytes], exclude: bool) -> bytes:
    """The answer to ``BODY[HEADER.FIELDS (names)]`` or ``HEADER.FIELDS.NOT``.

    ``header_bytes`` is a header as returned by ``BODY[HEADER]``.  Whole
    fields (with their folding and line endings) are kept or dropped by a
    case-insensitive name match, and an empty line is appended, as Dovecot
    and Cyrus do, so the result is itself a header block.  Lines that belong
    to no field are dropped in both modes.
    """
    wanted = frozenset(name.strip().lower() for name in names)
    kept: list[bytes] = []
    body_of_header = _strip_terminator(header_bytes)
    for match in _FIELD.finditer(body_of_header):
        selected = match.group(1).lower() in wanted
        if selected != exclude:
            line_end = _line_end_after(body_of_header, match.end())
            kept.append(body_of_header[match.start():line_end])
    eol = b"\n" if b"\r\n" not in header_bytes and b"\n" in header_bytes else b"\r\n"
    for index, field in enumerate(kept):
        if not field.endswith(b"\n"):
            kept[index] = field + eol
    return b"".join(kept) + eol


def _strip_terminator(header: bytes) -> bytes:
    """The header without its final empty line."""
    if header.endswith(b"\r\n\r\n"):
        return header[:-2]
    if header.endswith(b"\n\n"):
        return header[:-1]
    if header in (b"\r\n", b"\n"):
        return b""
    return header


def _line_end_after(data: bytes, position: int) -> int:
    """Offset just past the line ending at or after ``position``."""
    newline = data.find(b"\n", position)
    return len(data) if newline < 0 else newline + 1
