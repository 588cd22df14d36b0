"""The cache of verified passwords: a repeated login costs no scrypt, and nothing else changes.

Logins go through the real portal (throttle, checker, realm) on a Clock; the
checker's verification is wrapped to count its calls while still checking
the real scrypt hash, so that password changes made elsewhere are seen.
"""

from __future__ import annotations

import gc
import hashlib
import subprocess
import sys
from pathlib import Path

from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.task import Clock
from twisted.trial import unittest

from cyrusmail.account import IAccount
from cyrusmail.auth.cache import CredentialCache
from cyrusmail.auth.throttle import UsernamePasswordFrom
from cyrusmail.auth.userdb import UserDatabase, check_against
from cyrusmail.config import ConfigError
from cyrusmail.imap.server import IMAPServer
from cyrusmail.pop3.server import POP3Factory
from tests.helpers import add_user, another_store, make_config
from tests.test_login_throttle import (
    CountedLogins,
    IMAPGuesser,
    POP3Guesser,
    SubmissionGuesser,
)
from tests.test_smtp_session_support import submission_factory

ROOT = Path(__file__).resolve().parents[1]
CLIENT = "192.0.2.1"


class Logins(CountedLogins):
    """Logins through the real portal on a Clock; each scrypt verification is counted, and real."""

    def __init__(self, test: unittest.TestCase, **server: str):
        super().__init__(test, **server)
        self.test = test
        self.data = Path(self.context.config.data).resolve()
        self.context.users.set_password("bob", "hunter2")

    def verify(self, password: str, stored: str | None) -> bool:
        super().verify(password, stored)
        return check_against(password, stored)

    def passwords(self) -> list[str]:
        """The password of each scrypt verification so far."""
        return [password for _when, password in self.verified]

    def login(self, user: str, password: str, client: str = CLIENT):
        """The account name on success, else the UnauthorizedLogin failure; at once (the clock is not moved)."""
        attempt = self.context.portal.login(UsernamePasswordFrom(user.encode(), password.encode(), client),
                                            None, IAccount)
        result = self.test.successResultOf(attempt.addCallbacks(
            lambda avatar: avatar[1].user, lambda failure: failure.trap(UnauthorizedLogin)))
        return result

    def admin(self, *argv: str) -> None:
        """``cyrusmail-admin`` in a process of its own, over this data folder."""
        config = self.data.parent / "admin.conf"
        store = self.context.config["store"]
        config.write_text(f"[server]\ndata = {self.data}\nhostname = mail.example.org\ndomains = example.org\n"
                          f"[store]\nbackend = {store['backend']}\n" + (f"dsn = {store['dsn']}\n" if store["dsn"] else ""))
        result = subprocess.run([sys.executable, "-m", "cyrusmail.admin.main", "--config", str(config), *argv],
                                capture_output=True, text=True, cwd=ROOT, check=False)
        self.test.assertEqual((result.returncode, result.stderr), (0, ""))


class RepeatedLoginTests(unittest.TestCase):
    def setUp(self) -> None:
        self.logins = Logins(self)

    def test_a_second_login_with_the_same_password_costs_no_scrypt(self) -> None:
        self.assertEqual(self.logins.login("alice", "secret"), "alice")
        self.assertEqual(self.logins.login("alice", "secret"), "alice")
        self.assertEqual(self.logins.login("Alice@Example.org", "secret", "198.51.100.7"), "alice")
        self.assertEqual(self.logins.passwords(), ["secret"])

    def test_a_wrong_password_is_never_a_hit(self) -> None:
        self.logins.login("alice", "secret")
        for wrong in ("wrong", "secret ", "Secret", ""):
            self.logins.clock.advance(30)  # past the throttle's delay after the last failure
            self.assertNotEqual(self.logins.login("alice", wrong), "alice")
        self.assertEqual(self.logins.passwords(), ["secret", "wrong", "secret ", "Secret", ""])
        self.logins.clock.advance(30)
        self.assertEqual(self.logins.login("alice", "secret"), "alice")  # the right one still hits
        self.assertEqual(len(self.logins.passwords()), 5)

    def test_one_users_password_is_no_hit_for_another(self) -> None:
        self.logins.context.users.set_password("bob", "secret")
        for user in ("alice", "bob", "alice", "bob"):
            self.assertEqual(self.logins.login(user, "secret"), user)
        self.assertEqual(self.logins.passwords(), ["secret", "secret"])

    def test_a_failure_is_not_remembered(self) -> None:
        for password in ("wrong", "wrong", "secret", "secret"):
            self.logins.login("alice", password)
            self.logins.clock.advance(60)
        self.assertEqual(self.logins.passwords(), ["wrong", "wrong", "secret"])

    def test_imap_pop3_and_submission_share_the_cache(self) -> None:
        context, clock = self.logins.context, self.logins.clock
        clients = [
            IMAPGuesser(IMAPServer(context, "imap", reactor=clock), "127.0.0.2", "alice", "secret"),
            POP3Guesser(POP3Factory(context, "pop3").buildProtocol(None), "127.0.0.3", "ALICE", "secret"),
            SubmissionGuesser(submission_factory(context, clock).buildProtocol(None), "127.0.0.4",
                              "alice@example.org", "secret"),
        ]
        for client in clients:
            client.poll()
            clock.advance(0)
            client.poll()
            self.assertEqual(client.answers, [True])
        self.assertEqual(self.logins.passwords(), ["secret"])


