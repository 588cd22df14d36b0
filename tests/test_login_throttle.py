"""Login throttling: per account and per address, across connections, before the password is checked.

Every test counts password verifications through a fake hash check injected
into the portal's checker, on a Clock shared by the sessions and the throttle.
"""

from __future__ import annotations

from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from cyrusmail.account import IAccount
from cyrusmail.auth.throttle import LoginThrottle, UsernamePasswordFrom, address_key
from cyrusmail.imap.server import IMAPServer
from cyrusmail.pop3.server import POP3Factory
from tests import postgres_support
from tests.helpers import add_user, make_context
from tests.test_smtp_session_support import plain, submission_factory


class CountedLogins:
    """A context on a Clock whose checker records when each password is verified."""

    def __init__(self, test: unittest.TestCase, clock: Clock | None = None, store: dict | None = None,
                 **server: str):
        self.clock = clock if clock is not None else Clock()
        sections = {"store": store} if store is not None else {}
        self.context = make_context(test.mktemp(), reactor=self.clock, server={"domains": "example.org", **server},
                                    **sections)
        test.addCleanup(self.context.store.close)
        test.addCleanup(self.context.users.close)
        for user in ("alice", "bob"):
            if not self.context.users.exists(user):  # another server on the same database added them
                add_user(self.context, user, "secret")
        checker = self.context.portal.checkers[IUsernamePassword]
        checker.hash_in_thread = False
        checker.verify = self.verify
        self.verified: list[tuple[float, str]] = []  # (time, password) of each verification

    def verify(self, password: str, stored: str | None) -> bool:
        self.verified.append((self.clock.seconds(), password))
        return stored is not None and password == "secret"

    def times(self) -> list[float]:
        return [round(when, 3) for when, _ in self.verified]

    def login(self, user: str, password: str, client: str) -> defer.Deferred:
        credentials = UsernamePasswordFrom(user.encode(), password.encode(), client)
        return self.context.portal.login(credentials, None, IAccount)

    def guess(self, user: str, password: str, client: str) -> None:
        """A login whose outcome does not matter, only when its password is checked."""
        self.login(user, password, client).addErrback(lambda failure: failure.trap(UnauthorizedLogin))


class ServersOnOneDatabaseTests(unittest.TestCase):
    """Several servers on one PostgreSQL database: guessing through another gains nothing."""

    skip = postgres_support.skip_reason()

    def test_failures_through_one_server_delay_the_next_check_on_another(self) -> None:
        dsn, schema = postgres_support.fresh_dsn()
        self.addCleanup(postgres_support.drop_schema, schema)
        clock = Clock()  # one time for both, as the servers' clocks agree
        store = {"backend": "postgresql", "dsn": dsn}
        first, second = CountedLogins(self, clock, store), CountedLogins(self, clock, store)
        first.guess("alice", "wrong", "192.0.2.1")
        clock.advance(1)
        first.guess("alice", "wrong", "192.0.2.1")  # two failures: the next check waits about 2 s
        login = second.login("alice", "secret", "198.51.100.7")  # another server, another address
        clock.advance(1.9)
        self.assertEqual(second.verified, [])
        clock.advance(0.1)
        self.assertEqual(second.times(), [3.0])
        self.successResultOf(login)
        self.assertEqual(first.times(), [0.0, 1.0])


