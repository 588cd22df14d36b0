"""Output flow control for every session: a client that does not read gets no more answers.

A client may pipeline commands and never read what comes back (10 MB of
``a CAPABILITY``); answered at once, the replies would pile up in the
server's memory.  :class:`OutputFlow` is registered as the connection's one
streaming producer for the whole connection, so that the transport says
when more than its high-water mark waits unsent (``pauseProducing``) and
when all of it has gone (``resumeProducing``).  The mark is Twisted's
``FileDescriptor.bufferSize``, 64 KiB; over TLS the layer above it may
gather up to 64,000 octets more before it writes.  While output is
*blocked* the session starts no further command.  What the client goes on
sending waits in the session's input buffer, which is bounded: once that is
full the session stops reading the socket.  So a connection holds at most
the output mark plus one command's answer (large answers are streamed in
pieces, only while output flows) and the input bound.

Only one producer can be registered per transport: a streamed answer
(IMAP's ResponseWriter, a POP3 RETR) is *attached* to the flow, which
passes the pauses and resumes on to it.

A layer that transforms the output (IMAP's COMPRESS=DEFLATE,
:mod:`cyrusmail.imap.compress`) may stand in for the transport as the
flow's and the writer's ``transport``: it passes the writes (transformed),
the producer registration and the close down, so that the flow stays
registered with the real transport, whose buffer of unsent octets still
decides the pauses.

Idle timers: input that arrives while output is blocked is not activity,
output draining is.  When a session's idle timer fires while output is
blocked, a goodbye could never be delivered, so the session aborts the
connection.

Closing: Twisted does not close a connection whose producer is still
registered (over TLS the shutdown does not even begin), so sessions hang up
through :meth:`OutputFlow.close`, never ``transport.loseConnection()``.
What was written still goes out, but a connection still open
:attr:`OutputFlow.CLOSE_GRACE` seconds after the client last took output
is aborted.

It works the same over plain TCP, implicit TLS (``TLSMemoryBIOFactory``
registers the flow with the socket through its producer membrane) and
after STARTTLS (Twisted moves the registered producer to the TLS layer).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


@implementer(IPushProducer)
class OutputFlow:
    """The one producer registered with a session's transport (see the module docstring).

    Made in the session's ``connectionMade``: ``drained`` is called each
    time the output has all gone after being blocked (the session resets its
    idle timer and runs the commands that waited).
    """

    #: Seconds a closing connection may go without taking any of its last output.
    CLOSE_GRACE = 60.0

    def __init__(self, transport, clock, drained: Callable[[], None]) -> None:
        self.transport = transport
        self.clock = clock
        self._drained = drained
        self.blocked = False
        self.closing = False
        self._stopped = False
        self._attached = None
        self._grace = None
        transport.registerProducer(self, True)
        self._registered = True

    # -- streamed answers --------------------------------------------------------

    def attach(self, producer) -> None:
        """Let ``producer`` (an IPushProducer writing a long answer) write
        while output flows: it is resumed now, or paused if output is blocked,
        and from then on paused, resumed and stopped with the connection."""
        self._attached = producer
        if self._stopped:
            producer.stopProducing()
        elif self.blocked:
            producer.pauseProducing()
        else:
            producer.resumeProducing()

    def detach(self, producer) -> None:
        if self._attached is producer:
            self._attached = None

    # -- IPushProducer, called by the transport ---------------------------------------

    def pauseProducing(self) -> None:
        self.blocked = True
        if self._attached is not None:
            self._attached.pauseProducing()

    def resumeProducing(self) -> None:
        self.blocked = False
        if self._stopped:
            return
        if self.closing:
            self._unregister()  # all is written: now the transport may close
            self._arm_grace()
            return
        if self._attached is not None:
            self._attached.resumeProducing()
        self._drained()

    def stopProducing(self) -> None:
        """The connection is gone (the session calls this from ``connectionLost`` too)."""
        if self._stopped:
            return
        self._stopped = True
        self.blocked = True
        self._registered = False
        if self._grace is not None and self._grace.active():
            self._grace.cancel()
        self._grace = None
        attached, self._attached = self._attached, None
        if attached is not None:
            attached.stopProducing()

    # -- hanging up ---------------------------------------------------------------

    def close(self) -> None:
        """Close once what was written has gone; abort if the client takes
        none of it for :attr:`CLOSE_GRACE` seconds."""
        if self.closing or self._stopped:
            return
        self.closing = True
        if not self.blocked:
            self._unregister()
        # else: the transport resumes us once its buffer is empty, and we
        # unregister then (it will not close with a producer registered).
        self.transport.loseConnection()
        self._arm_grace()

    def abort(self) -> None:
        """Drop the connection now, with whatever is still unsent."""
        if self._stopped:
            return
        self.closing = True
        self.transport.abortConnection()

    def _unregister(self) -> None:
        if self._registered:
            self._registered = False
            self.transport.unregisterProducer()

    def _arm_grace(self) -> None:
        if self._grace is not None and self._grace.active():
            self._grace.reset(self.CLOSE_GRACE)
        else:
            self._grace = self.clock.callLater(self.CLOSE_GRACE, self._grace_over)

    def _grace_over(self) -> None:
        self._grace = None
        self.abort()