class InvalidationTests(unittest.TestCase):
    """A password changed or an account deleted elsewhere can no longer hit, from the next login on."""

    def setUp(self) -> None:
        self.logins = Logins(self)
        for _ in range(2):
            self.assertEqual(self.logins.login("alice", "secret"), "alice")
        self.assertEqual(self.logins.passwords(), ["secret"])  # the second was a hit

    def other_users(self) -> UserDatabase:
        """The user database as another process opens it (its own connection, its own store)."""
        store = self.logins.context.store
        if not hasattr(store, "dsn"):
            other = UserDatabase(self.logins.data / "users.sqlite")
        else:
            from cyrusmail.store.postgresql.users import PostgresUserDatabase

            other_store = another_store(store)
            self.addCleanup(other_store.close)
            other = PostgresUserDatabase(other_store)
        self.addCleanup(other.close)
        return other

    def test_password_changed_by_the_admin_tool(self) -> None:
        self.logins.admin("user", "passwd", "alice", "--password", "changed")
        self.assertNotEqual(self.logins.login("alice", "secret"), "alice")
        self.logins.clock.advance(60)
        self.assertEqual(self.logins.login("alice", "changed"), "alice")
        self.assertEqual(self.logins.login("alice", "changed"), "alice")
        self.assertEqual(self.logins.passwords(), ["secret", "secret", "changed"])

    def test_the_same_password_set_again_is_checked_again(self) -> None:
        other = self.other_users()  # another connection, as another process has
        other.set_password("alice", "secret")
        self.assertEqual(self.logins.login("alice", "secret"), "alice")
        self.assertEqual(self.logins.passwords(), ["secret", "secret"])

    def test_user_deleted_by_the_admin_tool(self) -> None:
        self.logins.admin("user", "delete", "alice", "--yes")
        self.assertNotEqual(self.logins.login("alice", "secret"), "alice")
        self.assertEqual(self.logins.passwords(), ["secret", "secret"])  # against the stand-in hash, and failed

    def test_user_deleted_and_made_again_with_the_same_password(self) -> None:
        self.logins.admin("user", "delete", "alice", "--yes")
        self.logins.admin("user", "add", "alice", "--password", "secret")
        self.assertEqual(self.logins.login("alice", "secret"), "alice")
        self.assertEqual(self.logins.passwords(), ["secret", "secret"])


