"""SORT and THREAD (RFC 5256, RFC 5957), in plain and UID forms.

The search criteria are matched as SEARCH matches them, then the matches are
ordered or threaded by :mod:`cyrusmail.imap.sorting`, all in one piece of
work run in slices, so other sessions are served meanwhile.  A message
expunged by another session while the work runs is left out (the client
hears of the expunge at a later command, never during SORT or THREAD).
"""

from __future__ import annotations

from twisted.internet import defer

from cyrusmail.imap import commands as c
from cyrusmail.imap import sorting, threads
from cyrusmail.imap.handlers.messages import (
    check_charset,
    expunged_meanwhile,
    matching_uids,
)


def sort(session, command: c.Sort) -> defer.Deferred:
    check_charset(command.charset)
    view = session.state.view
    seqs = view.seqs()

    def work():
        uids = yield from matching_uids(view, command.search, seqs)
        return (yield from sorting.sort(command.criteria, view.mailbox, uids))

    def report(order: list[int]) -> None:
        gone = expunged_meanwhile(view)
        numbers = [uid for uid in order if uid not in gone] if command.uid else \
            [seqs[uid] for uid in order if uid not in gone]
        session.untagged(" ".join(["SORT", *map(str, numbers)]))

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
