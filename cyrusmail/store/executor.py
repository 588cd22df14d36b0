"""Where store work runs: at once on the caller's thread, or off the reactor in a thread pool.

Writing a message means waiting for the disk: its file's fsync, its
folder's, the index's durable COMMIT.  On the reactor thread each of those
stalls every session, so the server runs store writes through a
:class:`ThreadedExecutor`:

- **One queue per index** (a user, or the shared tree): its jobs run one
  after another, in the order submitted, on a bounded pool of threads; jobs
  of different users run side by side.  The order of one session's replies
  needs nothing more: a session runs its next command only once the last
  is answered.
- **Group commit**: jobs submitted with ``group=True`` that wait in the same
  queue run together in one :meth:`UserIndex.group`: one transaction, each
  folder fsynced once, one durable COMMIT.  Each job's Deferred fires only
  after that COMMIT, so nothing is answered before it is durable.
- **Preparation** (:meth:`prepare`): what needs no index, such as a staged
  message's fsync and its MIME parse, runs on the pool at once, outside any
  queue, so that concurrent deliveries to one user fsync their files in
  parallel and the grouped part holds the index only for the inserts.
- Results come back on the reactor thread (Deferreds fire there), and so
  do the store's change notifications (:meth:`call_home`).

:class:`InlineExecutor` runs the same jobs the same way (groups included)
at once on the calling thread, for ``cyrusmail-admin``, tests and any store
made without a reactor; its Deferreds have fired when returned.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

#: Jobs committed together at most (a bound on how long one group holds the index).
MAX_GROUP = 64
#: Threads doing store work by default (``[server] store_threads``).
DEFAULT_THREADS = 4


#: Per worker thread: what to do when its job ends (see :func:`at_job_end`).
_worker = threading.local()


@contextmanager
def _job_scope() -> Iterator[None]:
    endings: list[Callable[[], None]] = []
    _worker.endings = endings
    try:
        yield
    finally:
        _worker.endings = None
        for ending in endings:
            ending()


def at_job_end(action: Callable[[], None]) -> bool:
    """Call ``action`` when this worker thread's job ends; False (and nothing
    done) when this is no worker thread: the caller keeps what it made."""
    endings = getattr(_worker, "endings", None)
    if endings is None:
        return False
    endings.append(action)
    return True


@dataclass
class Job:
    """One call to run in a user's queue."""

    work: Callable[..., Any]
    args: tuple
    group: bool
    deferred: defer.Deferred = field(default_factory=defer.Deferred)


def run_jobs(index_of: Callable[[str], Any], key: str, jobs: list[Job]) -> list[tuple[bool, Any]]:
    """Run ``jobs`` (all grouped, or one alone) for ``key``'s index: (succeeded, result or Failure) each.

    A job's failure is its own; a group whose COMMIT fails fails every job in it.
    """
    if not jobs[0].group:
        return [_outcome(jobs[0])]
    index = index_of(key)
    outcomes: list[tuple[bool, Any]] = []
    try:
        with index.group():
            outcomes.extend(_outcome(job) for job in jobs)
    except Exception:  # noqa: BLE001 - the commit failed: nothing in the group is durable
        failure = Failure()
        return [(False, failure)] * len(jobs)
    return outcomes


def _outcome(job: Job) -> tuple[bool, Any]:
    try:
        return True, job.work(*job.args)
    except Exception:  # noqa: BLE001 - the job's caller gets it as a failed Deferred
        return False, Failure()


def _fire(deferred: defer.Deferred, outcome: tuple[bool, Any]) -> None:
    succeeded, value = outcome
    if succeeded:
        deferred.callback(value)
    else:
        deferred.errback(value)


class InlineExecutor:
    """Store work at once, on the calling thread; every Deferred has fired when returned."""

    threaded = False

    def __init__(self, index_of: Callable[[str], Any]):
        self._index_of = index_of

    def submit(self, key: str, work: Callable[..., Any], *args: Any, group: bool = False) -> defer.Deferred:
        job = Job(work, args, group)
        _fire(job.deferred, run_jobs(self._index_of, key, [job])[0])
        return job.deferred

    def prepare(self, work: Callable[..., Any], *args: Any) -> defer.Deferred:
        return defer.maybeDeferred(work, *args)

    def call_home(self, action: Callable[..., None], *args: Any) -> None:
        action(*args)

    def drain(self) -> defer.Deferred:
        return defer.succeed(None)

    def stop(self) -> None:
        pass


