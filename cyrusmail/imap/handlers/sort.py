"""SORT (with RFC 5267 ESORT's RETURN) and THREAD (RFC 5256, RFC 5957), in plain and UID forms.

The search criteria are matched as SEARCH matches them, then the matches are
ordered or threaded by :mod:`cyrusmail.imap.sorting`, all in one piece of
work run in slices, so other sessions are served meanwhile.  A message
expunged by another session while the work runs is left out (the client
hears of the expunge at a later command, never during SORT or THREAD).
"""

from __future__ import annotations

from twisted.internet import defer

from cyrusmail.imap import commands as c
from cyrusmail.imap import contexts, sorting, threads
from cyrusmail.imap.esearch import Returns, esearch_line, saved_positions
from cyrusmail.imap.handlers.messages import (
    check_charset,
    expunged_meanwhile,
    keep_context,
    matching_uids,
    searching,
    uses_modseq,
)


def sort(session, command: c.Sort) -> defer.Deferred:
    """With RETURN (RFC 5267 ESORT) the answer is an ESEARCH response over the
    sorted matches: MIN and MAX are the first and the last, ALL and PARTIAL
    keep the order; SAVE keeps them as ``$`` (RFC 5182), as SEARCH does, and
    UPDATE keeps a context whose updates carry positions (CONTEXT=SORT)."""
    return searching(session, command, _sort)


def _sort(session, view, command: c.Sort) -> defer.Deferred:
    check_charset(command.charset)
    if uses_modseq(command.search):
        session.enable("CONDSTORE")  # a CONDSTORE enabling command (RFC 7162 3.1)
    seqs = view.seqs()
    start_modseq = view.highest_modseq
    context = None
    if command.return_options is not None and "UPDATE" in command.return_options:
        context = contexts.SearchContext(command.tag, command.uid, command.search, modseq=start_modseq,
                                         sort=command.criteria)

    def work():
        uids = yield from matching_uids(view, command.search, seqs, now=session.reactor.seconds())
        order = yield from sorting.sort(command.criteria, view.mailbox, uids)
        if context is not None:  # the keys, to place later changes (CONTEXT=SORT)
            rows = yield from sorting.load_rows(view.mailbox, uids, context.columns())
            by_uid = {row[0]: row for row in rows}
            context.order = [by_uid[uid] for uid in order if uid in by_uid]
        return order

    def report(order: list[int]) -> None:
        gone = expunged_meanwhile(view)
        if gone:
            order = [uid for uid in order if uid not in gone]
        numbers = order if command.uid else [seqs[uid] for uid in order]
        if command.return_options is None:
            session.untagged(" ".join(["SORT", *map(str, numbers)]))
            return
        returns = Returns.of(command.return_options, command.partial)
        modseqs = None
        if uses_modseq(command.search) and order:
            known = {record.uid: record.modseq for record in view.mailbox.records(sorted(order))}
            modseqs = [known.get(uid, 0) for uid in order]
        line = esearch_line(command.tag, command.uid, returns, numbers, modseqs)
        if line is not None:
            session.write(line)
        if "SAVE" in returns.options:
            view.saved = sorted(order[position] for position in saved_positions(returns, len(order)))
        if context is not None:
            if gone:
                context.order = [row for row in context.order if row[0] not in gone]
            context.matches = {row[0] for row in context.order}
            keep_context(session, view, context)

    return session.run_in_slices(work()).addCallback(report)


def thread(session, command: c.Thread) -> defer.Deferred:
    check_charset(command.charset)
    view = session.state.view
    seqs = view.seqs()

    def work():
        uids = yield from matching_uids(view, command.search, seqs)
        gone = expunged_meanwhile(view)
        uids = [uid for uid in uids if uid not in gone]
        number = (lambda uid: uid) if command.uid else seqs.__getitem__
        return (yield from sorting.thread(command.algorithm, view.mailbox, uids, number))

    def report(forest: list) -> None:
        session.untagged("THREAD " + threads.thread_list(forest) if forest else "THREAD")

    return session.run_in_slices(work()).addCallback(report)
