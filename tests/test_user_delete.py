"""``cyrusmail-admin user delete`` leaves nothing that a new account of the same name would inherit."""

from __future__ import annotations

from twisted.cred.error import UnauthorizedLogin
from twisted.trial import unittest

from cyrusmail.account import IAccount
from cyrusmail.delivery.local import LocalDelivery, LocalTarget
from cyrusmail.smtp import codes
from cyrusmail.store.errors import MailboxNotFound, NoSuchQuotaRoot
from cyrusmail.store.records import Flag, FlagChange
from tests import test_admin
from tests.imap_support import session_context

MESSAGE = b"From: carol@example.org\r\nSubject: news\r\n\r\nHello.\r\n"


class UserDeleteTests(test_admin.AdminCommands, unittest.TestCase):
    def give_alice_everything(self) -> None:
        for name in ("alice", "bob"):
            self.ok("user", "add", name, "--password", "pw")
        self.ok("mailbox", "create", "bob/Project")
        self.ok("mailbox", "create", "bob/Team")
        self.ok("mailbox", "create", "Shared Folders/news")
        self.ok("mailbox", "create", "Shared Folders/board")
        self.ok("acl", "set", "bob/Project", "alice", "lrswi")
        self.ok("acl", "set", "bob/Project", "--", "-alice", "w")
        self.ok("acl", "set", "Shared Folders/board", "alice", "lrp")
        self.ok("acl", "set", "Shared Folders/news", "anyone", "lrs")
        self.ok("group", "add", "staff", "alice", "bob")
        self.ok("acl", "set", "bob/Team", "group:staff", "lr")
        self.ok("quota", "set", "user/alice", "STORAGE=100", "MESSAGE=5")
        realm = self.realm()
        realm.store.shared_mailboxes().open("news").append(MESSAGE)
        alice = realm.account("alice")
        alice.mailboxes.create("Private")
        alice.mailboxes.open("INBOX").append(MESSAGE)
        news = alice.mailboxes.open("Shared Folders/news")
        news.set_flags([1], FlagChange.ADD, Flag.SEEN)
        alice.mailboxes.subscribe("Other Users/bob/Project")
        alice.mailboxes.subscribe("Shared Folders/news")
        self.assertIn("Other Users/bob/Team", [listing.name for listing in alice.mailboxes.list("*")])
        realm.store.close()

    def test_a_new_alice_inherits_nothing(self):
        self.give_alice_everything()
        self.ok("user", "delete", "alice", "--yes")
        self.ok("user", "add", "alice", "--password", "new")
        realm = self.realm()
        alice = realm.account("alice")
        fresh = ["Archive", "Drafts", "INBOX", "Junk", "Sent", "Trash"]  # what user add makes
        self.assertEqual(sorted(listing.name for listing in alice.mailboxes.list("*")),
                         sorted([*fresh, "Shared Folders", "Shared Folders/news"]))  # news: anyone may see it
        self.assertEqual(alice.mailboxes.subscriptions(), fresh)
        self.assertEqual(alice.mailboxes.status("INBOX").messages, 0)
        for name in ("Other Users/bob/Project", "Other Users/bob/Team", "Shared Folders/board"):
            with self.assertRaises(MailboxNotFound, msg=name):
                alice.rights(name)
        self.assertEqual(realm.access.registry.groups_of("alice"), frozenset())
        self.assertEqual(self.ok("group", "members", "staff"), "bob\n")
        self.assertNotIn("alice", self.ok("acl", "list", "bob/Project"))
        self.assertNotIn("alice", self.ok("acl", "list", "Shared Folders/board"))
        self.assertEqual(alice.mailboxes.status("Shared Folders/news").unseen, 1)  # her \Seen went too
        with self.assertRaises(NoSuchQuotaRoot):
            alice.quota("user/alice")
        self.assertEqual(alice.quota_roots("INBOX"), [])
        self.assertEqual(realm.access.owners_visible_to("alice"), [])
        self.assertEqual(realm.account("bob").rights("Project"), "lrswipkxteacd")  # bob keeps his

    def test_delete_while_a_server_holds_alices_index_open(self):
        self.give_alice_everything()
        server = self.realm()  # the running server, another process in real life
        self.assertEqual(server.account("alice").mailboxes.status("INBOX").messages, 1)
        self.ok("user", "delete", "alice", "--yes")
        bob = server.account("bob")
        self.assertFalse(bob.mailboxes.exists("Other Users/alice/INBOX"))
        self.assertEqual(server.store.mailboxes("alice").list("*"), [])
        self.assertFalse((self.data / "users" / "alice").exists())  # not made again by looking
        self.ok("user", "add", "alice", "--password", "new")
        self.assertEqual(server.account("alice").mailboxes.status("INBOX").messages, 0)


class DeletedWhileLoggingInTests(unittest.TestCase):
    """A login or delivery that checked the user just before ``user delete`` makes no tree."""

    def setUp(self):
        self.context = session_context(self)
        self.context.users.delete("bob")  # as user delete does, after the password was checked

    def test_login_is_refused_and_makes_nothing(self):
        self.context.store.remove_user("bob")
        with self.assertRaises(UnauthorizedLogin):
            self.context.realm.requestAvatar("bob", None, IAccount)
        self.assert_no_tree("bob")

    def test_delivery_answers_no_such_user_and_makes_nothing(self):
        self.context.store.remove_user("bob")
        staged = self.context.store.stage()
        staged.write(MESSAGE)
        staged.finish()
        self.addCleanup(staged.discard)
        self.assertEqual(LocalDelivery(self.context).deliver(staged, LocalTarget("bob")), codes.NO_SUCH_USER)
        self.assert_no_tree("bob")

    def assert_no_tree(self, user):
        store = self.context.store
        self.assertFalse(store.has_user(user))
        if hasattr(store, "users_dir"):  # the embedded store: not even an empty folder
            self.assertFalse((store.users_dir / user).exists())
        else:  # the PostgreSQL store: no mailbox row
            self.assertEqual(store.db.execute("SELECT count(*) FROM mailboxes WHERE owner = %s", (user,)).fetchone(),
                             (0,))