class PortalThrottleTests(unittest.TestCase):
    def setUp(self) -> None:
        self.logins = CountedLogins(self)

    def test_the_next_attempt_waits_for_the_last_failure_plus_a_growing_delay(self) -> None:
        attempts = [self.logins.login("alice", "wrong", f"192.0.2.{n}") for n in range(1, 4)]
        self.assertEqual(self.logins.times(), [0.0])  # one at a time, however many connections
        self.failureResultOf(attempts[0], UnauthorizedLogin)
        self.logins.clock.advance(0.99)
        self.assertEqual(len(self.logins.verified), 1)
        self.logins.clock.advance(0.01)
        self.logins.clock.advance(1 + 59 / 60)  # two failures now, one a second older: a second fades a minute
        self.assertEqual(self.logins.times(), [0.0, 1.0, 2.983])
        for attempt in attempts[1:]:
            self.failureResultOf(attempt, UnauthorizedLogin)

    def test_one_account_under_all_its_names(self) -> None:
        for n, name in enumerate(["Alice", "alice@example.org", "ALICE@Example.ORG", "alice", "alice"]):
            self.logins.guess(name, "wrong", f"192.0.2.{n}")
        self.logins.clock.pump([0.5] * 20)
        self.assertEqual(self.logins.times(), [0.0, 1.0, 3.0, 6.0, 10.0])  # on the 0.5 s steps of this clock

    def test_names_that_do_not_exist_are_throttled_the_same(self) -> None:
        def attack(names: list[str]) -> list[float]:
            logins = CountedLogins(self)
            for n, name in enumerate(names * 4):
                logins.guess(name, "wrong", f"198.51.100.{n}")
            logins.clock.pump([0.25] * 240)
            return logins.times()

        existing = attack(["alice", "Alice@example.org"])
        self.assertEqual(attack(["ghost", "Ghost@example.org"]), existing)
        self.assertEqual(existing, [0.0, 1.0, 3.0, 6.0, 10.0, 15.0, 20.75, 27.5])  # on the 0.25 s steps

    def test_a_right_password_waits_its_turn_and_then_clears_the_account(self) -> None:
        self.logins.guess("alice", "wrong", "192.0.2.1")
        right = self.logins.login("alice", "secret", "192.0.2.2")
        self.assertNoResult(right)  # a sooner answer would tell that it was right
        self.logins.clock.advance(1)
        self.assertIs(self.successResultOf(right)[0], IAccount)
        self.logins.guess("alice", "wrong", "192.0.2.3")
        self.assertEqual(self.logins.times(), [0.0, 1.0, 1.0])  # the failures were forgotten

    def test_too_many_waiting_are_refused_without_a_check(self) -> None:
        limit = self.logins.context.portal.throttle.queue_limit
        attempts = [self.logins.login("alice", "wrong", f"10.0.{n // 250}.{n % 250}") for n in range(1 + limit)]
        self.failureResultOf(attempts[0], UnauthorizedLogin)  # checked at once
        refused = [self.logins.login("alice", "wrong", f"10.1.0.{n}") for n in range(20)]
        self.logins.clock.advance(0.99)  # refusals wait the key's delay too, so that no client spins
        for attempt in attempts[1:] + refused:
            self.assertNoResult(attempt)
        self.logins.clock.advance(0.01)
        for attempt in refused:
            self.failureResultOf(attempt, UnauthorizedLogin)
        self.failureResultOf(attempts[1], UnauthorizedLogin)  # the first waiting one had its turn
        self.assertEqual(len(self.logins.verified), 2)
        for attempt in attempts[2:]:
            self.assertNoResult(attempt)

    def test_one_address_is_throttled_across_accounts_and_a_success_does_not_clear_it(self) -> None:
        for n in range(4):
            self.logins.guess(f"user{n}", "wrong", "192.0.2.9")
        self.logins.clock.pump([0.5] * 12)
        self.assertEqual(self.logins.times(), [0.0, 1.0, 3.0, 6.0])
        right = self.logins.login("bob", "secret", "192.0.2.9")  # the guesser's own account, say
        self.assertNoResult(right)
        self.logins.clock.pump([0.5] * 8)
        self.successResultOf(right)
        self.logins.guess("user98", "wrong", "192.0.2.9")
        self.logins.guess("user99", "wrong", "192.0.2.9")
        before = len(self.logins.verified)
        self.logins.clock.advance(2)
        # Five failures, not one: the success did not clear the address.
        self.assertEqual(len(self.logins.verified), before)

    def test_an_address_that_logged_in_keeps_its_own_lane(self) -> None:
        self.successResultOf(self.logins.login("alice", "secret", "192.0.2.1"))
        for n in range(40):  # the account's public queue is full and throttled
            self.logins.guess("alice", "wrong", f"203.0.113.{n}")
        owner = self.logins.login("alice", "secret", "192.0.2.1")
        self.successResultOf(owner)
        elsewhere = self.logins.login("alice", "secret", "192.0.2.77")  # refused: the public queue is full
        self.logins.clock.advance(self.logins.context.portal.throttle.maximum)
        self.failureResultOf(elsewhere, UnauthorizedLogin)

    def test_ipv6_counts_by_64_and_ipv4_by_address(self) -> None:
        table = {
            "192.0.2.1": "192.0.2.1",
            "::ffff:192.0.2.1": "192.0.2.1",
            "2001:db8:1:2:aaaa::1": "2001:db8:1:2::/64",
            "2001:db8:1:2:bbbb::9": "2001:db8:1:2::/64",
            "2001:db8:1:3::1": "2001:db8:1:3::/64",
            "fe80::1%eth0": "fe80::/64",
            "local": "local",
        }
        self.assertEqual({host: address_key(host) for host in table}, table)


