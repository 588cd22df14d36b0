"""The parts that make several worker processes one server, each on its own.

The channel (JSON requests and replies over a socket pair), connection
counts summed across workers, the supervisor's login throttle as the
workers ask it, the joined answers of the control socket, the restarts of
a worker that dies, and the outbound queue written by a worker that does
not run it.  tests/test_workers.py drives all of it in the real twistd.
"""

from __future__ import annotations

import os
import socket
import time

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, reactor, task
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.python.failure import Failure
from twisted.trial import unittest

from cyrusmail.auth.throttle import LoginThrottle
from cyrusmail.config import MAX_WORKERS, ConfigError, default_workers
from cyrusmail.delivery.queue import ORPHAN_AGE, QueueRunner, queue_of
from cyrusmail.sessions import Limits, SessionRegistry, Tally
from cyrusmail.store.maildir import MaildirStore
from cyrusmail.workers.balance import PAUSE, AcceptBalancer
from cyrusmail.workers.channel import Channel, ChannelError, adopt
from cyrusmail.workers.supervisor import SupervisorService, WorkerProcess, join_answers
from cyrusmail.workers.worker import RemoteThrottle
from tests import imap_support
from tests.helpers import make_config, make_context

MESSAGE = b"From: alice@example.org\r\nSubject: out\r\n\r\nHello.\r\n"


class ConfigTests(unittest.TestCase):
    def test_workers_default_to_the_cores_and_are_bounded(self):
        config = make_config(self.mktemp())
        self.assertEqual(config["server"]["workers"], min(default_workers(), MAX_WORKERS))
        self.assertEqual(config["server"]["idle_check_interval"], 5)
        self.assertEqual(make_config(self.mktemp(), server={"workers": "1"})["server"]["workers"], 1)
        for value, problem in (("0", "expected a number above 0, got 0"),
                               ("257", "expected at most 256 worker processes, got 257"),
                               ("many", "expected a whole number, got 'many'")):
            with self.assertRaises(ConfigError) as caught:
                make_config(self.mktemp(), server={"workers": value})
            self.assertEqual(str(caught.exception), f"test.conf: [server] workers: {problem}")

    def test_idle_looks_for_other_programs_changes_every_idle_check_interval(self):
        context = imap_support.session_context(self, server={"idle_check_interval": "1m"})
        clock = task.Clock()
        client = imap_support.selected(self, context, clock)
        self.assertEqual(client.command("i IDLE"), ["+ idling"])
        elsewhere = MaildirStore(context.store.root)  # as cyrusmail-admin: no watcher hears of it
        self.addCleanup(elsewhere.close)
        elsewhere.mailboxes("alice").open("INBOX").append(imap_support.message())
        clock.advance(59)
        self.assertEqual(client.lines(), [])
        clock.advance(1)
        self.assertEqual(client.lines(), ["* 1 EXISTS", "* 1 RECENT"])


class TallyTests(unittest.TestCase):
    def test_steps_add_up_to_the_tally_and_take_it_away(self):
        tally = Tally()
        for key, total, waiting in [("192.0.2.1", 1, 1), ("192.0.2.1", 1, 0), (None, 3, 2), ("2001:db8::/64", 1, 1)]:
            tally.add(key, total, waiting)
        copy = Tally()
        for step in tally.steps():
            copy.add(*step)
        self.assertEqual(copy, tally)
        for step in tally.steps(-1):
            copy.add(*step)
        self.assertEqual(copy, Tally())

    def test_the_caps_count_the_other_workers_sessions(self):
        limits = Limits.from_server({**Limits.defaults().__dict__, "max_connections": 10,
                                     "max_connections_per_address": 3, "max_unauthenticated": 5,
                                     "max_unauthenticated_per_address": 2, "limit_exempt": []})
        registry = SessionRegistry(limits, task.Clock())
        self.assertIsNone(registry.refusal("imap", "192.0.2.1"))
        registry.elsewhere.add("192.0.2.1", 2, 2)
        self.assertEqual(registry.refusal("imap", "192.0.2.1"),
                         "Too many connections from your address waiting to log in")
        self.assertIsNone(registry.refusal("lmtp", "192.0.2.1"))  # LMTP never waits for a login
        registry.elsewhere.add("192.0.2.1", 1, 0)
        self.assertEqual(registry.refusal("lmtp", "192.0.2.1"), "Too many connections from your address")
        registry.elsewhere.add(None, 2, 3)
        self.assertEqual(registry.refusal("imap", "192.0.2.9"),
                         "Too many connections waiting to log in, try again later")
        registry.elsewhere.add(None, 5, 0)
        self.assertEqual(registry.refusal("lmtp", "192.0.2.9"), "Too many connections, try again later")


