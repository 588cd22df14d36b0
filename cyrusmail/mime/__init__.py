"""The MIME layer: each message is parsed once, at delivery, into a cache blob.

::

    from cyrusmail.mime import parse, MessageInfo, header_fields, body_text

    info = parse(data)                  # bytes, memoryview or mmap; never raises
    blob = info.to_bytes()              # store in the index's MIME-cache slot
    info = MessageInfo.from_bytes(blob) # cheap: slices, no parsing

    info.size                           # octets of the whole message
    info.envelope_wire()                # ENVELOPE, ready for the wire
    info.bodystructure_wire()           # BODYSTRUCTURE with extension data
    info.body_wire()                    # BODY (non-extensible)
    info.section_range((1, 2), "MIME")  # (start, end) of BODY[1.2.MIME] or None
    info.header_bytes()                 # BODY[HEADER] of the message, from the blob
    header_fields(info.header_bytes(), [b"From", b"Subject"], exclude=False)
    info.header("Received")             # unfolded raw values, for SEARCH HEADER
    info.search_headers()               # {"from": ..., "subject": ...} decoded
    info.sent_date()                    # datetime.date from Date:, or None
    body_text(data, info)               # decoded text of every text/* part

``section_range`` follows RFC 3501 6.4.5: part () is the message ("",
"HEADER", "TEXT"); part 1 of a single-part message is its body and its
``1.MIME`` is the message header (both Dovecot and Cyrus answer so);
``n.HEADER`` and ``n.TEXT`` exist only for message/rfc822 parts.
``<partial>`` fetches slice the range.  Modules:

* ``headers``: header block end, fields, HEADER.FIELDS filtering;
* ``params``: Content-Type / Content-Disposition values;
* ``addresses`` and ``envelope``: ENVELOPE;
* ``structure``: the byte-offset scanner building the part tree;
* ``bodystructure``: BODYSTRUCTURE / BODY wire form;
* ``info``: MessageInfo and its blob; ``text``: decoding for SEARCH.
"""

from __future__ import annotations

import mmap

from cyrusmail.mime.headers import header_fields, iter_fields
from cyrusmail.mime.info import MessageInfo, build_blob, fallback_blob
from cyrusmail.mime.params import param, parse_content_type
from cyrusmail.mime.text import decode_bytes, decode_transfer

__all__ = ["MessageInfo", "body_text", "header_fields", "parse"]


def _as_bytes(data: bytes | memoryview | mmap.mmap | bytearray) -> bytes:
    return data if isinstance(data, bytes) else bytes(data)


def parse(data: bytes | memoryview | mmap.mmap | bytearray) -> MessageInfo:
    """The cached parse of a stored message.  Never raises on any input."""
    message = _as_bytes(data)
    try:
        blob = build_blob(message)
    except Exception:  # noqa: BLE001 - a message we cannot read must still be stored
        blob = fallback_blob(message)
    return MessageInfo(blob)


def body_text(data: bytes | memoryview | mmap.mmap | bytearray, info: MessageInfo) -> str:
    """The decoded text of every text/* part, joined by newlines, for SEARCH BODY/TEXT."""
    message = _as_bytes(data)
    texts: list[str] = []
    for header_start, body_start, body_end in info.text_parts():
        charset: bytes | None = None
        encoding = b"7bit"
        for name, value in iter_fields(message[header_start:body_start]):
            if name == b"content-type" and charset is None:
                parsed = parse_content_type(value.replace(b"\r\n", b"").replace(b"\n", b""))
                if parsed is not None:
                    charset = param(parsed[2], b"CHARSET") or b""
            elif name == b"content-transfer-encoding":
                encoding = value
        raw = decode_transfer(message[body_start:body_end], encoding)
        texts.append(decode_bytes(raw, charset))
    return "\n".join(texts)
