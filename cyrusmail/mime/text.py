"""Turning header and body bytes into Unicode text for SEARCH.

RFC 2047 encoded words are decoded, transfer encodings (RFC 2045
quoted-printable and base64) are undone and charsets converted; anything
unknown or broken falls back to latin-1, which cannot fail, so SEARCH never
errors on a message.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import quopri
import re

from cyrusmail.mime import transfer

_ENCODED_WORD = re.compile(rb"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(rb"(\?=)[ \t\r\n]+(?==\?)")


def decode_bytes(raw: bytes, charset: str | bytes | None, cut: bool = False) -> str:
    """``raw`` in ``charset``; unknown charsets read as latin-1, bad bytes replaced.

    ``cut``: ``raw`` is the start of a longer text, so a character cut short
    at its end is left out rather than read as a bad byte.
    """
    if isinstance(charset, bytes):
        charset = charset.decode("ascii", "replace")
    name = (charset or "us-ascii").strip().strip('"').lower()
    if name in ("us-ascii", "ascii", ""):
        name = "utf-8"  # 8-bit text labelled us-ascii is nearly always UTF-8
    try:
        codecs.lookup(name)
    except LookupError:
        name = "latin-1"
    try:
        return codecs.getincrementaldecoder(name)().decode(raw, final=not cut)
    except UnicodeDecodeError:
        if name == "utf-8":
            return raw.decode("latin-1")
        return codecs.getincrementaldecoder(name)("replace").decode(raw, final=not cut)
    except Exception:  # noqa: BLE001 - some codecs raise other errors on odd input
        return raw.decode("latin-1")


def _raw_header_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")  # RFC 6532 headers
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _decode_word(match: re.Match[bytes]) -> str:
    charset = match.group(1).split(b"*")[0]  # RFC 2231 language suffix
    encoding = match.group(2).upper()
    payload = match.group(3)
    try:
        if encoding == b"B":
            raw = base64.b64decode(payload + b"=" * (-len(payload) % 4))
        else:
            raw = quopri.decodestring(payload.replace(b"_", b" "), header=True)
    except (binascii.Error, ValueError):
        return _raw_header_text(match.group(0))
    return decode_bytes(raw, charset)


def decode_header_value(raw: bytes) -> str:
    """An unfolded header value with its encoded words decoded."""
    raw = _BETWEEN_WORDS.sub(rb"\1", raw)
    out: list[str] = []
    pos = 0
    for match in _ENCODED_WORD.finditer(raw):
        out.append(_raw_header_text(raw[pos:match.start()]))
        out.append(_decode_word(match))
        pos = match.end()
    out.append(_raw_header_text(raw[pos:]))
    return "".join(out)


def decode_transfer(raw: bytes, encoding: bytes) -> bytes:
    """Undo a Content-Transfer-Encoding; unknown encodings pass through."""
    return transfer.decode(raw, encoding)
