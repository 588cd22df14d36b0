"""Shared folders (bulletin boards): made by admins, posted to, read, \\Seen per reader."""

from __future__ import annotations

from twisted.trial import unittest

from cyrusmail.acl.delivery import shared_folder_of
from cyrusmail.store.errors import MailboxNotFound, PermissionDenied
from cyrusmail.store.records import Flag, FlagChange
from tests.acl_support import MESSAGE, Denied, TwoUsers

NEWS = "Shared Folders/news"


class SharedFolderTests(TwoUsers, unittest.TestCase):
    def setUp(self):
        super().setUp()
        self.root.create(NEWS)
        self.root.setacl(NEWS, "anyone", "lrsp")

    def post(self, folder: str = "news") -> int:
        return self.realm.delivery_target(self.realm.SHARED, folder).append(MESSAGE)

    def test_only_admins_create_shared_folders(self):
        self.assertRaises(PermissionDenied, self.bob_account.mailboxes.create, "Shared Folders/mine")
        self.root.create("Shared Folders/events")

    def test_listed_in_the_shared_namespace(self):
        self.assertEqual(self.bob.list("Shared Folders/*"), [NEWS])
        self.assertIn("Shared Folders", self.bob.list("%"))
        self.assertEqual(self.bob_account.namespaces()[2], [("Shared Folders/", "/")])

    def test_hidden_without_l(self):
        self.root.create("Shared Folders/board")
        self.assertNotIn("Shared Folders/board", self.bob.list())
        self.assertRaises(MailboxNotFound, self.bob_account.mailboxes.open, "Shared Folders/board")

    def test_post_and_read(self):
        uid = self.post()
        self.assertEqual(self.bob.select(NEWS), 1)
        self.assertEqual(self.alice.select(NEWS), 1)
        self.assertEqual(self.bob_account.mailboxes.open(NEWS).read(uid), MESSAGE)

    def test_posting_needs_p(self):
        self.root.setacl(NEWS, "anyone", "lrs")
        self.assertRaises(PermissionDenied, self.post)
        self.assertRaises(MailboxNotFound, self.post, "nope")

    def test_posting_address(self):
        self.assertEqual(shared_folder_of("shared+news"), "news")
        self.assertEqual(shared_folder_of("Shared+news/daily"), "news/daily")
        for local in ("shared", "shared+", "alice+news", "shared+../x"):
            self.assertIsNone(shared_folder_of(local))

    def test_append_needs_i(self):
        self.assertRaises(Denied, self.bob.append, NEWS)
        self.root.setacl(NEWS, "anyone", "+i")
        self.bob.append(NEWS)

    def test_seen_is_per_reader(self):
        uid = self.post()
        bob_view = self.bob_account.mailboxes.open(NEWS)
        changed, refused = bob_view.set_flags([uid], FlagChange.ADD, Flag.SEEN)
        self.assertEqual(([record.flags for record in changed], refused), ([Flag.SEEN], []))
        self.assertEqual(bob_view.record(uid).flags, Flag.SEEN)
        self.assertEqual(bob_view.status().unseen, 0)
        alice_view = self.alice_account.mailboxes.open(NEWS)
        self.assertEqual(alice_view.record(uid).flags, Flag(0))
        self.assertEqual(alice_view.status().unseen, 1)
        self.assertEqual([record.flags for record in alice_view.messages()], [Flag(0)])
        bob_view.set_flags([uid], FlagChange.REMOVE, Flag.SEEN)
        self.assertEqual(bob_view.status().unseen, 1)

    def test_seen_without_s_is_not_kept(self):
        self.root.setacl(NEWS, "anyone", "lrp")
        uid = self.post()
        view = self.bob_account.mailboxes.open(NEWS)
        self.assertRaises(PermissionDenied, view.set_flags, [uid], FlagChange.ADD, Flag.SEEN)

    def test_other_flags_are_shared(self):
        self.root.setacl(NEWS, "anyone", "lrswp")
        uid = self.post()
        self.bob.store(NEWS, uid, Flag.FLAGGED | Flag.SEEN)
        self.assertEqual(self.alice.fetch_flags(NEWS, uid)[0], Flag.FLAGGED)
        self.assertEqual(self.bob.fetch_flags(NEWS, uid)[0], Flag.FLAGGED | Flag.SEEN)

    def test_replace_keeps_seen_per_reader(self):
        self.root.setacl(NEWS, "anyone", "lrswp")
        uid = self.post()
        self.bob.store(NEWS, uid, Flag.SEEN | Flag.ANSWERED, change=FlagChange.REPLACE)
        self.assertEqual(self.bob.fetch_flags(NEWS, uid)[0], Flag.SEEN | Flag.ANSWERED)
        self.assertEqual(self.alice.fetch_flags(NEWS, uid)[0], Flag.ANSWERED)

    def test_copy_out_keeps_the_readers_seen(self):
        uid = self.post()
        self.bob.store(NEWS, uid, Flag.SEEN)
        ((_, new),) = self.bob.copy(NEWS, [uid], "INBOX")
        self.assertEqual(self.bob.fetch_flags("INBOX", new)[0], Flag.SEEN)
        ((_, new),) = self.alice.copy(NEWS, [uid], "INBOX")
        self.assertEqual(self.alice.fetch_flags("INBOX", new)[0], Flag(0))

    def test_copy_in_and_append_seen_stay_with_the_reader(self):
        self.root.setacl(NEWS, "anyone", "lrsip")
        source = self.bob.append("INBOX", Flag.SEEN)
        ((_, new),) = self.bob.copy("INBOX", [source], NEWS)
        appended = self.bob.append(NEWS, Flag.SEEN)
        for uid in (new, appended):
            self.assertEqual(self.bob.fetch_flags(NEWS, uid)[0], Flag.SEEN)
            self.assertEqual(self.alice.fetch_flags(NEWS, uid)[0], Flag(0))

    def test_changes_since_show_the_readers_seen(self):
        uid = self.post()
        view = self.bob_account.mailboxes.open(NEWS)
        view.set_flags([uid], FlagChange.ADD, Flag.SEEN)
        self.assertEqual([record.flags for record in view.changes_since(0).changed], [Flag.SEEN])

    def test_subfolders_and_subscriptions(self):
        self.root.create(NEWS + "/local")
        self.root.setacl(NEWS + "/local", "anyone", "lr")
        self.bob_account.mailboxes.subscribe(NEWS + "/local")
        listing = {entry.name: entry for entry in self.bob_account.mailboxes.list("Shared Folders/*")}
        from cyrusmail.store.records import MailboxAttribute

        self.assertIn(MailboxAttribute.SUBSCRIBED, listing[NEWS + "/local"].attributes)
        self.assertIn(MailboxAttribute.HAS_CHILDREN, listing[NEWS].attributes)
        self.assertIn(NEWS + "/local", self.bob_account.mailboxes.subscriptions())
        self.assertTrue(self.bob_account.mailboxes.exists(NEWS + "/local"))
        self.assertTrue(self.bob_account.mailboxes.exists("Shared Folders"))

    def test_a_readers_seen_gives_the_message_a_new_modseq(self):
        """CONDSTORE/QRESYNC: the reader's other sessions find the change by modseq;
        other readers see the modseq move, their own \\Seen unchanged."""
        uid = self.post()
        view = self.bob_account.mailboxes.open(NEWS)
        before = view.status().highest_modseq
        (changed,), _ = view.set_flags([uid], FlagChange.ADD, Flag.SEEN)
        self.assertGreater(changed.modseq, before)
        self.assertEqual(view.status().highest_modseq, changed.modseq)
        self.assertEqual([(record.uid, record.flags, record.modseq) for record in view.changes_since(before).changed],
                         [(uid, Flag.SEEN, changed.modseq)])
        alice_view = self.alice_account.mailboxes.open(NEWS)
        self.assertEqual([(record.flags, record.modseq) for record in alice_view.changes_since(before).changed],
                         [(Flag(0), changed.modseq)])
