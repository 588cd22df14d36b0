"""IMAP sequence sets (RFC 3501 section 9, ``sequence-set``) kept as ranges.

A client can write ``1:4294967295`` in eleven bytes, so a set is never
expanded into its members: it is a tuple of merged, sorted closed ranges
plus at most one range that ends at ``*``.  ``*`` means "the largest number
in use" and is only known when the set is applied to a mailbox, so it is
resolved late, by :meth:`SequenceSet.resolve` and friends, against the
mailbox's highest message sequence number or UID.

``n:*`` covers ``min(n, max)..max`` (RFC 3501 section 6.4.8: ``559:*``
includes the last message even if 559 is above every UID), ``*:n`` is the
same range, and a bare ``*`` is ``max..max``.  All the ranges that touch
``*`` therefore collapse into one: the lowest of their other ends, kept as
:attr:`SequenceSet.star_from` (a bare ``*`` is stored as ``STAR``, which is
above every nz-number, so ``min(STAR, max)`` is ``max``).

With an empty mailbox (``max == 0``) ``*`` denotes no message, so every set
resolves to nothing.  RFC 3501 makes a message-sequence-number reference to
a message that does not exist an error; whether to send BAD for that is
the session's decision (:attr:`SequenceSet.highest` helps it check), the
set itself just selects nothing.

``$`` (RFC 5182 SEARCHRES) stands alone for the session's saved SEARCH
result: it parses to :data:`SAVED`, whose members only the session knows
(:meth:`cyrusmail.imap.selected.SelectedMailbox.resolve`); as a plain set
it holds nothing.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

MAX_NUMBER = 4294967295
"""The largest nz-number (2**32 - 1)."""

STAR = MAX_NUMBER + 1
"""How a bare ``*`` is stored in :attr:`SequenceSet.star_from`."""

_NUMBER = re.compile(rb"[1-9][0-9]{0,9}")


class SequenceSetError(ValueError):
    """The text is not an RFC 3501 ``sequence-set``."""


def _merge(ranges: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            if high > merged[-1][1]:
                merged[-1] = (merged[-1][0], high)
        else:
            merged.append((low, high))
    return tuple(merged)


@dataclass(frozen=True)
class SequenceSet:
    """A set of message numbers or UIDs, as ranges, with ``*`` unresolved.

    :ivar ranges: sorted, disjoint, non-adjacent ``(low, high)`` ranges of
        explicit numbers, ``1 <= low <= high <= MAX_NUMBER``.
    :ivar star_from: ``None`` if the set never mentions ``*``; otherwise the
        set also holds ``min(star_from, max)..max`` (``STAR`` for a bare
        ``*``).
    """

    ranges: tuple[tuple[int, int], ...] = ()
    star_from: int | None = None
    #: ``$``: the saved search result (then ``ranges`` and ``star_from`` are empty)
    saved: bool = False

    @classmethod
    def parse(cls, text: bytes | str) -> SequenceSet:
        """Parse ``sequence-set``, or a lone ``$`` (:data:`SAVED`); ``0``,
        signs, blanks and overflow are errors."""
        if isinstance(text, str):
            text = text.encode("ascii", "replace")
        if not text:
            raise SequenceSetError("empty sequence set")
        if text == b"$":
            return SAVED
        if b"$" in text:
            raise SequenceSetError("$ stands alone, never in a list or range")
        explicit: list[tuple[int, int]] = []
        star_from: int | None = None
        for item in text.split(b","):
            ends = item.split(b":")
            if len(ends) > 2:
                raise SequenceSetError(f"bad sequence range {item!r}")
            numbers = [_number(end) for end in ends]
            if len(numbers) == 1:
                numbers.append(numbers[0])
            low, high = min(numbers), max(numbers)
            if high == STAR:
                star_from = low if star_from is None else min(star_from, low)
            else:
                explicit.append((low, high))
        return cls(_merge(explicit), star_from)

    @classmethod
    def from_numbers(cls, numbers: Iterable[int]) -> SequenceSet:
        """The set holding exactly ``numbers`` (for COPYUID, ESEARCH...)."""
        ranges = []
        for number in numbers:
            if not 1 <= number <= MAX_NUMBER:
                raise SequenceSetError(f"{number} is not an nz-number")
            ranges.append((number, number))
        return cls(_merge(ranges))

    @property
    def highest(self) -> int | None:
        """The largest explicit number in the set, ignoring ``*``."""
        candidates = [self.ranges[-1][1]] if self.ranges else []
        if self.star_from is not None and self.star_from != STAR:
            candidates.append(self.star_from)
        return max(candidates) if candidates else None

    def resolve(self, maximum: int) -> tuple[tuple[int, int], ...]:
        """Merged ranges with ``*`` as ``maximum``, clipped to ``1..maximum``."""
        if maximum <= 0:
            return ()
        ranges = [
            (low, min(high, maximum)) for low, high in self.ranges if low <= maximum
        ]
        if self.star_from is not None:
            ranges.append((min(self.star_from, maximum), maximum))
        return _merge(ranges)

    def contains(self, number: int, maximum: int) -> bool:
        """Whether ``number`` (1..maximum) is in the set once ``*`` is ``maximum``."""
        if not 1 <= number <= maximum:
            return False
        if self.star_from is not None and number >= min(self.star_from, maximum):
            return True
        index = bisect.bisect_right(self.ranges, (number, MAX_NUMBER + 1)) - 1
        return index >= 0 and self.ranges[index][0] <= number <= self.ranges[index][1]

    def members(self, maximum: int) -> Iterator[int]:
        """Each number of the set in ``1..maximum``, ascending.

        The cost is bounded by ``maximum`` (the mailbox size), never by what
        the client wrote.  For UIDs, where ``maximum`` may be far above the
        number of messages, prefer :meth:`select`.
        """
        for low, high in self.resolve(maximum):
            yield from range(low, high + 1)

    def select(
        self, existing: Sequence[int], maximum: int | None = None
    ) -> Iterator[int]:
        """The members of the ascending ``existing`` (e.g. a mailbox's UIDs)
        that are in the set; ``maximum`` defaults to ``existing[-1]``.

        Costs O(len(existing) + number of ranges).
        """
        if not existing:
            return
        if maximum is None:
            maximum = existing[-1]
        start = 0
        for low, high in self.resolve(maximum):
            start = bisect.bisect_left(existing, low, start)
            while start < len(existing) and existing[start] <= high:
                yield existing[start]
                start += 1

    def __str__(self) -> str:
        if self.saved:
            return "$"
        parts = [
            f"{low}" if low == high else f"{low}:{high}" for low, high in self.ranges
        ]
        if self.star_from == STAR:
            parts.append("*")
        elif self.star_from is not None:
            parts.append(f"{self.star_from}:*")
        return ",".join(parts)

    def __bytes__(self) -> bytes:
        return str(self).encode("ascii")


SAVED = SequenceSet(saved=True)
"""``$``, the saved search result (RFC 5182)."""


def compact(numbers: Iterable[int]) -> str:
    """``numbers`` as a sequence-set in the order given: ascending runs of
    consecutive numbers become ranges, nothing is reordered or merged
    (``1,2,3,7,5,6`` is ``1:3,7,5:6``), as sorted ESEARCH results need
    (RFC 5267 3.2); for ascending numbers it equals :meth:`SequenceSet.from_numbers`."""
    parts: list[str] = []
    start = previous = None
    for number in numbers:
        if previous is not None and number == previous + 1:
            previous = number
            continue
        if start is not None:
            parts.append(f"{start}" if start == previous else f"{start}:{previous}")
        start = previous = number
    if start is not None:
        parts.append(f"{start}" if start == previous else f"{start}:{previous}")
    return ",".join(parts)


def _number(text: bytes) -> int:
    if text == b"*":
        return STAR
    if not _NUMBER.fullmatch(text):
        shown = text[:20].decode("ascii", "replace")
        raise SequenceSetError(f"{shown} is not an nz-number")
    value = int(text)
    if value > MAX_NUMBER:
        raise SequenceSetError(f"{value} is above 4294967295")
    return value
