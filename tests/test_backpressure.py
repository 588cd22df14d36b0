"""Output backpressure: a client that pipelines and never reads gets no more answers.

Real loopback sockets against the real reactor, for IMAP, POP3, submission
and LMTP, over plain TCP, implicit TLS and STARTTLS/STLS: a client sends
tens of thousands of pipelined commands (megabytes of answers) and reads
nothing.  The memory the server process holds meanwhile (tracemalloc's peak)
stays within a bound, and once the client reads it gets every answer,
byte for byte, and the server closes after its goodbye.  The client's
receive buffer is kept small so that the kernel cannot swallow the answers
in its stead.  A client that never reads, or never even completes the TLS
handshake, is cut off at the idle timeout.

Then, over StringTransports: pipelined LISTs run one at a time as the
output drains; the idle timers on a Clock (input that arrives while output
is blocked does not count as activity, and a timeout while output is
blocked aborts the connection: a goodbye could never be delivered); and
the OutputFlow itself.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
import tracemalloc
from dataclasses import dataclass

from twisted.internet import reactor, task, threads
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial import unittest

from cyrusmail.flow import OutputFlow
from cyrusmail.imap.server import IMAPServer
from cyrusmail.imap.server import make_factory as make_imap_factory
from cyrusmail.pop3.server import POP3Factory
from cyrusmail.pop3.server import make_factory as make_pop3_factory
from cyrusmail.pop3.session import IDLE_TIMEOUT as POP3_TIMEOUT
from cyrusmail.smtp.server import make_lmtp_factory, make_submission_factory
from cyrusmail.smtp.session import IDLE_TIMEOUT as SMTP_TIMEOUT
from tests import imap_support, test_pop3_support, test_smtp_session_support
from tests.helpers import add_user, make_context
from tests.test_queue import async_test

#: Octets of answers each flood asks for: several times what the kernel's
#: socket buffers can hold (the server's send buffer grows to 4 MiB).
ANSWERS = 16 * 1024 * 1024
#: What the server may hold while the client is not reading.  Without
#: backpressure it holds nearly all of ANSWERS.
BOUND = 8 * 1024 * 1024


def unverified_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test server's certificate is self-signed
    return context


def receive(sock, buffer: bytearray) -> None:
    data = sock.recv(65536)
    if not data:
        raise ConnectionError(f"the server closed the connection after {bytes(buffer[-300:])!r}")
    buffer += data


def read_line(sock, buffer: bytearray) -> bytes:
    while b"\r\n" not in buffer:
        receive(sock, buffer)
    end = buffer.index(b"\r\n") + 2
    line = bytes(buffer[:end])
    del buffer[:end]
    return line


def read_answer(sock, buffer: bytearray, last_line: bytes) -> bytes:
    """Lines up to and with the first that starts with ``last_line``."""
    lines = [read_line(sock, buffer)]
    while not lines[-1].startswith(last_line):
        lines.append(read_line(sock, buffer))
    return b"".join(lines)


def read_exactly(sock, buffer: bytearray, size: int) -> bytes:
    while len(buffer) < size:
        receive(sock, buffer)
    taken = bytes(buffer[:size])
    del buffer[:size]
    return taken


@dataclass
class Flood:
    """One protocol's flood: a command, how its answer's last line starts, how to begin."""

    command: bytes
    last_line: bytes
    quit: bytes  # the client's goodbye, after which the server must close
    starttls: bytes | None = None  # the command that starts TLS, answered by one line
    implicit_tls: bool = False

    def run(self, port: int, ready: threading.Event, go: threading.Event, sent: threading.Event,
            measured: threading.Event) -> tuple[bytes, int]:
        """In a thread: connect, learn one answer, pipeline, wait, read every
        answer, say goodbye and see the server close.

        Returns the answer and how many identical answers followed the flood."""
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # no room to hide answers in
        raw.settimeout(60)  # a hang check only
        raw.connect(("127.0.0.1", port))
        sock = unverified_tls().wrap_socket(raw) if self.implicit_tls else raw
        buffer = bytearray()
        try:
            read_line(sock, buffer)  # the greeting
            if self.starttls is not None:
                sock.sendall(self.starttls)
                read_line(sock, buffer)
                sock = unverified_tls().wrap_socket(sock)
            sock.sendall(self.command)
            answer = read_answer(sock, buffer, self.last_line)
            count = max(1, ANSWERS // len(answer))
            flood = self.command * count
            ready.set()
            go.wait(60)
            sock.sendall(flood)
            sent.set()
            measured.wait(120)
            for number in range(count):
                got = read_exactly(sock, buffer, len(answer))
                if got != answer:
                    raise AssertionError(f"answer {number + 1} of {count} differs: {got[:300]!r}")
            sock.sendall(self.quit)
            while sock.recv(65536):
                pass  # until the server closes
            return answer, count
        finally:
            sent.set()
            sock.close()


async def wait_for(event: threading.Event, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not event.is_set() and time.monotonic() < deadline:
        await task.deferLater(reactor, 0.05, lambda: None)


async def settle(seconds: float = 60) -> None:
    """Until the process's traced memory stops changing (the server answers no more)."""
    deadline = time.monotonic() + seconds
    last = tracemalloc.get_traced_memory()[0]
    still = 0
    while still < 8 and time.monotonic() < deadline:
        await task.deferLater(reactor, 0.125, lambda: None)
        current = tracemalloc.get_traced_memory()[0]
        still = still + 1 if abs(current - last) < 64 * 1024 else 0
        last = current


