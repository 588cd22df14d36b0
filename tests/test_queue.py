"""The outbound queue against a real SMTP server on loopback (aiosmtpd in a thread).

The smarthost answers as each test says (451 then 250, 550 for one
recipient...), proving retries, per-recipient results, bounces (an RFC 3464
DSN in the sender's INBOX), restarts of the queue over the same spool, and
give-up.  Attempts are started directly (``queue.attempt``) so no test waits
for a timer, except the runner test, which waits about a second.
"""

from __future__ import annotations

import email
import email.policy
import functools
import json
import socket
import threading

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from cyrusmail.delivery.queue import (
    DELIVERED,
    FAILED,
    PENDING,
    DestinationError,
    Queue,
    QueueRunner,
)
from cyrusmail.smtp import wire
from tests import postgres_support
from tests.helpers import embedded_store_only
from tests.test_smtp_session_support import inbox_messages, make_server

try:
    from aiosmtpd.controller import Controller
except ImportError:  # pragma: no cover
    Controller = None

MESSAGE = (b"From: alice@example.org\r\nTo: carol@remote.example\r\nSubject: out\r\n"
           b"Message-ID: <out@example.org>\r\n\r\nHello.\r\n.leading dot\r\n..two dots\r\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def async_test(method):
    @functools.wraps(method)
    def run(self):
        return defer.ensureDeferred(method(self))

    return run


class Smarthost:
    """An aiosmtpd server whose answers the test scripts.

    ``rcpt_replies`` maps an address to its RCPT reply; ``data_replies`` is
    the list of replies to successive DATA commands (then 250 forever).
    """

    def __init__(self) -> None:
        self.rcpt_replies: dict[str, str] = {}
        self.data_replies: list[str] = []
        self.received: list[tuple[str, list[str], bytes]] = []
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.rcpt_replies.get(address, "250 2.1.5 OK")
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            if self.data_replies:
                return self.data_replies.pop(0)
            self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 Queued"


class QueueTestsBase(unittest.TestCase):
    smarthost_tls = "none"

    def setUp(self) -> None:
        if Controller is None:
            raise unittest.SkipTest("aiosmtpd is not installed (pip install aiosmtpd)")
        self.port = free_port()
        self.handler = Smarthost()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        self.addCleanup(self.controller.stop)
        self.data = self.mktemp()
        self.context, self.clock = make_server(self.data, queue=self.queue_settings(), **self.make_server_sections())
        self.queue = self.make_queue()

    def queue_settings(self) -> dict[str, str]:
        return {"smarthost": f"127.0.0.1:{self.port}", "retry_initial": "1s", "retry_max": "4s",
                "give_up": "1h"}

    def make_server_sections(self) -> dict:
        return {}  # the store of CYRUSMAIL_TEST_STORE

    def make_queue(self, **kwargs) -> Queue:
        return Queue(self.context, clock=reactor, **kwargs)

    def mail(self, sender: str | None = "alice@example.org") -> wire.Mail:
        return wire.Mail(None if sender is None else wire.parse_path(f"<{sender}>"))

    def spool_files(self) -> list[str]:
        return sorted(p.name for p in self.queue.spool.iterdir())

    def saved(self) -> dict:
        """What a new queue (a restarted server) finds in the spool: id -> entry."""
        return {entry.id: entry for entry in Queue(self.context, clock=reactor).load()}

    def queued(self) -> list[str]:
        """The ids of the messages in the spool (on the file spool, with their two files each and nothing else)."""
        ids = sorted(self.saved())
        if self.queue.spool is not None:
            self.assertEqual(self.spool_files(), sorted(f"{i}.{ext}" for i in ids for ext in ("json", "msg")))
        return ids


class QueueTests(QueueTestsBase):
    @async_test
    async def test_temporary_failure_is_retried(self) -> None:
        self.handler.data_replies = ["451 4.3.0 Try again later"]
        entry = self.queue.enqueue(self.mail(), ["carol@remote.example"], MESSAGE)
        self.assertEqual(self.queued(), [entry.id])
        await self.queue.attempt(entry)
        self.assertEqual(entry.recipients[0].state, PENDING)
        self.assertIn("451", entry.last_error)
        self.assertTrue(0.5 < entry.next_attempt - reactor.seconds() <= 1)
        self.assertEqual(self.saved()[entry.id].attempts, 1)
        self.assertEqual(self.handler.received, [])
        await self.queue.attempt(entry)
        self.assertEqual(entry.recipients[0].state, DELIVERED)
        [(sender, recipients, content)] = self.handler.received
        self.assertEqual((sender, recipients), ("alice@example.org", ["carol@remote.example"]))
        self.assertEqual(content, MESSAGE)  # dot-stuffed on the wire, intact at the other end
        self.assertEqual(self.queued(), [])

    @async_test
    async def test_backoff_doubles_up_to_retry_max(self) -> None:
        self.handler.data_replies = ["451 4.3.0 later"] * 4
        entry = self.queue.enqueue(self.mail(), ["carol@remote.example"], MESSAGE)
        delays = []
        for _ in range(4):
            await self.queue.attempt(entry)
            delays.append(round(entry.next_attempt - reactor.seconds()))
        self.assertEqual(delays, [1, 2, 4, 4])

    @async_test
    async def test_permanent_failure_bounces_to_local_sender(self) -> None:
        self.handler.rcpt_replies = {"dave@remote.example": "550 5.1.1 No such user here"}
        entry = self.queue.enqueue(self.mail(), ["carol@remote.example", "dave@remote.example"], MESSAGE)
        await self.queue.attempt(entry)
        self.assertEqual([r.state for r in entry.recipients], [DELIVERED, FAILED])
        [(_, recipients, _)] = self.handler.received
        self.assertEqual(recipients, ["carol@remote.example"])
        self.assertEqual(self.queued(), [])
        [bounce] = inbox_messages(self.context, "alice")
        report = email.message_from_bytes(bounce, policy=email.policy.default)
        self.assertEqual(report.get_content_type(), "multipart/report")
        self.assertEqual(report.get_param("report-type"), "delivery-status")
        human, status, headers = report.get_payload()
        self.assertEqual(human.get_content_type(), "text/plain")
        self.assertEqual(status.get_content_type(), "message/delivery-status")
        self.assertEqual(headers.get_content_type(), "text/rfc822-headers")
        per_message, per_recipient = status.get_payload()
        self.assertEqual(per_message["Reporting-MTA"], "dns; mail.example.org")
        self.assertIsNotNone(per_message["Arrival-Date"])
        self.assertEqual(per_recipient["Final-Recipient"], "rfc822; dave@remote.example")
        self.assertEqual(per_recipient["Action"], "failed")
        self.assertEqual(per_recipient["Status"], "5.1.1")
        self.assertIn("550 5.1.1 No such user here", per_recipient["Diagnostic-Code"])
        self.assertIn(b"Message-ID: <out@example.org>", bounce)
        self.assertNotIn(b"Hello.", bounce)

    @async_test
    async def test_bounce_to_remote_sender_is_queued_with_null_sender(self) -> None:
        self.handler.rcpt_replies = {"dave@remote.example": "550 5.1.1 No such user here"}
        entry = self.queue.enqueue(self.mail("erin@elsewhere.example"), ["dave@remote.example"], MESSAGE)
        await self.queue.attempt(entry)
        [bounce] = self.queue.listing()
        self.assertIsNone(bounce.sender)
        self.assertTrue(bounce.is_bounce)
        self.assertEqual([r.address for r in bounce.recipients], ["erin@elsewhere.example"])
        await self.queue.attempt(bounce)
        [(sender, recipients, content)] = self.handler.received
        self.assertEqual((sender, recipients), ("<>", ["erin@elsewhere.example"]))
        self.assertIn(b"report-type=delivery-status", content)

    @async_test
    async def test_a_bounce_is_never_bounced(self) -> None:
        self.handler.rcpt_replies = {"erin@elsewhere.example": "550 5.1.1 gone"}
        entry = self.queue.enqueue(None, ["erin@elsewhere.example"], MESSAGE, sender=None)
        await self.queue.attempt(entry)
        self.assertEqual(self.queue.listing(), [])
        self.assertEqual(self.queued(), [])

    @async_test
    async def test_notify_never_suppresses_the_dsn(self) -> None:
        self.handler.rcpt_replies = {"dave@remote.example": "550 5.1.1 No"}
        rcpt = wire.Rcpt(wire.parse_path("<dave@remote.example>"), notify=frozenset({wire.Notify.NEVER}))
        entry = self.queue.enqueue(self.mail(), [rcpt], MESSAGE)
        await self.queue.attempt(entry)
        self.assertEqual(inbox_messages(self.context, "alice"), [])

    @async_test
    async def test_restart_sends_nothing_twice(self) -> None:
        self.handler.rcpt_replies = {"dave@remote.example": "451 4.2.1 Busy, later"}
        entry = self.queue.enqueue(self.mail(), ["carol@remote.example", "dave@remote.example"], MESSAGE)
        await self.queue.attempt(entry)
        self.assertEqual([r.state for r in entry.recipients], [DELIVERED, PENDING])
        # The server stops; a new queue (a restarted server) scans the same spool.
        restarted = self.make_queue()
        [loaded] = restarted.load()
        self.assertEqual([r.state for r in loaded.recipients], [DELIVERED, PENDING])
        self.handler.rcpt_replies = {}
        await restarted.attempt(loaded)
        self.assertEqual([rcpts for _, rcpts, _ in self.handler.received],
                         [["carol@remote.example"], ["dave@remote.example"]])
        self.assertEqual(self.queued(), [])

    @async_test
    async def test_give_up_bounces_with_the_last_error(self) -> None:
        self.handler.data_replies = ["451 4.3.0 later"] * 10
        clock = task.Clock()
        clock.advance(1_000_000)
        queue = Queue(self.context, clock=clock)
        queue.reactor = reactor  # real connections, simulated time
        entry = queue.enqueue(self.mail(), ["carol@remote.example"], MESSAGE)
        await queue.attempt(entry)
        self.assertEqual(entry.recipients[0].state, PENDING)
        clock.advance(3600)
        await queue.attempt(entry)
        self.assertEqual(entry.recipients[0].state, FAILED)
        [bounce] = inbox_messages(self.context, "alice")
        self.assertIn(b"Action: failed", bounce)
        self.assertIn(b"Status: 4.4.7", bounce)  # delivery time expired
        self.assertIn(b"Diagnostic-Code: smtp; 451 4.3.0 later", bounce)

    @embedded_store_only
    def test_scan_removes_unacknowledged_and_half_written_files(self) -> None:
        spool = self.queue.spool
        (spool / "ORPHAN.msg").write_bytes(MESSAGE)
        (spool / "HALF.json.tmp").write_text("{")
        (spool / "LOST.json").write_text(json.dumps({"id": "LOST"}))
        kept = self.queue.enqueue(self.mail(), ["carol@remote.example"], MESSAGE)
        restarted = self.make_queue()
        self.assertEqual([e.id for e in restarted.load()], [kept.id])
        self.assertEqual(sorted(p.name for p in spool.iterdir()),
                         sorted(["LOST.json", f"{kept.id}.json", f"{kept.id}.msg"]))

    def test_delete_and_flush(self) -> None:
        entry = self.queue.enqueue(self.mail(), ["carol@remote.example"], MESSAGE)
        entry.next_attempt += 1000
        self.queue.flush()
        self.assertLessEqual(self.saved()[entry.id].next_attempt, reactor.seconds())
        self.assertTrue(self.queue.delete(entry.id))
        self.assertEqual(self.queued(), [])
        self.assertFalse(self.queue.delete(entry.id))

    @async_test
    async def test_runner_delivers_new_mail_and_retries(self) -> None:
        self.handler.data_replies = ["451 4.3.0 later"]
        runner = QueueRunner(self.queue, poll_interval=0.2)
        runner.startService()
        self.addCleanup(runner.stopService)
        self.queue.enqueue(self.mail(), ["carol@remote.example"], MESSAGE)
        for _ in range(60):
            if self.handler.received:
                break
            await task.deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(len(self.handler.received), 1)
        for _ in range(20):
            if not self.queued():
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(self.queued(), [])

    @async_test
    async def test_runner_picks_up_the_admins_flush_file(self) -> None:
        self.handler.data_replies = ["451 4.3.0 later"]
        self.context.config["queue"]["retry_initial"] = 3600
        self.context.config["queue"]["retry_max"] = 3600
        queue = self.make_queue()
        entry = queue.enqueue(self.mail(), ["carol@remote.example"], MESSAGE)
        await queue.attempt(entry)
        self.assertGreater(entry.next_attempt, reactor.seconds() + 3000)
        runner = QueueRunner(queue, poll_interval=0.2)
        runner.startService()
        self.addCleanup(runner.stopService)
        if queue.spool is not None:
            (queue.spool / "flush").touch()
        else:  # the admin's flush on the shared spool: every runner sees the rows due
            self.make_queue().flush()
        for _ in range(50):
            if self.handler.received:
                break
            await task.deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(len(self.handler.received), 1)


class DirectDeliveryTests(QueueTestsBase):
    """No smarthost: each domain's hosts come from the resolver (DNS MX by default)."""

    def queue_settings(self) -> dict[str, str]:
        return {"retry_initial": "1s", "retry_max": "4s", "give_up": "1h"}

    def make_queue(self, **kwargs) -> Queue:
        self.lookups = []

        async def resolver(domain: str):
            self.lookups.append(domain)
            if domain == "nowhere.example":
                raise DestinationError("domain nowhere.example does not exist", permanent=True, status="5.1.2")
            return [("127.0.0.1", self.port)]

        return Queue(self.context, clock=reactor, resolver=resolver, **kwargs)

    @async_test
    async def test_one_connection_per_domain(self) -> None:
        entry = self.queue.enqueue(
            self.mail(), ["a@one.example", "b@two.example", "c@one.example", "nobody@nowhere.example"], MESSAGE)
        await self.queue.attempt(entry)
        self.assertEqual(sorted(self.lookups), ["nowhere.example", "one.example", "two.example"])
        self.assertEqual(sorted(rcpts for _, rcpts, _ in self.handler.received),
                         [["a@one.example", "c@one.example"], ["b@two.example"]])
        [bounce] = inbox_messages(self.context, "alice")
        self.assertIn(b"Final-Recipient: rfc822; nobody@nowhere.example", bounce)
        self.assertIn(b"Status: 5.1.2", bounce)

    @async_test
    async def test_unreachable_host_is_a_temporary_failure(self) -> None:
        self.port = free_port()  # nothing listens there
        entry = self.queue.enqueue(self.mail(), ["a@one.example"], MESSAGE)
        await self.queue.attempt(entry)
        self.assertEqual(entry.recipients[0].state, PENDING)
        self.assertIn("cannot connect", entry.last_error)

    @async_test
    async def test_local_recipient_in_the_queue_goes_to_the_store(self) -> None:
        entry = self.queue.enqueue(self.mail(), ["bob@example.org"], MESSAGE)
        await self.queue.attempt(entry)
        self.assertEqual(inbox_messages(self.context, "bob"), [MESSAGE])
        self.assertEqual(self.lookups, [])


class SharedQueueTests(QueueTestsBase):
    """The PostgreSQL store's queue, shared by every server on the database: exclusive claims, leases."""

    skip = postgres_support.skip_reason()

    def setUp(self) -> None:
        super().setUp()
        self.addCleanup(self.context.store.close)

    def make_server_sections(self) -> dict:
        return {"store": {"backend": "postgresql", "dsn": postgres_support.fresh_dsn()[0]}}

    def other_server(self, clock=None) -> Queue:
        """A queue of another server on the same database: its own store, connections and claims."""
        from tests.helpers import another_store

        store = another_store(self.context.store)
        self.addCleanup(store.close)
        context = type("Context", (), {})()
        context.__dict__.update(vars(self.context))
        context.store = store
        queue = Queue(context, clock=clock or reactor)
        queue.reactor = reactor
        return queue

    @async_test
    async def test_two_servers_racing_for_a_due_message_attempt_it_once(self) -> None:
        entry = self.queue.enqueue(self.mail(), ["carol@remote.example"], MESSAGE)
        other = self.other_server()
        [claimed] = self.queue.claim_due(10)
        self.assertEqual(claimed.id, entry.id)
        self.assertEqual(other.claim_due(10), [])  # claimed: skipped, not waited for
        # Both try at once; the one without the claim does nothing.
        await defer.gatherResults([defer.ensureDeferred(other.attempt(claimed)),
                                   defer.ensureDeferred(self.queue.attempt(claimed))])
        self.assertEqual(len(self.handler.received), 1)
        self.assertEqual(self.queued(), [])

    def test_concurrent_claims_never_take_one_message_twice(self) -> None:
        ids = {self.queue.enqueue(self.mail(), ["carol@remote.example"], MESSAGE).id for _ in range(40)}
        servers = [self.other_server() for _ in range(3)]
        taken: list[list[str]] = [[] for _ in servers]
        start = threading.Barrier(len(servers))

        def claim(n: int) -> None:  # each in a thread of its own: its own connection, truly at once
            start.wait(60)
            while claimed := servers[n].claim_due(1):
                taken[n].extend(entry.id for entry in claimed)

        threads = [threading.Thread(target=claim, args=(n,)) for n in range(len(servers))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)  # a hang check only
        every = [entry_id for ids_taken in taken for entry_id in ids_taken]
        self.assertEqual(sorted(every), sorted(ids))  # each message claimed once, by one server

    @async_test
    async def test_an_attempt_claims_the_message_for_the_lease(self) -> None:
        entry = self.queue.enqueue(self.mail(), ["carol@remote.example"], MESSAGE)
        other = self.other_server()
        [claimed] = other.claim_due(10)
        await self.queue.attempt(entry)  # another server holds it
        self.assertEqual(self.handler.received, [])
        self.assertEqual(entry.recipients[0].state, PENDING)
        await other.attempt(claimed)
        self.assertEqual(len(self.handler.received), 1)

    @async_test
    async def test_an_expired_lease_is_taken_over(self) -> None:
        self.handler.rcpt_replies = {"dave@remote.example": "451 4.2.1 later"}
        entry = self.queue.enqueue(self.mail(), ["carol@remote.example", "dave@remote.example"], MESSAGE)
        await self.queue.attempt(entry)  # carol delivered, dave pending
        self.queue.flush()
        [claimed] = self.queue.claim_due(10)  # ... and the server dies holding the claim
        clock = task.Clock()
        clock.advance(reactor.seconds())
        later = self.other_server(clock)
        self.assertEqual(later.claim_due(10), [])
        clock.advance(self.queue.storage.lease + 1)
        [taken] = later.claim_due(10)
        self.assertEqual([r.state for r in taken.recipients], [DELIVERED, PENDING])
        self.handler.rcpt_replies = {}
        await later.attempt(taken)
        self.assertEqual([rcpts for _, rcpts, _ in self.handler.received],
                         [["carol@remote.example"], ["dave@remote.example"]])  # carol not again
        self.assertEqual(self.queued(), [])
        await self.queue.attempt(claimed)  # the first server, had it lived on: nothing left to do
        self.assertEqual(len(self.handler.received), 2)

    @async_test
    async def test_a_long_attempt_renews_its_lease(self) -> None:
        clock = task.Clock()
        clock.advance(reactor.seconds())
        queue = Queue(self.context, clock=clock)
        queue.reactor = reactor
        entry = queue.enqueue(self.mail(), ["carol@remote.example"], MESSAGE)
        arrived = defer.Deferred()
        release = threading.Event()

        async def slow_data(server, session, envelope):
            reactor.callFromThread(arrived.callback, None)
            release.wait(60)  # a hang check only
            self.handler.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
            return "250 2.0.0 Queued"

        self.handler.handle_DATA = slow_data
        attempt = queue.attempt(entry)
        await arrived
        later = self.other_server(clock)
        for _ in range(5):  # five leases pass while the smarthost thinks
            clock.advance(queue.storage.lease / 3)
            clock.advance(queue.storage.lease / 3)
            self.assertEqual(later.claim_due(10), [])
        release.set()
        await attempt
        self.assertEqual(len(self.handler.received), 1)

    def test_enqueue_is_committed_before_it_returns(self) -> None:
        entry = self.queue.enqueue(self.mail(), ["carol@remote.example"], MESSAGE)
        other = self.other_server()
        self.assertEqual([e.id for e in other.listing()], [entry.id])
        [claimed] = other.claim_due(10)
        self.assertEqual(other.message_path(claimed).read_bytes(), MESSAGE)
        other.storage.release(claimed)

    @async_test
    async def test_new_mail_wakes_the_runners_of_other_servers(self) -> None:
        other = self.other_server()
        other.context.store.listen(reactor)
        runner = QueueRunner(other, poll_interval=3600)  # no poll: only the NOTIFY can wake it
        runner.startService()
        self.addCleanup(runner.stopService)
        self.queue.enqueue(self.mail(), ["carol@remote.example"], MESSAGE)
        for _ in range(300):  # a hang check only
            if self.handler.received:
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(len(self.handler.received), 1)
