"""IDLE (RFC 2177): updates pushed at once until the client says DONE.

Changes made by this server (in this process, or in another of its worker
processes, relayed by the supervisor) arrive through ``mailbox.watch`` at
once.  Changes made by other programs (``cyrusmail-admin``) are found by one
poll shared by every idling session of the store (:class:`SharedPoll`):
every ``[server] idle_check_interval`` (5 s) the store looks once at the
index of each user with idlers (``store.poll_watched``) and wakes that
user's idlers, each of which then brings its view up to date (one cheap
look when nothing it shows changed).  So 10,000 idle sessions cost one
timer, not 10,000 polls.  A session brings its view up to date as it starts
idling, so nothing that changed since its last command waits for the next
change.  A client that is not reading (its output blocked) is retried every
``idle_check_interval`` until it reads.  The session's 30-minute
autologout still applies.
"""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.logger import Logger

from cyrusmail.imap import codes, responses, wire
from cyrusmail.imap.state import Selected

log = Logger(namespace="cyrusmail.imap")

#: ``context.extras`` key of the {reactor: SharedPoll} of a server's IMAP sessions
SHARED_POLL = "imap-idle-poll"


def idle(session, command) -> defer.Deferred:
    return _Idling(session).start()


class SharedPoll:
    """One timer for every IDLE session on a store: runs while any session idles."""

    def __init__(self, store, reactor, interval: float) -> None:
        self.store = store
        self.reactor = reactor
        self.interval = interval
        self.idlers = 0
        self._loop: task.LoopingCall | None = None

    @classmethod
    def of(cls, session) -> SharedPoll:
        """The shared poll of ``session``'s store (one per reactor: tests run several clocks)."""
        polls = session.context.extras.setdefault(SHARED_POLL, {})
        poll = polls.get(session.reactor)
        if poll is None:
            poll = polls[session.reactor] = cls(session.context.store, session.reactor, session.IDLE_POLL)
        return poll

    def join(self) -> None:
        self.idlers += 1
        if self._loop is None:
            self._loop = task.LoopingCall(self._look)
            self._loop.clock = self.reactor
            self._loop.start(self.interval, now=False)

    def leave(self) -> None:
        self.idlers -= 1
        if self.idlers <= 0 and self._loop is not None:
            self.idlers = 0
            self._loop.stop()
            self._loop = None

    def _look(self) -> None:
        try:
            self.store.poll_watched()
        except Exception:  # noqa: BLE001 - a failed look must not stop the next one
            log.failure("IMAP IDLE: looking for changes made elsewhere failed")


class _Idling:
    def __init__(self, session) -> None:
        self.session = session
        self.done: defer.Deferred = defer.Deferred()
        self.push_call = None
        self.retry_call = None
        self.poll: SharedPoll | None = None
        self.stopped = False
        self.mailbox = session.state.view.mailbox if isinstance(session.state, Selected) else None

    def start(self) -> defer.Deferred:
        self.session.write(responses.continuation("idling"))
        self.session.expect_lines(self._line)
        self.session.cleanups.append(self._stop)
        if self.mailbox is not None:
            self.mailbox.watch(self._changed)
            self.poll = SharedPoll.of(self.session)
            self.poll.join()
            self._push()  # what changed elsewhere since the last command's poll
        return self.done

    def _changed(self) -> None:
        # Called inside another session's store call: push from the reactor.
        if self.push_call is None and not self.stopped:
            self.push_call = self.session.reactor.callLater(0, self._push)

    def _push(self) -> None:
        self.push_call = None
        if self.stopped or self.session.closing:
            return
        if self.session.flow.blocked:
            # A client not reading: try again later, and then tell it everything at once.
            if self.retry_call is None:
                self.retry_call = self.session.reactor.callLater(self.session.IDLE_POLL, self._retry)
            return
        self.session.refresh(send_expunges=True)

    def _retry(self) -> None:
        self.retry_call = None
        self._push()

    def _stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        if self._stop in self.session.cleanups:
            self.session.cleanups.remove(self._stop)
        self.session.stop_lines()
        if self.mailbox is not None:
            self.mailbox.unwatch(self._changed)
            self.poll.leave()
        for call in (self.push_call, self.retry_call):
            if call is not None and call.active():
                call.cancel()
        self.push_call = self.retry_call = None

    def _line(self, event) -> None:
        self._stop()
        if isinstance(event, wire.Line) and event.data.upper() == b"DONE":
            self.done.callback(codes.Reply(text="IDLE terminated"))
        else:
            self.done.errback(codes.bad("Expected DONE"))
