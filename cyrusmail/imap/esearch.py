"""What a SEARCH (or SORT) with RETURN options answers: the ESEARCH response.

RFC 4731 (ESEARCH) gives the return options MIN, MAX, ALL and COUNT; RFC
5182 (SEARCHRES) SAVE; RFC 5267 (CONTEXT=SEARCH) CONTEXT, UPDATE and
PARTIAL, whose ranges RFC 9394 lets count back from the last result.  The
functions here take the matches as an ordered list (mailbox order for
SEARCH; the requested order for SORT, where MIN and MAX mean the first and
the last, RFC 5267 3.1) and decide, with no I/O:

* the ``* ESEARCH (TAG "a") [UID] ...`` line (:func:`esearch_line`): data
  items in the order MIN, MAX, ALL, PARTIAL, COUNT, MODSEQ as Dovecot writes
  them; with no match MIN, MAX and ALL are left out and COUNT is 0
  (RFC 4731 3.1); ``RETURN ()`` (or only CONTEXT) means ALL; SAVE alone,
  with nothing else asked, suppresses the line (RFC 5182 2.1);
* which matches ``$`` then stands for (:func:`saved_positions`): every
  match with ALL or COUNT or with no MIN/MAX/PARTIAL, else just the MIN and
  MAX messages and the PARTIAL window (RFC 5182 2.4, RFC 9394 3.2);
* with CONDSTORE's MODSEQ criterion, ``MODSEQ n``: the highest mod-sequence
  of the messages the response reports (RFC 4731 3.2, RFC 7162 3.1.5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cyrusmail.imap.sequence import compact

#: the return options that ask for data in the response
DATA_OPTIONS = frozenset({"MIN", "MAX", "ALL", "COUNT", "PARTIAL"})


@dataclass(frozen=True)
class Returns:
    """The RETURN options of one command, upper-cased, and PARTIAL's range."""

    options: frozenset[str]
    partial: tuple[int, int] | None = None

    @classmethod
    def of(cls, options: Sequence[str], partial: tuple[int, int] | None = None) -> Returns:
        wanted = frozenset(options)
        if not wanted - {"CONTEXT"}:
            wanted |= {"ALL"}  # RETURN () and RETURN (CONTEXT) are ALL
        return cls(wanted, partial)

    @property
    def silent(self) -> bool:
        """SAVE with nothing else asked: no ESEARCH response at all."""
        return not self.options - {"SAVE", "CONTEXT"}

    def window(self, count: int) -> range:
        """The positions (0-based, in result order) PARTIAL asks for among ``count`` results."""
        if self.partial is None:
            return range(0)
        first, last = self.partial
        if first > 0:
            return range(first - 1, min(last, count))
        # -1 is the last result, -2 the one before, and so on
        return range(max(count + last, 0), max(count + first + 1, 0))

    def reported(self, count: int) -> range | set[int]:
        """The positions whose messages the response reports (for MODSEQ)."""
        if self.options & {"ALL", "COUNT"}:
            return range(count)
        positions = set(self.window(count))
        if count and "MIN" in self.options:
            positions.add(0)
        if count and "MAX" in self.options:
            positions.add(count - 1)
        return positions


def saved_positions(returns: Returns, count: int) -> range | set[int]:
    """The positions of the results ``$`` holds after SAVE (RFC 5182 2.4, RFC 9394 3.2)."""
    if returns.options & {"ALL", "COUNT"} or not returns.options & {"MIN", "MAX", "PARTIAL"}:
        return range(count)
    return returns.reported(count)


def esearch_line(tag: str, uid: bool, returns: Returns, numbers: Sequence[int],
                 modseqs: Sequence[int] | None = None) -> bytes | None:
    """The untagged ESEARCH response for ``numbers`` (message numbers or
    UIDs, in result order), or None when SAVE alone suppresses it.

    ``modseqs`` (the mod-sequences of the same messages) adds ``MODSEQ``
    when the response reports some message.
    """
    if returns.silent:
        return None
    options = returns.options
    count = len(numbers)
    items = _correlator(tag, uid)
    if count and "MIN" in options:
        items.append(f"MIN {numbers[0]}")
    if count and "MAX" in options:
        items.append(f"MAX {numbers[-1]}")
    if count and "ALL" in options:
        items.append(f"ALL {compact(numbers)}")
    if returns.partial is not None:
        first, last = returns.partial
        window = returns.window(count)
        found = compact(numbers[position] for position in window) or "NIL"
        items.append(f"PARTIAL ({first}:{last} {found})")
    if "COUNT" in options:
        items.append(f"COUNT {count}")
    if modseqs is not None:
        reported = returns.reported(count)
        if reported:
            items.append(f"MODSEQ {max(modseqs[position] for position in reported)}")
    return (" ".join(items) + "\r\n").encode("ascii")


def update_line(tag: str, uid: bool, removed: Sequence[int], added: Sequence[int]) -> bytes | None:
    """RFC 5267 4.3: ``* ESEARCH (TAG "a") [UID] REMOVEFROM (0 set) ADDTO (0 set)``
    for a search context (position 0: SEARCH results keep mailbox order);
    None when nothing changed."""
    if not removed and not added:
        return None
    items = _correlator(tag, uid)
    if removed:
        items.append(f"REMOVEFROM (0 {compact(sorted(removed))})")
    if added:
        items.append(f"ADDTO (0 {compact(sorted(added))})")
    return (" ".join(items) + "\r\n").encode("ascii")


def positioned_line(tag: str, uid: bool, removed: Sequence[tuple[int, int]],
                    added: Sequence[tuple[int, int]]) -> bytes | None:
    """RFC 5267 4.3 for a SORT context: ``REMOVEFROM`` and ``ADDTO`` with
    ``(position, number)`` pairs, to be applied in the order given; numbers at
    consecutive positions share one pair (``ADDTO (3 7,9)``); None when
    nothing changed."""
    if not removed and not added:
        return None
    items = _correlator(tag, uid)
    if removed:
        # given last position first: a run is positions p, p-1, ... read backwards
        runs = _runs([(-position, number) for position, number in removed])
        items.append("REMOVEFROM (" + " ".join(
            f"{-run[-1][0]} {compact(number for _, number in reversed(run))}" for run in runs) + ")")
    if added:
        runs = _runs(list(added))
        items.append("ADDTO (" + " ".join(
            f"{run[0][0]} {compact(number for _, number in run)}" for run in runs) + ")")
    return (" ".join(items) + "\r\n").encode("ascii")


def _correlator(tag: str, uid: bool) -> list[str]:
    return [f'* ESEARCH (TAG "{tag}")', "UID"] if uid else [f'* ESEARCH (TAG "{tag}")']


def _runs(pairs: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """``pairs`` cut where the position does not go up by one."""
    runs: list[list[tuple[int, int]]] = []
    for pair in pairs:
        if runs and pair[0] == runs[-1][-1][0] + 1:
            runs[-1].append(pair)
        else:
            runs.append([pair])
    return runs
