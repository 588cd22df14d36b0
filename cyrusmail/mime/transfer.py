"""Undoing a Content-Transfer-Encoding, in chunks of any size.

FETCH BINARY (RFC 3516) sends a part decoded, and a part may be a large
attachment: a decoder is fed the encoded bytes a chunk at a time and
returns the decoded bytes each chunk completes, holding back only what the
next chunk may change (under four base64 characters; the unfinished line
of quoted-printable, cut down to a few octets when it grows long), so
memory does not grow with the part.  SEARCH uses the same decoders on a
whole part (:func:`decode`).

* base64 (RFC 2045 6.8): characters outside the alphabet (line breaks,
  blanks, and also ``=``) are ignored; a final group of two or three
  characters gives one or two octets, a lone final character none;
* quoted-printable (RFC 2045 6.7): each encoded line's trailing blanks are
  removed; a line ending in ``=`` is a soft break; every other line break
  is a CRLF in the decoded data, as RFC 3516 wants for text; ``=XX`` (hex
  digits of either case) is that octet, any other ``=`` is kept as is;
* 7bit, 8bit, binary (and no Content-Transfer-Encoding at all): the bytes
  as they are.

:func:`decoder_for` answers None for any other encoding, which BINARY
refuses with ``NO [UNKNOWN-CTE]``.
"""

from __future__ import annotations

import binascii
import re

#: The identity encodings of RFC 2045.
IDENTITY = frozenset({b"7bit", b"8bit", b"binary"})

_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_BASE64 = bytes(byte for byte in range(256) if byte not in _BASE64_ALPHABET)
_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_LONG_LINE = 64 * 1024  # an unfinished quoted-printable line longer than this is decoded in part


def _unescape(match: re.Match[bytes]) -> bytes:
    return bytes((int(match.group(1), 16),))


class Base64Decoder:
    """Decodes base64 fed in chunks; ignores what is not in the alphabet."""

    def __init__(self) -> None:
        self._carry = b""

    def feed(self, chunk: bytes) -> bytes:
        letters = self._carry + chunk.translate(None, _NOT_BASE64)
        whole = len(letters) - len(letters) % 4
        self._carry = letters[whole:]
        return binascii.a2b_base64(letters[:whole]) if whole else b""

    def finish(self) -> bytes:
        carry, self._carry = self._carry, b""
        if len(carry) < 2:
            return b""
        return binascii.a2b_base64(carry + b"=" * (4 - len(carry)))


class QuotedPrintableDecoder:
    """Decodes quoted-printable fed in chunks, one encoded line at a time."""

    def __init__(self) -> None:
        self._carry = b""

    @staticmethod
    def _line(line: bytes, last: bool) -> bytes:
        """One encoded line (without its LF); ``last``: no line break followed it."""
        line = line.rstrip(b" \t\r")
        if line.endswith(b"="):
            return _ESCAPE.sub(_unescape, line[:-1])
        return _ESCAPE.sub(_unescape, line) + (b"" if last else b"\r\n")

    def feed(self, chunk: bytes) -> bytes:
        data = self._carry + chunk
        lines = data.split(b"\n")
        self._carry = lines.pop()
        out = b"".join(self._line(line, False) for line in lines)
        if len(self._carry) > _LONG_LINE:
            out += self._partial_line()
        return out

    def _partial_line(self) -> bytes:
        """Decode most of an unfinished long line: all but its trailing blanks
        and an escape that may be cut in two."""
        carry = self._carry
        cut = len(carry.rstrip(b" \t\r"))
        equals = carry.rfind(b"=", max(cut - 2, 0), cut)
        if equals >= 0:
            cut = equals
        self._carry = carry[cut:]
        return _ESCAPE.sub(_unescape, carry[:cut])

    def finish(self) -> bytes:
        carry, self._carry = self._carry, b""
        return self._line(carry, True) if carry else b""


class IdentityDecoder:
    """7bit, 8bit and binary: nothing to undo."""

    def feed(self, chunk: bytes) -> bytes:
        return chunk

    def finish(self) -> bytes:
        return b""


Decoder = Base64Decoder | QuotedPrintableDecoder | IdentityDecoder


def decoder_for(encoding: bytes) -> Decoder | None:
    """A fresh decoder for ``encoding`` (any case), None for one not known."""
    encoding = encoding.strip().lower()
    if encoding == b"base64":
        return Base64Decoder()
    if encoding == b"quoted-printable":
        return QuotedPrintableDecoder()
    if encoding in IDENTITY or not encoding:
        return IdentityDecoder()
    return None


def decode(raw: bytes, encoding: bytes) -> bytes:
    """``raw`` decoded whole; an unknown encoding passes it through."""
    decoder = decoder_for(encoding)
    if decoder is None:
        return raw
    return decoder.feed(raw) + decoder.finish()
