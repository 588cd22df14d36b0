"""``cyrusmail-admin`` acl, group, quota and shared-folder commands, end to end."""

from __future__ import annotations

from twisted.trial import unittest

from tests import test_admin


class AccessAdminTests(test_admin.AdminCommands, unittest.TestCase):
    def add_users(self, *names: str) -> None:
        for name in names:
            self.ok("user", "add", name, "--password", "pw")

    def test_shared_folders(self):
        self.assertIn("mailbox Shared Folders/news created", self.ok("mailbox", "create", "Shared Folders/news"))
        self.ok("mailbox", "create", "Shared Folders/news/local")
        self.assertIn("news/local\t0 messages", self.ok("mailbox", "list", "Shared Folders"))
        self.assertIn("already exists", self.refused("mailbox", "create", "Shared Folders/news"))
        self.assertIn("expected USER/MAILBOX", self.refused("mailbox", "create", "Shared Folders/"))
        self.ok("mailbox", "delete", "Shared Folders/news/local")
        self.assertNotIn("local", self.ok("mailbox", "list", "Shared Folders"))

    def test_acl_set_list_delete(self):
        self.add_users("alice", "bob")
        self.ok("mailbox", "create", "alice/Project")
        self.assertIn("bob now holds lr", self.ok("acl", "set", "alice/Project", "bob", "lr"))
        self.ok("acl", "set", "alice/Project", "bob", "+sd")
        self.ok("acl", "set", "alice/Project", "--", "-bob", "s")
        self.ok("acl", "set", "alice/Project", "bob", "--", "-x")
        self.assertEqual(self.ok("acl", "list", "alice/Project"),
                         "-bob\ts\nalice\tlrswipkxteacd\nbob\tlrsted\n")
        realm = self.realm()
        self.assertEqual(realm.account("bob").rights("Other Users/alice/Project"), "lrted")
        self.ok("acl", "delete", "alice/Project", "bob")
        self.assertNotIn("\nbob\t", self.ok("acl", "list", "alice/Project"))
        self.assertIn("'q' right is not defined", self.refused("acl", "set", "alice/Project", "bob", "lq"))
        self.assertIn("Invalid identifier", self.refused("acl", "set", "alice/Project", "a b", "l"))
        self.assertIn("does not exist", self.refused("acl", "list", "alice/Nope"))
        self.assertIn("no such user", self.refused("acl", "list", "carol/INBOX"))

    def test_groups(self):
        self.add_users("alice", "bob")
        self.assertIn("added bob, carol", self.ok("group", "add", "Team", "bob", "carol"))
        self.assertEqual(self.ok("group", "members", "team"), "bob\ncarol\n")
        self.assertEqual(self.ok("group", "list"), "team\n")
        self.ok("mailbox", "create", "alice/Project")
        self.ok("acl", "set", "alice/Project", "group:team", "lr")
        names = [listing.name for listing in self.realm().account("bob").mailboxes.list("*")]
        self.assertIn("Other Users/alice/Project", names)
        self.ok("group", "delete", "team", "carol")
        self.assertEqual(self.ok("group", "members", "team"), "bob\n")
        self.ok("group", "delete", "team")
        self.assertIn("no such group", self.refused("group", "members", "team"))
        self.assertIn("no such group", self.refused("group", "delete", "team"))
        self.assertIn("are users", self.refused("group", "add", "x", "anyone"))

    def test_quota(self):
        self.add_users("alice")
        self.assertIn("STORAGE=10", self.ok("quota", "set", "user/alice", "STORAGE=10", "message=5"))
        self.realm().delivery_target("alice").append(b"Subject: x\r\n\r\n" + b"x" * 3000)
        out = self.ok("quota", "get", "user/alice")
        self.assertIn("user/alice\tSTORAGE\t3 KiB of 10 KiB\t30%", out)
        self.assertIn("user/alice\tMESSAGE\t1 of 5\t20%", out)
        self.assertNotIn("drift", out)
        self.ok("mailbox", "create", "Shared Folders/news")
        self.ok("quota", "set", "shared/news", "MAILBOX=3")
        self.assertEqual(self.ok("quota", "list").count("\n"), 3)
        self.ok("quota", "set", "user/alice", "MESSAGE=none")
        self.assertNotIn("MESSAGE", self.ok("quota", "get", "user/alice"))
        self.assertIn("expected RESOURCE=LIMIT", self.refused("quota", "set", "user/alice", "FOO=1"))
        self.assertIn("whole number", self.refused("quota", "set", "user/alice", "STORAGE=-1"))
        self.assertIn("No quota root", self.refused("quota", "get", "user/nobody"))
        self.assertIn("No quota root", self.refused("quota", "set", "shared/none", "STORAGE=1"))
        self.assertIn("No quota root", self.refused("quota", "get", "bogus"))

    def test_quota_reports_drift(self):
        self.add_users("alice")
        self.ok("quota", "set", "user/alice", "MESSAGE=5")
        inbox = self.realm().delivery_target("alice")
        uid = inbox.append(b"Subject: x\r\n\r\nx\r\n")
        inbox.path(inbox.record(uid)).unlink()  # a file lost behind the index's back
        self.assertIn("drift: MESSAGE is 1 by the index but 0 by the message files", self.ok("quota", "get",
                                                                                           "user/alice"))
