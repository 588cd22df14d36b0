"""Search contexts that keep a client up to date (RFC 5267 CONTEXT=SEARCH and CONTEXT=SORT, UPDATE).

``SEARCH RETURN (UPDATE ...)`` leaves a :class:`SearchContext` in the
session's view: the matching UIDs and the criteria, frozen so that they mean
what they meant when the client sent them (message numbers, ``*`` and ``$``
become the UIDs they named then).  As the mailbox changes the session tells
the client how the matches changed, in ``* ESEARCH (TAG "t") [UID]
REMOVEFROM (0 ...) ADDTO (0 ...)`` responses:

* a match expunged: REMOVEFROM just before the EXPUNGE responses, while its
  message number is still valid (RFC 5267 4.3.4), by
  :meth:`cyrusmail.imap.selected.SelectedMailbox.poll`;
* new messages and flag changes, by anyone including this session: each
  changed message the session knows of is tested again, after the EXISTS
  and FETCH responses (4.3.3), by :func:`updates`, which is work for
  :mod:`cyrusmail.slices` (a BODY key reads files).

Contexts end with CANCELUPDATE, or when the mailbox is no longer selected.
A session keeps at most :data:`MAX_CONTEXTS`; beyond that, and for
criteria holding OLDER or YOUNGER (RFC 5032), whose matches change with the
clock rather than with the mailbox, the search is answered but not kept:
``* NO [NOUPDATE "tag"]`` (RFC 5267 4.3.1).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from functools import cmp_to_key

from cyrusmail.imap import commands as c
from cyrusmail.imap.esearch import positioned_line, update_line
from cyrusmail.imap.sequence import SequenceSet
from cyrusmail.slices import Steps

MAX_CONTEXTS = 10
"""Search contexts one session may keep updated (RFC 5267 asks for at least one)."""


@dataclass
class SearchContext:
    """One ``RETURN (UPDATE)`` search: its tag, the matching UIDs and the
    mod-sequence up to which changes have been tested.

    A SORT's context (CONTEXT=SORT) also keeps ``order``: the matches' sort
    rows (``(uid, *keys)`` of :func:`cyrusmail.imap.sorting.load_rows`) in
    the order asked, so that updates can say where each message goes or was
    (RFC 5267 4.3.3: a non-zero context position)."""

    tag: str
    uid: bool
    criteria: c.SearchKey
    matches: set[int] = field(default_factory=set)
    modseq: int = 0
    sort: tuple[c.SortCriterion, ...] | None = None
    order: list[tuple] | None = None

    def columns(self) -> tuple[str, ...]:
        from cyrusmail.imap.sorting import COLUMNS

        return tuple(dict.fromkeys(COLUMNS[criterion.key] for criterion in self.sort or ()))

    def row_key(self):
        """The sort order of rows, as SORT makes it: each key, reversed or not,
        then mailbox order (RFC 5256)."""
        columns = self.columns()
        from cyrusmail.imap.sorting import COLUMNS

        fields = [(1 + columns.index(COLUMNS[criterion.key]), criterion.reverse) for criterion in self.sort or ()]

        def compare(left: tuple, right: tuple) -> int:
            for index, reverse in fields:
                if left[index] != right[index]:
                    before = left[index] < right[index]
                    return (1 if before else -1) if reverse else (-1 if before else 1)
            return (left[0] > right[0]) - (left[0] < right[0])

        return cmp_to_key(compare)


def updatable(criteria: c.SearchKey) -> bool:
    """False for criteria whose matches change with time alone (OLDER, YOUNGER)."""
    return not any(isinstance(key, c.SearchWithin) for key in _keys(criteria))


def freeze(criteria: c.SearchKey, view) -> c.SearchKey:
    """``criteria`` with every message-number set, ``*`` and ``$`` replaced by
    the UIDs they stand for in ``view`` now, so that later tests mean the
    same messages whatever is expunged or added."""
    if isinstance(criteria, c.SearchSequence):
        uids = view.resolve(criteria.sequence_set, criteria.uid or criteria.sequence_set.saved,
                            strict=False)
        return c.SearchSequence(SequenceSet.from_numbers(uids), uid=True)
    if isinstance(criteria, c.SearchAnd):
        return c.SearchAnd(tuple(freeze(key, view) for key in criteria.keys))
    if isinstance(criteria, c.SearchOr):
        return c.SearchOr(freeze(criteria.left, view), freeze(criteria.right, view))
    if isinstance(criteria, c.SearchNot):
        return c.SearchNot(freeze(criteria.key, view))
    return criteria


def _keys(criteria: c.SearchKey):
    stack = [criteria]
    while stack:
        key = stack.pop()
        yield key
        if isinstance(key, c.SearchAnd):
            stack.extend(key.keys)
        elif isinstance(key, c.SearchOr):
            stack += [key.left, key.right]
        elif isinstance(key, c.SearchNot):
            stack.append(key.key)


def expunged_lines(view, contexts, gone: set[int]) -> list[bytes]:
    """REMOVEFROM for the matches among ``gone`` (UIDs about to be reported
    expunged), numbered as the client still knows them."""
    lines = []
    for context in contexts:
        removed = context.matches & gone
        if not removed:
            continue
        line = _changed(view, context, removed, [])
        if line is not None:
            lines.append(line)
    return lines


def _changed(view, context: SearchContext, removed: set[int], added_rows: list[tuple]) -> bytes | None:
    """Apply a change to ``context`` and say it: REMOVEFROM, then ADDTO."""
    number = (lambda uid: uid) if context.uid else view.seq_of
    context.matches -= removed
    context.matches |= {row[0] for row in added_rows}
    if context.order is None:
        return update_line(context.tag, context.uid, [number(uid) for uid in sorted(removed)],
                           [number(row[0]) for row in added_rows])
    # Removals last position first, so none moves an earlier one; additions
    # first position first, each where it ends up.
    removals = [(position + 1, row[0]) for position, row in enumerate(context.order) if row[0] in removed]
    context.order = [row for row in context.order if row[0] not in removed]
    key = context.row_key()
    for row in added_rows:
        bisect.insort(context.order, row, key=key)
    added = {row[0] for row in added_rows}
    additions = [(position + 1, row[0]) for position, row in enumerate(context.order) if row[0] in added]
    return positioned_line(context.tag, context.uid,
                           [(position, number(uid)) for position, uid in reversed(removals)],
                           [(position, number(uid)) for position, uid in additions])


def updates(view, now: float) -> Steps[list[bytes]]:
    """Test again, for every context of ``view``, each message it knows of
    that changed since the context last looked; the ADDTO/REMOVEFROM lines.

    Work for :func:`cyrusmail.slices.run_in_slices`.  Messages the client
    has not been told exist yet, and those already reported expunged, wait
    for the next call.
    """
    from cyrusmail.imap.search import search

    contexts = list(view.contexts.values())
    if not contexts:
        return []
    watermark = view.highest_modseq
    changes = view.mailbox.changes_since(min(context.modseq for context in contexts))
    known = [record for record in changes.changed
             if view.contains(record.uid) and record.uid not in view.ghosts]
    seqs = view.seqs() if known else {}
    lines: list[bytes] = []
    for context in contexts:
        records = [record for record in known if record.modseq > context.modseq]
        context.modseq = max(context.modseq, watermark)
        if not records:
            continue
        gone: set[int] = set()
        found = yield from search(context.criteria, view.mailbox, records, seqs, view.recent,
                                  view.uids[-1] if view.uids else 0, now=now, gone=gone)
        if view.contexts.get(context.tag) is not context:
            continue  # cancelled meanwhile
        matched = {record.uid for record in found}
        tested = {record.uid for record in records} - gone
        added = sorted(matched - context.matches)
        removed = (tested - matched) & context.matches
        if context.order is None:
            rows = [(uid,) for uid in added]
        else:
            from cyrusmail.imap.sorting import load_rows

            rows = yield from load_rows(view.mailbox, added, context.columns())
        line = _changed(view, context, removed, rows)
        if line is not None:
            lines.append(line)
    return lines
