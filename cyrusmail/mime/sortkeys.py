"""SORT and THREAD keys of a message (RFC 5256, RFC 5957), made once from its header.

:func:`sort_data` turns the top-level header kept in the MIME cache into a
:class:`~cyrusmail.store.records.SortData`, which the store keeps in the
index beside the message, so a SORT or THREAD never parses a header again:

* ``sent``: the Date: field as seconds since the epoch, UTC (its zone taken
  into account), or None when it is missing or unusable; the sort then uses
  the internal date (RFC 5256 2.2);
* ``subject``: the base subject (RFC 5256 2.1) put through
  :func:`collation_key`, and ``reply``: whether extracting it removed a
  ``Re:``/``Fwd:`` leader, a ``(fwd)`` trailer or a ``[fwd: ...]`` wrapper;
* ``from_``, ``to``, ``cc``: the addr-mailbox (local part, or group name) of
  the first address of those fields; ``display_from``, ``display_to``: its
  display name, RFC 2047 decoded, else its addr-spec (RFC 5957); all
  through :func:`collation_key`, "" when there is none;
* ``message_id`` and ``references``: the first valid msg-id of Message-ID,
  and those of References (else the first of In-Reply-To), without the
  angle brackets (RFC 5256 3, REFERENCES).

Strings compare under i;unicode-casemap (RFC 5051): :func:`collation_key`
maps each character to its titlecase and decomposes the result, so plain
comparison of the keys is the collation's ordering.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from email.utils import parsedate_tz

from cyrusmail.mime.addresses import MISSING_DOMAIN, Address, parse_address_list
from cyrusmail.mime.headers import iter_fields, unfold
from cyrusmail.mime.text import decode_header_value
from cyrusmail.store.records import SortData

_WANTED = frozenset({b"date", b"subject", b"from", b"to", b"cc", b"message-id",
                     b"references", b"in-reply-to"})

#: A References field names at most this many ids (the last ones are kept:
#: the parent is the last); a deeper chain only loses distant ancestors.
MAX_REFERENCES = 1000


def collation_key(text: str) -> str:
    """``text`` under i;unicode-casemap: each character titlecased, then decomposed (NFKD)."""
    if text.isascii():
        return text.upper()  # ASCII titlecase is uppercase and decomposes to itself
    return unicodedata.normalize("NFKD", "".join(char.title() for char in text))


# -- base subject (RFC 5256 2.1) -------------------------------------------------

_BLOB = r"\[[^\[\]]*\] *"
_LEADER = re.compile(rf"(?:{_BLOB})*(?:re|fwd?) *(?:{_BLOB})?:", re.IGNORECASE)
_BLOB_PREFIX = re.compile(_BLOB)
_SPACES = re.compile(r"[ \t\r\n]+")


def base_subject(raw: bytes) -> tuple[str, bool]:
    """The base subject of an (unfolded) Subject: value, and whether it marked a reply or forward.

    Steps (1) to (7) of RFC 5256 2.1, on the decoded text.
    """
    subject = _SPACES.sub(" ", decode_header_value(raw))  # (1)
    reply = False
    while True:
        while True:  # (2) subj-trailer: "(fwd)" or white space
            if subject.endswith(" "):
                subject = subject.rstrip(" ")
            elif subject[-5:].lower() == "(fwd)":
                subject = subject[:-5]
                reply = True
            else:
                break
        while True:  # (5): (3) and (4) until neither matches
            changed = False
            while True:  # (3) subj-leader: *subj-blob subj-refwd, or white space
                if subject.startswith(" "):
                    subject = subject.lstrip(" ")
                    changed = True
                    continue
                leader = _LEADER.match(subject)
                if leader is None:
                    break
                subject = subject[leader.end():]
                reply = changed = True
            blob = _BLOB_PREFIX.match(subject)  # (4) a subj-blob, when a subj-base follows
            if blob is not None and subject[blob.end():].strip(" "):
                subject = subject[blob.end():]
                changed = True
            if not changed:
                break
        # (6) subj-fwd-hdr ... subj-fwd-trl: take it off and start again at (2)
        if subject[:5].lower() == "[fwd:" and subject.endswith("]"):
            subject = subject[5:-1]
            reply = True
            continue
        return subject, reply  # (7)


# -- sent date (RFC 5256 2.2) ------------------------------------------------------


def sent_time(raw: bytes) -> float | None:
    """A Date: value as seconds since the epoch, UTC; None if it cannot be read."""
    try:
        parsed = parsedate_tz(raw.decode("latin-1"))
        if parsed is None:
            return None
        year, month, day, hour, minute, second = parsed[:6]
        if not (1 <= month <= 12 and 1 <= day <= 31 and 0 <= hour <= 23
                and 0 <= minute <= 59 and 0 <= second <= 60 and 1 <= year <= 9999):
            return None
        return float(calendar.timegm((year, month, day, hour, minute, second)) - (parsed[9] or 0))
    except (ValueError, TypeError, OverflowError, IndexError):
        return None


# -- addresses (RFC 5256 addr-mailbox, RFC 5957 display) ---------------------------


_NOT_PLAIN = re.compile(rb'["(:\\]')


def _text(raw: bytes | None) -> str:
    if not raw:
        return ""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _first_address(raw: bytes | None) -> Address | None:
    if raw is None:
        return None
    if not _NOT_PLAIN.search(raw):  # no quotes, comments or groups: the first comma ends it
        raw = raw.split(b",", 1)[0]
    addresses = parse_address_list(raw)
    return addresses[0] if addresses else None


def address_key(address: Address | None) -> str:
    """The addr-mailbox of an address (a group's name for a group), collated."""
    if address is None:
        return ""
    return collation_key(_text(address[2]))


def display_key(address: Address | None) -> str:
    """RFC 5957: the display name, RFC 2047 decoded, else the addr-spec, collated."""
    if address is None:
        return ""
    name, _, mailbox, host = address
    display = decode_header_value(name).strip() if name else ""
    if not display:
        display = _text(mailbox)
        if host and host != MISSING_DOMAIN:
            display += "@" + _text(host)
    return collation_key(display)


# -- message ids (RFC 5256 3, REFERENCES) ------------------------------------------

_MSG_ID = re.compile(rb"<([^<>]*)>")
_CFWS = re.compile(rb"\([^()]*\)|[ \t\r\n\"]")


def message_ids(raw: bytes | None) -> list[str]:
    """The valid msg-ids of a field, in order, without brackets, white space or quotes.

    A msg-id is valid when it holds one ``@`` with something on each side.
    """
    if not raw:
        return []
    found = []
    for match in _MSG_ID.finditer(raw):
        identifier = _CFWS.sub(b"", match.group(1))
        left, at, right = identifier.partition(b"@")
        if at and left and right and b"@" not in right:
            found.append(_text(identifier))
    return found


# -- all of it ----------------------------------------------------------------------


def sort_data(header: bytes) -> SortData:
    """The sort and thread keys of a message, from its top-level header."""
    fields: dict[bytes, bytes] = {}
    for name, value in iter_fields(header):
        if name in _WANTED and name not in fields:  # the first of each field counts
            fields[name] = unfold(value).strip(b" \t")
    date = fields.get(b"date")
    subject, reply = base_subject(fields.get(b"subject", b""))
    from_ = _first_address(fields.get(b"from"))
    to = _first_address(fields.get(b"to"))
    ids = message_ids(fields.get(b"message-id"))
    references = message_ids(fields.get(b"references"))
    if not references:
        references = message_ids(fields.get(b"in-reply-to"))[:1]
    return SortData(
        sent=sent_time(date) if date is not None else None,
        subject=collation_key(subject),
        reply=reply,
        from_=address_key(from_),
        to=address_key(to),
        cc=address_key(_first_address(fields.get(b"cc"))),
        display_from=display_key(from_),
        display_to=display_key(to),
        message_id=ids[0] if ids else None,
        references=tuple(references[-MAX_REFERENCES:]),
    )
