"""SORT (RFC 5256, RFC 5957 DISPLAYFROM/DISPLAYTO) and THREAD over the messages a search found.

The keys come from the index (:meth:`IMailbox.sort_data`: made once from
the MIME cache at delivery), read a window at a time; no message file is
opened.  Both are generators for :func:`cyrusmail.slices.run_in_slices`,
meant to follow :func:`cyrusmail.imap.search.search` in one piece of work.

:func:`sort` returns the records in order, so ESORT's MIN, MAX, COUNT, ALL
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

from cyrusmail.imap import commands as c
from cyrusmail.imap import threads
from cyrusmail.slices import Steps
from cyrusmail.store.interfaces import IMailbox
from cyrusmail.store.records import MessageRecord, SortData

KEY_WINDOW = 500
"""Messages whose keys are read from the index at a time."""
KEY_COST = 4_000
"""The cost of reading one message's keys (see :mod:`cyrusmail.slices`)."""
ORDER_COST = 400
"""The cost of placing one message in one pass of the sort, for one key."""


def load_keys(mailbox: IMailbox, records: list[MessageRecord]) -> Steps[dict[int, SortData]]:
    """UID -> SortData of ``records`` (a message expunged meanwhile is missing)."""
    keys: dict[int, SortData] = {}
    for start in range(0, len(records), KEY_WINDOW):
        batch = [record.uid for record in records[start:start + KEY_WINDOW]]
        keys.update(mailbox.sort_data(batch))
        yield KEY_COST * len(batch)
    return keys


def _order_by(key: str, keys: dict[int, SortData]) -> Callable[[MessageRecord], object]:
    if key == "ARRIVAL":
        return lambda record: record.internal_date
    if key == "SIZE":
        return lambda record: record.size
    if key == "DATE":

        def sent(record: MessageRecord) -> float:
            written = keys[record.uid].sent
            return record.internal_date if written is None else written

        return sent
    field = _FIELDS[key]
    return lambda record: getattr(keys[record.uid], field)


_FIELDS = {"SUBJECT": "subject", "FROM": "from_", "TO": "to", "CC": "cc",
           "DISPLAYFROM": "display_from", "DISPLAYTO": "display_to"}


def sort(
    criteria: tuple[c.SortCriterion, ...], mailbox: IMailbox, records: list[MessageRecord]
) -> Steps[list[MessageRecord]]:
    """``records`` (mailbox order) ordered by ``criteria``.

    One stable sort per key, the last key first: Python's sort keeps the
    order of equal items even when reversed, which is what SORT promises.
    """
    keys = yield from load_keys(mailbox, records)
    order = [record for record in records if record.uid in keys]
    for criterion in reversed(criteria):
        order.sort(key=_order_by(criterion.key, keys), reverse=criterion.reverse)
        yield ORDER_COST * len(order)
    return order


def thread(
    algorithm: str,
    mailbox: IMailbox,
    records: list[MessageRecord],
    number: Callable[[MessageRecord], int],
) -> Steps[list[threads.Node]]:
    """The threads of ``records`` (mailbox order) by ``algorithm``; nodes carry
    ``number(record)`` (a sequence number or UID) for the answer."""
    keys = yield from load_keys(mailbox, records)
    messages = []
    for order, record in enumerate(records):
        data = keys.get(record.uid)
        if data is None:
            continue  # expunged meanwhile
        messages.append(threads.Message(
            number(record), order, record.internal_date if data.sent is None else data.sent,
            data.subject, data.reply, data.message_id, data.references,
        ))
    build = threads.references if algorithm == "REFERENCES" else threads.ordered_subject
    return (yield from build(messages))
