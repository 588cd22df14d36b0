"""Mailbox names between the wire (modified UTF-7) and the store (Unicode), and other names on the wire.

A session that enabled UTF8=ACCEPT (RFC 6855) or IMAP4rev2 (RFC 9051) sends
and receives names in UTF-8: the parser turns such a name into its modified
UTF-7 form as it reads it (``CommandParser.utf8``, ``CommandParser.rev2``),
so :func:`from_wire` serves both; the handlers pass ``session.utf8`` to
:func:`to_wire` and :func:`root_to_wire`, and make new names with
:func:`new_name_from_wire`, which holds a name sent in UTF-8 to Net-Unicode.
"""

from __future__ import annotations

import re
import unicodedata

from cyrusmail.imap import codes, mutf7
from cyrusmail.imapform import string, utf8_string
from cyrusmail.store import names
from cyrusmail.store.errors import MailboxNotFound


def from_wire(wire_name: str) -> str:
    """The store name for a client's mailbox argument.

    INBOX is matched case-insensitively; a trailing ``/`` is dropped (RFC
    3501 6.3.3: ``CREATE foo/`` creates ``foo``).  A name that is not valid
    modified UTF-7 is well-formed IMAP but names no mailbox that can exist:
    ``NO [CANNOT]``, not BAD (as Dovecot and Cyrus answer it).
    """
    try:
        name = mutf7.decode(wire_name)
    except mutf7.MUTF7Error as error:
        raise codes.CommandFailed(f"Mailbox name is not valid modified UTF-7: {error}", codes.CANNOT) from None
    if len(name) > 1 and name.endswith(names.SEPARATOR):
        name = name[:-1]
    return names.canonical(name)


# Net-Unicode (RFC 5198 2) as RFC 6855 3 narrows it for mailbox names: no C0 (the store
# refuses those for every name), DEL, C1, LINE or PARAGRAPH SEPARATOR.
_NOT_NET_UNICODE = re.compile("[\x7f-\x9f\u2028\u2029]")


def new_name_from_wire(wire_name: str, utf8: bool) -> str:
    """:func:`from_wire` for a name about to be made (CREATE, RENAME's new name).

    A name a client sent in UTF-8 (``utf8``: the session enabled UTF8=ACCEPT
    or IMAP4rev2) must be Net-Unicode, in Normalization Form C above all
    (RFC 9051 5.1, RFC 6855 3), else ``NO [CANNOT]``; the server could
    normalize it instead, but would then owe the client an OLDNAME.  Names
    sent in modified UTF-7 are taken as they are, as IMAP4rev1 takes them.
    """
    name = from_wire(wire_name)
    if utf8:
        if _NOT_NET_UNICODE.search(name):
            raise codes.CommandFailed("Mailbox name holds a control or separator character", codes.CANNOT)
        if not unicodedata.is_normalized("NFC", name):
            raise codes.CommandFailed("Mailbox name is not in Unicode Normalization Form C (RFC 9051 5.1)",
                                      codes.CANNOT)
    return name


def open_target(mailboxes, wire_name: str):
    """The mailbox APPEND, COPY or MOVE put messages into.

    When it cannot be opened as missing, ``NO [TRYCREATE]`` if CREATE would
    make it, else ``NO [NONEXISTENT]`` (as Cyrus; a mailbox the user may not
    see gets the same answer as a missing one they could not create).
    """
    name = from_wire(wire_name)
    try:
        return mailboxes.open(name)
    except MailboxNotFound as error:
        if mailboxes.may_create(name):
            raise codes.CommandFailed("Mailbox does not exist", codes.TRYCREATE) from None
        raise codes.CommandFailed(str(error), codes.NONEXISTENT) from None


def pattern_from_wire(wire_pattern: str) -> str | None:
    """A LIST/LSUB reference or pattern as a store pattern; None when it is not
    valid modified UTF-7, so that no name can match it (the command answers an
    empty OK, as Dovecot and Cyrus do)."""
    try:
        return mutf7.decode(wire_pattern)
    except mutf7.MUTF7Error:
        return None


def to_wire(name: str, utf8: bool = False) -> bytes:
    """A store name as an IMAP string on the wire: modified UTF-7, or UTF-8
    for a session that enabled UTF8=ACCEPT (RFC 6855 3)."""
    return utf8_string(name) if utf8 else string(mutf7.encode(name))


# ASTRING-CHAR of RFC 3501: any CHAR but atom-specials, though "]" is allowed.
_ASTRING_ATOM = re.compile(r'[^(){ %*"\\\x00-\x1f\x7f-\U0010ffff]+')


def astring(value: str) -> bytes:
    """``value`` as an IMAP astring: a bare atom when it may be (``alice``, ``lrs``), else a string.

    For ACL identifiers and rights (RFC 4314) and quota roots (RFC 9208),
    written as the RFCs' examples write them.
    """
    return value.encode("ascii") if _ASTRING_ATOM.fullmatch(value) else string(value)


def root_from_wire(wire_root: str) -> str:
    """A quota root as the account names it: roots follow mailbox names, so mUTF-7 too."""
    try:
        return mutf7.decode(wire_root)
    except mutf7.MUTF7Error as error:
        raise codes.bad(f"Invalid quota root: {error}") from None


def root_to_wire(root: str, utf8: bool = False) -> bytes:
    if utf8:
        return root.encode("ascii") if _ASTRING_ATOM.fullmatch(root) else utf8_string(root)
    return astring(mutf7.encode(root))
