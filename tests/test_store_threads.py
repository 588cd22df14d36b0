"""Store work off the reactor: a slow disk stalls no other session, replies keep their
order, and concurrent deliveries to one user share one commit (cyrusmail.store.executor).

The server runs in the test's reactor with the threaded executor the real
server uses; clients are plain line clients over loopback TCP. Nothing here
waits on the clock: a "slow fsync" is an fsync held on a threading.Event
that the test releases once it has seen what it checks (a generous wait
guards only against a hang).
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from collections import deque

from twisted.internet import defer, reactor
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.trial import unittest

from cyrusmail.imap.server import make_factory as make_imap_factory
from cyrusmail.pop3.server import make_factory as make_pop3_factory
from cyrusmail.smtp.server import make_lmtp_factory, make_submission_factory
from cyrusmail.store.executor import ThreadedExecutor
from tests.helpers import add_user, make_context
from tests.imap_support import message

#: How long a held fsync waits for the test at most (a hang guard, never reached when all is well).
HANG_GUARD = 30


class LineClient(Protocol):
    """Collects the server's lines; :meth:`next_line` waits for the next one."""

    def __init__(self) -> None:
        self.buffer = b""
        self.lines: deque[str] = deque()
        self.waiting: deque[defer.Deferred] = deque()
        self.connected_once: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.connected_once.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            self.lines.append(line.decode("utf-8", "replace"))
        while self.lines and self.waiting:
            self.waiting.popleft().callback(self.lines.popleft())

    def next_line(self) -> defer.Deferred:
        if self.lines:
            return defer.succeed(self.lines.popleft())
        waiting: defer.Deferred = defer.Deferred()
        self.waiting.append(waiting)
        return waiting

    async def until(self, prefix: str) -> list[str]:
        """Lines up to and including the first that starts with ``prefix``."""
        seen = []
        while True:
            line = await self.next_line()
            seen.append(line)
            if line.startswith(prefix):
                return seen

    def send(self, text: str | bytes) -> None:
        self.transport.write(text.encode() if isinstance(text, str) else text)


async def connect(port: int) -> LineClient:
    factory = ClientFactory()
    client = LineClient()
    factory.buildProtocol = lambda addr: client
    reactor.connectTCP("127.0.0.1", port, factory)
    return await client.connected_once


def lmtp_message(subject: str) -> str:
    return message(subject).decode() + ".\r\n"


class HeldFsync:
    """``os.fsync`` standing in for a slow disk: the calls ``hold`` picks wait for :meth:`release`."""

    def __init__(self, hold) -> None:
        self.hold = hold
        self.real = os.fsync
        self.entered = threading.Event()
        self.released = threading.Event()
        self.timed_out = False  # the guard ran out: the test never got to release it
        self.directories = 0
        self.lock = threading.Lock()

    def __call__(self, fd: int) -> None:
        is_directory = stat.S_ISDIR(os.fstat(fd).st_mode)
        with self.lock:
            self.directories += is_directory
            held = self.hold(fd, is_directory) and not self.entered.is_set()
            if held:
                self.entered.set()
        if held and not self.released.wait(HANG_GUARD):
            self.timed_out = True
        self.real(fd)

    def release(self) -> None:
        self.released.set()


async def wait_for(event: threading.Event) -> None:
    """Wait (without blocking the reactor) until ``event`` is set."""
    for _ in range(HANG_GUARD * 100):
        if event.is_set():
            return
        await deferLater(0.01)
    raise AssertionError("the event never came")


def deferLater(seconds: float) -> defer.Deferred:
    from twisted.internet import task

    return task.deferLater(reactor, seconds, lambda: None)


