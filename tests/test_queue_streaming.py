"""The outbound client streams the spooled message: a pull producer, never the whole file in memory.

Unit tests drive :class:`MessageSender` by hand against a consumer that
records writes: nothing is read before the transport asks, one piece per
ask, dot-stuffing right whatever the piece boundaries (checked against
stuffing the whole message at once, with pieces of 1 to 7 bytes and at the
real size), the final CR LF "." CR LF, and the block timeout.  The
end-to-end test sends a 20 MB message through the queue to an aiosmtpd
sink and compares the bytes that arrive.
"""

from __future__ import annotations

import io
import random

from twisted.internet import task
from twisted.trial import unittest

from cyrusmail.smtp import client
from cyrusmail.smtp.client import ConnectionFailed, MessageSender
from tests.test_queue import QueueTestsBase, async_test


def reference(message: bytes) -> bytes:
    """The whole message dot-stuffed at once, with its terminator."""
    stuffed = message.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + (b".\r\n" if message.endswith(b"\r\n") or not message else b"\r\n.\r\n")


class Consumer:
    def __init__(self) -> None:
        self.producer = None
        self.writes: list[bytes] = []

    def registerProducer(self, producer, streaming) -> None:
        assert not streaming
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.writes.append(data)


class CountingFile(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads = 0

    def read(self, size=-1) -> bytes:
        self.reads += 1
        return super().read(size)


def stream(message: bytes) -> tuple[bytes, Consumer, MessageSender]:
    consumer = Consumer()
    sender = MessageSender(CountingFile(message), consumer)
    done = sender.begin()
    while consumer.producer is not None:
        consumer.producer.resumeProducing()
    results = []
    done.addCallback(results.append)
    assert results == [sum(map(len, consumer.writes))]
    return b"".join(consumer.writes), consumer, sender


class MessageSenderTests(unittest.TestCase):
    def test_pull_one_piece_at_a_time(self) -> None:
        message = (b"x" * 70 + b"\r\n") * 10_000  # 720 kB
        consumer = Consumer()
        source = CountingFile(message)
        sender = MessageSender(source, consumer)
        sender.begin()
        self.assertIs(consumer.producer, sender)
        self.assertEqual((source.reads, consumer.writes), (0, []))  # nothing until the transport asks
        sender.resumeProducing()
        self.assertEqual(source.reads, 1)
        self.assertLessEqual(len(consumer.writes[0]), client.CHUNK + 2)
        while consumer.producer is not None:
            before = source.reads
            sender.resumeProducing()
            self.assertEqual(source.reads, before + 1)
            self.assertLessEqual(len(consumer.writes[-1]), 2 * client.CHUNK)
        self.assertEqual(b"".join(consumer.writes), reference(message))

    def test_dot_stuffing_across_every_piece_boundary(self) -> None:
        rng = random.Random(3464)
        alphabet = [b".", b"\r\n", b"\r", b"\n", b"a", b".."]
        messages = [b"", b".", b"\r\n", b".\r\n", b"\r\n.\r\n", b"a\r\n.", b"\r\n\r\n..\r\n.", b"x\r"]
        messages += [b"".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 40))) for _ in range(300)]
        for size in range(1, 8):
            self.patch(client, "CHUNK", size)
            for message in messages:
                sent, _, _ = stream(message)
                self.assertEqual(sent, reference(message), (size, message))

    def test_boundaries_at_the_real_piece_size(self) -> None:
        chunk = client.CHUNK
        message = bytearray(b"a" * (4 * chunk))
        message[chunk - 1: chunk + 2] = b"\r\n."  # CR LF "." across the first boundary
        message[2 * chunk - 2: 2 * chunk + 1] = b"\r\n."  # CR LF at the end, "." at the start
        message[3 * chunk - 3: 3 * chunk] = b"\r\n."  # all inside, ending a piece
        message = bytes(message) + b"\r\n"
        sent, _, _ = stream(message)
        self.assertEqual(sent, reference(message))
        self.assertEqual(sent.count(b"\r\n.."), 3)

    def test_no_progress_aborts(self) -> None:
        clock = task.Clock()
        aborted = []
        sender = MessageSender(io.BytesIO(b"x" * 10), Consumer(), clock, 180, lambda: aborted.append(True))
        done = sender.begin()
        clock.advance(179)
        self.assertEqual(aborted, [])
        sender.resumeProducing()  # progress resets the timer
        clock.advance(179)
        self.assertEqual(aborted, [])
        clock.advance(2)
        self.assertEqual(aborted, [True])
        self.failureResultOf(done, ConnectionFailed)

    def test_lost_connection_fails_the_transfer(self) -> None:
        sender = MessageSender(io.BytesIO(b"x" * 10), Consumer())
        done = sender.begin()
        sender.stopProducing()
        self.failureResultOf(done, ConnectionFailed)


class LargeMessageTests(QueueTestsBase):
    timeout = 120

    @async_test
    async def test_twenty_megabytes_arrive_exactly(self) -> None:
        rng = random.Random(7)
        shapes = [bytes(rng.choice(b"abc. xyz") for _ in range(rng.randrange(0, 120))) for _ in range(997)]
        shapes += [b"." + shape for shape in shapes[:50]] + [b"", b".", b".."]
        lines = []
        size = 0
        while size < 20 * 1024 * 1024:
            line = rng.choice(shapes)
            lines.append(line)
            size += len(line) + 2
        message = b"Subject: big\r\n\r\n" + b"\r\n".join(lines) + b"\r\n"
        buffered = []  # what the TCP transport holds unsent, after each piece
        write = MessageSender._write

        def watching_write(sender, data):
            write(sender, data)
            transport = sender.consumer
            buffered.append(len(transport.dataBuffer) - transport.offset + transport._tempDataLen)

        self.patch(MessageSender, "_write", watching_write)
        entry = self.queue.enqueue(self.mail(), ["carol@remote.example"], message)
        await self.queue.attempt(entry)
        self.assertEqual(entry.recipients[0].state, "delivered", entry.recipients[0].diagnostic)
        [(_, _, content)] = self.handler.received
        self.assertEqual(len(content), len(message))
        self.assertTrue(content == message)
        self.assertGreater(len(buffered), 20 * 1024 * 1024 // client.CHUNK)
        self.assertLess(max(buffered), 1024 * 1024)  # never the message, a piece or a few
