"""The session's output: responses in order, big answers streamed.

:class:`ResponseWriter` is the push producer between the session and the
transport.  Small responses are written at once; a FETCH answer is handed
over as an iterator of pieces (``bytes`` or :class:`FileRange`) which is
pulled one piece at a time, only while the transport wants more, and in
bounded turns (:attr:`TURN_BYTES`, less under COMPRESS) with a return to the reactor in between,
so a huge FETCH to a slow reader holds neither the whole answer in memory
nor the reactor.  A file range is sent in :attr:`CHUNK` sized reads.

The writer is attached for the whole connection to the session's
:class:`~cyrusmail.flow.OutputFlow`, the one producer registered with the
transport, which pauses and resumes it (``pauseProducing`` /
``resumeProducing``) as the unsent output crosses its bound.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


@dataclass
class FileRange:
    """Bytes ``[start, end)`` of an open message file, sent as they are read."""

    file: BinaryIO
    start: int
    end: int


@implementer(IPushProducer)
class ResponseWriter:
    CHUNK = 64 * 1024
    TURN_BYTES = 1024 * 1024

    def __init__(self, transport, reactor) -> None:
        self.transport = transport
        self.reactor = reactor
        self.turn_bytes = self.TURN_BYTES
        self._streams: deque[tuple[Iterator, defer.Deferred]] = deque()
        self._range: FileRange | None = None
        self._paused = False
        self._scheduled = None
        self._stopped = False

    @property
    def busy(self) -> bool:
        return bool(self._streams)

    def write(self, data: bytes) -> None:
        """Queue or send ``data`` after everything queued before it."""
        if self._stopped:
            return
        if self._streams:
            self.stream(iter((data,)))
        else:
            self.transport.write(data)

    def write_through(self, transport, turn_bytes: int) -> None:
        """Write to ``transport`` from now on, at most ``turn_bytes`` of a
        streamed answer per turn (COMPRESS's compressor, which costs more
        per octet).  Nothing may be queued: what came before is written."""
        assert not self._streams
        self.transport = transport
        self.turn_bytes = turn_bytes

    def stream(self, pieces: Iterator) -> defer.Deferred:
        """Send every piece of ``pieces``; fires once the last is written."""
        done: defer.Deferred = defer.Deferred()
        if self._stopped:
            done.callback(None)
            return done
        self._streams.append((pieces, done))
        self._schedule()
        return done

    # -- IPushProducer --------------------------------------------------------

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._schedule()

    def stopProducing(self) -> None:
        """The connection is gone: drop every queued answer."""
        self._stopped = True
        self._paused = True
        while self._streams:
            pieces, done = self._streams.popleft()
            close = getattr(pieces, "close", None)
            if close is not None:
                close()
            done.callback(None)

    # -- pumping --------------------------------------------------------------

    def _schedule(self) -> None:
        if self._scheduled is None and not self._paused and self._streams:
            self._scheduled = self.reactor.callLater(0, self._pump)

    def _pump(self) -> None:
        self._scheduled = None
        budget = self.turn_bytes
        while not self._paused and self._streams and budget > 0:
            if self._range is not None:
                budget -= self._send_range()
                continue
            pieces, done = self._streams[0]
            try:
                piece = next(pieces)
            except StopIteration:
                self._streams.popleft()
                done.callback(None)
                continue
            except Exception:  # noqa: BLE001 - a rendering bug fails this command, not the session
                self._streams.popleft()
                done.errback()
                continue
            if isinstance(piece, FileRange):
                self._range = piece
            else:
                self.transport.write(piece)
                budget -= len(piece)
        self._schedule()

    def _send_range(self) -> int:
        current = self._range
        assert current is not None
        size = min(self.CHUNK, current.end - current.start)
        current.file.seek(current.start)
        data = current.file.read(size) if size > 0 else b""
        if len(data) < size:  # the file shrank under us: keep the promised length
            data += b" " * (size - len(data))
        current.start += size
        if current.start >= current.end:
            self._range = None
        if data:
            self.transport.write(data)
        return max(len(data), 1)
