"""Mailbox and user names: what the store accepts, and how INBOX is spelt.

Names never reach the filesystem (mailboxes live in folders named by id),
but the store still refuses names that no client should be able to create:
control characters, empty or dot components, over-long names.
"""

from __future__ import annotations

import re

from cyrusmail.store.errors import InvalidName, InvalidUserName

SEPARATOR = "/"
INBOX = "INBOX"
MAX_NAME_BYTES = 1024

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LOCAL = r"[a-z0-9!#$%&'*+=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+=?^_`{|}~-]+)*"
_DOMAIN = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
_USER = re.compile(rf"{_LOCAL}(?:@{_DOMAIN})?")


def canonical(name: str) -> str:
    """``name`` with a leading INBOX component spelt ``INBOX``."""
    head, sep, rest = name.partition(SEPARATOR)
    if head.upper() == INBOX:
        return INBOX + sep + rest
    return name


def check(name: str) -> str:
    """The canonical form of ``name``, or InvalidName saying what is wrong."""
    if not name:
        raise InvalidName("Mailbox name is empty")
    if _CONTROL.search(name):
        raise InvalidName("Mailbox name contains control characters")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise InvalidName(f"Mailbox name is longer than {MAX_NAME_BYTES} bytes")
    for component in name.split(SEPARATOR):
        if component == "":
            raise InvalidName("Mailbox name has an empty hierarchy level")
        if component in (".", ".."):
            raise InvalidName("Mailbox name has a '.' or '..' level")
    return canonical(name)


def superiors(name: str) -> list[str]:
    """``a/b/c`` -> ``["a", "a/b"]``."""
    parts = name.split(SEPARATOR)
    return [SEPARATOR.join(parts[:i]) for i in range(1, len(parts))]


def parent(name: str) -> str | None:
    """The immediate superior of ``name``, or None at the top."""
    head, sep, _ = name.rpartition(SEPARATOR)
    return head if sep else None


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A regex for an IMAP LIST pattern: ``*`` any, ``%`` any but ``/``.

    A pattern starting with INBOX in any case also matches INBOX and its
    inferiors (stored as ``INBOX``), so ``inbox*`` lists ``INBOX/Sub``.
    """
    alternatives = [_glob(pattern)]
    if pattern[:5].upper() == INBOX:
        alternatives.append(r"(?=INBOX(?:/|\Z))" + _glob(INBOX + pattern[5:]))
    return re.compile("|".join(rf"(?:{regex}\Z)" for regex in alternatives), re.DOTALL)


def _glob(pattern: str) -> str:
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append("[^/]*")
        else:
            out.append(re.escape(ch))
    return "".join(out)


def user_name(name: str) -> str:
    """The canonical (lower-case) form of a user name, or InvalidUserName."""
    folded = name.strip().lower()
    if len(folded) > 255 or not _USER.fullmatch(folded):
        raise InvalidUserName(f"Invalid user name {name!r}: use local or local@domain")
    return folded
