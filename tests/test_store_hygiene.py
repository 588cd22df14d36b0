"""Store hygiene: naming users who do not exist makes nothing, and open indexes stay bounded.

Every number here is counted, never timed: folders under ``users/``, the
descriptors in ``/proc/self/fd``, the indexes the store holds open.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, TestCase
from zope.interface.verify import verifyObject

from cyrusmail.store.errors import UnknownUser
from cyrusmail.store.interfaces import IMailboxList
from cyrusmail.store.maildir import MaildirStore
from tests.imap_support import Client, deliver, session_context

GHOSTS = 300


def open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except FileNotFoundError:
        raise SkipTest("needs /proc/self/fd to count descriptors") from None


def tree_size(folder: Path) -> int:
    """Bytes of every file under ``folder``."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


class GhostUserTests(TestCase):
    """``Other Users/NAME/...`` of a NAME with no account answers as a user who shares nothing."""

    def setUp(self):
        self.context = session_context(self)
        self.users_dir = self.context.store.users_dir
        self.alice = Client(self.context, Clock())
        self.alice.login("alice")
        self.addCleanup(self.alice.server.connectionLost, None)

    def test_status_select_list_create_of_300_ghosts_make_no_folder_and_no_descriptor(self):
        before_entries = sorted(os.listdir(self.users_dir))
        before_fds = open_descriptors()
        before_bytes = tree_size(self.context.store.root)
        commands = ('STATUS "Other Users/ghost{0}/x" (MESSAGES)', 'SELECT "Other Users/ghost{0}/x"',
                    'LIST "" "Other Users/ghost{0}/*"', 'CREATE "Other Users/ghost{0}/x"',
                    'EXAMINE "Other Users/ghost{0}/INBOX"', 'MYRIGHTS "Other Users/ghost{0}/INBOX"',
                    'GETACL "Other Users/ghost{0}/INBOX"', 'APPEND "Other Users/ghost{0}/INBOX" {{1+}}\r\nx')
        for number in range(GHOSTS):
            for command in commands:
                answer = self.alice.command("g " + command.format(number))
                self.assertTrue(answer[-1].startswith("g NO") or answer[-1] == "g OK LIST completed", answer)
        self.assertEqual(sorted(os.listdir(self.users_dir)), before_entries)
        self.assertEqual(tree_size(self.context.store.root), before_bytes)
        self.assertLessEqual(open_descriptors(), before_fds + 2)  # slack for the test runner's own files


class IndexCacheTests(TestCase):
    """Indexes of users no session uses are held in a bounded cache, closed when dropped from it."""

    CACHE = 8
    USERS = 60

    def setUp(self):
        self.store = MaildirStore(Path(self.mktemp()), analyser=None, index_cache=self.CACHE)
        self.addCleanup(self.store.close)
        for number in range(self.USERS):
            self.store.provision(f"user{number}", {})
        self.store.close()

    def test_opening_many_trees_keeps_descriptors_bounded(self):
        before = open_descriptors()
        for _ in range(3):
            for number in range(self.USERS):
                self.assertEqual(self.store.mailboxes(f"user{number}").status("INBOX").messages, 0)
        self.assertEqual(self.store.open_indexes(), self.CACHE)
        # each index is the database, its WAL and its shared memory: 3 descriptors
        self.assertLessEqual(open_descriptors(), before + 3 * self.CACHE + 2)

    def test_an_index_in_use_stays_open_past_eviction_and_closes_after(self):
        inbox = self.store.mailboxes("user0").open("INBOX")
        for number in range(1, self.USERS):
            self.store.mailboxes(f"user{number}").exists("INBOX")
        self.assertEqual(self.store.open_indexes(), self.CACHE + 1)  # the cache, and user0's in use
        inbox.append(b"Subject: still open\r\n\r\nyes\r\n")
        self.assertEqual(self.store.mailboxes("user0").status("INBOX").messages, 1)
        self.assertIs(self.store.index("user0"), inbox.index)  # one connection per index in a process
        for number in range(1, self.USERS):
            self.store.mailboxes(f"user{number}").exists("INBOX")
        del inbox
        self.assertEqual(self.store.open_indexes(), self.CACHE)

    def test_a_user_removed_by_another_process_is_not_made_again(self):
        self.store.mailboxes("user1").open("INBOX").append(b"Subject: old\r\n\r\nold\r\n")
        admin = MaildirStore(self.store.root, analyser=None)
        admin.remove_user("user1")
        admin.close()
        self.assertFalse(self.store.has_user("user1"))
        self.assertFalse(self.store.mailboxes("user1").exists("INBOX"))
        with self.assertRaises(UnknownUser):
            self.store.index("user1")
        self.assertFalse((self.store.users_dir / "user1").exists())
        self.assertTrue(verifyObject(IMailboxList, self.store.mailboxes("user1")))
        self.store.provision("user1", {})  # a new account of that name starts empty
        self.assertEqual(self.store.mailboxes("user1").status("INBOX").messages, 0)


class SelectedOtherUsersMailboxTests(TestCase):
    """A session on another user's mailbox keeps its index while the cache turns over."""

    def test_idle_on_a_shared_mailbox_survives_cache_churn(self):
        context = session_context(self)
        store = context.store
        store.index_cache = 4
        bob = context.realm.account("bob")
        bob.set_acl("INBOX", "alice", "lr")
        for number in range(20):
            store.provision(f"filler{number}", {})
        alice = Client(context, Clock())
        alice.login("alice")
        self.addCleanup(alice.server.connectionLost, None)
        self.assertEqual(alice.command('s SELECT "Other Users/bob/INBOX"')[-1][:4], "s OK")
        alice.send("i IDLE\r\n")
        self.assertEqual(alice.lines(), ["+ idling"])
        for number in range(20):
            store.mailboxes(f"filler{number}").status("INBOX")
        deliver(context, "bob", "INBOX")
        alice.clock.advance(10)
        self.assertIn("* 1 EXISTS", alice.lines())