class ThreadedStoreTests(unittest.TestCase):
    def setUp(self) -> None:
        self.context = make_context(self.mktemp(), reactor, server={"domains": "example.org"})
        self.assertIsInstance(self.context.store.executor, ThreadedExecutor)
        self.addCleanup(self.context.store.close)
        self.addCleanup(self.context.users.close)
        for user in ("alice", "bob"):
            add_user(self.context, user)
        self.context.store.mailboxes("bob").open("INBOX").append(message("For bob"))
        self.imap_port = self.listen(make_imap_factory(self.context, "imap"))
        self.lmtp_port = self.listen(make_lmtp_factory(self.context, "lmtp"))
        self.clients: list[LineClient] = []

    def listen(self, factory) -> int:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def client(self, port: int) -> LineClient:
        client = await connect(port)
        self.addCleanup(client.transport.loseConnection)
        return client

    async def imap(self, user: str) -> LineClient:
        client = await self.client(self.imap_port)
        await client.until("* OK")
        client.send(f"L LOGIN {user} secret\r\n")
        await client.until("L OK")
        return client

    async def lmtp(self) -> LineClient:
        client = await self.client(self.lmtp_port)
        await client.until("220 ")
        client.send("LHLO test\r\n")
        await client.until("250 ")
        return client

    def hold_fsync(self, hold) -> HeldFsync:
        held = HeldFsync(hold)
        self.patch(os, "fsync", held)
        self.addCleanup(held.release)
        return held

    async def test_a_delivery_held_in_fsync_stalls_no_other_session(self) -> None:
        lmtp = await self.lmtp()
        held = self.hold_fsync(lambda fd, is_directory: True)  # the first fsync from now: alice's message
        lmtp.send("MAIL FROM:<carol@example.org>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
        await lmtp.until("354 ")
        lmtp.send(lmtp_message("Slow disk"))
        await wait_for(held.entered)

        other = await self.client(self.imap_port)  # a new connection is greeted
        self.assertTrue((await other.next_line()).startswith("* OK"))
        other.send("L LOGIN bob secret\r\nS SELECT INBOX\r\nF FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n")
        answer = await other.until("F ")
        self.assertIn("Subject: For bob", "\n".join(answer))
        self.assertTrue(answer[-1].startswith("F OK"), answer)
        self.assertFalse(held.released.is_set() or held.timed_out, "answered only once the fsync was over")
        self.assertEqual(lmtp.lines, deque(), "the delivery was answered before it was durable")

        held.release()
        self.assertTrue((await lmtp.next_line()).startswith("250 2.0.0"))
        self.assertFalse(held.timed_out)
        inbox = self.context.store.mailboxes("alice").open("INBOX")
        self.assertEqual(len(inbox.messages()), 1)

    async def test_a_submission_held_in_the_spools_fsync_stalls_no_other_session(self) -> None:
        submission = await self.client(self.listen(make_submission_factory(self.context, "submission")))
        await submission.until("220 ")
        submission.send("EHLO test\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")
        await submission.until("235 ")
        held = self.hold_fsync(lambda fd, is_directory: "/queue/" in os.readlink(f"/proc/self/fd/{fd}"))
        submission.send("MAIL FROM:<alice@example.org>\r\nRCPT TO:<dave@remote.example>\r\nDATA\r\n")
        await submission.until("354 ")
        submission.send(message("Far away", sender="alice@example.org").decode() + ".\r\n")
        await wait_for(held.entered)

        other = await self.imap("bob")
        other.send("N NOOP\r\n")
        await other.until("N OK")
        self.assertFalse(held.released.is_set() or held.timed_out, "answered only once the fsync was over")
        self.assertEqual(submission.lines, deque(), "the message was accepted before it was spooled")

        held.release()
        self.assertTrue((await submission.next_line()).startswith("250 2.0.0"))
        self.assertEqual(len(list((self.context.config.data / "queue").glob("*.json"))), 1)

    async def test_writes_waiting_for_the_index_stall_no_other_session(self) -> None:
        """Another process holds alice's index (as cyrusmail-admin or a second server may):
        her STORE, EXPUNGE and POP3 QUIT wait for it off the reactor, and bob is served."""
        inbox = self.context.store.mailboxes("alice").open("INBOX")
        for number in range(3):
            inbox.append(message(f"Message {number}"))
        alice = await self.imap("alice")
        alice.send("S SELECT INBOX\r\n")
        await alice.until("S OK")
        pop3 = await self.client(self.listen(make_pop3_factory(self.context, "pop3")))
        await pop3.until("+OK")
        bob = await self.imap("bob")
        other_process = sqlite3.connect(self.context.store.user_dir("alice") / "index.sqlite",
                                        isolation_level=None, check_same_thread=False)
        self.addCleanup(other_process.close)
        other_process.execute("BEGIN IMMEDIATE")  # its writer's lock, held until COMMIT
        alice.send("T STORE 1 +FLAGS (\\Deleted)\r\nE EXPUNGE\r\n")
        pop3.send("USER alice\r\nPASS secret\r\nDELE 2\r\nQUIT\r\n")
        for _ in ("USER", "PASS", "DELE"):
            await pop3.until("+OK")  # logged in and marked; QUIT waits
        for _ in range(3):
            bob.send("N NOOP\r\n")
            self.assertTrue((await bob.until("N "))[-1].startswith("N OK"))
        self.assertEqual((list(alice.lines), list(pop3.lines)), ([], []))  # still waiting, unanswered

        other_process.execute("COMMIT")
        self.assertTrue((await alice.until("T "))[-1].startswith("T OK"))
        self.assertTrue((await alice.until("E "))[-1].startswith("E OK"))
        self.assertTrue((await pop3.next_line()).startswith("+OK Bye"))
        self.assertEqual([record.uid for record in inbox.messages()], [3])

    async def test_concurrent_deliveries_to_one_user_share_a_commit(self) -> None:
        count = 10
        clients = [await self.lmtp() for _ in range(count)]
        # The first delivery's folder fsync is held, so the others queue up behind it.
        held = self.hold_fsync(lambda fd, is_directory: is_directory)
        first, rest = clients[0], clients[1:]
        for client in clients:
            client.send("MAIL FROM:<carol@example.org>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
            await client.until("354 ")
        first.send(lmtp_message("First"))
        await wait_for(held.entered)
        executor = self.context.store.executor
        groups_before = executor.groups
        for number, client in enumerate(rest):
            client.send(lmtp_message(f"Message {number}"))
        watcher = await self.imap("bob")
        for _ in range(50):  # the reactor turns: the others arrive and queue behind the first
            watcher.send("N NOOP\r\n")
            await watcher.until("N OK")
            if len(executor._queues.get("alice", ())) == count - 1:
                break
        self.assertEqual(len(executor._queues["alice"]), count - 1)
        self.assertEqual([list(client.lines) for client in clients], [[]] * count)  # none answered yet

        held.release()
        for client in clients:
            self.assertTrue((await client.next_line()).startswith("250 2.0.0"))
        self.assertEqual(executor.groups - groups_before, 2)  # the first alone, then the nine together
        self.assertEqual(held.directories, 2)  # INBOX's folder fsynced once per group, not ten times
        self.assertEqual(len(self.context.store.mailboxes("alice").open("INBOX").messages()), count)

    async def test_pipelined_appends_are_answered_in_order_with_ascending_uids(self) -> None:
        writers = [await self.imap("alice") for _ in range(3)]
        count = 20
        for number, client in enumerate(writers):
            client.send("".join(
                f"A{i} APPEND INBOX {{{len(body)}+}}\r\n{body}\r\n"
                for i, body in ((i, message(f"Session {number} message {i}").decode()) for i in range(count))))
        uids_of = []
        for client in writers:
            tags, uids = [], []
            for _ in range(count):
                reply = (await client.until("A"))[-1]
                tag, status, _, _, uid = reply.split(" ")[:5]  # A7 OK [APPENDUID 1700000000 8] ...
                self.assertEqual(status, "OK", reply)
                tags.append(tag)
                uids.append(int(uid.rstrip("]")))
            self.assertEqual(tags, [f"A{i}" for i in range(count)])
            self.assertEqual(uids, sorted(uids))
            uids_of.append(uids)
        every = [uid for uids in uids_of for uid in uids]
        self.assertEqual(sorted(every), list(range(1, 3 * count + 1)))  # each UID once, none skipped
        inbox = self.context.store.mailboxes("alice").open("INBOX")
        modseqs = [record.modseq for record in sorted(inbox.messages(), key=lambda record: record.uid)]
        self.assertEqual(modseqs, sorted(modseqs))

    async def test_shutdown_waits_for_work_being_prepared_or_queued(self) -> None:
        held = self.hold_fsync(lambda fd, is_directory: True)  # the message's own fsync, while prepared
        staged = self.context.store.stage()
        staged.write(message("At shutdown"))
        order: list[str] = []
        self.context.store.mailboxes("alice").open("INBOX").append_async(staged).addCallback(
            lambda uid: order.append(f"appended {uid}"))
        await wait_for(held.entered)
        drained = self.context.store.executor.drain().addCallback(lambda _: order.append("drained"))
        self.assertEqual(order, [])
        held.release()
        await drained
        self.assertEqual(order, ["appended 1", "drained"])
