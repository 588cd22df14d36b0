"""SORT (RFC 5256, RFC 5957 DISPLAYFROM/DISPLAYTO) and THREAD over the messages a search found.

The keys come from the index (:meth:`IMailbox.sort_rows`: made once from
the MIME cache at delivery), read a window at a time; no message file is
opened.  Both are generators for :func:`cyrusmail.slices.run_in_slices`,
meant to follow :func:`cyrusmail.imap.search.search` in one piece of work.

:func:`sort` returns the UIDs in order, so ESORT's MIN, MAX, COUNT, ALL
and PARTIAL (RFC 5267) can be taken from the same list.  The order is
stable: messages equal under every key stay in mailbox order (RFC 5256:
"sorted according to the order in which they appear in the mailbox"); a
REVERSE key reverses its own comparison only.  DATE is the sent date with
its zone (the internal date when the Date: field is unusable), ARRIVAL the
internal date; strings compare under i;unicode-casemap (the index keeps
them already mapped).
"""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter

from cyrusmail.imap import commands as c
from cyrusmail.imap import threads
from cyrusmail.slices import Steps
from cyrusmail.store.interfaces import IMailbox

WINDOW = 2_000
"""Messages whose keys are read from the index at a time."""
ROW_COST = 1_500
"""The cost of reading one message's keys (see :mod:`cyrusmail.slices`)."""
ORDER_COST = 300
"""The cost of placing one message in one pass of the sort, for one key."""

COLUMNS = {
    "ARRIVAL": "internal_date",
    "SIZE": "size",
    "DATE": "date",
    "SUBJECT": "subject",
    "FROM": "from_",
    "TO": "to",
    "CC": "cc",
    "DISPLAYFROM": "display_from",
    "DISPLAYTO": "display_to",
}
"""Sort key -> the column of :meth:`IMailbox.sort_rows` it compares."""

THREAD_COLUMNS = ("date", "subject", "reply", "message_id", "references")


def load_rows(mailbox: IMailbox, uids: list[int], columns: tuple[str, ...]) -> Steps[list[tuple]]:
    """``(uid, *columns)`` of ``uids`` (ascending), a window at a time; a message
    expunged meanwhile has none."""
    rows: list[tuple] = []
    for start in range(0, len(uids), WINDOW):
        batch = uids[start:start + WINDOW]
        rows += mailbox.sort_rows(batch, columns)
        yield ROW_COST * len(batch)
    return rows


def sort(criteria: tuple[c.SortCriterion, ...], mailbox: IMailbox, uids: list[int]) -> Steps[list[int]]:
    """``uids`` (ascending: mailbox order) ordered by ``criteria``.

    One stable sort per key, the last key first: Python's sort keeps the
    order of equal items even when reversed, which is what SORT promises.
    """
    columns = tuple(dict.fromkeys(COLUMNS[criterion.key] for criterion in criteria))
    rows = yield from load_rows(mailbox, uids, columns)
    for criterion in reversed(criteria):
        rows.sort(key=itemgetter(1 + columns.index(COLUMNS[criterion.key])), reverse=criterion.reverse)
        yield ORDER_COST * len(rows)
    return [row[0] for row in rows]


def thread(algorithm: str, mailbox: IMailbox, uids: list[int],
           number: Callable[[int], int]) -> Steps[list[threads.Node]]:
    """The threads of ``uids`` (ascending) by ``algorithm``; nodes carry
    ``number(uid)`` (a sequence number or the UID) for the answer."""
    rows = yield from load_rows(mailbox, uids, THREAD_COLUMNS)
    messages = [
        threads.Message(number(uid), order, date, subject, bool(reply), message_id, references)
        for order, (uid, date, subject, reply, message_id, references) in enumerate(rows)
    ]
    yield ROW_COST * len(messages)
    build = threads.references if algorithm == "REFERENCES" else threads.ordered_subject
    return (yield from build(messages))