class ThreadedExecutor:
    """Store work on a bounded thread pool, serialised per index, grouped where asked.

    Queues are kept on the reactor thread (``submit`` is called there); a
    worker runs one queue's next job or group and hands the outcomes back
    with ``callFromThread``, which also starts that queue's next turn.
    """

    threaded = True

    def __init__(self, reactor, index_of: Callable[[str], Any], threads: int = DEFAULT_THREADS):
        self.reactor = reactor
        self._index_of = index_of
        self.pool = ThreadPool(minthreads=0, maxthreads=threads, name="cyrusmail-store")
        self.pool.threadFactory = _daemon_thread  # a crash must not hang the exit; stop() joins them
        self._queues: dict[str, deque[Job]] = {}
        self._busy: set[str] = set()
        self._preparing = 0
        self._idle: list[defer.Deferred] = []
        self._home = threading.get_ident()
        self.groups = 0  # group commits made (for the bench and tests)
        self.pool.start()

    def submit(self, key: str, work: Callable[..., Any], *args: Any, group: bool = False) -> defer.Deferred:
        """Run ``work(*args)`` in ``key``'s queue; a Deferred of its result, fired on the reactor thread."""
        job = Job(work, args, group)
        self._queues.setdefault(key, deque()).append(job)
        if key not in self._busy:
            self._next(key)
        return job.deferred

    def prepare(self, work: Callable[..., Any], *args: Any) -> defer.Deferred:
        """Run ``work(*args)`` on the pool now, in no queue (it must touch no index)."""
        done: defer.Deferred = defer.Deferred()

        def prepared(outcome: tuple[bool, Any]) -> None:
            self._preparing -= 1
            _fire(done, outcome)  # a job it submits counts as busy from here on
            self._check_idle()

        self._preparing += 1
        self.pool.callInThreadWithCallback(
            lambda succeeded, value: self.reactor.callFromThread(prepared, (succeeded, value)), work, *args)
        return done

    def call_home(self, action: Callable[..., None], *args: Any) -> None:
        """Call ``action(*args)`` on the reactor thread: now if this is it."""
        if threading.get_ident() == self._home:
            action(*args)
        else:
            self.reactor.callFromThread(action, *args)

    def _next(self, key: str) -> None:
        queue = self._queues.get(key)
        if not queue:
            self._queues.pop(key, None)
            self._busy.discard(key)
            return
        jobs = [queue.popleft()]
        while jobs[0].group and queue and queue[0].group and len(jobs) < MAX_GROUP:
            jobs.append(queue.popleft())
        self._busy.add(key)
        self.pool.callInThreadWithCallback(
            lambda succeeded, outcomes: self.reactor.callFromThread(self._done, key, jobs, succeeded, outcomes),
            self._run, key, jobs)

    def _run(self, key: str, jobs: list[Job]) -> list[tuple[bool, Any]]:
        with _job_scope():
            return run_jobs(self._index_of, key, jobs)

    def _done(self, key: str, jobs: list[Job], succeeded: bool, outcomes: Any) -> None:
        if jobs[0].group:
            self.groups += 1
        if not succeeded:  # run_jobs itself failed (the index could not be opened)
            outcomes = [(False, outcomes)] * len(jobs)
        self._next(key)  # the queue's next turn starts before the replies go out
        for job, outcome in zip(jobs, outcomes):
            _fire(job.deferred, outcome)
        self._check_idle()

    def drain(self) -> defer.Deferred:
        """A Deferred fired once nothing is queued, running or being prepared
        (at shutdown, before the store closes)."""
        waiting: defer.Deferred = defer.Deferred()
        self._idle.append(waiting)
        self._check_idle()
        return waiting

    def _check_idle(self) -> None:
        if self._busy or self._preparing:
            return
        idle, self._idle = self._idle, []
        for waiting in idle:
            waiting.callback(None)

    def stop(self) -> None:
        """Finish what the threads are doing and end them."""
        self.pool.stop()


def _daemon_thread(*args, **kwargs) -> threading.Thread:
    return threading.Thread(*args, daemon=True, **kwargs)