class StubPort:
    def __init__(self) -> None:
        self.accepting = True

    def pause(self) -> None:
        self.accepting = False

    def resume(self) -> None:
        self.accepting = True


class AcceptBalancerTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.registry = SessionRegistry(Limits.defaults(), self.clock)
        self.balancer = AcceptBalancer(2, self.clock)
        self.balancer.registry = self.registry
        self.ports = [StubPort(), StubPort()]
        for port in self.ports:
            self.balancer.add(port)

    def sessions(self, here: int = 0, elsewhere: int = 0) -> list[bool]:
        """Change the counts as the worker would; whether each port accepts."""
        self.registry.here.add(None, here, 0)
        self.registry.elsewhere.add(None, elsewhere, 0)
        self.balancer.check()
        return [port.accepting for port in self.ports]

    def test_a_worker_two_sessions_ahead_of_the_other_leaves_it_the_next_connections(self):
        self.assertEqual(self.sessions(here=1), [True, True])
        self.assertEqual(self.sessions(here=1), [False, False])
        self.assertEqual(self.sessions(elsewhere=1), [True, True])  # the other caught up: 2 to 1
        self.assertEqual(self.sessions(here=1), [False, False])  # 3 to 1
        self.assertEqual(self.sessions(here=-1), [True, True])  # one of ours closed

    def test_the_pause_ends_by_itself_when_the_others_take_nothing(self):
        self.sessions(here=2)
        self.assertEqual(self.sessions(here=1), [False, False])
        self.clock.advance(PAUSE)
        self.assertEqual([port.accepting for port in self.ports], [True, True])
        self.assertEqual(self.sessions(here=1), [False, False])  # still ahead: the next change pauses again
        self.balancer.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_the_share_is_the_others_average(self):
        balancer = AcceptBalancer(3, self.clock)
        balancer.registry = self.registry
        self.registry.here.add(None, 4, 0)
        self.registry.elsewhere.add(None, 5, 0)  # 2.5 on average: 4 is not two ahead
        self.assertFalse(balancer.over_share())
        self.registry.elsewhere.add(None, -1, 0)
        self.assertTrue(balancer.over_share())


class ChannelTests(unittest.TestCase):
    def pair(self, handlers: dict) -> tuple[Channel, Channel]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        left, right = Channel({}, "left"), Channel(handlers, "right")
        for sock, channel in ((ours, left), (theirs, right)):
            sock.setblocking(False)
            adopt(reactor, sock.fileno(), channel)
            sock.close()
            self.addCleanup(lambda channel=channel: channel.transport.loseConnection())
        return left, right

    @defer.inlineCallbacks
    def test_requests_are_answered_and_failures_said(self):
        def slow(message):
            return task.deferLater(reactor, 0, lambda: {"twice": message["n"] * 2})

        def broken(message):
            raise ValueError("no such thing")

        told = []
        left, _right = self.pair({"double": slow, "broken": broken, "tell": told.append})
        left.send("tell", text="first")
        self.assertEqual((yield left.request("double", n=21))["twice"], 42)
        self.assertEqual([message["text"] for message in told], ["first"])  # in order
        with self.assertRaises(ChannelError) as caught:
            yield left.request("broken")
        self.assertEqual(str(caught.exception), "no such thing")
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        with self.assertRaises(ChannelError) as caught:
            yield left.request("reboot")
        self.assertEqual(str(caught.exception), "unknown message 'reboot'")

    @defer.inlineCallbacks
    def test_a_closed_channel_fails_what_waits_and_refuses_more(self):
        lost = []
        left, right = self.pair({"never": lambda message: defer.Deferred()})
        left.lost = lambda: lost.append(True)
        waiting = left.request("never")
        right.transport.loseConnection()
        with self.assertRaises(ChannelError):
            yield waiting
        self.assertEqual(lost, [True])
        with self.assertRaises(ChannelError):
            yield left.request("never")
        left.send("never")  # dropped, no error


