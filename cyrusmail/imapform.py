"""How a string, an nstring and a list are written on the IMAP wire.

One place for the RFC 3501 section 4.3 rule, used by the MIME cache's
ENVELOPE/BODYSTRUCTURE serialiser and by every IMAP response.
"""

from __future__ import annotations

from collections.abc import Iterable

# Quoted strings may hold any 7-bit character but CR, LF and NUL; longer
# strings go as literals so that a client's line buffer is never stressed.
_QUOTED_LIMIT = 1024
_UNQUOTABLE = frozenset(b"\r\n\x00") | frozenset(range(0x80, 0x100))


def literal(value: bytes) -> bytes:
    """A synchronizing literal: ``{n}`` CRLF and the bytes."""
    return b"{%d}\r\n" % len(value) + value


def string(value: bytes | str) -> bytes:
    """``value`` as an IMAP string: quoted when it may be, else a literal."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    if len(value) > _QUOTED_LIMIT or not _UNQUOTABLE.isdisjoint(value):
        return literal(value)
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def utf8_string(value: str) -> bytes:
    """``value`` as an RFC 6855 string, for a session that enabled UTF8=ACCEPT:
    UTF-8 may be quoted."""
    data = value.encode("utf-8")
    if len(data) > _QUOTED_LIMIT or b"\r" in data or b"\n" in data or b"\x00" in data:
        return literal(data)
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def nstring(value: bytes | str | None) -> bytes:
    """``NIL`` for None, otherwise :func:`string`."""
    return b"NIL" if value is None else string(value)


def plist(items: Iterable[bytes]) -> bytes:
    """A parenthesised list of already-serialised items."""
    return b"(" + b" ".join(items) + b")"