class LifetimeTests(unittest.TestCase):
    def test_an_entry_lasts_the_ttl_from_its_verification(self) -> None:
        logins = Logins(self, auth_cache_ttl="5m")
        logins.login("alice", "secret")
        logins.clock.advance(299.9)
        logins.login("alice", "secret")  # a hit does not make the entry younger
        self.assertEqual(logins.passwords(), ["secret"])
        logins.clock.advance(0.1)
        self.assertEqual(logins.login("alice", "secret"), "alice")
        logins.login("alice", "secret")
        self.assertEqual(logins.passwords(), ["secret", "secret"])

    def test_the_least_recently_used_goes_first_over_the_bound(self) -> None:
        logins = Logins(self, auth_cache_size="2")
        add_user(logins.context, "carol", "pw")
        logins.login("alice", "secret")
        logins.login("bob", "hunter2")
        logins.login("alice", "secret")  # alice used last: bob goes when carol comes
        logins.login("carol", "pw")
        cache = logins.context.portal.checkers[IUsernamePassword].cache
        self.assertEqual(len(cache), 2)
        for user, password in (("alice", "secret"), ("carol", "pw"), ("bob", "hunter2")):
            logins.login(user, password)
        self.assertEqual(logins.passwords(), ["secret", "hunter2", "pw", "hunter2"])

    def test_size_0_or_ttl_0_turn_it_off(self) -> None:
        for setting in ({"auth_cache_size": "0"}, {"auth_cache_ttl": "0"}):
            logins = Logins(self, **setting)
            logins.login("alice", "secret")
            logins.login("alice", "secret")
            self.assertEqual(logins.passwords(), ["secret", "secret"], setting)
            self.assertEqual(len(logins.context.portal.checkers[IUsernamePassword].cache), 0)

    def test_settings(self) -> None:
        server = make_config(self.mktemp(), server={"auth_cache_ttl": "1h", "auth_cache_size": "50000"})["server"]
        self.assertEqual((server["auth_cache_ttl"], server["auth_cache_size"]), (3600, 50_000))
        defaults = make_config(self.mktemp())["server"]
        self.assertEqual((defaults["auth_cache_ttl"], defaults["auth_cache_size"]), (300, 10_000))

    def test_bad_settings_are_refused(self) -> None:
        for key, value in (("auth_cache_ttl", "-1m"), ("auth_cache_ttl", "300"), ("auth_cache_size", "-5"),
                           ("auth_cache_size", "many")):
            with self.assertRaises(ConfigError) as raised:
                make_config(self.mktemp(), server={key: value})
            self.assertIn(key, str(raised.exception))


class ThrottleTests(unittest.TestCase):
    """A hit is answered only when the throttle lets the attempt start, as a scrypt check would be."""

    def test_a_hit_waits_for_the_accounts_delay_after_a_failure(self) -> None:
        logins = Logins(self)
        logins.login("alice", "secret", "192.0.2.1")
        logins.login("alice", "guess", "203.0.113.9")  # a failure: the account's next check waits 1 s
        attempt = logins.context.portal.login(UsernamePasswordFrom(b"alice", b"secret", "198.51.100.7"),
                                              None, IAccount)
        logins.clock.advance(0.99)
        self.assertNoResult(attempt)
        logins.clock.advance(0.01)
        self.assertEqual(self.successResultOf(attempt)[1].user, "alice")
        self.assertEqual(logins.passwords(), ["secret", "guess"])


class KeyTests(unittest.TestCase):
    """What the cache holds tells nothing about a password without this process's random key."""

    STORED = "$scrypt$ln=14,r=8,p=1$c2FsdA$aGFzaA"

    def test_two_caches_have_different_keys(self) -> None:
        first, second = CredentialCache(Clock(), 300, 10), CredentialCache(Clock(), 300, 10)
        self.assertNotEqual(first.digest("alice", "secret", self.STORED), second.digest("alice", "secret", self.STORED))
        self.assertEqual(first.digest("alice", "secret", self.STORED), first.digest("alice", "secret", self.STORED))

    def test_the_digest_is_no_unkeyed_hash_and_fields_cannot_run_together(self) -> None:
        cache = CredentialCache(Clock(), 300, 10)
        digest = cache.digest("alice", "secret", self.STORED)
        joined = f"alice{'secret'}{self.STORED}".encode()
        for unkeyed in (hashlib.sha256(joined).digest(), hashlib.blake2b(joined, digest_size=32).digest()):
            self.assertNotEqual(digest, unkeyed)
        self.assertNotEqual(cache.digest("alic", "esecret", self.STORED), digest)

    def test_neither_password_nor_stored_hash_is_kept(self) -> None:
        cache = CredentialCache(Clock(), 300, 10)
        password = "correct horse battery staple"
        cache.remember("alice", password, self.STORED)
        self.assertTrue(cache.hit("alice", password, self.STORED))
        del password
        seen, found, todo = set(), [], [cache]
        while todo:  # everything the cache refers to, however deep
            thing = todo.pop()
            if id(thing) in seen:
                continue
            seen.add(id(thing))
            if isinstance(thing, str | bytes):
                found.append(thing)
            elif not isinstance(thing, type):
                todo.extend(gc.get_referents(thing))
        texts = [text if isinstance(text, str) else text.decode("latin-1") for text in found]
        self.assertIn("alice", texts)
        self.assertFalse([text for text in texts if "horse" in text or "c2FsdA" in text])
        self.assertNotIn("horse", repr(cache))
