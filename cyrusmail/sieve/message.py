"""The message as a Sieve script sees it: its header (which editheader may change), addresses, body.

The header is read once from the staged message into a list of fields
(name as written, raw value with its folding), which ``addheader`` and
``deleteheader`` (RFC 5293) change in place; every later test reads the
changed list, and :meth:`SieveMessage.header_bytes` writes it back out.
Values reach tests unfolded with their encoded words decoded (RFC 2047);
the address test reads address lists with :mod:`cyrusmail.mime.addresses`.

The body (RFC 5173) is read only when a ``body`` test asks for it, at most
:data:`BODY_LIMIT` octets of the message, from the MIME cache the store
made when the message was staged.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from cyrusmail import mime
from cyrusmail.mime.addresses import MISSING_DOMAIN, parse_address_list
from cyrusmail.mime.headers import unfold
from cyrusmail.mime.params import param, parse_content_type
from cyrusmail.mime.text import decode_bytes, decode_header_value, decode_transfer

#: Octets of a message a body test reads; text past it is not searched.
BODY_LIMIT = 1024 * 1024
#: Header fields no script may add or delete (RFC 5293 section 7): the trace and loop guards.
PROTECTED_HEADERS = frozenset({"received", "return-path", "auto-submitted", "delivered-to"})
_FIELD_START = re.compile(rb"^([^\s:][^:\r\n]*?)[ \t]*:", re.MULTILINE)


@dataclass
class Field:
    name: str  # as written
    raw: bytes  # after the colon, folded as written, without the final line end

    @property
    def key(self) -> str:
        return self.name.lower()

    def text(self) -> str:
        return decode_header_value(unfold(self.raw).strip(b" \t"))


def split_header(header: bytes) -> list[Field]:
    """The fields of a header block (lines that are neither a field nor a continuation are dropped)."""
    fields: list[Field] = []
    for line in re.split(rb"\r?\n(?![ \t])", header):
        if not line.strip():
            continue
        match = _FIELD_START.match(line)
        if match is None:
            continue
        name = match.group(1).decode("utf-8", "replace")
        fields.append(Field(name, line[match.end():].rstrip(b"\r")))
    return fields


@dataclass(frozen=True)
class Address:
    localpart: str
    domain: str

    @property
    def all(self) -> str:
        return f"{self.localpart}@{self.domain}" if self.domain else self.localpart


def addresses_of(raw: bytes) -> list[Address]:
    """The addresses of an address-list field value (groups opened; names dropped)."""
    found = []
    for _name, _adl, mailbox, host in parse_address_list(unfold(raw)):
        if mailbox is None or (host is None and not mailbox):
            continue  # a group's start or end marker
        local = decode_header_value(mailbox)
        domain = "" if host in (None, MISSING_DOMAIN) else decode_header_value(host)
        found.append(Address(local, domain))
    return found


def split_address(address: str) -> Address:
    """An envelope address (``user@domain``, or "" for the null path) in two parts."""
    local, at, domain = address.rpartition("@")
    return Address(local, domain) if at else Address(address, "")


class SieveMessage:
    """One delivery's message: the staged file, its size, and a header scripts may edit."""

    def __init__(self, staged, header: bytes) -> None:
        self.staged = staged
        self.size: int = staged.size
        self.original_header_length = len(header)
        self.fields = split_header(header)
        self.edited = False
        self._body: dict[object, list[str]] = {}

    # -- header -------------------------------------------------------------------

    def values(self, name: str) -> list[str]:
        key = name.lower()
        return [field.text() for field in self.fields if field.key == key]

    def raw_values(self, name: str) -> list[bytes]:
        key = name.lower()
        return [field.raw for field in self.fields if field.key == key]

    def exists(self, name: str) -> bool:
        key = name.lower()
        return any(field.key == key for field in self.fields)

    def add(self, name: str, value: str, last: bool) -> None:
        """addheader: at the end, or at the top (below a leading Return-Path)."""
        field = Field(name, b" " + encode_value(value))
        if last:
            self.fields.append(field)
        else:
            at = 1 if self.fields and self.fields[0].key == "return-path" else 0
            self.fields.insert(at, field)
        self.edited = True

    def delete(self, name: str, index: int | None, last: bool, keep) -> int:
        """deleteheader: fields of ``name`` (only the ``index``-th, counted from the end with
        ``last``) for which ``keep(text)`` is False; how many went."""
        key = name.lower()
        positions = [at for at, field in enumerate(self.fields) if field.key == key]
        if index is not None:
            if index > len(positions):
                return 0
            positions = [positions[-index] if last else positions[index - 1]]
        doomed = [at for at in positions if not keep(self.fields[at].text())]
        for at in reversed(doomed):
            del self.fields[at]
        if doomed:
            self.edited = True
        return len(doomed)

    def header_bytes(self) -> bytes:
        return b"".join(field.name.encode("utf-8") + b":" + field.raw + b"\r\n" for field in self.fields) + b"\r\n"

    # -- body (RFC 5173) ------------------------------------------------------------------

    def body(self, transform: object) -> list[str]:
        """The texts a body test compares: ``:raw``, ``:text`` or ``(":content", types)``."""
        key = transform if not isinstance(transform, tuple) else (":content", *transform)
        if key not in self._body:
            self._body[key] = self._read_body(transform)
        return self._body[key]

    def _read_body(self, transform: object) -> list[str]:
        with open(self.staged.path, "rb") as source:
            data = source.read(self.original_header_length + BODY_LIMIT)
        if transform == ":raw":
            return [data[self.original_header_length:].decode("utf-8", "replace")]
        cache = self.staged.mime_cache()
        info = mime.MessageInfo(cache) if cache is not None else mime.parse(data)
        if transform == ":text":
            return [mime.body_text(data, info)]
        wanted = [item.lower() for item in transform]
        texts = []
        for header_start, body_start, body_end in info.leaf_parts():
            if body_start > len(data):
                break
            media = _content_type(data[header_start:body_start])
            if not any(_type_matches(media, item) for item in wanted):
                continue
            encoding, charset = _encoding_and_charset(data[header_start:body_start])
            raw = decode_transfer(data[body_start:min(body_end, len(data))], encoding)
            texts.append(decode_bytes(raw, charset) if media.startswith("text/") else raw.decode("latin-1"))
        return texts


