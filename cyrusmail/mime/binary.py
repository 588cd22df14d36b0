"""Storing a message whose parts hold NUL octets, without losing a byte.

RFC 3516 4.3 lets a client APPEND binary content in a ``literal8``; the
server "MAY modify the CTE of the appended data", but must not lose data.
No other protocol (an IMAP literal, POP3, SMTP) may carry a NUL, so the
store keeps none: each leaf part whose body holds one is re-encoded as
base64, with its Content-Transfer-Encoding field replaced, as Dovecot does.
``FETCH BINARY`` of that part then gives back exactly the bytes appended.

A NUL anywhere else (a header, a multipart preamble or epilogue) or in a
part already declared base64 or quoted-printable cannot be kept so, and
:func:`encode_nul_parts` answers None: the APPEND is refused with
``NO [UNKNOWN-CTE]`` as RFC 3516 says for content the mailbox cannot store.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

from cyrusmail.mime.structure import LEAF, Part, scan

_IDENTITY = frozenset({b"7BIT", b"8BIT", b"BINARY"})
_LINE_OCTETS = 57 * 1024  # base64 of a multiple of 57 octets is whole 76-character lines


def _leaves(root: Part) -> list[Part]:
    found, stack = [], [root]
    while stack:
        part = stack.pop()
        if part.kind == LEAF:
            found.append(part)
        stack.extend(part.children)
    return sorted(found, key=lambda part: part.header_start)


def _header_with_base64(header: bytes) -> bytes:
    """``header`` (with its empty line) whose Content-Transfer-Encoding says base64."""
    newline = b"\r\n" if b"\r\n" in header else b"\n"
    lines = header.splitlines(keepends=True)
    blank = lines.pop() if lines and lines[-1] in (b"\r\n", b"\n") else newline
    kept: list[bytes] = []
    dropping = False
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        name = line.split(b":", 1)[0].strip().lower()
        dropping = name == b"content-transfer-encoding"
        if not dropping:
            kept.append(line)
    return b"".join(kept) + b"Content-Transfer-Encoding: base64" + newline + blank


def _base64_lines(body: bytes) -> Iterator[bytes]:
    for start in range(0, len(body), _LINE_OCTETS):
        yield base64.encodebytes(body[start:start + _LINE_OCTETS]).replace(b"\n", b"\r\n")


def encode_nul_parts(data: bytes) -> Iterator[bytes] | None:
    """The message with every leaf body holding a NUL re-encoded as base64, in
    pieces; ``data`` itself if it holds no NUL; None if a NUL cannot be kept."""
    if b"\x00" not in data:
        return iter((data,))
    converted = []
    for part in _leaves(scan(data)):
        if data.find(b"\x00", part.body_start, part.body_end) < 0:
            continue
        if part.encoding not in _IDENTITY:
            return None
        converted.append(part)
    covered = sum(data.count(b"\x00", part.body_start, part.body_end) for part in converted)
    if covered != data.count(b"\x00"):
        return None  # a NUL in a header, a preamble or an epilogue
    return _rewritten(data, converted)


def _rewritten(data: bytes, converted: list[Part]) -> Iterator[bytes]:
    position = 0
    for part in converted:
        yield data[position:part.header_start]
        yield _header_with_base64(data[part.header_start:part.body_start])
        yield from _base64_lines(data[part.body_start:part.body_end])
        position = part.body_end
    yield data[position:]
