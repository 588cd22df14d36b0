"""A long SEARCH shares the reactor: it runs in slices, other sessions are
served between them, the next command waits for it, and a lost connection
stops it (:mod:`cyrusmail.slices`)."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from cyrusmail.pop3.server import POP3Factory
from cyrusmail.slices import run_all, run_in_slices
from tests.imap_support import Client, message, selected, session_context

MESSAGES = 40
#: 60 NOT BODY keys, the issue's case; NOT BODY marker3 rules out every fifth message.
CRITERIA = " ".join(f"NOT BODY absent{n}" for n in range(59)) + " NOT BODY marker3"
MATCHES = [n for n in range(1, MESSAGES + 1) if n % 5 != 3]


class TurnClock(Clock):
    """A Clock that can run one reactor turn: the calls due now, but not the
    calls those schedule for "now" (a real reactor polls for I/O first)."""

    def turn(self) -> None:
        for call in self.due():
            if call.active():
                self.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)

    def due(self) -> list:
        return [call for call in self.getDelayedCalls() if call.getTime() <= self.seconds()]


def search_line(numbers: list[int]) -> bytes:
    return b"* SEARCH" + b"".join(b" %d" % number for number in numbers) + b"\r\n"


class SlicedSessions:
    """A TestCase mixin: alice's session and another on an INBOX of
    :attr:`MESSAGES` messages of about 60 KB, message n holding ``marker``
    n modulo :attr:`MARKERS`, on a clock that runs one reactor turn at a time."""

    MESSAGES = MESSAGES
    MARKERS = 5

    def setUp(self) -> None:
        self.context = session_context(self)
        inbox = self.context.store.mailboxes("alice").open("INBOX")
        filler = "lorem ipsum dolor sit amet consectetur " * 800
        inbox.append_many([
            (message(f"message {n}", f"{filler}\r\nmarker{n % self.MARKERS}\r\n{filler}\r\n"), None, (), None)
            for n in range(1, self.MESSAGES + 1)
        ])
        self.clock = TurnClock()
        self.alice = self.session()
        self.other = self.session()

    def session(self) -> Client:
        return selected(self, self.context, self.clock)

    def finish(self, between=None) -> int:
        """Run turns until alice's session has nothing scheduled; how many it took."""
        turns = 0
        while self.clock.due():
            if between is not None:
                between(turns)
            self.clock.turn()
            turns += 1
            self.assertLess(turns, 100_000)
        return turns


