"""PREVIEW (RFC 8970): the start of a message's text, as a client's message list shows it.

The text is that of the first text/plain or text/html part that is not an
attachment, transfer encoding and charset undone, HTML reduced to the text
a reader sees (no head, script or style; entities decoded), control
characters dropped and white space collapsed to single spaces, at most
:data:`PREVIEW_LENGTH` characters.  A message with no such part has the
empty preview.  Only the first :data:`RAW_LIMIT` octets of the part are
read, so a huge message costs no more than a small one.

It is made once, at delivery, next to the MIME cache (see
:meth:`cyrusmail.store.maildir.store.MaildirMailbox.previews`).
"""

from __future__ import annotations

import binascii
import codecs
import mmap
import re
import struct
from html.parser import HTMLParser

from cyrusmail.mime.headers import iter_fields
from cyrusmail.mime.info import MessageInfo
from cyrusmail.mime.params import param, parse_content_type
from cyrusmail.mime.text import decode_bytes

PREVIEW_LENGTH = 256
"""Characters at most (RFC 8970 section 3: no more than 256)."""

RAW_LIMIT = 64 * 1024
"""Octets of the chosen part read at most."""

_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufeff]")
_BASE64_JUNK = re.compile(rb"[^A-Za-z0-9+/=]")
_HIDDEN = frozenset({"head", "title", "script", "style", "template", "noscript"})


def preview(data: bytes | mmap.mmap, info: MessageInfo) -> str:
    """The preview of the message ``data`` (its bytes or a map of its file) parsed as ``info``."""
    for header_start, body_start, body_end in info.text_parts():
        header = bytes(data[header_start:body_start])
        subtype, charset, encoding, attachment = _describe(header)
        if attachment or subtype not in (b"PLAIN", b"HTML"):
            continue
        end = min(body_end, body_start + RAW_LIMIT)
        text = _decode(bytes(data[body_start:end]), encoding, charset)
        if subtype == b"HTML":
            text = _html_text(text)
        return _squeeze(text)
    return ""


def preview_from_cache(data: bytes | mmap.mmap, cache: bytes) -> str | None:
    """:func:`preview` with the MIME cache blob; None if the blob is not one this version reads."""
    try:
        info = MessageInfo.from_bytes(cache)
    except (ValueError, struct.error):
        return None
    return preview(data, info)


def _describe(header: bytes) -> tuple[bytes, bytes | None, bytes, bool]:
    """(subtype, charset, transfer encoding, is an attachment) from a part's header."""
    subtype, charset, encoding, attachment = b"PLAIN", None, b"7bit", False
    for name, value in iter_fields(header):
        value = value.replace(b"\r\n", b"").replace(b"\n", b"")
        if name == b"content-type":
            parsed = parse_content_type(value)
            if parsed is not None:
                subtype = parsed[1].upper()
                charset = param(parsed[2], b"CHARSET")
        elif name == b"content-transfer-encoding":
            encoding = value.strip().lower()
        elif name == b"content-disposition":
            attachment = value.strip().lower().startswith(b"attachment")
    return subtype, charset, encoding, attachment


def _decode(raw: bytes, encoding: bytes, charset: bytes | None) -> str:
    """The text of a (possibly cut) part body: a cut never garbles what comes before it."""
    if encoding == b"base64":
        raw = _base64(raw)
    elif encoding == b"quoted-printable":
        raw = codecs.decode(raw[:raw.rfind(b"=")] if b"=" in raw[-2:] else raw, "quopri")
    return decode_bytes(raw, charset, cut=True)


def _base64(raw: bytes) -> bytes:
    """Base64 up to the last whole quantum (a cut part ends mid-quantum)."""
    clean = _BASE64_JUNK.sub(b"", raw)
    try:
        return binascii.a2b_base64(clean[:len(clean) - len(clean) % 4])
    except binascii.Error:  # padding in the middle: read the characters without it
        clean = clean.replace(b"=", b"")
        return binascii.a2b_base64(clean[:len(clean) - len(clean) % 4] or b"")


class _TextOfHTML(HTMLParser):
    """The text a reader sees: tags are spaces, hidden elements are dropped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pieces: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag == "body":
            self.hidden = 0  # a head left open ends here
        elif tag in _HIDDEN:
            self.hidden += 1
        self.pieces.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN and self.hidden:
            self.hidden -= 1
        self.pieces.append(" ")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.pieces.append(data)


def _html_text(html: str) -> str:
    parser = _TextOfHTML()
    parser.feed(html)
    parser.close()
    return "".join(parser.pieces)


def _squeeze(text: str) -> str:
    return " ".join(_CONTROLS.sub("", text).split())[:PREVIEW_LENGTH]
