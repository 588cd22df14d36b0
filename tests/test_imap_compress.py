"""COMPRESS=DEFLATE (RFC 4978): the command, both directions in raw DEFLATE, and its bounds.

First over StringTransports with a Clock, the conversation itself: what
is advertised when, the refusals (before login, an unknown mechanism,
twice, STARTTLS after it), commands pipelined in the same packet as
COMPRESS, one flush per burst of responses, IDLE's pushes flushed without
any input, a close that flushes first, input that is not DEFLATE, a
decompression bomb that never exists inflated in memory, and input bounded
while output is blocked.

Then over real loopback sockets with a small client that speaks DEFLATE
through zlib (imaplib and imapclient cannot): a big FETCH BODY[] streamed
compressed, STARTTLS then COMPRESS, implicit TLS then COMPRESS, and the
flood of tests/test_backpressure.py through the compressor.
"""

from __future__ import annotations

import base64
import random
import socket
import tracemalloc
import zlib

from twisted.internet import reactor, threads
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial import unittest

from cyrusmail.imap import codes, compress
from cyrusmail.imap.compress import Inflater
from cyrusmail.imap.server import IMAPServer, make_factory
from tests import imap_support
from tests.test_backpressure import BOUND, held_while_flooded, unverified_tls
from tests.test_queue import async_test

SYNC_MARK = b"\x00\x00\xff\xff"  # how every Z_SYNC_FLUSH ends


class Deflate:
    """The client's two DEFLATE streams, as RFC 4978 has a client keep them."""

    def __init__(self) -> None:
        self.compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.decompressor = zlib.decompressobj(-15)

    def pack(self, data: bytes) -> bytes:
        return self.compressor.compress(data) + self.compressor.flush(zlib.Z_SYNC_FLUSH)

    def unpack(self, data: bytes) -> bytes:
        return self.decompressor.decompress(data)


