"""The channel between the supervisor and one worker process: JSON messages on a socket pair.

Each message is one JSON object with an ``op``, framed by a 32-bit length
(Twisted's ``Int32StringReceiver``).  A message with an ``id`` is a request:
its handler's result (a dict, or a Deferred of one) goes back as ``{"op":
"reply", "id": ..., ...}``, or ``{"op": "reply", "id": ..., "error": TEXT}``
when the handler fails.  Messages without an ``id`` are not answered.  Both
ends are one :class:`Channel`; what each side handles is its ``handlers``
table.  A socket pair needs no address, password or file mode: only the
two processes hold its ends.
"""

from __future__ import annotations

import itertools
import json
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

from cyrusmail import logs

#: Longest message either side takes (a ``who`` of many thousand sessions fits).
MAX_MESSAGE = 64 * 1024 * 1024


class ChannelError(Exception):
    """The other side failed a request, or the channel closed before the reply."""


class Channel(Int32StringReceiver):
    """One end of the channel; see the module docstring."""

    MAX_LENGTH = MAX_MESSAGE

    def __init__(self, handlers: dict[str, Callable[[dict], Any]], name: str,
                 lost: Callable[[], None] | None = None) -> None:
        self.handlers = handlers
        self.name = name
        self.lost = lost
        self._ids = itertools.count(1)
        self._replies: dict[int, defer.Deferred] = {}
        self.open = False

    def connectionMade(self) -> None:
        self.open = True

    def logPrefix(self) -> str:
        return self.name

    # -- sending -----------------------------------------------------------------

    def send(self, op: str, **fields: Any) -> None:
        """Send a message that is not answered (dropped when the channel is closed)."""
        if self.open:
            self.sendString(json.dumps({"op": op, **fields}, separators=(",", ":")).encode("utf-8"))

    def request(self, op: str, **fields: Any) -> defer.Deferred:
        """Send a request; a Deferred of the reply's fields (ChannelError if it failed or the channel closed)."""
        if not self.open:
            return defer.fail(ChannelError(f"{self.name}: the channel is closed"))
        number = next(self._ids)
        reply: defer.Deferred = defer.Deferred()
        self._replies[number] = reply
        self.send(op, id=number, **fields)
        return reply

    # -- receiving -------------------------------------------------------------------

    def stringReceived(self, data: bytes) -> None:
        try:
            message = json.loads(data)
            op = message["op"]
        except (ValueError, TypeError, KeyError):
            logs.log.error("{name}: a message that is not JSON with an op; closing the channel", name=self.name)
            self.transport.loseConnection()
            return
        if op == "reply":
            self._replied(message)
            return
        handler = self.handlers.get(op)
        number = message.get("id")
        if handler is None:
            logs.log.error("{name}: unknown message {op!r}", name=self.name, op=str(op)[:40])
            if number is not None:
                self.send("reply", id=number, error=f"unknown message {str(op)[:40]!r}")
            return
        if number is None:
            try:
                handler(message)
            except Exception:  # noqa: BLE001 -- one message's failure must not close the channel
                logs.log.failure("{name}: handling {op} failed", name=self.name, op=op)
            return
        answer = defer.maybeDeferred(handler, message)
        answer.addCallbacks(lambda result: self.send("reply", id=number, **(result or {})),
                            lambda failure: self._request_failed(failure, number, op))

    def _request_failed(self, failure: Failure, number: int, op: str) -> None:
        if not failure.check(ChannelError):
            logs.log.failure("{name}: handling {op} failed", failure, name=self.name, op=op)
        self.send("reply", id=number, error=failure.getErrorMessage() or failure.type.__name__)

    def _replied(self, message: dict) -> None:
        waiting = self._replies.pop(message.get("id"), None)
        if waiting is None:
            return
        if "error" in message:
            waiting.errback(ChannelError(str(message["error"])))
        else:
            waiting.callback(message)

    def lengthLimitExceeded(self, length: int) -> None:
        logs.log.error("{name}: a message of {n} octets is over the limit; closing the channel",
                       name=self.name, n=length)
        self.transport.loseConnection()

    def connectionLost(self, reason=None) -> None:
        self.open = False
        if self.lost is not None:
            self.lost()
        replies, self._replies = self._replies, {}
        for waiting in replies.values():
            waiting.errback(ChannelError(f"{self.name}: the channel closed"))


def adopt(reactor, fd: int, channel: Channel) -> Channel:
    """Connect ``channel`` to the connected unix socket ``fd`` (a duplicate is taken; close ``fd`` after)."""
    factory = Factory.forProtocol(lambda: channel)
    factory.noisy = False
    reactor.adoptStreamConnection(fd, socket.AF_UNIX, factory)
    return channel
