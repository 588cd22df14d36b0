"""QRESYNC (RFC 7162 3.2): VANISHED responses and what a resynchronising client is told.

Two commands ask "what happened since modseq m?": ``SELECT``/``EXAMINE``
with ``(QRESYNC (uidvalidity m [known-uids [seq-match-data]]))`` and
``UID FETCH set (CHANGEDSINCE m VANISHED)``.  The answer is a
``* VANISHED (EARLIER) uid-set`` for the messages expunged since, then one
``* n FETCH (UID u FLAGS (...) MODSEQ (x))`` per message changed since.

The store remembers each expunged UID with the modseq of its expunge, up to
``expunged_history`` UIDs per mailbox (``[server] expunged_history``).  When
``m`` is older than what is remembered, which messages went *when* is no
longer known, so the answer is conservative, as RFC 7162 3.2.5.2 allows:
every UID of the client's known set that is not in the mailbox now.  Pairs
of ``seq-match-data`` whose message number still matches ours prove that no
UID up to theirs was expunged, so those are left out.  A client is never
told that a message it may still hold was expunged when it was not, and
never misses one that was.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator, Sequence

from cyrusmail.imap.sequence import SequenceSet

#: Ranges in one VANISHED line (a client may cap line length, RFC 7162 4).
MAX_RANGES_PER_LINE = 500

#: seq-match-data pairs looked at (a client sends a sample, RFC 7162 3.2.5.2).
MAX_SEQ_MATCH = 10_000

Ranges = Sequence[tuple[int, int]]


def ranges_of(uids: Iterable[int]) -> tuple[tuple[int, int], ...]:
    """Ascending ``uids`` as merged ranges."""
    return SequenceSet.from_numbers(uids).ranges


def range_lines(ranges: Ranges, earlier: bool) -> list[bytes]:
    """``* VANISHED [(EARLIER)] set`` lines covering ``ranges`` (none if empty)."""
    prefix = b"* VANISHED (EARLIER) " if earlier else b"* VANISHED "
    return [
        prefix + bytes(SequenceSet(tuple(ranges[start:start + MAX_RANGES_PER_LINE]))) + b"\r\n"
        for start in range(0, len(ranges), MAX_RANGES_PER_LINE)
    ]


def vanished_lines(uids: Iterable[int], earlier: bool) -> list[bytes]:
    return range_lines(ranges_of(uids), earlier)


def within(ranges: Ranges, uid: int) -> bool:
    index = bisect.bisect_right(ranges, (uid, float("inf"))) - 1
    return index >= 0 and ranges[index][0] <= uid <= ranges[index][1]


def missing(ranges: Ranges, present: Sequence[int]) -> list[tuple[int, int]]:
    """The parts of ``ranges`` holding none of the ascending ``present`` UIDs.

    Costs O(len(ranges) + len(present)), however wide the ranges are.
    """
    gaps: list[tuple[int, int]] = []
    start = 0
    for low, high in ranges:
        start = bisect.bisect_left(present, low, start)
        cursor = low
        while start < len(present) and present[start] <= high:
            if present[start] > cursor:
                gaps.append((cursor, present[start] - 1))
            cursor = present[start] + 1
            start += 1
        if cursor <= high:
            gaps.append((cursor, high))
    return gaps


def above(ranges: Ranges, floor: int) -> list[tuple[int, int]]:
    """``ranges`` less everything at or below ``floor``."""
    return [(max(low, floor + 1), high) for low, high in ranges if high > floor]


def vanished_ranges(expunged: list[int] | None, wanted: Ranges, present: Sequence[int],
                    exclude: set[int] = frozenset(), proven_below: int = 0) -> list[tuple[int, int]]:
    """What a ``VANISHED (EARLIER)`` reports within ``wanted``.

    ``expunged``: the UIDs expunged since the client's modseq, or None when
    the history does not reach back so far; then every UID of ``wanted``
    above ``proven_below`` that is not in the ascending ``present`` is
    reported.  ``exclude``: UIDs this session will still report as VANISHED
    itself (another session expunged them; this one has not said so yet).
    """
    if expunged is not None:
        return list(ranges_of(uid for uid in expunged if uid not in exclude and within(wanted, uid)))
    if exclude:
        present = sorted({*present, *exclude})
    return missing(above(wanted, proven_below), present)


def proven_unexpunged(seq_match: tuple[SequenceSet, SequenceSet] | None, uids: Sequence[int]) -> int:
    """The highest UID of a seq-match pair whose message number is still the
    same here (RFC 7162 3.2.5.2): none at or below it can have been expunged,
    since no message is ever added below a UID a client knows.  0 if none.
    At most :data:`MAX_SEQ_MATCH` pairs are looked at."""
    if seq_match is None:
        return 0
    proven = 0
    pairs = zip(_explicit(seq_match[0]), _explicit(seq_match[1]))
    for seq, uid in itertools.islice(pairs, MAX_SEQ_MATCH):
        position = bisect.bisect_left(uids, uid)
        if position < len(uids) and uids[position] == uid and position + 1 == seq:
            proven = max(proven, uid)
    return proven


def _explicit(numbers: SequenceSet) -> Iterator[int]:
    for low, high in numbers.ranges:
        yield from range(low, high + 1)


def resync_lines(view, changes, known_uids: SequenceSet | None,
                 seq_match: tuple[SequenceSet, SequenceSet] | None, uid_next: int) -> Iterator[bytes]:
    """What a SELECT (QRESYNC ...) adds before its tagged OK, given the
    mailbox's changes since the client's modseq: VANISHED (EARLIER), then a
    FETCH with UID, FLAGS and MODSEQ for each message changed since (among
    ``known_uids`` if given, else all)."""
    top = max(uid_next - 1, 1)
    wanted = known_uids.resolve(top) if known_uids is not None else ((1, top),)
    if changes.complete:
        # an expunge after the view was made is told by the next poll, as VANISHED
        expunged = [uid for uid in changes.expunged if not view.contains(uid)]
        proven = 0
    else:
        expunged, proven = None, proven_unexpunged(seq_match, view.uids)
    yield from range_lines(vanished_ranges(expunged, wanted, view.uids, proven_below=proven), earlier=True)
    for record in changes.changed:
        if view.contains(record.uid) and (known_uids is None or within(wanted, record.uid)):
            view.reported([record])
            yield view.fetch_flags_line(record, view.seq_of(record.uid))
