"""Each worker takes its share of new connections.

The workers share every listening socket, and whichever the kernel wakes
and schedules first accepts.  On a loaded or one-core machine that can be
the same worker connection after connection, while the other sits idle.
So a worker that holds clearly more sessions than the others' average
stops accepting (the others take the connections) until the counts even
out, and never for longer than ``PAUSE``: the others may be busy, and a
new client must not wait on them.  The counts are those the connection
caps use (:class:`~cyrusmail.sessions.SessionRegistry`: ``here`` and the
others' as last reported, ``elsewhere``).
"""

from __future__ import annotations

from collections.abc import Iterable

#: sessions a worker may hold above the others' average before it stops accepting
SLACK = 2
#: seconds a worker stops accepting at most, before it takes connections again
PAUSE = 0.25


class AcceptBalancer:
    """Pauses and resumes a worker's listening ports as its share of the sessions goes up and down."""

    def __init__(self, workers: int, clock) -> None:
        self.registry = None  # the SessionRegistry, once the worker has opened its store
        self.others = workers - 1
        self.clock = clock
        self.ports: list = []  # AdoptedPort: pause(), resume()
        self.resume_call = None

    def add(self, port) -> None:
        self.ports.append(port)

    def over_share(self) -> bool:
        if self.registry is None:
            return False
        here, elsewhere = self.registry.here.total, self.registry.elsewhere.total
        return self.others > 0 and here * self.others >= elsewhere + SLACK * self.others

    def check(self) -> None:
        """Called at each change of the counts."""
        if self.over_share():
            if self.resume_call is None:
                self._each(port.pause for port in self.ports)
                self.resume_call = self.clock.callLater(PAUSE, self.resume)
        elif self.resume_call is not None:
            self.resume_call.cancel()
            self.resume()

    def resume(self) -> None:
        """Accept again (the counts evened out, or the pause is over)."""
        self.resume_call = None
        self._each(port.resume for port in self.ports)

    def stop(self) -> None:
        if self.resume_call is not None:
            self.resume_call.cancel()
            self.resume_call = None

    @staticmethod
    def _each(calls: Iterable) -> None:
        for call in calls:
            call()
