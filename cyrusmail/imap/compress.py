"""COMPRESS=DEFLATE (RFC 4978): both directions of a connection in raw DEFLATE.

After the tagged OK of ``COMPRESS DEFLATE``, which goes uncompressed,
everything the server sends and everything the client sends is one raw
DEFLATE stream each way (RFC 1951, without the zlib header of RFC 1950:
``wbits=-15``).  The layer sits between the session and its transport;
under TLS the transport is the TLS layer, so data is compressed and then
encrypted, and decrypted and then inflated, in the order RFC 4978 section 3
requires whichever of STARTTLS and COMPRESS came first.

Output (:class:`DeflateTransport`).  It stands in for the transport below
the session's :class:`~cyrusmail.imap.output.ResponseWriter` and
:class:`~cyrusmail.flow.OutputFlow`: each write is compressed at once
(without a flush, so zlib may keep up to its buffer of it), and the stream
is flushed (``Z_SYNC_FLUSH``, so that the client can inflate all of it) once
per reactor turn in which something was written: after each burst of
responses, before the server goes back to waiting, never after each small
write, and never later than the end of the turn.  A streamed FETCH answer
is compressed piece by piece as the writer pulls it, and flushed at the end
of each of the writer's turns, which are of :data:`TURN_BYTES` rather than
1 MiB: compressing costs 10 to 40 ms per MiB, and other sessions wait
meanwhile.  The flow stays registered
with the transport below, whose unsent compressed octets are what pauses
and resumes it, so backpressure works as without compression.  Closing
flushes first.

Input (:class:`Inflater`).  What arrives is held compressed and inflated
in pieces of at most :attr:`Inflater.PIECE` octets, by the session, only
while its parser has room (see :meth:`cyrusmail.imap.server.IMAPServer._inflate`),
so a small "bomb" that inflates to gigabytes never exists inflated in
memory: its pieces go through the parser's usual bounds (a line over the
limit is refused and skipped as it streams in), the compressed input
waiting is bounded like uncompressed input, and reading from the socket
stops meanwhile.

Level and memory.  The compressor runs on the reactor thread, which
serves every session, so it is set for speed: level 1 (Dovecot uses zlib's
6), the full 32 KiB window, ``memLevel`` 6.  Measured on this project's
mail corpus, plain prose and base64 attachments (MiB compressed per
second, and what is left of 100 octets):

==========================  ===========  ===========  ============
                            corpus       prose        base64
==========================  ===========  ===========  ============
level 1, ``memLevel`` 6     89, 31       47, 53       27, 78
level 6, ``memLevel`` 8     44, 28       32, 48       25, 76
level 6, ``memLevel`` 6     32, 28       19, 48       15, 77
==========================  ===========  ===========  ============

So level 1 takes a half to two thirds of the time of level 6 for 10 to 13 %
more octets on text, and as long on attachments, which DEFLATE cannot
shrink much at any level.  The compressor takes about 166 KiB (262 KiB with ``memLevel`` 8),
the decompressor (which must accept the full window a client may use)
about 44 KiB: some 210 KiB per compressed connection in all, on top of an
uncompressed session.
"""

from __future__ import annotations

import zlib

#: Compression level (zlib's Z_BEST_SPEED): see the module docstring.
LEVEL = 1
#: The window of 2**15 octets: what RFC 4978 clients inflate with.
WINDOW_BITS = 15
#: zlib's internal state: 6 takes 166 KiB per connection (8, the default, 262 KiB).
MEM_LEVEL = 6
#: Octets of a streamed answer the writer compresses per reactor turn (about 10 ms).
TURN_BYTES = 256 * 1024


class CompressionError(Exception):
    """The client's compressed input cannot be inflated."""


class DeflateTransport:
    """The transport below the session's writer and flow, compressing what they write."""

    def __init__(self, transport, clock) -> None:
        self.transport = transport
        self.clock = clock
        self._deflate = zlib.compressobj(LEVEL, zlib.DEFLATED, -WINDOW_BITS, MEM_LEVEL)
        self._flush_call = None
        self._stopped = False

    def write(self, data: bytes) -> None:
        if self._stopped or not data:
            return
        compressed = self._deflate.compress(data)
        if compressed:
            self.transport.write(compressed)
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self.flush)

    def flush(self) -> None:
        """Send all that was written, in a form the client can inflate now."""
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        if not self._stopped:
            self.transport.write(self._deflate.flush(zlib.Z_SYNC_FLUSH))

    def stop(self) -> None:
        """The connection is gone: nothing more is compressed."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        self._stopped = True

    # -- what the flow asks of its transport ---------------------------------------

    def loseConnection(self) -> None:
        self.flush()
        self.transport.loseConnection()

    def abortConnection(self) -> None:
        self.stop()
        self.transport.abortConnection()

    def registerProducer(self, producer, streaming: bool) -> None:
        self.transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.transport.unregisterProducer()


class Inflater:
    """The client's compressed input, inflated a bounded piece at a time."""

    #: The most that one :meth:`piece` inflates.
    PIECE = 64 * 1024

    def __init__(self) -> None:
        self._inflate = zlib.decompressobj(-WINDOW_BITS)
        self._held = b""
        self._more = False  # the last piece was cut at PIECE: zlib may hold more output

    @property
    def held(self) -> int:
        """Compressed octets received and not yet inflated."""
        return len(self._held)

    @property
    def pending(self) -> bool:
        """Whether :meth:`piece` may give more."""
        return bool(self._held) or self._more

    def feed(self, data: bytes) -> None:
        if data:
            self._held += data

    def piece(self) -> bytes:
        """Up to :attr:`PIECE` octets of inflated input (possibly none yet).

        Raises :class:`CompressionError` for input that is not DEFLATE, or
        that goes on after the client ended its compressed stream."""
        if self._inflate.eof and self._held:
            raise CompressionError("data after the end of the compressed stream")
        try:
            data = self._inflate.decompress(self._held, self.PIECE)
        except zlib.error as error:
            raise CompressionError(str(error)) from error
        # After the end of the stream, what follows is kept for the next call to refuse.
        self._held = self._inflate.unused_data if self._inflate.eof else self._inflate.unconsumed_tail
        self._more = len(data) == self.PIECE
        return data
