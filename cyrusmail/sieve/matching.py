"""Comparators and match types: how a Sieve test compares a value with a key.

Comparators (RFC 4790, as RFC 5228 section 2.7.3 names them): ``i;octet``
(exact), ``i;ascii-casemap`` (A-Z folded to a-z, the default) and
``i;ascii-numeric`` (the leading digits as a number; a value with none
is greater than any number and equal to another such value).  Match types:
``:is``, ``:contains``, ``:matches`` (``*`` any run, ``?`` one character,
``\\`` quoting the next), and RFC 5231's ``:value``/``:count`` with a
relation.

``:matches`` never backtracks: the pattern is split at its stars into
fixed-length pieces, the first anchored at the start and the last at the
end, and each middle piece placed as far right as it goes, right to left.
That finds a match whenever there is one, in time linear in the value
per piece, with each star as long as it can be, left first (RFC 5229's
"wildcards expand greedily"), which gives the match variables.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_ANY = object()  # a "?" in a piece


def fold(text: str, comparator: str) -> str:
    return text.translate(_FOLD) if comparator == "i;ascii-casemap" else text


def numeric(text: str) -> int | None:
    """i;ascii-numeric's value: the leading digits, or None (positive infinity)."""
    digits = re.match(r"[0-9]+", text)
    return int(digits.group()) if digits else None


def _order(value: str, key: str, comparator: str) -> int:
    """-1, 0 or 1 as ``value`` sorts before, with or after ``key``."""
    if comparator == "i;ascii-numeric":
        left, right = numeric(value), numeric(key)
        if left is None or right is None:
            return (left is None) - (right is None)
        return (left > right) - (left < right)
    left, right = fold(value, comparator), fold(key, comparator)
    return (left > right) - (left < right)


_RELATIONS = {
    "gt": lambda order: order > 0, "ge": lambda order: order >= 0, "lt": lambda order: order < 0,
    "le": lambda order: order <= 0, "eq": lambda order: order == 0, "ne": lambda order: order != 0,
}


def relation_holds(value: str, key: str, relation: str, comparator: str) -> bool:
    return _RELATIONS[relation](_order(value, key, comparator))


def equal(value: str, key: str, comparator: str) -> bool:
    if comparator == "i;ascii-numeric":
        return _order(value, key, comparator) == 0
    return fold(value, comparator) == fold(key, comparator)


def contains(value: str, key: str, comparator: str) -> bool:
    return fold(key, comparator) in fold(value, comparator)


# -- :matches -------------------------------------------------------------------------


def _pattern(pattern: str) -> tuple[list[list], int]:
    """The pieces between the stars (each a list of characters and _ANY), and how many stars."""
    pieces: list[list] = [[]]
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            index += 1
            pieces[-1].append(pattern[index])
        elif char == "*":
            pieces.append([])
        elif char == "?":
            pieces[-1].append(_ANY)
        else:
            pieces[-1].append(char)
        index += 1
    return pieces, len(pieces) - 1


def _piece_at(text: str, piece: list, at: int) -> bool:
    return all(part is _ANY or text[at + offset] == part for offset, part in enumerate(piece))


def _rightmost(text: str, piece: list, low: int, high: int) -> int:
    """Where ``piece`` starts, as far right as it fits in text[low:high]; -1 if nowhere."""
    size = len(piece)
    if size == 0:
        return high
    if _ANY not in piece:
        return text.rfind("".join(piece), low, high)
    regex = re.compile("".join("." if part is _ANY else re.escape(part) for part in reversed(piece)), re.DOTALL)
    found = regex.search(text[low:high][::-1])
    return -1 if found is None else high - found.end()


def glob_match(value: str, pattern: str, comparator: str) -> list[str] | None:
    """The match variables (``${0}`` then one per wildcard) if ``value`` matches, else None."""
    original = value
    value, pattern_text = fold(value, comparator), pattern
    pieces, stars = _pattern(fold(pattern_text, comparator) if comparator == "i;ascii-casemap" else pattern_text)
    first, last = pieces[0], pieces[-1]
    if stars == 0:
        if len(first) != len(value) or not _piece_at(value, first, 0):
            return None
        return [original, *(original[i] for i, part in enumerate(first) if part is _ANY)]
    if len(first) + len(last) > len(value) or not _piece_at(value, first, 0):
        return None
    end_start = len(value) - len(last)
    if not _piece_at(value, last, end_start):
        return None
    starts = [0] * len(pieces)
    starts[-1] = end_start
    low, high = len(first), end_start
    for index in range(len(pieces) - 2, 0, -1):
        found = _rightmost(value, pieces[index], low, high)
        if found < low:
            return None
        starts[index] = found
        high = found
    captures = [original]
    for index, piece in enumerate(pieces):
        start = starts[index]
        if index > 0:
            previous_end = starts[index - 1] + len(pieces[index - 1])
            captures.append(original[previous_end:start])
        captures.extend(original[start + offset] for offset, part in enumerate(piece) if part is _ANY)
    return captures


def quote_wildcards(text: str) -> str:
    """RFC 5229's :quotewildcard: ``*``, ``?`` and ``\\`` made literal for :matches."""
    return re.sub(r"([*?\\])", r"\\\1", text)


def match_any(values: Iterable[str], keys: Iterable[str], match: object, comparator: str,
              captured: list | None = None) -> bool:
    """Whether any value matches any key; on a :matches success, ``captured`` gets its variables.

    ``match`` is ``:is``, ``:contains``, ``:matches`` or a relational
    ``(":value", relation)`` (``:count`` is the caller's, who counts).
    """
    keys = list(keys)
    for value in values:
        for key in keys:
            if match == ":is":
                if equal(value, key, comparator):
                    return True
            elif match == ":contains":
                if contains(value, key, comparator):
                    return True
            elif match == ":matches":
                found = glob_match(value, key, comparator)
                if found is not None:
                    if captured is not None:
                        captured[:] = found
                    return True
            elif relation_holds(value, key, match[1], comparator):
                return True
    return False
