"""Mailbox names between the wire (modified UTF-7) and the store (Unicode)."""

from __future__ import annotations

from cyrusmail.imap import codes, mutf7
from cyrusmail.imapform import string
from cyrusmail.store import names


def from_wire(wire_name: str) -> str:
    """The store name for a client's mailbox argument; BAD if not mUTF-7.

    INBOX is matched case-insensitively; a trailing ``/`` is dropped (RFC
    3501 6.3.3: ``CREATE foo/`` creates ``foo``).
    """
    try:
        name = mutf7.decode(wire_name)
    except mutf7.MUTF7Error as error:
        raise codes.bad(f"Invalid mailbox name: {error}") from None
    if len(name) > 1 and name.endswith(names.SEPARATOR):
        name = name[:-1]
    return names.canonical(name)


def pattern_from_wire(wire_pattern: str) -> str:
    try:
        return mutf7.decode(wire_pattern)
    except mutf7.MUTF7Error as error:
        raise codes.bad(f"Invalid mailbox pattern: {error}") from None


def to_wire(name: str) -> bytes:
    """A store name as an IMAP string on the wire."""
    return string(mutf7.encode(name))
