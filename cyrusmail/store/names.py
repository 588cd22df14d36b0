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


def pattern_regex(pattern: str) -> PatternMatcher:
    """A matcher for an IMAP LIST pattern: ``*`` any, ``%`` any but ``/``.

    A pattern starting with INBOX in any case also matches INBOX and its
    inferiors (stored as ``INBOX``), so ``inbox*`` lists ``INBOX/Sub``.
    It was once a regular expression (hence the name); ``.match(name)``
    still says whether ``name`` matches.
    """
    return PatternMatcher(pattern)


class _Glob:
    """One glob as a bit-parallel NFA: bit ``i`` set means "the first ``i``
    tokens match what has been read".  Matching takes a few integer
    operations per character of the name, whatever the pattern; a regular
    expression of ``.*`` pieces backtracks exponentially instead
    (``*a*a*a*a*a*a*a*a*a*ab`` against a name of forty ``a``).
    """

    def __init__(self, pattern: str) -> None:
        tokens: list[str] = []
        for ch in pattern:  # a run of wildcards is one: "*" if it holds a "*", else "%"
            if ch in "*%" and tokens and tokens[-1] in "*%":
                if ch == "*":
                    tokens[-1] = "*"
                continue
            tokens.append(ch)
        self.literals = sum(1 for token in tokens if token not in "*%")
        self.accept = 1 << len(tokens)
        self.by_char: dict[str, int] = {}
        self.star = self.percent = 0
        for index, token in enumerate(tokens):
            bit = 1 << index
            if token == "*":
                self.star |= bit
            elif token == "%":
                self.percent |= bit
            else:
                self.by_char[token] = self.by_char.get(token, 0) | bit
        self.wild = self.star | self.percent

    def match(self, name: str) -> bool:
        if self.literals > len(name):
            return False
        wild, star, percent, by_char = self.wild, self.star, self.percent, self.by_char
        states = 1 | ((1 & wild) << 1)
        for ch in name:
            states = ((states & by_char.get(ch, 0)) << 1) | (states & star) | (
                states & percent if ch != SEPARATOR else 0
            )
            if not states:
                return False
            states |= (states & wild) << 1  # no two wildcards are adjacent: one step closes
        return bool(states & self.accept)


class PatternMatcher:
    """What :func:`pattern_regex` returns: ``match(name)`` is True when the
    whole of ``name`` matches the pattern."""

    def __init__(self, pattern: str) -> None:
        self._glob = _Glob(pattern)
        self._inbox = _Glob(INBOX + pattern[5:]) if pattern[:5].upper() == INBOX else None

    def match(self, name: str) -> bool:
        if self._glob.match(name):
            return True
        return self._inbox is not None and (name == INBOX or name.startswith(INBOX + SEPARATOR)) and (
            self._inbox.match(name)
        )


def user_name(name: str) -> str:
    """The canonical (lower-case) form of a user name, or InvalidUserName."""
    folded = name.strip().lower()
    if len(folded) > 255 or not _USER.fullmatch(folded):
        raise InvalidUserName(f"Invalid user name {name!r}: use local or local@domain")
    return folded