def _content_type(header: bytes) -> str:
    for field in split_header(header):
        if field.key == "content-type":
            parsed = parse_content_type(unfold(field.raw).strip())
            if parsed is not None:
                return f"{parsed[0].decode('latin-1')}/{parsed[1].decode('latin-1')}".lower()
    return "text/plain"


def _encoding_and_charset(header: bytes) -> tuple[bytes, bytes | None]:
    encoding, charset = b"7bit", None
    for field in split_header(header):
        if field.key == "content-transfer-encoding":
            encoding = unfold(field.raw).strip()
        elif field.key == "content-type":
            parsed = parse_content_type(unfold(field.raw).strip())
            if parsed is not None:
                charset = param(parsed[2], b"CHARSET")
    return encoding, charset


def _type_matches(media: str, wanted: str) -> bool:
    """RFC 5173 section 5.2: "" is every part, "text" every text/*, "text/plain" just that."""
    if not wanted:
        return True
    return media == wanted if "/" in wanted else media.split("/", 1)[0] == wanted


def encode_value(value: str) -> bytes:
    """A header value as it may be written: CR and LF removed, non-ASCII as an RFC 2047 word."""
    value = value.replace("\r", "").replace("\n", " ")
    if value.isascii():
        return value.encode("ascii")
    return b"=?UTF-8?B?" + base64.b64encode(value.encode("utf-8")) + b"?="


_DOT_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\x80-\U0010FFFF]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\x80-\U0010FFFF]+)*"
_MAILBOX = re.compile(rf'(?:{_DOT_ATOM}|"(?:[^"\\\r\n]|\\.)*")@(?:{_DOT_ATOM}|\[[^\]\r\n]*\])')


def valid_address(text: str, with_name: bool = False) -> bool:
    """Whether ``text`` is ``local@domain`` (or, ``with_name``, ``Name <local@domain>``)."""
    text = text.strip()
    if with_name and text.endswith(">") and "<" in text:
        name, _, rest = text.rpartition("<")
        if any(char in name for char in "\r\n<>"):
            return False
        text = rest[:-1]
    return len(text) <= 320 and _MAILBOX.fullmatch(text) is not None