class StubChannel:
    """What the supervisor sends a worker, kept; requests answered by the test."""

    def __init__(self) -> None:
        self.open = True
        self.sent: list[tuple[str, dict]] = []
        self.requests: list[tuple[str, dict, defer.Deferred]] = []

    def send(self, op: str, **fields) -> None:
        self.sent.append((op, fields))

    def request(self, op: str, **fields) -> defer.Deferred:
        reply: defer.Deferred = defer.Deferred()
        self.requests.append((op, fields, reply))
        return reply


def supervisor(test: unittest.TestCase, clock: task.Clock, workers: int = 2) -> SupervisorService:
    config = make_config(test.mktemp(), server={"workers": str(workers)})
    service = SupervisorService(config, clock, {}, None)
    service.throttle = LoginThrottle(clock)
    for slot in range(workers):
        worker = WorkerProcess(service, slot)
        worker.channel = StubChannel()
        service.workers[slot] = worker
    return service


class SharedThrottleTests(unittest.TestCase):
    def test_a_failure_in_one_worker_delays_the_accounts_next_check_in_another(self):
        clock = task.Clock()
        service = supervisor(self, clock)
        one, two = service.workers[0], service.workers[1]
        first = service._login(one, {"client": "192.0.2.1", "account": "alice"})
        self.assertTrue(first.result["go"])
        service._verified(one, {"ticket": first.result["ticket"], "outcome": "fail"})
        second = service._login(two, {"client": "192.0.2.2", "account": "alice"})
        self.assertFalse(second.called)  # the account's delay after a failure
        clock.advance(1)
        self.assertTrue(second.result["go"])
        service._verified(two, {"ticket": second.result["ticket"], "outcome": "ok"})
        third = service._login(one, {"client": "192.0.2.2", "account": "alice"})
        self.assertTrue(third.result["go"])  # a success cleared the account's failures

    def test_a_worker_that_goes_frees_its_turn(self):
        clock = task.Clock()
        service = supervisor(self, clock)
        one, two = service.workers[0], service.workers[1]
        first = service._login(one, {"client": "192.0.2.1", "account": "alice"})
        second = service._login(two, {"client": "192.0.2.1", "account": "alice"})
        self.assertFalse(second.called)  # one check of an account at a time
        service._channel_lost(one)
        self.assertTrue(first.result["go"])
        self.assertTrue(second.result["go"])  # not counted as a failure either

    def test_the_worker_checks_when_told_and_tells_the_outcome(self):
        channel = StubChannel()
        throttle = RemoteThrottle(channel)
        checks = []

        def wrong() -> defer.Deferred:
            checks.append("wrong")
            return defer.fail(UnauthorizedLogin())

        outcome = throttle.attempt("192.0.2.1", "alice", wrong)
        [(op, fields, reply)] = channel.requests
        self.assertEqual((op, fields), ("login", {"client": "192.0.2.1", "account": "alice"}))
        self.assertEqual(checks, [])  # not before its turn
        reply.callback({"go": True, "ticket": 7})
        self.assertEqual(checks, ["wrong"])
        self.failureResultOf(outcome, UnauthorizedLogin)
        self.assertEqual(channel.sent, [("verified", {"ticket": 7, "outcome": "fail"})])

        refused = throttle.attempt("192.0.2.1", "alice", wrong)
        channel.requests[-1][2].callback({"go": False})
        self.failureResultOf(refused, UnauthorizedLogin)
        self.assertEqual(checks, ["wrong"])  # refused without a check


class ControlAnswerTests(unittest.TestCase):
    def test_rows_are_joined_in_order_and_counts_summed(self):
        answers = [(0, ["* 1 imap a alice x 10", "* 3 pop3 b - x 10", "ok 2"]), (1, ["* 2 imap c bob x 11", "ok 1"])]
        self.assertEqual(join_answers(answers),
                         ["* 1 imap a alice x 10", "* 2 imap c bob x 11", "* 3 pop3 b - x 10", "ok 3"])
        self.assertEqual(join_answers([(0, ["ok 1"]), (1, ["ok 0"])]), ["ok 1"])
        self.assertEqual(join_answers([]), ["ok 0"])

    def test_an_error_or_silence_is_the_answer(self):
        self.assertEqual(join_answers([(0, ["ok 1"]), (1, ["error usage: kick USER"])]), ["error usage: kick USER"])
        self.assertEqual(join_answers([(0, ["ok 1"]), (1, Failure(defer.TimeoutError()))]),
                         ["error worker 1: did not answer"])