def big_message(size: int, seed: int = 7) -> bytes:
    """A message whose body is random base64: DEFLATE shrinks it by a quarter at most."""
    noise = base64.encodebytes(random.Random(seed).randbytes(size * 3 // 4)).replace(b"\n", b"\r\n")
    return imap_support.message("Noise", body="") + noise


class TurnClock(Clock):
    """A Clock that, once ``turns`` is set, schedules every call at least
    :attr:`TURN` ahead, so that ``advance(TURN)`` runs one reactor turn: what
    a turn schedules runs in the next, as in a real reactor."""

    TURN = 0.001
    turns = False

    def callLater(self, delay, function, *args, **kwargs):
        if self.turns:
            delay = max(delay, self.TURN)
        return super().callLater(delay, function, *args, **kwargs)


# -- the conversation, over a StringTransport ------------------------------------------------


class CompressSessionTests(unittest.TestCase):
    def setUp(self) -> None:
        self.context = imap_support.session_context(self)
        self.clock = TurnClock()
        self.client = imap_support.Client(self.context, self.clock)
        self.deflate = Deflate()

    def compress(self, after: bytes = b"") -> bytes:
        """Log in and send COMPRESS DEFLATE with ``after`` compressed in the same packet;
        the uncompressed tagged OK is checked, and the rest of the output returned inflated."""
        self.client.login()
        self.client.send(b"z COMPRESS DEFLATE\r\n" + (self.deflate.pack(after) if after else b""))
        output = self.client.take()
        ok, _, rest = output.partition(b"\r\n")
        self.assertEqual(ok, b"z OK DEFLATE active")
        return self.deflate.unpack(rest)

    def send(self, data: bytes) -> str:
        """Send compressed, return the answer inflated."""
        self.client.send(self.deflate.pack(data))
        return self.deflate.unpack(self.client.take()).decode()

    def test_advertised_once_logged_in(self) -> None:
        self.assertNotIn(b"COMPRESS=DEFLATE", self.client.greeting)
        self.client.send(b"L LOGIN alice secret\r\n")
        self.assertIn(b"COMPRESS=DEFLATE", self.client.take())  # in the OK's CAPABILITY code
        self.assertIn("COMPRESS=DEFLATE", self.client.command("c CAPABILITY")[0].split())

    def test_not_before_login(self) -> None:
        self.assertEqual(self.client.command("z COMPRESS DEFLATE"),
                         ["z BAD COMPRESS is not allowed in the not authenticated state"])
        self.assertEqual(self.client.command("n NOOP"), ["n OK NOOP completed"])  # still plain

    def test_an_unknown_mechanism_is_bad_and_changes_nothing(self) -> None:
        self.client.login()
        self.assertEqual(self.client.command("z COMPRESS LZMA"), ["z BAD Unknown compression mechanism LZMA"])
        self.assertEqual(self.client.command("z COMPRESS"), ["z BAD expected a space"])
        self.assertEqual(self.client.command("z COMPRESS DEFLATE DEFLATE")[0][:6], "z BAD ")
        self.assertFalse(self.client.server.compressed)
        self.assertEqual(self.client.command("n NOOP"), ["n OK NOOP completed"])

    def test_commands_pipelined_in_the_same_packet_are_inflated(self) -> None:
        imap_support.deliver(self.context, "alice", "INBOX", "First")
        answer = self.compress(b"s SELECT INBOX\r\nf FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n").decode()
        self.assertIn("* 1 EXISTS\r\n", answer)
        self.assertIn("s OK [READ-WRITE] SELECT completed\r\n", answer)
        self.assertTrue(answer.endswith("Subject: First\r\n\r\n)\r\nf OK FETCH completed\r\n"), answer)
        self.assertTrue(self.client.server.compressed)
        self.assertEqual(self.send(b"n NOOP\r\n"), "n OK NOOP completed\r\n")

    def test_lowercase_mechanism(self) -> None:
        self.client.login()
        self.client.send(b"z compress deflate\r\n")
        self.assertEqual(self.client.take(), b"z OK DEFLATE active\r\n")
        self.assertEqual(self.send(b"n NOOP\r\n"), "n OK NOOP completed\r\n")

    def test_twice_is_no_compressionactive(self) -> None:
        self.compress()
        self.assertEqual(self.send(b"y COMPRESS DEFLATE\r\n"),
                         f"y NO [{codes.COMPRESSIONACTIVE}] DEFLATE is already active\r\n")
        self.assertEqual(self.send(b"n NOOP\r\n"), "n OK NOOP completed\r\n")  # not compressed twice

    def test_starttls_after_compress_is_refused(self) -> None:
        self.compress()
        self.assertEqual(self.send(b"t STARTTLS\r\n"),
                         "t BAD STARTTLS is not allowed in the authenticated state\r\n")
        self.assertFalse(self.client.transport.tls_started)

    def test_unauthenticate_leaves_compression_on_and_starttls_refused(self) -> None:
        """RFC 8437 leaves the connection's layers as they are: after
        UNAUTHENTICATE the session is still compressed, STARTTLS (which would
        have to go below the compression) is neither offered nor accepted,
        and a second login cannot compress twice."""
        self.compress()
        self.assertTrue(self.send(b"u UNAUTHENTICATE\r\n").startswith("u OK "))
        capability = self.send(b"c CAPABILITY\r\n").split("\r\n")[0].split()
        self.assertNotIn("STARTTLS", capability)
        self.assertNotIn("COMPRESS=DEFLATE", capability)
        self.assertEqual(self.send(b"t STARTTLS\r\nn NOOP\r\n"),
                         "t BAD STARTTLS is not allowed after COMPRESS\r\nn OK NOOP completed\r\n")
        self.assertFalse(self.client.transport.tls_started)
        self.assertTrue(self.send(b"L LOGIN alice secret\r\n").startswith("L OK "))
        self.assertEqual(self.send(b"y COMPRESS DEFLATE\r\n"),
                         f"y NO [{codes.COMPRESSIONACTIVE}] DEFLATE is already active\r\n")

    def test_a_burst_of_responses_is_flushed_once(self) -> None:
        """Not a flush (nor a write) per response line: one per burst."""
        mailboxes = self.context.store.mailboxes("alice")
        for number in range(200):
            mailboxes.create(f"folder{number}")
        self.compress()
        writes = []
        transport = self.client.transport
        original = transport.write

        def write(data):
            writes.append(data)
            original(data)

        transport.write = write
        answer = self.send(b'l LIST "" "*"\r\n')
        self.assertEqual(answer.count("* LIST "), 200 + len(self.context.config.special_use_folders()) + 1)
        self.assertTrue(answer.endswith("l OK LIST completed\r\n"))
        output = b"".join(writes)
        self.assertTrue(output.endswith(SYNC_MARK))
        self.assertLessEqual(len(writes), 3, "written piecemeal")
        self.assertEqual(output.count(SYNC_MARK), 1, "flushed more than once")

    def test_idle_pushes_are_flushed_without_input(self) -> None:
        self.compress(b"s SELECT INBOX\r\n")
        self.assertEqual(self.send(b"i IDLE\r\n"), "+ idling\r\n")
        imap_support.deliver(self.context, "alice", "INBOX")
        self.clock.advance(IMAPServer.IDLE_POLL)
        self.assertIn("* 1 EXISTS\r\n", self.deflate.unpack(self.client.take()).decode())
        self.assertEqual(self.send(b"DONE\r\n"), "i OK IDLE terminated\r\n")

    def test_append_literal_through_the_compressor(self) -> None:
        """The continuation request goes out (flushed) while the client waits
        for it; the literal, inflated, is streamed into the store."""
        self.compress()
        message = big_message(600 * 1024)
        self.assertEqual(self.send(b"a APPEND INBOX {%d}\r\n" % len(message)), "+ Ready for literal data\r\n")
        self.assertTrue(self.send(message + b"\r\n").startswith("a OK [APPENDUID "))
        inbox = self.context.store.mailboxes("alice").open("INBOX")
        self.assertEqual(inbox.status().messages, 1)
        answer = self.send(b"s SELECT INBOX\r\nf FETCH 1 BODY.PEEK[]\r\n")
        self.assertIn(f"* 1 FETCH (BODY[] {{{len(message)}}}\r\n".encode() + message + b")\r\nf OK",
                      answer.encode())

    def test_logout_flushes_then_closes(self) -> None:
        self.compress()
        self.client.send(self.deflate.pack(b"l LOGOUT\r\n"))
        self.assertTrue(self.client.transport.disconnecting)
        self.assertEqual(self.deflate.unpack(self.client.take()), b"* BYE Logging out\r\nl OK LOGOUT completed\r\n")

    def test_input_that_is_not_deflate_ends_the_session(self) -> None:
        self.compress()
        self.client.send(b"n NOOP\r\n")  # not compressed: an invalid block type
        self.assertEqual(self.deflate.unpack(self.client.take()), b"* BYE Invalid compressed data\r\n")
        self.assertTrue(self.client.transport.disconnecting)

    def test_input_after_the_end_of_the_stream_ends_the_session(self) -> None:
        self.compress()
        compressor = self.deflate.compressor
        self.client.send(compressor.compress(b"n NOOP\r\n") + compressor.flush(zlib.Z_FINISH) + b"more")
        self.assertEqual(self.deflate.unpack(self.client.take()),
                         b"n OK NOOP completed\r\n* BYE Invalid compressed data\r\n")
        self.assertTrue(self.client.transport.disconnecting)

    def test_a_bomb_never_exists_inflated(self) -> None:
        """256 MiB of one line compressed into 256 KiB: inflated a piece at a
        time, refused as too long as it streams, and the command after it runs."""
        self.compress()
        size = 256 * 1024 * 1024
        chunk = b"A" * (1024 * 1024)
        compressor = self.deflate.compressor
        bomb = b"".join(compressor.compress(chunk) for _ in range(size // len(chunk)))
        bomb += compressor.compress(b"\r\nn NOOP\r\n") + compressor.flush(zlib.Z_SYNC_FLUSH)
        self.assertLess(len(bomb), size // 500)
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            self.client.send(bomb)
            grown = tracemalloc.get_traced_memory()[1] - baseline
        finally:
            tracemalloc.stop()
        self.assertLess(grown - len(bomb), 4 * 1024 * 1024, f"held {grown / 2**20:.1f} MiB for a bomb")
        self.assertEqual(self.deflate.unpack(self.client.take()),
                         b"* BAD [TOOBIG] command line too long\r\nn OK NOOP completed\r\n")

    def turns_until(self, tag: bytes) -> tuple[int, bytes]:
        """Run reactor turns until the tagged answer of ``tag`` has come; how many, and the output."""
        self.clock.turns = True
        output = b""
        for turns in range(1, 1000):
            self.clock.advance(TurnClock.TURN)
            output += self.deflate.unpack(self.client.transport.value())
            self.client.transport.clear()
            if b"\r\n" + tag + b" " in b"\r\n" + output:
                return turns, output
        raise AssertionError(f"no answer to {tag!r} after 1000 turns")

    def test_a_bomb_is_inflated_in_bounded_turns(self) -> None:
        """Other sessions are served between turns: 8 MiB that arrive
        compressed in one read are inflated INFLATE_TURN a turn."""
        self.compress()
        compressor = self.deflate.compressor
        bomb = b"".join(compressor.compress(b"A" * (1024 * 1024)) for _ in range(8))
        bomb += compressor.compress(b"\r\nn NOOP\r\n") + compressor.flush(zlib.Z_SYNC_FLUSH)
        self.clock.turns = True
        self.client.server.dataReceived(bomb)
        turns, output = self.turns_until(b"n")
        self.assertEqual(IMAPServer.INFLATE_TURN, 1024 * 1024)
        self.assertGreaterEqual(turns, 8 - 1)  # the 8th MiB may come with the answer
        self.assertEqual(output, b"* BAD [TOOBIG] command line too long\r\nn OK NOOP completed\r\n")

    def test_a_big_answer_is_compressed_in_bounded_turns(self) -> None:
        """Compressing costs more than sending: the writer's turn under
        COMPRESS is TURN_BYTES (256 KiB), not the 1 MiB of plain output."""
        message = big_message(2 * 1024 * 1024)
        self.context.store.mailboxes("alice").open("INBOX").append(message)
        self.compress(b"s SELECT INBOX\r\n")
        self.client.server.dataReceived(self.deflate.pack(b"f FETCH 1 BODY.PEEK[]\r\n"))
        turns, output = self.turns_until(b"f")
        self.assertIn(message, output)
        self.assertEqual(compress.TURN_BYTES, 256 * 1024)
        self.assertGreaterEqual(turns, len(message) // (256 * 1024))

    def test_input_is_bounded_while_output_is_blocked(self) -> None:
        """A client that pipelines compressed commands and reads nothing: the
        parser holds at most its bound plus one piece, and the socket is not
        read meanwhile; once the output drains every command is answered."""
        self.compress()
        server = self.client.server
        server.MAX_BUFFERED = 8 * 1024  # to show the bound with fewer commands
        transport = self.client.transport
        transport.producer.pauseProducing()  # the socket's buffer is full
        commands = 20_000
        self.client.send(self.deflate.pack(b"n NOOP\r\n" * commands))
        self.assertLessEqual(server.parser.buffered, server.MAX_BUFFERED + Inflater.PIECE)
        self.assertEqual(transport.producerState, "paused", "still reading")
        answered = self.deflate.unpack(self.client.take()).count(b"n OK NOOP completed")
        self.assertLess(answered, 2)
        rounds = 0
        while answered < commands and rounds < 1000:
            transport.producer.resumeProducing()  # the client read everything
            answered += self.deflate.unpack(self.client.take()).count(b"n OK NOOP completed")
            rounds += 1
        self.assertEqual(answered, commands)
        self.assertEqual(transport.producerState, "producing")


# -- real sockets --------------------------------------------------------------------------


class SocketClient:
    """A blocking IMAP client over a socket that can turn COMPRESS on."""

    def __init__(self, sock) -> None:
        self.sock = sock
        self.plain = bytearray()
        self.deflate: Deflate | None = None

    def send(self, data: bytes) -> None:
        self.sock.sendall(self.deflate.pack(data) if self.deflate else data)

    def receive(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError(f"the server closed the connection after {bytes(self.plain[-300:])!r}")
        self.plain += self.deflate.unpack(data) if self.deflate else data

    def line(self) -> bytes:
        while b"\r\n" not in self.plain:
            self.receive()
        end = self.plain.index(b"\r\n") + 2
        line = bytes(self.plain[:end])
        del self.plain[:end]
        return line

    def until(self, tag: bytes) -> bytes:
        """Everything up to and with the tagged line of ``tag``."""
        lines = [self.line()]
        while not lines[-1].startswith(tag + b" "):
            lines.append(self.line())
        return b"".join(lines)

    def exactly(self, size: int) -> bytes:
        while len(self.plain) < size:
            self.receive()
        taken = bytes(self.plain[:size])
        del self.plain[:size]
        return taken

    def start_tls(self) -> None:
        assert not self.plain
        self.sock = unverified_tls().wrap_socket(self.sock)

    def compress(self, pipelined: bytes = b"") -> None:
        """COMPRESS DEFLATE, with ``pipelined`` compressed in the same packet."""
        assert not self.plain
        self.deflate = Deflate()
        self.sock.sendall(b"z COMPRESS DEFLATE\r\n" + (self.deflate.pack(pipelined) if pipelined else b""))
        while b"\r\n" not in self.plain:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed after COMPRESS")
            self.plain += data
        end = self.plain.index(b"\r\n") + 2
        ok, rest = bytes(self.plain[:end]), bytes(self.plain[end:])
        if ok != b"z OK DEFLATE active\r\n":
            raise AssertionError(f"COMPRESS answered {ok!r}")
        self.plain = bytearray(self.deflate.unpack(rest))


def connect(port: int, implicit_tls: bool = False, receive_buffer: int | None = None) -> SocketClient:
    raw = socket.socket()
    if receive_buffer is not None:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    raw.settimeout(60)  # a hang check only
    raw.connect(("127.0.0.1", port))
    client = SocketClient(unverified_tls().wrap_socket(raw) if implicit_tls else raw)
    client.line()  # the greeting
    return client


class CompressOverSocketsTests(unittest.TestCase):
    timeout = 300

    def setUp(self) -> None:
        self.context = imap_support.session_context(self)
        self.inbox = self.context.store.mailboxes("alice").open("INBOX")

    def listen(self, service: str = "imap", implicit_tls: bool = False) -> int:
        factory = make_factory(self.context, service)
        if implicit_tls:
            factory = TLSMemoryBIOFactory(self.context.tls, False, factory)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def test_a_big_fetch_streams_compressed(self) -> None:
        message = big_message(8 * 1024 * 1024)
        self.inbox.append(message)
        port = self.listen()

        def talk() -> tuple[bytes, bytes, int]:
            client = connect(port)
            client.send(b"L LOGIN alice secret\r\n")
            client.until(b"L")
            client.compress(b"s SELECT INBOX\r\nf FETCH 1 BODY.PEEK[]\r\n")
            selected = client.until(b"s")
            head = client.line()
            body = client.exactly(len(message))
            tail = client.until(b"f")
            client.send(b"l LOGOUT\r\n")
            bye = client.until(b"l")
            compressed = client.deflate.decompressor
            return selected + head + tail + bye, body, compressed.unused_data

        def check(result) -> None:
            answers, body, unused = result
            self.assertIn(b"s OK [READ-WRITE] SELECT completed", answers)
            self.assertIn(f"* 1 FETCH (BODY[] {{{len(message)}}}\r\n".encode(), answers)
            self.assertTrue(body == message, "the body differs")
            self.assertTrue(answers.endswith(b")\r\nf OK FETCH completed\r\n* BYE Logging out\r\nl OK LOGOUT completed\r\n"))
            self.assertEqual(unused, b"")

        return threads.deferToThread(talk).addCallback(check)

    def tls_then_compress(self, port: int, implicit_tls: bool) -> None:
        def talk() -> bytes:
            client = connect(port, implicit_tls)
            if not implicit_tls:
                client.send(b"t STARTTLS\r\n")
                assert client.line() == b"t OK Begin TLS negotiation now\r\n"
                client.start_tls()
            client.send(b"L LOGIN alice secret\r\n")
            client.until(b"L")
            client.compress()
            client.send(b"s STATUS INBOX (MESSAGES)\r\nt STARTTLS\r\n")
            answer = client.until(b"t")
            client.send(b"l LOGOUT\r\n")
            return answer + client.until(b"l")

        def check(answer: bytes) -> None:
            self.assertEqual(answer, b'* STATUS "INBOX" (MESSAGES 1)\r\ns OK STATUS completed\r\n'
                                     b"t BAD STARTTLS is not allowed in the authenticated state\r\n"
                                     b"* BYE Logging out\r\nl OK LOGOUT completed\r\n")

        self.inbox.append(imap_support.message())
        return threads.deferToThread(talk).addCallback(check)

    def test_starttls_then_compress(self) -> None:
        return self.tls_then_compress(self.listen(), implicit_tls=False)

    def test_implicit_tls_then_compress(self) -> None:
        return self.tls_then_compress(self.listen("imaps", implicit_tls=True), implicit_tls=True)

    @async_test
    async def test_backpressure_through_the_compressor(self) -> None:
        """tests/test_backpressure.py's flood, compressed: pipelined FETCHes
        of a message DEFLATE cannot shrink much, a client that reads nothing,
        and the server holds no more than the bound; then every answer
        arrives, byte for byte."""
        message = big_message(512 * 1024)
        self.inbox.append(message)
        port = self.listen()
        count = 64  # 32 MiB of answers, some 24 MiB compressed

        def flood(ready, go, sent, measured) -> int:
            client = connect(port, receive_buffer=64 * 1024)  # no room to hide answers in
            try:
                client.send(b"L LOGIN alice secret\r\n")
                client.until(b"L")
                client.compress(b"s SELECT INBOX\r\n")
                client.until(b"s")
                fetch = b"f FETCH 1 BODY.PEEK[]\r\n"
                client.send(fetch)
                answer = client.until(b"f")
                ready.set()
                go.wait(60)
                client.send(fetch * count)
                sent.set()
                measured.wait(120)
                for number in range(count):
                    got = client.exactly(len(answer))
                    if got != answer:
                        raise AssertionError(f"answer {number + 1} of {count} differs: {got[:300]!r}")
                client.send(b"l LOGOUT\r\n")
                client.until(b"l")
                return len(answer)
            finally:
                ready.set()
                sent.set()
                client.sock.close()

        size, grown = await held_while_flooded(flood)
        self.assertGreater(size, len(message))
        self.assertLess(grown, BOUND, f"the server held {grown / 2**20:.1f} MiB for a client not reading")