class VerificationsAtOnceTests(unittest.TestCase):
    """Verifications that take time (scrypt in a thread): how many run at once per key."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.throttle = LoginThrottle(self.clock)
        self.running: list[defer.Deferred] = []
        self.outcomes: list = []

    def attempt(self, client: str, account: str) -> None:
        self.throttle.attempt(client, account, self.verify).addBoth(self.outcomes.append)

    def verify(self) -> defer.Deferred:
        pending: defer.Deferred = defer.Deferred()
        self.running.append(pending)
        return pending

    def test_one_per_account_and_a_few_per_fresh_address(self) -> None:
        for n in range(5):
            self.attempt(f"192.0.2.{n}", "alice")
        self.assertEqual(len(self.running), 1)
        for n in range(10):
            self.attempt("198.51.100.1", f"user{n}")
        self.assertEqual(len(self.running), 1 + self.throttle.address_parallel)
        self.running[1].errback(UnauthorizedLogin())  # the address now has a failure
        for pending in self.running[2:]:
            pending.errback(UnauthorizedLogin())
        self.clock.advance(self.throttle.maximum)
        self.assertEqual(len(self.running), 2 + self.throttle.address_parallel)  # one at a time
        self.assertEqual(len(self.outcomes), self.throttle.address_parallel)

    def test_many_logins_at_once_from_one_clean_address_all_wait_their_turn(self) -> None:
        # A webmail host logging 100 users in at once: none refused (each used to be
        # refused past 10 waiting); after a failure the address's queue is short again.
        for n in range(100):
            self.attempt("192.0.2.50", f"user{n}")
        self.clock.advance(1)  # refusals are answered after a second
        while not all(pending.called for pending in self.running):
            for pending in [pending for pending in self.running if not pending.called]:
                pending.callback("ok")  # each finished check starts the next waiting ones
        self.assertEqual(self.outcomes, ["ok"] * 100)
        self.attempt("192.0.2.50", "mallory")
        self.running[-1].errback(UnauthorizedLogin())
        for n in range(self.throttle.queue_limit + 5):
            self.attempt("192.0.2.50", f"guess{n}")
        self.clock.advance(self.throttle.maximum * (self.throttle.queue_limit + 5))
        refused = [outcome for outcome in self.outcomes[101:] if isinstance(outcome, Failure)
                   and "waiting" in str(outcome.value)]
        self.assertEqual(len(refused), 5)

    def test_tables_are_bounded(self) -> None:
        throttle = LoginThrottle(self.clock, table_limit=50)
        for n in range(2000):
            throttle.attempt(f"10.{n // 250}.{n % 250}.1", f"user{n}", lambda: defer.succeed("ok"))
        self.assertEqual(throttle.remembered(), 150)


class Guesser:
    """One connection that sends another login attempt whenever the last one is answered."""

    def __init__(self, protocol, peer: str, user: str, password: str):
        self.protocol, self.user, self.password = protocol, user, password
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", peer, 40000))
        protocol.makeConnection(self.transport)
        self.pending = False
        self.answers: list[bool] = []  # True: logged in
        self.start()
        self.transport.clear()

    FAILED: bytes  # in the failure reply
    SUCCEEDED: bytes  # in the success reply

    def start(self) -> None:
        """Whatever the protocol needs before the first attempt."""

    def request(self) -> bytes:
        raise NotImplementedError

    def answer(self, output: bytes) -> bool | None:
        """True: logged in; False: failed; None: no answer yet."""
        if self.FAILED in output:
            return False
        return True if self.SUCCEEDED in output else None

    def poll(self) -> None:
        if self.pending:
            answer = self.answer(self.transport.value())
            if answer is None:
                return
            self.transport.clear()
            self.answers.append(answer)
            self.pending = False
        if not (self.answers and self.answers[-1]):
            self.pending = True
            self.protocol.dataReceived(self.request())


class IMAPGuesser(Guesser):
    FAILED, SUCCEEDED = b"t NO [AUTHENTICATIONFAILED]", b"t OK"

    def request(self) -> bytes:
        return f"t LOGIN {self.user} {self.password}\r\n".encode()


class POP3Guesser(Guesser):
    FAILED, SUCCEEDED = b"-ERR [AUTH] Authentication failed", b" messages ("

    def request(self) -> bytes:
        return f"USER {self.user}\r\nPASS {self.password}\r\n".encode()


class SubmissionGuesser(Guesser):
    FAILED, SUCCEEDED = b"535 5.7.8", b"235 "

    def start(self) -> None:
        self.protocol.dataReceived(b"EHLO client.example\r\n")

    def request(self) -> bytes:
        return b"AUTH PLAIN " + plain(self.user, self.password) + b"\r\n"


def rotating(n: int) -> str:
    return f"127.{n // 65536 % 256}.{n // 256 % 256}.{n % 256 + 1}"


class ParallelConnectionTests(unittest.TestCase):
    """A hundred connections guessing at once, as the issue measured against the real server."""

    def setUp(self) -> None:
        self.logins = CountedLogins(self)

    def imap(self, peer: str, user: str, password: str = "wrong") -> IMAPGuesser:
        return IMAPGuesser(IMAPServer(self.logins.context, "imap", reactor=self.logins.clock), peer, user, password)

    def run_for(self, guessers: list[Guesser], seconds: float, step: float = 0.5) -> None:
        for _ in range(int(seconds / step)):
            for guesser in guessers:
                guesser.poll()
            self.logins.clock.advance(step)
        for guesser in guessers:
            guesser.poll()

    def test_hundred_connections_from_rotating_addresses_against_one_account(self) -> None:
        guessers = [self.imap(rotating(n), "alice") for n in range(100)]
        self.run_for(guessers, 60)
        # Verifications start 1, 2, 3 ... seconds after each failure: 11 in the
        # first minute (before: one a second per connection, about 1,000).
        self.assertLessEqual(len(self.logins.verified), 12)
        first_minute = len(self.logins.verified)
        answered_first = sum(len(guesser.answers) for guesser in guessers)
        self.run_for(guessers, 300)
        # Then one per login_delay_max (15 s), however many connections.
        self.assertLessEqual(len(self.logins.verified) - first_minute, 300 / 15 + 1)
        answered = sum(len(guesser.answers) for guesser in guessers) - answered_first
        # The others are refused without a check, each answered after 15 s, as a failure.
        self.assertGreater(answered, 1000)
        self.assertLessEqual(answered, 100 * 300 / 15 + 100)
        self.assertFalse(any(answer for guesser in guessers for answer in guesser.answers))
        # The attack stops; once the attempts queued ahead have had their turn,
        # the owner's right password, from a new address, waits for the last
        # failure's delay and gets in.
        self.logins.clock.pump([1] * 15 * (1 + self.logins.context.portal.throttle.queue_limit))
        self.assertEqual(self.logins.context.portal.throttle.waiting(), 0)
        last_failure = self.logins.verified[-1][0]
        self.logins.clock.advance(last_failure + 14 - self.logins.clock.seconds())
        owner = self.imap("127.200.0.1", "alice", "secret")
        owner.poll()
        self.logins.clock.advance(0.99)
        owner.poll()
        self.assertEqual(owner.answers, [])
        self.logins.clock.advance(0.01)
        owner.poll()
        self.assertEqual(owner.answers, [True])
        self.assertEqual(self.logins.verified[-1], (last_failure + 15, "secret"))

    def test_hundred_connections_from_one_address_against_many_accounts(self) -> None:
        guessers = [self.imap("127.0.0.1", f"user{n}") for n in range(100)]
        self.run_for(guessers, 60)
        # Delays of 1, 2, 3 ... seconds after each failure, as for one account (before: about 400).
        self.assertLessEqual(len(self.logins.verified), 12)

    def test_imap_pop3_and_submission_share_one_throttle(self) -> None:
        pop3 = POP3Factory(self.logins.context, "pop3")
        submission = submission_factory(self.logins.context, self.logins.clock)
        guessers = []
        for n in range(30):
            peer = rotating(n)
            if n % 3 == 0:
                guessers.append(self.imap(peer, "alice"))
            elif n % 3 == 1:
                guessers.append(POP3Guesser(pop3.buildProtocol(None), peer, "ALICE", "wrong"))
            else:
                guessers.append(SubmissionGuesser(submission.buildProtocol(None), peer, "alice@example.org", "wrong"))
        self.run_for(guessers, 30)
        self.assertLessEqual(len(self.logins.verified), 8)  # at about 0, 1, 3, 6, 10, 15, 21 and 28 s
        for kind in (IMAPGuesser, POP3Guesser, SubmissionGuesser):  # each answered its failures as before
            self.assertTrue([guesser for guesser in guessers if isinstance(guesser, kind) and guesser.answers])


class ConfigTests(unittest.TestCase):
    def test_login_delay_max_caps_the_wait(self) -> None:
        logins = CountedLogins(self, login_delay_max="2s")
        for n in range(8):
            logins.guess("alice", "wrong", f"192.0.2.{n}")
        logins.clock.pump([0.5] * 26)
        self.assertEqual(logins.times(), [0.0, 1.0, 3.0, 5.0, 7.0, 9.0, 11.0, 13.0])
