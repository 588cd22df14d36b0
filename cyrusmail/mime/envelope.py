"""The ENVELOPE of a message header (RFC 3501 section 7.4.2), in wire form.

When a field occurs more than once the last occurrence counts, as both
Dovecot and Cyrus answer (``mime_emails__raw_email_with_binary_encoded``
has two Subject fields).  Unstructured
values (date, subject, in-reply-to, message-id) lose the white space that
follows the colon on the field's first line and their folding CRLFs, and
nothing else: trailing white space and the white space of continuation
lines are kept, as plain RFC 5322 unfolding (and Cyrus) does.
"""

from __future__ import annotations

from cyrusmail.imapform import nstring, string
from cyrusmail.mime.addresses import Address, parse_address_list
from cyrusmail.mime.headers import unfold

ENVELOPE_FIELDS = (
    b"date", b"subject", b"from", b"sender", b"reply-to",
    b"to", b"cc", b"bcc", b"in-reply-to", b"message-id",
)


def unstructured(raw: bytes) -> bytes:
    """A field value as ENVELOPE reports it: leading blanks gone, unfolded."""
    return unfold(raw.lstrip(b" \t"))


def address_list_wire(addresses: list[Address]) -> bytes:
    """``((name adl mailbox host)...)`` or ``NIL`` for an empty list."""
    if not addresses:
        return b"NIL"
    return b"(" + b"".join(
        b"(" + b" ".join(nstring(item) for item in address) + b")"
        for address in addresses
    ) + b")"


def envelope_wire(fields: dict[bytes, list[bytes]]) -> bytes:
    """The ENVELOPE for a header given as ``{lower-case name: [raw values]}``."""

    def text(name: bytes) -> bytes:
        values = fields.get(name)
        return b"NIL" if not values else string(unstructured(values[-1]))

    def addresses(name: bytes) -> list[Address]:
        values = fields.get(name)
        return parse_address_list(unfold(values[-1])) if values else []

    from_list = addresses(b"from")
    sender = addresses(b"sender") or from_list
    reply_to = addresses(b"reply-to") or from_list
    return b"(" + b" ".join((
        text(b"date"),
        text(b"subject"),
        address_list_wire(from_list),
        address_list_wire(sender),
        address_list_wire(reply_to),
        address_list_wire(addresses(b"to")),
        address_list_wire(addresses(b"cc")),
        address_list_wire(addresses(b"bcc")),
        text(b"in-reply-to"),
        text(b"message-id"),
    )) + b")"
