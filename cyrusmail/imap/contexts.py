"""Search contexts that keep a client up to date (RFC 5267 CONTEXT=SEARCH, UPDATE).

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

from dataclasses import dataclass, field

from cyrusmail.imap import commands as c
from cyrusmail.imap.esearch import update_line
from cyrusmail.imap.sequence import SequenceSet
from cyrusmail.slices import Steps

MAX_CONTEXTS = 10
"""Search contexts one session may keep updated (RFC 5267 asks for at least one)."""


@dataclass
class SearchContext:
    """One ``RETURN (UPDATE)`` search: its tag, the matching UIDs and the
    mod-sequence up to which changes have been tested."""

    tag: str
    uid: bool
    criteria: c.SearchKey
    matches: set[int] = field(default_factory=set)
    modseq: int = 0


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
        context.matches -= removed
        numbers = sorted(removed) if context.uid else [view.seq_of(uid) for uid in sorted(removed)]
        lines.append(update_line(context.tag, context.uid, numbers, ()))
    return lines


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
             if record.uid in view.modseqs and record.uid not in view.ghosts]
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
        added = matched - context.matches
        removed = (tested - matched) & context.matches
        context.matches |= added
        context.matches -= removed
        if context.uid:
            line = update_line(context.tag, True, sorted(removed), sorted(added))
        else:
            line = update_line(context.tag, False, [view.seq_of(uid) for uid in sorted(removed)],
                               [view.seq_of(uid) for uid in sorted(added)])
        if line is not None:
            lines.append(line)
    return lines
