"""The user database, password hashes, the cred checker and the realm."""

from __future__ import annotations

import threading
from collections.abc import Callable

from twisted.cred import credentials, error
from twisted.trial import unittest

from cyrusmail.account import IAccount
from cyrusmail.auth.checkers import PasswordChecker
from cyrusmail.auth.passwords import hash_password, verify_password
from cyrusmail.auth.userdb import UserDatabase
from cyrusmail.store.errors import InvalidUserName, UnknownUser, UserExists
from tests.helpers import add_user, another_store, make_context


class PasswordTests(unittest.TestCase):
    def test_hash_is_salted_scrypt_and_verifies(self):
        first, second = hash_password("hunter2"), hash_password("hunter2")
        self.assertTrue(first.startswith("$scrypt$ln=14,r=8,p=1$"))
        self.assertNotEqual(first, second)
        self.assertNotIn("hunter2", first)
        self.assertTrue(verify_password("hunter2", first))
        self.assertFalse(verify_password("hunter3", first))

    def test_malformed_hash_never_verifies(self):
        for stored in ("", "plain", "$md5$x$y$z", "$scrypt$ln=x$a$b"):
            self.assertFalse(verify_password("x", stored))


class UserDatabaseTests(unittest.TestCase):
    def setUp(self):
        self.users = UserDatabase(self.mktemp())
        self.addCleanup(self.users.close)

    def test_names_are_case_insensitive(self):
        self.assertEqual(self.users.add("Alice@Example.ORG", "pw"), "alice@example.org")
        self.assertTrue(self.users.exists("ALICE@example.org"))
        self.assertRaises(UserExists, self.users.add, "alice@EXAMPLE.org", "pw")

    def test_password_is_stored_only_as_a_hash(self):
        self.users.add("bob", "s3cret-words")
        with open(self.users.path, "rb") as db:
            self.assertNotIn(b"s3cret-words", db.read())
        self.assertTrue(self.users.check_password("bob", "s3cret-words"))
        self.assertFalse(self.users.check_password("bob", "wrong"))
        self.assertFalse(self.users.check_password("nobody", "s3cret-words"))

    def test_change_and_delete(self):
        self.users.add("carol", "one")
        self.users.set_password("carol", "two")
        self.assertTrue(self.users.check_password("carol", "two"))
        self.users.delete("Carol")
        self.assertFalse(self.users.exists("carol"))
        self.assertRaises(UnknownUser, self.users.delete, "carol")
        self.assertRaises(UnknownUser, self.users.set_password, "carol", "x")

    def test_bad_names_refused(self):
        for name in ("", "../etc", "a/b", ".x", "a@", "@b", "a b", "a\x00b", "x" * 300):
            self.assertRaises(InvalidUserName, self.users.add, name, "pw")

    def test_resolve_address_in_local_domain(self):
        self.users.add("dave", "pw")
        self.users.add("erin@example.net", "pw")
        self.assertEqual(self.users.resolve("Dave@Example.org", ["example.org"]), "dave")
        self.assertIsNone(self.users.resolve("dave@elsewhere.com", ["example.org"]))
        self.assertEqual(self.users.resolve("erin@example.net", ["example.org"]), "erin@example.net")
        self.assertIsNone(self.users.resolve("../x", ["example.org"]))


class CheckerTests(unittest.TestCase):
    def setUp(self):
        self.users = UserDatabase(self.mktemp())
        self.addCleanup(self.users.close)
        self.users.add("alice", "right")
        self.checker = PasswordChecker(self.users, ["example.org"], hash_in_thread=False)

    def test_right_password_gives_the_canonical_name(self):
        d = self.checker.requestAvatarId(credentials.UsernamePassword(b"ALICE@example.org", b"right"))
        d.addCallback(self.assertEqual, "alice")
        return d

    def test_wrong_password_and_unknown_user_fail_alike(self):
        for creds in (credentials.UsernamePassword(b"alice", b"wrong"),
                      credentials.UsernamePassword(b"mallory", b"right")):
            self.failureResultOf(self.checker.requestAvatarId(creds), error.UnauthorizedLogin)


class RealmTests(unittest.TestCase):
    def test_login_gives_an_account_with_a_provisioned_tree(self):
        context = make_context(self.mktemp(), server={"admins": "boss", "domains": "example.org"})
        self.addCleanup(context.store.close)
        add_user(context, "boss", "pw")
        d = context.portal.login(credentials.UsernamePassword(b"boss", b"pw"), None, IAccount)

        def check(result):
            interface, account, _logout = result
            self.assertIs(interface, IAccount)
            self.assertTrue(account.is_admin)
            self.assertEqual(account.addresses, frozenset({"boss@example.org"}))
            names = [listing.name for listing in account.mailboxes.list("*")]
            self.assertEqual(names, ["INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash"])

        return d.addCallback(check)


class ProvisionAtLoginTests(unittest.TestCase):
    """A login makes a user's missing folders, and takes the store's user lock only when it must."""

    def setUp(self):
        self.context = make_context(self.mktemp(), server={"domains": "example.org"})
        self.addCleanup(self.context.store.close)
        self.addCleanup(self.context.realm.close)
        add_user(self.context, "alice", "pw")

    def hold_user_lock(self) -> Callable[[], None]:
        """Take the user lock as ``cyrusmail-admin user delete`` would (its own store: another open
        file, or another database connection); the release."""
        other = another_store(self.context.store)
        self.addCleanup(other.close)
        held = other.user_lock()
        held.__enter__()
        released = []

        def release():
            if not released:
                released.append(True)
                held.__exit__(None, None, None)

        self.addCleanup(release)
        return release

    def account_in_thread(self, user: str) -> threading.Thread:
        thread = threading.Thread(target=self.context.realm.account, args=(user, True), daemon=True)
        thread.start()
        return thread

    def test_a_whole_tree_needs_no_lock(self):
        release = self.hold_user_lock()
        self.addCleanup(release)
        login = self.account_in_thread("alice")
        login.join(30)  # a hang check: it returns at once
        self.assertFalse(login.is_alive())

    def test_a_missing_folder_is_made_again_under_the_lock(self):
        self.context.store.mailboxes("alice").delete("Trash")
        release = self.hold_user_lock()
        login = self.account_in_thread("alice")
        login.join(0.2)
        self.assertTrue(login.is_alive())  # waits for the lock
        release()
        login.join(30)
        self.assertFalse(login.is_alive())
        self.assertTrue(self.context.store.mailboxes("alice").exists("Trash"))