async def held_while_flooded(client):
    """Run ``client(ready, go, sent, measured)`` (see :meth:`Flood.run`) in a
    thread; return what it returns and the most memory the process held
    more, between ``go`` and the server's settling, than before it."""
    ready, go, sent, measured = (threading.Event() for _ in range(4))
    running = threads.deferToThread(client, ready, go, sent, measured)
    failures = []
    running.addErrback(failures.append)
    await wait_for(ready)
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        go.set()
        await wait_for(sent)
        await settle()
        grown = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
        measured.set()
    result = await running
    if failures:
        failures[0].raiseException()
    return result, grown


class FloodTests(unittest.TestCase):
    timeout = 300

    def setUp(self) -> None:
        self.context = make_context(self.mktemp(), reactor)
        add_user(self.context, "alice")
        self.addCleanup(self.context.store.close)
        self.addCleanup(self.context.users.close)

    def listen(self, factory, implicit_tls: bool = False) -> int:
        if implicit_tls:
            factory = TLSMemoryBIOFactory(self.context.tls, False, factory)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def flood(self, port: int, flood: Flood) -> None:
        """Pipeline about :data:`ANSWERS` octets of answers; assert the bound and the answers."""
        (answer, count), grown = await held_while_flooded(lambda *events: flood.run(port, *events))
        self.assertGreater(len(answer) * count, ANSWERS // 2)
        self.assertLess(grown, BOUND, f"the server held {grown / 2**20:.1f} MiB for a client not reading")

    @async_test
    async def test_imap_capability(self) -> None:
        port = self.listen(make_imap_factory(self.context, "imap"))
        await self.flood(port, Flood(b"a CAPABILITY\r\n", b"a OK", b"a LOGOUT\r\n"))

    @async_test
    async def test_imaps_capability_over_implicit_tls(self) -> None:
        port = self.listen(make_imap_factory(self.context, "imaps"), implicit_tls=True)
        await self.flood(port, Flood(b"a CAPABILITY\r\n", b"a OK", b"a LOGOUT\r\n", implicit_tls=True))

    @async_test
    async def test_pop3_capa(self) -> None:
        port = self.listen(make_pop3_factory(self.context, "pop3"))
        await self.flood(port, Flood(b"CAPA\r\n", b".\r\n", b"QUIT\r\n"))

    @async_test
    async def test_pop3_capa_after_stls(self) -> None:
        port = self.listen(make_pop3_factory(self.context, "pop3"))
        await self.flood(port, Flood(b"CAPA\r\n", b".\r\n", b"QUIT\r\n", starttls=b"STLS\r\n"))

    @async_test
    async def test_submission_ehlo(self) -> None:
        port = self.listen(make_submission_factory(self.context, "submission"))
        await self.flood(port, Flood(b"EHLO c\r\n", b"250 ", b"QUIT\r\n"))

    @async_test
    async def test_submission_ehlo_after_starttls(self) -> None:
        port = self.listen(make_submission_factory(self.context, "submission"))
        await self.flood(port, Flood(b"EHLO c\r\n", b"250 ", b"QUIT\r\n", starttls=b"STARTTLS\r\n"))

    @async_test
    async def test_lmtp_lhlo(self) -> None:
        port = self.listen(make_lmtp_factory(self.context, "lmtp"))
        await self.flood(port, Flood(b"LHLO c\r\n", b"250 ", b"QUIT\r\n"))

    @async_test
    async def test_a_client_that_never_reads_is_cut_off_at_the_idle_timeout(self) -> None:
        """The end-to-end case of the timers below: the autologout's BYE can
        never reach a client that does not read, so the connection is
        aborted instead of waiting forever for its output to drain."""
        factory = make_imap_factory(self.context, "imap")
        closed = threading.Event()
        build = factory.buildProtocol

        def build_with_short_timeout(addr):
            session = build(addr)
            session.PREAUTH_TIMEOUT = 1.0
            lost = session.connectionLost

            def connection_lost(reason=None) -> None:
                lost(reason)
                closed.set()

            session.connectionLost = connection_lost
            return session

        factory.buildProtocol = build_with_short_timeout
        port = self.listen(factory)

        def flood_and_never_read() -> None:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.settimeout(120)  # a hang check only
            sock.connect(("127.0.0.1", port))
            try:
                sock.sendall(b"a CAPABILITY\r\n" * (ANSWERS // 300))
            except OSError:
                pass  # cut off before the client was done: fine
            release.wait(300)
            sock.close()

        release = threading.Event()
        client = threads.deferToThread(flood_and_never_read)
        await wait_for(closed, 120)  # the close grace is 60 seconds; this is a hang check
        is_closed = closed.is_set()
        release.set()
        await client
        self.assertTrue(is_closed, "the server still holds the connection of a client that never reads")


    def never_handshaking(self, factory) -> bool:
        """Connect over implicit TLS, never send a ClientHello, and wait for
        the server's timeout to close: whether it did (a hang check of 60 s)."""
        port = self.listen(factory, implicit_tls=True)

        def wait_for_the_close() -> bool:
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.settimeout(60)  # a hang check only
                try:
                    while sock.recv(65536):
                        pass
                except TimeoutError:
                    return False
                except ConnectionResetError:
                    pass  # aborted: closed as well
                return True

        return threads.deferToThread(wait_for_the_close)

    @async_test
    async def test_imaps_client_that_never_handshakes_is_closed_at_the_timeout(self) -> None:
        """The greeting waits for the handshake in the TLS layer; the BYE
        after it could never go, so the autologout aborts the connection
        (with the TLS layer holding unsent output it never closed)."""
        factory = make_imap_factory(self.context, "imaps")
        build = factory.buildProtocol

        def build_with_short_timeout(addr):
            session = build(addr)
            session.PREAUTH_TIMEOUT = 1.0
            return session

        factory.buildProtocol = build_with_short_timeout
        self.assertTrue(await self.never_handshaking(factory), "the connection is still open")

    @async_test
    async def test_pop3s_client_that_never_handshakes_is_closed_at_the_timeout(self) -> None:
        factory = POP3Factory(self.context, "pop3s", idle_timeout=1.0)
        self.assertTrue(await self.never_handshaking(factory), "the connection is still open")

    @async_test
    async def test_submissions_client_that_never_handshakes_is_closed_at_the_timeout(self) -> None:
        factory = make_submission_factory(self.context, "submissions")
        factory.idle_timeout = 1.0
        self.assertTrue(await self.never_handshaking(factory), "the connection is still open")


class PipelinedListTests(unittest.TestCase):
    def test_pipelined_lists_wait_while_the_output_does_not_drain(self) -> None:
        """The issue's second case on a small scale: 300 pipelined LIST "" "*"
        to a client that reads nothing run one at a time, each only after the
        previous answer has gone, and all are answered in the end."""
        context = imap_support.session_context(self)
        mailboxes = context.store.mailboxes("alice")
        for number in range(100):
            mailboxes.create(f"folder{number}")
        client = imap_support.Client(context, Clock())
        client.login()
        transport = client.transport
        flow = transport.producer

        def write(data, original=transport.write):
            original(data)
            if len(transport.value()) > 4096:  # a socket whose buffer is full
                flow.pauseProducing()

        transport.write = write
        client.send(b'l LIST "" "*"\r\n' * 300)
        received = client.take()
        self.assertEqual(received.count(b"l OK LIST completed"), 1, "ran on while the output was blocked")
        rounds = 0
        while received.count(b"l OK LIST completed") < 300:
            flow.resumeProducing()  # the client read it all
            received += client.take()
            rounds += 1
            self.assertLess(rounds, 1000)
        answers = received.split(b"l OK LIST completed\r\n")
        self.assertEqual(answers[-1], b"")
        self.assertEqual(set(answers[:-1]), {answers[0]})
        self.assertEqual(answers[0].count(b"* LIST "), 100 + len(context.config.special_use_folders()) + 1)

# -- the idle timers, on a Clock ------------------------------------------------------


class IdleTimerChecks:
    """The same checks for each protocol.  A subclass says how to connect
    (:meth:`connect` sets ``self.transport``, a StringTransport), how to
    send, what the timeout is, a command and how its answer starts, and what
    a normal timeout writes.  The transport's registered producer is
    paused and resumed as a socket whose buffer fills and drains does."""

    timeout: float
    command = b""
    answer = b""
    goodbye = b""  # what the timeout writes when output flows

    def connect(self) -> None:
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def take(self) -> bytes:
        output = self.transport.value()
        self.transport.clear()
        return output

    def test_input_while_output_is_blocked_is_not_activity(self) -> None:
        self.connect()
        self.take()
        self.transport.producer.pauseProducing()  # the socket's buffer is full
        self.advance(self.timeout - 1)
        self.send(self.command * 3)
        self.assertEqual(self.take(), b"", "answered while output is blocked")
        self.advance(1)
        self.assertTrue(self.transport.disconnected, "a client that only sends kept the connection")
        self.assertEqual(self.take(), b"", "a goodbye written that could never be delivered")

    def test_output_draining_is_activity_and_runs_what_waited(self) -> None:
        self.connect()
        self.take()
        self.transport.producer.pauseProducing()
        self.send(self.command * 3)
        self.advance(self.timeout - 1)
        self.transport.producer.resumeProducing()  # the client read it all
        self.advance(0)
        output = self.take()
        self.assertTrue(output.startswith(self.answer), output[:200])
        self.assertEqual(output.count(self.answer), 3, output)
        self.advance(self.timeout - 1)
        self.assertFalse(self.transport.disconnecting, "timed out although the client read")
        self.advance(1)
        self.assertTrue(self.take().startswith(self.goodbye))
        self.assertTrue(self.transport.disconnecting)
        self.assertFalse(self.transport.disconnected, "a client that reads is not cut off")


class IMAPIdleTimerTests(IdleTimerChecks, unittest.TestCase):
    timeout = IMAPServer.PREAUTH_TIMEOUT
    command = b"a CAPABILITY\r\n"
    answer = b"* CAPABILITY IMAP4rev1"
    goodbye = b"* BYE Autologout"

    def connect(self) -> None:
        self.clock = Clock()
        self.client = imap_support.Client(imap_support.session_context(self), self.clock)
        self.transport = self.client.transport

    def send(self, data: bytes) -> None:
        self.client.send(data)

    def test_idle_pushes_no_updates_while_output_is_blocked(self) -> None:
        """IDLE keeps what changed for the next poll after the output drains."""
        self.connect()
        self.client.login()
        self.client.command("s SELECT INBOX")
        self.assertEqual(self.client.command("i IDLE"), ["+ idling"])
        self.transport.producer.pauseProducing()
        imap_support.deliver(self.client.server.context, "alice", "INBOX")
        self.advance(IMAPServer.IDLE_POLL * 3)
        self.assertEqual(self.take(), b"")
        self.transport.producer.resumeProducing()
        self.advance(IMAPServer.IDLE_POLL)
        self.assertIn(b"* 1 EXISTS", self.take())


class POP3IdleTimerTests(IdleTimerChecks, unittest.TestCase):
    timeout = POP3_TIMEOUT
    command = b"CAPA\r\n"
    answer = b"+OK Capability list follows"
    goodbye = b""  # RFC 1939: the timeout closes without a reply

    def connect(self) -> None:
        server = test_pop3_support.Pop3Server(self)
        self.clock = server.clock
        self.conversation = server.connect()
        self.transport = self.conversation.transport

    def send(self, data: bytes) -> None:
        self.conversation.protocol.dataReceived(data)


class SubmissionIdleTimerTests(IdleTimerChecks, unittest.TestCase):
    timeout = SMTP_TIMEOUT
    command = b"EHLO client.example\r\n"
    answer = b"250-mail.example.org Hello client.example"
    goodbye = b"421"

    def factory(self, context, clock):
        return test_smtp_session_support.submission_factory(context, clock)

    def connect(self) -> None:
        context, self.clock = test_smtp_session_support.make_server(self.mktemp())
        self.conversation = test_smtp_session_support.Conversation(self.factory(context, self.clock))
        self.transport = self.conversation.transport

    def send(self, data: bytes) -> None:
        self.conversation.session.dataReceived(data)


class LMTPIdleTimerTests(SubmissionIdleTimerTests):
    command = b"LHLO client.example\r\n"

    def factory(self, context, clock):
        return test_smtp_session_support.lmtp_factory(context, clock)


# -- the flow itself -----------------------------------------------------------------


class Recorder:
    """A streamed answer that records what the flow tells it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


class OutputFlowTests(unittest.TestCase):
    def setUp(self) -> None:
        self.transport = StringTransport()
        self.clock = Clock()
        self.drained: list[None] = []
        self.flow = OutputFlow(self.transport, self.clock, lambda: self.drained.append(None))

    def test_registered_for_the_whole_connection(self) -> None:
        self.assertIs(self.transport.producer, self.flow)
        self.assertTrue(self.transport.streaming)
        self.flow.pauseProducing()
        self.assertTrue(self.flow.blocked)
        self.flow.resumeProducing()
        self.assertFalse(self.flow.blocked)
        self.assertEqual(len(self.drained), 1)
        self.assertIs(self.transport.producer, self.flow)

    def test_an_attached_answer_follows_the_output(self) -> None:
        answer = Recorder()
        self.flow.attach(answer)
        self.flow.pauseProducing()
        self.flow.resumeProducing()
        self.flow.detach(answer)
        self.flow.pauseProducing()
        self.assertEqual(answer.calls, ["resume", "pause", "resume"])
        later = Recorder()
        self.flow.attach(later)  # attached while blocked: waits
        self.flow.stopProducing()
        self.assertEqual(later.calls, ["pause", "stop"])

    def test_close_unregisters_so_the_transport_can_close(self) -> None:
        self.flow.close()
        self.assertIsNone(self.transport.producer)
        self.assertTrue(self.transport.disconnecting)
        self.assertFalse(self.transport.disconnected)

    def test_close_while_blocked_waits_for_the_output_to_drain(self) -> None:
        self.flow.pauseProducing()
        self.flow.close()
        self.assertTrue(self.transport.disconnecting)
        self.assertIs(self.transport.producer, self.flow, "unregistered before the output went")
        self.clock.advance(OutputFlow.CLOSE_GRACE - 1)
        self.flow.resumeProducing()  # the client read: it gets a new grace
        self.assertIsNone(self.transport.producer)
        self.assertEqual(self.drained, [], "a closing session runs nothing more")
        self.clock.advance(OutputFlow.CLOSE_GRACE - 1)
        self.assertFalse(self.transport.disconnected)
        self.clock.advance(1)
        self.assertTrue(self.transport.disconnected, "a client that stopped reading is cut off at last")

    def test_close_grace_ends_with_the_connection(self) -> None:
        self.flow.close()
        self.flow.stopProducing()  # the connection went
        self.assertEqual(self.clock.getDelayedCalls(), [])
