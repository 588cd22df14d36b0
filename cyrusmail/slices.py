"""Long work on the reactor thread, in slices, so that every other session is served meanwhile.

A command that may take seconds (SEARCH over the message files; SORT and
THREAD later) is written as a generator that does one unit of work at a
time (a message), yields what that unit cost, and finally returns its
result.  :func:`run_in_slices` runs units until a turn's ``budget`` is
spent, then returns to the reactor (``callLater(0)``) and carries on in the
next turn; so another connection waits for at most one slice, never for the
whole search.

Everything runs on the reactor thread, so the work may use the store (whose
SQLite connections and objects belong to that thread) as any command does.
Cancelling the returned Deferred (the session does when its connection goes)
stops the work at once: the pending turn is cancelled and the generator
closed, so nothing goes on for a client that is gone.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Generic, TypeVar

from twisted.internet import defer

T = TypeVar("T")

Steps = Generator[int, None, T]
"""Work that yields the cost of each unit it did and returns its result."""


def run_all(steps: Steps[T]) -> T:
    """The result of ``steps``, all at once (where nothing else waits: tools, tests)."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def run_in_slices(reactor, steps: Steps[T], budget: int) -> defer.Deferred[T]:
    """Run ``steps`` in turns of about ``budget`` cost; a Deferred of the result.

    The first slice runs at once, so short work finishes before this
    returns.  An exception from the work fails the Deferred; cancelling it
    stops the work.
    """
    return _Slices(reactor, steps, budget).done


class _Slices(Generic[T]):
    def __init__(self, reactor, steps: Steps[T], budget: int) -> None:
        self.reactor = reactor
        self.steps = steps
        self.budget = max(1, budget)
        self.call = None
        self.done: defer.Deferred[T] = defer.Deferred(canceller=self._cancel)
        self._turn()

    def _turn(self) -> None:
        self.call = None
        spent = 0
        try:
            while spent < self.budget:
                spent += next(self.steps)
        except StopIteration as stop:
            self.done.callback(stop.value)
            return
        except Exception:  # noqa: BLE001 - the work's own failure, for the caller to report
            self.done.errback()
            return
        self.call = self.reactor.callLater(0, self._turn)

    def _cancel(self, _done: defer.Deferred) -> None:
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None
        self.steps.close()