class RestartTests(unittest.TestCase):
    def test_a_worker_that_keeps_dying_young_waits_longer_and_one_that_ran_long_is_replaced_at_once(self):
        clock = task.Clock()
        service = supervisor(self, clock)
        started = []
        service.spawn = started.append
        killed = Failure(ProcessTerminated(signal=9))
        for delay in (0.5, 1.0, 2.0, 4.0):
            worker = service.workers[1] = WorkerProcess(service, 1)
            service.ended(worker, killed)
            clock.advance(delay - 0.01)
            self.assertEqual(started, [])
            clock.advance(0.01)
            self.assertEqual(started, [1])
            started.clear()
        worker = service.workers[1] = WorkerProcess(service, 1)
        clock.advance(60)
        service.ended(worker, Failure(ProcessDone(0)))
        clock.advance(0)
        self.assertEqual(started, [1])
        self.assertEqual(service.restarts[1], 5)

    def test_a_dead_workers_sessions_leave_the_others_counts(self):
        service = supervisor(self, task.Clock())
        service.spawn = lambda slot: None
        one, two = service.workers[0], service.workers[1]
        service._counted(one, [["192.0.2.1", 2, 1]])
        self.assertEqual(two.channel.sent, [("elsewhere", {"steps": [["192.0.2.1", 2, 1]]})])
        service.ended(one, Failure(ProcessTerminated(signal=9)))
        self.assertEqual(two.channel.sent[-1], ("elsewhere", {"steps": [("192.0.2.1", -2, -1)]}))

    def test_changes_go_to_every_other_worker_and_queued_mail_to_worker_0(self):
        service = supervisor(self, task.Clock(), workers=3)
        zero, one, two = (service.workers[slot] for slot in range(3))
        service._relay(one, "changed", user="alice", mailbox=3)
        self.assertEqual([worker.channel.sent for worker in (zero, one, two)],
                         [[("changed", {"user": "alice", "mailbox": 3})], [],
                          [("changed", {"user": "alice", "mailbox": 3})]])
        service._queued()
        self.assertEqual(zero.channel.sent[-1], ("queued", {}))
        self.assertEqual(two.channel.sent[-1][0], "changed")


class SharedSpoolTests(unittest.TestCase):
    def test_a_worker_that_does_not_run_the_queue_writes_the_spool_and_tells_the_runner(self):
        told = []
        context = make_context(self.mktemp())
        self.addCleanup(context.store.close)
        context.extras["queue_elsewhere"] = lambda: told.append(True)
        queue = queue_of(context)
        self.assertEqual(context.extras.get("services", []), [])  # no runner here
        entry = queue.enqueue(None, ["carol@remote.example"], MESSAGE, sender="alice@example.org")
        self.assertEqual(told, [True])
        self.assertEqual(queue.entries, {})  # kept by the runner, not here
        self.assertTrue((queue.spool / f"{entry.id}.json").exists())

    def test_a_running_scan_leaves_a_file_another_worker_may_be_writing(self):
        context = make_context(self.mktemp())
        self.addCleanup(context.store.close)
        context.extras["spool_shared"] = True
        queue = queue_of(context)
        [runner] = context.extras["services"]
        self.assertIsInstance(runner, QueueRunner)
        spool = queue.spool
        for name in ("YOUNG.msg", "YOUNG.json.tmp", "OLD.msg", "OLD.json.tmp"):
            (spool / name).write_bytes(MESSAGE)
        long_ago = time.time() - ORPHAN_AGE - 60
        for name in ("OLD.msg", "OLD.json.tmp"):
            os.utime(spool / name, (long_ago, long_ago))
        runner.poll()
        self.assertEqual(sorted(path.name for path in spool.iterdir()), ["YOUNG.json.tmp", "YOUNG.msg"])
