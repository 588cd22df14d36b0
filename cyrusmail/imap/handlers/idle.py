"""IDLE (RFC 2177): updates pushed at once until the client says DONE.

Changes made by this server (any of its worker processes) arrive through
``mailbox.watch``; a poll every ``[server] idle_check_interval`` (5 s)
catches those made by other programs (cyrusmail-admin).  The session's 30-minute autologout still applies.
"""

from __future__ import annotations

from twisted.internet import defer

from cyrusmail.imap import codes, responses, wire
from cyrusmail.imap.state import Selected


def idle(session, command) -> defer.Deferred:
    return _Idling(session).start()


class _Idling:
    def __init__(self, session) -> None:
        self.session = session
        self.done: defer.Deferred = defer.Deferred()
        self.poll_call = None
        self.push_call = None
        self.mailbox = session.state.view.mailbox if isinstance(session.state, Selected) else None

    def start(self) -> defer.Deferred:
        self.session.write(responses.continuation("idling"))
        self.session.expect_lines(self._line)
        self.session.cleanups.append(self._stop)
        if self.mailbox is not None:
            self.mailbox.watch(self._changed)
            self._schedule_poll()
        return self.done

    def _schedule_poll(self) -> None:
        self.poll_call = self.session.reactor.callLater(self.session.IDLE_POLL, self._poll)

    def _changed(self) -> None:
        # Called inside another session's store call: push from the reactor.
        if self.push_call is None:
            self.push_call = self.session.reactor.callLater(0, self._push)

    def _push(self) -> None:
        self.push_call = None
        if not self.done.called and not self.session.flow.blocked:
            self.session.refresh(send_expunges=True)

    def _poll(self) -> None:
        self.poll_call = None
        if not self.done.called:
            if not self.session.flow.blocked:  # a client not reading: the next poll tells it all
                self.session.refresh(send_expunges=True)
            if not self.session.closing:
                self._schedule_poll()
            else:
                self._stop()

    def _stop(self) -> None:
        if self._stop in self.session.cleanups:
            self.session.cleanups.remove(self._stop)
        self.session.stop_lines()
        if self.mailbox is not None:
            self.mailbox.unwatch(self._changed)
        for call in (self.poll_call, self.push_call):
            if call is not None and call.active():
                call.cancel()
        self.poll_call = self.push_call = None

    def _line(self, event) -> None:
        self._stop()
        if isinstance(event, wire.Line) and event.data.upper() == b"DONE":
            self.done.callback(codes.Reply(text="IDLE terminated"))
        else:
            self.done.errback(codes.bad("Expected DONE"))