class SlicedSearchTests(SlicedSessions, TestCase):
    """Forty messages of about 60 KB each: at the default slice, searching their
    bodies for 60 keys takes several reactor turns (the old code took one)."""

    def start(self, data: bytes) -> None:
        """Hand ``data`` to alice's session and return, as the reactor would, without
        running the turns it scheduled."""
        self.alice.server.dataReceived(data)

    def test_other_sessions_are_served_while_it_runs(self) -> None:
        self.start(f"a1 SEARCH {CRITERIA}\r\n".encode())
        self.assertEqual(self.alice.transport.value(), b"")  # not finished in the turn it began
        pop3 = POP3Factory(self.context, "pop3").buildProtocol(None)
        greeted = []

        def meanwhile(turn: int) -> None:
            self.assertNotIn(b"a1 OK", self.alice.transport.value())
            self.other.server.dataReceived(b"n%d NOOP\r\n" % turn)
            self.assertEqual(self.other.transport.value(), b"n%d OK NOOP completed\r\n" % turn)
            self.other.transport.clear()
            if turn == 1:
                transport = StringTransport()
                pop3.makeConnection(transport)
                greeted.append(transport.value())
                pop3.connectionLost(None)

        turns = self.finish(meanwhile)
        self.assertGreaterEqual(turns, 5)
        self.assertTrue(greeted[0].startswith(b"+OK"), greeted)
        self.assertEqual(self.alice.take(), search_line(MATCHES) + b"a1 OK SEARCH completed\r\n")

    def test_same_answer_as_all_at_once(self) -> None:
        """Slices of one message each give what one turn gives."""
        self.alice.server.WORK_SLICE = 1
        self.start(f"a1 UID SEARCH {CRITERIA}\r\n".encode())
        self.assertEqual(self.finish(), MESSAGES)  # the first at once, the end of the work in a last turn
        sliced = self.alice.take()
        self.alice.server.WORK_SLICE = 10**12
        self.start(f"a2 UID SEARCH {CRITERIA}\r\n".encode())
        self.assertEqual(self.finish(), 0)
        self.assertEqual(sliced, search_line(MATCHES) + b"a1 OK UID SEARCH completed\r\n")
        self.assertEqual(self.alice.take(), search_line(MATCHES) + b"a2 OK UID SEARCH completed\r\n")

    def test_pipelined_commands_wait_for_it(self) -> None:
        self.start(f"a1 SEARCH {CRITERIA}\r\na2 NOOP\r\na3 SEARCH UNSEEN\r\n".encode())

        def meanwhile(turn: int) -> None:
            self.assertNotIn(b"a2 ", self.alice.transport.value())

        self.finish(meanwhile)
        self.assertEqual(self.alice.take(), search_line(MATCHES) + b"a1 OK SEARCH completed\r\n"
                         b"a2 OK NOOP completed\r\n" + search_line(list(range(1, MESSAGES + 1)))
                         + b"a3 OK SEARCH completed\r\n")

    def test_expunged_by_another_session_meanwhile(self) -> None:
        """The first message (already tested) and the last (not yet reached) are
        expunged while the search runs: neither is reported, no EXPUNGE comes
        before the tagged reply, which says EXPUNGEISSUED (the client still sees
        them), and the next command brings them."""
        self.start(f"a1 SEARCH {CRITERIA}\r\n".encode())
        self.other.server.dataReceived(f"b1 STORE 1,{MESSAGES} +FLAGS.SILENT (\\Deleted)\r\nb2 EXPUNGE\r\n".encode())
        self.assertIn(b"b2 OK EXPUNGE completed", self.other.transport.value())
        self.assertEqual(self.alice.transport.value(), b"")
        self.finish()
        self.assertEqual(self.alice.take(), search_line(MATCHES[1:-1]) + b"a1 OK [EXPUNGEISSUED] SEARCH completed\r\n")
        self.assertEqual(self.alice.command("a2 NOOP"),
                         ["* 1 EXPUNGE", f"* {MESSAGES - 1} EXPUNGE", "a2 OK NOOP completed"])

    def test_connection_lost_stops_the_work(self) -> None:
        reads = []
        mailbox_class = type(self.context.store.mailboxes("alice").open("INBOX"))  # of either store
        read = mailbox_class.read

        def counting_read(mailbox, uid, *args):
            reads.append(uid)
            return read(mailbox, uid, *args)

        self.patch(mailbox_class, "read", counting_read)
        self.start(f"a1 SEARCH {CRITERIA}\r\n".encode())
        self.clock.turn()
        self.assertTrue(0 < len(reads) < MESSAGES, reads)
        read_before = len(reads)
        self.alice.server.connectionLost(None)
        self.assertEqual(self.clock.due(), [])
        self.clock.advance(0)
        self.assertEqual(len(reads), read_before)
        self.assertEqual(self.alice.transport.value(), b"")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_autologout_stops_the_work(self) -> None:
        """A BYE from the server (idle timeout, shutdown) stops it the same way."""
        self.start(f"a1 SEARCH {CRITERIA}\r\n".encode())
        self.alice.server.bye("Server shutting down")
        self.assertEqual(self.clock.due(), [])
        self.assertEqual(self.alice.take(), b"* BYE Server shutting down\r\n")
        self.assertEqual(self.flushLoggedErrors(), [])


class SlicesTests(TestCase):
    """The driver itself."""

    def steps(self, costs: list[int], log: list):
        try:
            for cost in costs:
                log.append(cost)
                yield cost
        finally:
            log.append("closed")
        return sum(costs)

    def test_turns_of_the_budget(self) -> None:
        clock, log = TurnClock(), []
        done = run_in_slices(clock, self.steps([3, 3, 3, 3, 3], log), budget=6)
        self.assertEqual(log, [3, 3])  # the first slice at once
        self.assertNoResult(done)
        clock.turn()
        self.assertEqual(log, [3, 3, 3, 3])
        clock.turn()
        self.assertEqual(self.successResultOf(done), 15)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_short_work_finishes_at_once(self) -> None:
        clock, log = TurnClock(), []
        self.assertEqual(self.successResultOf(run_in_slices(clock, self.steps([1, 1], log), 10)), 2)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(run_all(self.steps([5, 7], [])), 12)

    def test_failure(self) -> None:
        def failing():
            yield 1
            raise ValueError("broken")

        clock = TurnClock()
        done = run_in_slices(clock, failing(), 1)
        clock.turn()
        self.failureResultOf(done, ValueError)

    def test_cancel_stops_it(self) -> None:
        clock, log = TurnClock(), []
        done = run_in_slices(clock, self.steps([1] * 10, log), 2)
        done.cancel()
        self.failureResultOf(done, defer.CancelledError)
        self.assertEqual(log, [1, 1, "closed"])
        self.assertEqual(clock.getDelayedCalls(), [])

