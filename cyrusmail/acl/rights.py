"""RFC 4314 rights and identifiers: parsing, canonical order, the obsolete c/d.

Rights are kept as a frozenset of the eleven real letters ``lrswipkxtea``.
The obsolete ``c`` and ``d`` of RFC 2086 are virtual (section 2.1.1, for a
server that implements the new rights): ``c`` is ``k``; ``d`` is ``x t e``.
A client's ``c``/``d`` expands on input, and a list holding any member is
shown with the virtual letter too.
"""

from __future__ import annotations

import re

from cyrusmail.store import names
from cyrusmail.store.errors import (
    InvalidIdentifier,
    InvalidName,
    InvalidRights,
    InvalidUserName,
)

#: The real rights, in the order RFC 4314 lists them.
ORDER = "lrswipkxtea"
ALL = frozenset(ORDER)
#: What the owner of a personal mailbox always keeps, whatever the ACL says (as Cyrus).
OWNER_IMPLICIT = frozenset("lkxa")
#: Any of these lets MYRIGHTS answer (RFC 4314 section 4, "Any").
ANY = frozenset("lrikxa")
#: Rights that make a mailbox visible: without one, it is answered as nonexistent.
VISIBLE = frozenset("lr")
#: RFC 4314 section 5.2: READ-WRITE if any of these ("i", "e" and the flag rights).
WRITE = frozenset("iestw")

VIRTUAL = {"c": frozenset("k"), "d": frozenset("xte")}

ANYONE = "anyone"
GROUP_PREFIX = "group:"
_GROUP_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def parse(text: str) -> frozenset[str]:
    """The real rights a rights string grants; InvalidRights for any other letter."""
    rights: set[str] = set()
    for letter in text:
        if letter in ALL:
            rights.add(letter)
        elif letter in VIRTUAL:
            rights |= VIRTUAL[letter]
        elif letter.isdigit():
            raise InvalidRights(f"The {letter} right is not supported")
        elif letter.isupper():
            raise InvalidRights("Uppercase rights are not allowed")
        else:
            raise InvalidRights(f"The {letter!r} right is not defined")
    return frozenset(rights)


def text_of(rights: frozenset[str] | set[str]) -> str:
    """Rights in canonical order, with ``c`` and ``d`` added as RFC 4314 2.1.1 asks."""
    text = "".join(letter for letter in ORDER if letter in rights)
    if "k" in rights:
        text += "c"
    if rights & VIRTUAL["d"]:
        text += "d"
    return text


def modify(current: frozenset[str], modification: str) -> frozenset[str]:
    """SETACL's third argument: ``+rights`` adds, ``-rights`` removes, else replaces."""
    if modification.startswith("+"):
        return current | parse(modification[1:])
    if modification.startswith("-"):
        return current - parse(modification[1:])
    return parse(modification)


def identifier(text: str) -> str:
    """The canonical form of an ACL identifier (``anyone``, ``group:NAME``, a user, or ``-`` one)."""
    negative = text.startswith("-")
    body = text[1:] if negative else text
    if body.lower() == ANYONE:
        body = ANYONE
    elif body.lower().startswith(GROUP_PREFIX):
        body = GROUP_PREFIX + group_name(body[len(GROUP_PREFIX):])
    else:
        try:
            body = names.user_name(body)
        except (InvalidUserName, InvalidName):
            raise InvalidIdentifier(f"Invalid identifier {text!r}: use a user, group:NAME or anyone") from None
    return ("-" if negative else "") + body


def group_name(text: str) -> str:
    """A group's canonical (lower-case) name, or InvalidIdentifier."""
    folded = text.strip().lower()
    if not _GROUP_NAME.fullmatch(folded):
        raise InvalidIdentifier(f"Invalid group name {text!r}: letters, digits, '.', '_' and '-'")
    return folded


def evaluate(entries: dict[str, str], user: str | None, groups: frozenset[str] = frozenset()) -> frozenset[str]:
    """What ``user`` (None: an anonymous poster) holds by ``entries``: granted less negative rights."""
    applicable = [ANYONE]
    if user is not None:
        applicable.append(user)
        applicable += [GROUP_PREFIX + group for group in groups]
    granted: set[str] = set()
    denied: set[str] = set()
    for name in applicable:
        granted |= parse(entries.get(name, ""))
        denied |= parse(entries.get("-" + name, ""))
    return frozenset(granted - denied)
