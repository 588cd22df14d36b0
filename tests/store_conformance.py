"""The store conformance suite: what every IStore backend promises.

``StoreConformanceMixin`` holds the tests, written only against
``IStore``, ``IMailboxList``, ``IMailbox`` and ``IStagedMessage``. A backend
binds it in a ``twisted.trial.unittest.TestCase`` and supplies
``make_store(path)`` (and, for the cross-process test,
``subprocess_store_code``). ``store_state_machine`` builds a hypothesis
state machine that runs random operations against a simple model.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)
from zope.interface.verify import verifyObject

import cyrusmail
from cyrusmail.store.errors import (
    HasChildren,
    InvalidName,
    MailboxExists,
    MailboxNotFound,
    NoSuchMessage,
    NotSelectable,
    Refused,
    StoreError,
)
from cyrusmail.store.interfaces import IMailbox, IMailboxList, IStagedMessage, IStore
from cyrusmail.store.records import (
    Flag,
    FlagChange,
    MailboxAttribute,
)

USER = "alice@example.org"
SPECIAL_USES = {"Sent": "sent", "Trash": "trash"}

HEADER = b"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: hello\r\n\r\n"
BODY = b"First line of the body.\r\nSecond line.\r\n"
MESSAGE = HEADER + BODY

NOSELECT = MailboxAttribute.NOSELECT
HAS_CHILDREN = MailboxAttribute.HAS_CHILDREN
HAS_NO_CHILDREN = MailboxAttribute.HAS_NO_CHILDREN
SUBSCRIBED = MailboxAttribute.SUBSCRIBED

#: Names a client may try in order to escape the data folder or confuse it.
HOSTILE_NAMES = [
    "../x", "/etc", "a/../../b", "a/./b", ".", "..", "../../../../tmp/owned",
    "nul\x00byte", "bell\x07", "line\nfeed", "tab\there", "del\x7f", "esc\x1b[2J",
    "x" * 1000, "\u00e9" * 500, "a//b", "a/", "~root", "C:\\Windows", "..\\..\\x",
    "%2e%2e/x", "\u202eevil",
]
#: User names that must never become a path.
HOSTILE_USERS = ["../etc", "a/b", "", ".x", "..", "/etc", "a\x00b", "x" * 1000, "a/../../b"]


def message(n: int) -> bytes:
    """A distinct small message, ``n`` in its subject and body."""
    return HEADER.replace(b"hello", b"hello %d" % n) + b"Body %d\r\n" % n


def files_under(root: Path) -> dict[Path, tuple[int, int, bytes]]:
    """Every regular file below ``root``: (inode, mtime_ns, content)."""
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            try:
                stat = path.lstat()
                content = path.read_bytes()
            except OSError:  # a file that vanished while we walked (a journal)
                continue
            found[path] = (stat.st_ino, stat.st_mtime_ns, content)
    return found


class StoreConformanceMixin:
    """Tests that hold for every store backend.

    Mix into a ``twisted.trial.unittest.TestCase`` and define ``make_store``.
    """

    #: Set by a binding whose store fills the MIME cache slot at delivery.
    analyser = None
    #: How many random runs the state machine test makes.
    state_machine_examples = 30

    def make_store(self, path: str):
        """A new IStore over the data folder ``path`` (created if needed)."""
        raise NotImplementedError

    def subprocess_store_code(self) -> str:
        """Python source that binds ``store`` to a store over the folder ``DATA``."""
        raise NotImplementedError

    def stored_bodies(self) -> dict:
        """Where the backend keeps message bytes: place -> (identity, version, content);
        by default every file below the data folder (:func:`files_under`)."""
        return files_under(self.data)

    # -- fixtures ------------------------------------------------------------

    def setUp(self):
        super().setUp()
        self.sandbox = Path(self.mktemp()).resolve()
        self.sandbox.mkdir(parents=True)
        self.data = self.sandbox / "data"
        self.store = self.open_store()
        self.store.provision(USER, SPECIAL_USES)
        self.tree = self.store.mailboxes(USER)
        self.inbox = self.tree.open("INBOX")

    def open_store(self):
        """A store instance over the shared data folder, closed after the test."""
        store = self.make_store(str(self.data))
        self.addCleanup(store.close)
        return store

    def watcher(self, mailbox) -> list:
        """A list that grows by one each time ``mailbox`` reports a change."""
        calls: list = []

        def listener():
            calls.append(1)

        mailbox.watch(listener)
        self.addCleanup(mailbox.unwatch, listener)
        return calls

    def assertOnlyInsideData(self):
        """Nothing the store made lies outside the data folder."""
        for folder, dirs, files in os.walk(self.sandbox):
            for name in dirs + files:
                path = Path(folder) / name
                self.assertFalse(path.is_symlink(), f"{path} is a symbolic link")
                if path != self.data:
                    self.assertTrue(path.is_relative_to(self.data), f"{path} is outside the data folder")

    # -- the interfaces --------------------------------------------------------

    def test_summary_matches_the_records(self):
        from cyrusmail.store.records import Flag, FlagChange

        empty = self.inbox.summary()
        self.assertEqual((empty.uids, empty.modseqs, empty.keywords, empty.first_unseen_uid), ([], [], frozenset(), None))
        first = self.inbox.append(b"Subject: a\r\n\r\n", Flag.SEEN, ["$Work"])
        second = self.inbox.append(b"Subject: b\r\n\r\n", None, ["Later", "$work"])
        third = self.inbox.append(b"Subject: c\r\n\r\n")
        self.inbox.set_flags([second], FlagChange.ADD, Flag.SEEN)
        summary = self.inbox.summary()
        records = self.inbox.messages()
        self.assertEqual(summary.uids, [first, second, third])
        self.assertEqual(summary.modseqs, [record.modseq for record in records])
        self.assertEqual({k.lower() for k in summary.keywords}, {"$work", "later"})
        self.assertEqual(summary.first_unseen_uid, third)

    def test_store_provides_IStore(self):
        self.assertTrue(verifyObject(IStore, self.store))

    def test_mailbox_list_provides_IMailboxList(self):
        self.assertTrue(verifyObject(IMailboxList, self.tree))

    def test_mailbox_provides_IMailbox(self):
        self.assertTrue(verifyObject(IMailbox, self.inbox))

    def test_staged_message_provides_IStagedMessage(self):
        staged = self.store.stage()
        self.addCleanup(staged.discard)
        self.assertTrue(verifyObject(IStagedMessage, staged))

    # -- the mailbox list ------------------------------------------------------

    def test_provision_creates_subscribed_inbox_and_special_use_folders(self):
        self.assertEqual(self.tree.user, USER)
        for name in ["INBOX", "Sent", "Trash"]:
            self.assertTrue(self.tree.exists(name))
        self.assertEqual(self.tree.special_use("Sent"), "sent")
        self.assertEqual(self.tree.special_use("Trash"), "trash")
        self.assertIsNone(self.tree.special_use("INBOX"))
        self.assertEqual(set(self.tree.subscriptions()), {"INBOX", "Sent", "Trash"})

    def test_provision_again_changes_nothing(self):
        uid = self.inbox.append(MESSAGE)
        self.store.provision(USER, SPECIAL_USES)
        self.assertEqual([r.uid for r in self.tree.open("INBOX").messages()], [uid])

    def test_provisioned_says_whether_provision_would_make_anything(self):
        self.assertTrue(self.store.provisioned(USER, SPECIAL_USES))
        self.assertTrue(self.store.provisioned(USER, {}))
        self.assertFalse(self.store.provisioned(USER, {**SPECIAL_USES, "Archive": "archive"}))
        self.assertFalse(self.store.provisioned("nobody@example.org", {}))
        self.assertFalse(self.store.mailboxes("nobody@example.org").exists("INBOX"))  # looking made nothing
        self.tree.delete("Trash")
        self.assertFalse(self.store.provisioned(USER, SPECIAL_USES))
        self.store.provision(USER, SPECIAL_USES)
        self.assertTrue(self.store.provisioned(USER, SPECIAL_USES))
        self.store.remove_user(USER)
        self.assertFalse(self.store.provisioned(USER, {}))

    def test_hierarchy_separator_is_slash(self):
        self.assertEqual(self.tree.separator, "/")

    def test_create_makes_a_selectable_empty_mailbox(self):
        self.tree.create("Work")
        self.assertTrue(self.tree.exists("Work"))
        status = self.tree.status("Work")
        self.assertEqual((status.messages, status.recent, status.unseen, status.size, status.uid_next),
                         (0, 0, 0, 0, 1))
        self.assertEqual(self.tree.open("Work").name, "Work")

    def test_create_with_special_use(self):
        self.tree.create("Archive", special_use="archive")
        self.assertEqual(self.tree.special_use("Archive"), "archive")
        [listing] = self.tree.list("Archive")
        self.assertEqual(listing.special_use, "archive")

    def test_create_existing_name_raises_MailboxExists(self):
        self.tree.create("Work")
        self.assertRaises(MailboxExists, self.tree.create, "Work")
        self.assertRaises(MailboxExists, self.tree.create, "INBOX")

    def test_create_makes_missing_superiors(self):
        self.tree.create("a/b/c")
        for name in ["a", "a/b", "a/b/c"]:
            self.assertTrue(self.tree.exists(name), name)

    def test_inbox_is_case_insensitive(self):
        self.assertTrue(self.tree.exists("inbox"))
        self.assertEqual(self.tree.open("InBoX").name, "INBOX")
        self.assertRaises(MailboxExists, self.tree.create, "inbox")
        uid = self.tree.open("inbox").append(MESSAGE)
        self.assertEqual(self.inbox.record(uid).size, len(MESSAGE))
        self.tree.create("iNbOx/Child")
        self.assertTrue(self.tree.exists("INBOX/Child"))
        self.assertIn("INBOX/Child", [listing.name for listing in self.tree.list("*")])

    def test_names_differing_only_in_case_are_distinct_mailboxes(self):
        self.tree.create("Work")
        self.tree.create("work")
        self.tree.open("Work").append(MESSAGE)
        self.assertEqual(self.tree.status("Work").messages, 1)
        self.assertEqual(self.tree.status("work").messages, 0)
        self.assertEqual({"Work", "work"} & {listing.name for listing in self.tree.list("*")}, {"Work", "work"})

    def test_delete_removes_mailbox_and_its_messages(self):
        self.tree.create("Work")
        self.tree.open("Work").append(MESSAGE)
        self.tree.delete("Work")
        self.assertFalse(self.tree.exists("Work"))
        self.assertRaises(MailboxNotFound, self.tree.open, "Work")
        self.assertEqual(self.tree.list("Work"), [])

    def test_delete_missing_raises_MailboxNotFound(self):
        self.assertRaises(MailboxNotFound, self.tree.delete, "Nowhere")

    def test_delete_inbox_is_refused(self):
        self.assertRaises(Refused, self.tree.delete, "INBOX")
        self.assertRaises(Refused, self.tree.delete, "inbox")
        self.assertTrue(self.tree.exists("INBOX"))

    def test_deleted_parent_with_children_becomes_noselect(self):
        self.tree.create("a/b")
        self.tree.open("a").append(MESSAGE)
        self.tree.delete("a")
        self.assertTrue(self.tree.exists("a"))
        [listing] = self.tree.list("a")
        self.assertIn(NOSELECT, listing.attributes)
        self.assertIn(HAS_CHILDREN, listing.attributes)
        self.assertRaises(NotSelectable, self.tree.open, "a")
        self.assertTrue(self.tree.exists("a/b"))
        self.assertRaises(HasChildren, self.tree.delete, "a")

    def test_deleting_last_child_of_noselect_node_removes_the_node(self):
        self.tree.create("a/b")
        self.tree.delete("a")
        self.tree.delete("a/b")
        self.assertFalse(self.tree.exists("a"))
        self.assertEqual(self.tree.list("a*"), [])

    def test_create_over_noselect_node_makes_it_selectable_and_empty(self):
        self.tree.create("a/b")
        old = self.tree.open("a")
        old.append(MESSAGE)
        self.tree.delete("a")
        self.tree.create("a")
        again = self.tree.open("a")
        self.assertNotEqual(again.uid_validity, old.uid_validity)
        self.assertEqual(again.messages(), [])
        [listing] = self.tree.list("a")
        self.assertNotIn(NOSELECT, listing.attributes)

    def test_deleted_and_recreated_mailbox_gets_a_new_uidvalidity(self):
        self.tree.create("Work")
        first = self.tree.status("Work").uid_validity
        self.tree.delete("Work")
        self.tree.create("Work")
        self.assertNotEqual(self.tree.status("Work").uid_validity, first)

    def test_removed_and_provisioned_again_user_gets_new_uidvalidities(self):
        self.store.provision("bob@example.org", {})
        bob = self.store.mailboxes("bob@example.org")
        bob.open("INBOX").append(MESSAGE)
        first = bob.status("INBOX").uid_validity
        self.store.remove_user("bob@example.org")
        self.store.provision("bob@example.org", {})
        self.assertNotEqual(self.store.mailboxes("bob@example.org").status("INBOX").uid_validity, first)

    def test_user_names_are_case_insensitive(self):
        self.assertEqual(self.store.mailboxes("Alice@Example.ORG").user, USER)
        uid = self.store.mailboxes("ALICE@example.org").open("INBOX").append(MESSAGE)
        self.assertEqual(self.inbox.read(uid), MESSAGE)

    def test_rename_out_of_a_noselect_node_removes_the_empty_node(self):
        self.tree.create("x/a")
        self.tree.delete("x")
        self.tree.rename("x/a", "y")
        self.assertFalse(self.tree.exists("x"))
        self.assertTrue(self.tree.exists("y"))

    def test_rename_inbox_onto_existing_mailbox_is_refused_and_moves_nothing(self):
        self.tree.create("Work")
        uid = self.inbox.append(MESSAGE)
        self.assertRaises(MailboxExists, self.tree.rename, "INBOX", "Work")
        self.assertEqual(self.inbox.read(uid), MESSAGE)
        self.assertEqual(self.tree.status("Work").messages, 0)

    def test_handle_of_deleted_mailbox_reports_MailboxNotFound(self):
        self.tree.create("a/b")
        stale = self.tree.open("a")
        stale.append(MESSAGE)
        self.tree.delete("a")
        self.assertRaises(MailboxNotFound, stale.status)
        self.assertRaises(MailboxNotFound, stale.append, MESSAGE)

    def test_handle_of_recreated_mailbox_does_not_see_the_new_messages(self):
        # Old UIDs mean other messages under the old UIDVALIDITY: refuse them.
        self.tree.create("a/b")
        stale = self.tree.open("a")
        self.tree.delete("a")
        self.tree.create("a")
        uid = self.tree.open("a").append(MESSAGE)
        self.assertRaises(MailboxNotFound, stale.messages)
        self.assertRaises(MailboxNotFound, stale.record, uid)
        self.assertRaises(MailboxNotFound, stale.read, uid)

    def test_rename_moves_children_and_keeps_messages_and_uidvalidity(self):
        self.tree.create("a/b/c")
        work = self.tree.open("a")
        uid = work.append(MESSAGE, Flag.SEEN)
        validity = work.uid_validity
        self.tree.rename("a", "z")
        for name in ["a", "a/b", "a/b/c"]:
            self.assertFalse(self.tree.exists(name), name)
        for name in ["z", "z/b", "z/b/c"]:
            self.assertTrue(self.tree.exists(name), name)
        renamed = self.tree.open("z")
        self.assertEqual(renamed.uid_validity, validity)
        self.assertEqual(renamed.read(uid), MESSAGE)
        self.assertEqual(renamed.record(uid).flags, Flag.SEEN)

    def test_rename_creates_missing_superiors_of_the_new_name(self):
        self.tree.create("Work")
        self.tree.rename("Work", "Old/2024/Work")
        self.assertTrue(self.tree.exists("Old"))
        self.assertTrue(self.tree.exists("Old/2024"))
        self.assertTrue(self.tree.exists("Old/2024/Work"))

    def test_rename_onto_existing_name_raises_MailboxExists(self):
        self.tree.create("a")
        self.tree.create("b")
        self.assertRaises(MailboxExists, self.tree.rename, "a", "b")
        self.assertRaises(MailboxExists, self.tree.rename, "a", "inbox")
        self.assertTrue(self.tree.exists("a"))

    def test_rename_missing_raises_MailboxNotFound(self):
        self.assertRaises(MailboxNotFound, self.tree.rename, "Nowhere", "Somewhere")
        self.assertFalse(self.tree.exists("Somewhere"))

    def test_rename_below_itself_is_refused(self):
        self.tree.create("a")
        self.assertRaises(StoreError, self.tree.rename, "a", "a/b")
        self.assertFalse(self.tree.exists("a/b"))

    def test_rename_inbox_moves_its_messages_and_leaves_it_empty(self):
        """RFC 3501 6.3.5: messages go to the new name; INBOX stays; inferiors stay."""
        self.tree.create("INBOX/Child")
        date = 1_000_000_000.0
        uids = [self.inbox.append(message(1), Flag.SEEN, ["$Work"], date),
                self.inbox.append(message(2), Flag.FLAGGED, (), date + 60)]
        before = self.inbox.status()
        self.tree.rename("inbox", "Old Mail")
        self.assertTrue(self.tree.exists("INBOX"))
        self.assertTrue(self.tree.exists("INBOX/Child"))
        self.assertFalse(self.tree.exists("Old Mail/Child"))
        inbox = self.tree.open("INBOX")
        self.assertEqual(inbox.messages(), [])
        after = inbox.status()
        self.assertEqual(after.messages, 0)
        self.assertEqual(after.uid_validity, before.uid_validity)
        self.assertGreaterEqual(after.uid_next, before.uid_next)
        old = self.tree.open("Old Mail").messages()
        self.assertEqual([self.tree.open("Old Mail").read(r.uid) for r in old], [message(1), message(2)])
        self.assertEqual([(r.flags, r.keywords, r.internal_date) for r in old],
                         [(Flag.SEEN, frozenset({"$Work"}), date), (Flag.FLAGGED, frozenset(), date + 60)])
        self.assertRaises(NoSuchMessage, inbox.record, uids[0])

    def test_list_star_matches_every_level_and_percent_one(self):
        for name in ["a", "a/b", "a/b/c", "ab", "b/a"]:
            self.tree.create(name)

        def listed(pattern):
            return [listing.name for listing in self.tree.list(pattern)]

        self.assertEqual(set(listed("*")), {"INBOX", "Sent", "Trash", "a", "a/b", "a/b/c", "ab", "b", "b/a"})
        self.assertEqual(set(listed("%")), {"INBOX", "Sent", "Trash", "a", "ab", "b"})
        self.assertEqual(set(listed("a/%")), {"a/b"})
        self.assertEqual(set(listed("a/*")), {"a/b", "a/b/c"})
        self.assertEqual(set(listed("a*")), {"a", "a/b", "a/b/c", "ab"})
        self.assertEqual(set(listed("a%")), {"a", "ab"})
        self.assertEqual(set(listed("%/a")), {"b/a"})
        self.assertEqual(listed("a/b"), ["a/b"])
        self.assertEqual(listed("nothing*"), [])
        self.assertEqual(listed("A"), [])

    def test_list_pattern_treats_regex_characters_literally(self):
        self.tree.create("a.b")
        self.tree.create("a+b(c)")
        self.assertEqual([listing.name for listing in self.tree.list("a.b")], ["a.b"])
        self.assertEqual([listing.name for listing in self.tree.list("a+b(c)")], ["a+b(c)"])
        self.assertEqual(self.tree.list("a?b"), [])

    def test_list_matches_inbox_case_insensitively(self):
        self.tree.create("INBOX/Child")
        self.tree.create("inboxes")

        def listed(pattern):
            return {listing.name for listing in self.tree.list(pattern)}

        self.assertEqual(listed("inbox"), {"INBOX"})
        self.assertEqual(listed("Inbox/%"), {"INBOX/Child"})
        self.assertEqual(listed("inbox*"), {"INBOX", "INBOX/Child", "inboxes"})
        self.assertEqual(listed("INBOX*"), {"INBOX", "INBOX/Child"})
        self.assertEqual(listed("InBoX%"), {"INBOX"})

    def test_list_reports_children(self):
        self.tree.create("a/b")
        attributes = {listing.name: listing.attributes for listing in self.tree.list("*")}
        self.assertIn(HAS_CHILDREN, attributes["a"])
        self.assertNotIn(HAS_NO_CHILDREN, attributes["a"])
        self.assertIn(HAS_NO_CHILDREN, attributes["a/b"])
        self.assertNotIn(NOSELECT, attributes["a"])

    def test_subscriptions(self):
        self.tree.subscribe("Not/There/Yet")
        self.tree.create("Work")
        self.tree.subscribe("Work")
        self.tree.subscribe("Work")
        self.assertEqual(set(self.tree.subscriptions()), {"INBOX", "Sent", "Trash", "Work", "Not/There/Yet"})
        [listing] = self.tree.list("Work")
        self.assertIn(SUBSCRIBED, listing.attributes)
        self.tree.unsubscribe("Work")
        self.tree.unsubscribe("Never/Subscribed")
        self.assertNotIn("Work", self.tree.subscriptions())
        [listing] = self.tree.list("Work")
        self.assertNotIn(SUBSCRIBED, listing.attributes)

    def test_subscribing_to_inbox_is_case_insensitive(self):
        self.tree.unsubscribe("inbox")
        self.assertNotIn("INBOX", self.tree.subscriptions())
        self.tree.subscribe("Inbox")
        self.assertIn("INBOX", self.tree.subscriptions())

    def test_open_missing_mailbox_raises_MailboxNotFound(self):
        self.assertRaises(MailboxNotFound, self.tree.open, "Nowhere")
        self.assertRaises(MailboxNotFound, self.tree.status, "Nowhere")

    def test_status_by_name_equals_status_of_open_mailbox(self):
        self.inbox.append(MESSAGE)
        self.assertEqual(self.tree.status("INBOX"), self.inbox.status())

    # -- sealed names ------------------------------------------------------------

    def test_hostile_mailbox_names_are_stored_faithfully_or_refused(self):
        for name in HOSTILE_NAMES:
            try:
                self.tree.create(name)
            except InvalidName:
                self.assertFalse(self.tree.exists(name), repr(name))
                continue
            mailbox = self.tree.open(name)
            self.assertEqual(mailbox.name, name)
            uid = mailbox.append(MESSAGE)
            self.assertEqual(self.tree.open(name).read(uid), MESSAGE)
            self.assertIn(name, [listing.name for listing in self.tree.list("*")], repr(name))
            self.tree.rename(name, name + "-renamed")
            self.tree.delete(name + "-renamed")
        self.assertOnlyInsideData()

    def test_control_characters_and_dot_levels_are_refused(self):
        for name in ["nul\x00byte", "line\nfeed", "del\x7f", "../x", "a/../../b", "a/./b", "/etc", "..", ""]:
            self.assertRaises(InvalidName, self.tree.create, name)
            self.assertRaises(InvalidName, self.tree.rename, "INBOX", name)
            self.assertRaises((InvalidName, MailboxNotFound), self.tree.open, name)

    def test_thousand_byte_name_is_kept_whole(self):
        name = "n" * 1000
        self.tree.create(name)
        self.assertEqual([listing.name for listing in self.tree.list("n*")], [name])

    def test_hostile_user_names_never_reach_outside_the_data_folder(self):
        for user in HOSTILE_USERS:
            try:
                self.store.provision(user, {})
                tree = self.store.mailboxes(user)
                tree.open("INBOX").append(MESSAGE)
            except StoreError:
                continue
            self.assertTrue(tree.exists("INBOX"), repr(user))
        self.assertOnlyInsideData()

    def test_user_names_are_separate(self):
        self.store.provision("bob@example.org", {})
        bob = self.store.mailboxes("bob@example.org")
        bob.open("INBOX").append(MESSAGE)
        self.assertEqual(self.inbox.status().messages, 0)
        self.store.remove_user("bob@example.org")
        self.assertEqual(self.tree.status("INBOX").messages, 0)
        self.assertFalse(self.store.mailboxes("bob@example.org").exists("INBOX"))

    # -- messages ----------------------------------------------------------------

    def test_append_returns_uid_of_a_record_with_flags_keywords_and_date(self):
        date = 1_234_567_890.5
        uid = self.inbox.append(MESSAGE, Flag.SEEN | Flag.FLAGGED, ["$Forwarded", "work"], date)
        record = self.inbox.record(uid)
        self.assertEqual(record.uid, uid)
        self.assertEqual(record.size, len(MESSAGE))
        self.assertEqual(record.internal_date, date)
        self.assertEqual(record.flags, Flag.SEEN | Flag.FLAGGED)
        self.assertEqual(record.keywords, frozenset({"$Forwarded", "work"}))
        self.assertTrue(record.guid)
        self.assertEqual(self.inbox.messages(), [record])

    def test_append_without_date_uses_now(self):
        before = time.time()
        uid = self.inbox.append(MESSAGE)
        record = self.inbox.record(uid)
        self.assertLessEqual(before - 1, record.internal_date)
        self.assertLessEqual(record.internal_date, time.time() + 1)
        self.assertEqual(record.flags, Flag(0))
        self.assertEqual(record.keywords, frozenset())

    def test_every_message_has_its_own_guid(self):
        self.tree.create("Work")
        uid = self.inbox.append(MESSAGE)
        [(_, copied)] = self.inbox.copy([uid], self.tree.open("Work"))
        guids = {self.inbox.record(uid).guid, self.inbox.record(self.inbox.append(MESSAGE)).guid,
                 self.tree.open("Work").record(copied).guid}
        self.assertEqual(len(guids), 3)

    def test_staged_message_goes_to_several_mailboxes(self):
        staged = self.store.stage()
        self.addCleanup(staged.discard)
        staged.write(HEADER)
        staged.write(BODY)
        self.assertEqual(staged.size, len(MESSAGE))
        staged.finish()
        self.assertEqual(staged.read(), MESSAGE)
        self.tree.create("Work")
        work = self.tree.open("Work")
        first, second = self.inbox.append(staged), work.append(staged, Flag.SEEN)
        self.assertEqual(self.inbox.read(first), MESSAGE)
        self.assertEqual(work.read(second), MESSAGE)
        staged.discard()
        staged.discard()
        self.assertEqual(self.inbox.read(first), MESSAGE)

    def test_appending_an_unfinished_staged_message_keeps_the_bytes_written(self):
        staged = self.store.stage()
        self.addCleanup(staged.discard)
        staged.write(MESSAGE)
        uid = self.inbox.append(staged)
        with contextlib.suppress(ValueError, OSError, StoreError):  # refusing is fine; changing is not
            staged.write(b"more bytes after the append")
        self.assertEqual(self.inbox.read(uid), MESSAGE)
        self.assertEqual(self.inbox.record(uid).size, len(MESSAGE))
        self.assertEqual(self.inbox.status().size, len(MESSAGE))

    def test_read_whole_message_range_and_header(self):
        uid = self.inbox.append(MESSAGE)
        self.assertEqual(self.inbox.read(uid), MESSAGE)
        self.assertEqual(self.inbox.read(uid, 6, 21), MESSAGE[6:21])
        self.assertEqual(self.inbox.read(uid, len(HEADER)), BODY)
        self.assertEqual(self.inbox.read(uid, 0, len(HEADER)), HEADER)
        self.assertEqual(self.inbox.read(uid, len(MESSAGE) + 10), b"")
        self.assertEqual(self.inbox.read(uid, 5, 5), b"")
        with self.inbox.open_file(uid) as stream:
            self.assertEqual(stream.read(), MESSAGE)

    def test_empty_message(self):
        uid = self.inbox.append(b"")
        self.assertEqual(self.inbox.read(uid), b"")
        self.assertEqual(self.inbox.record(uid).size, 0)

    def test_unknown_uid_raises_NoSuchMessage(self):
        self.assertRaises(NoSuchMessage, self.inbox.record, 99)
        self.assertRaises(NoSuchMessage, self.inbox.read, 99)
        self.assertRaises(NoSuchMessage, self.inbox.open_file, 99)

    def test_set_flags_replace_add_and_remove(self):
        uid = self.inbox.append(MESSAGE, Flag.SEEN, ["a"])
        changed, refused = self.inbox.set_flags([uid], FlagChange.ADD, Flag.FLAGGED, ["b"])
        self.assertEqual(refused, [])
        self.assertEqual([(r.uid, r.flags, r.keywords) for r in changed],
                         [(uid, Flag.SEEN | Flag.FLAGGED, frozenset({"a", "b"}))])
        self.inbox.set_flags([uid], FlagChange.REMOVE, Flag.SEEN, ["a"])
        record = self.inbox.record(uid)
        self.assertEqual((record.flags, record.keywords), (Flag.FLAGGED, frozenset({"b"})))
        self.inbox.set_flags([uid], FlagChange.REPLACE, Flag.DRAFT | Flag.ANSWERED, ["c"])
        record = self.inbox.record(uid)
        self.assertEqual((record.flags, record.keywords), (Flag.DRAFT | Flag.ANSWERED, frozenset({"c"})))
        self.inbox.set_flags([uid], FlagChange.REPLACE, Flag(0))
        record = self.inbox.record(uid)
        self.assertEqual((record.flags, record.keywords), (Flag(0), frozenset()))

    def test_keywords_compare_case_insensitively(self):
        uid = self.inbox.append(MESSAGE, keywords=["Work", "work"])
        self.assertEqual(len(self.inbox.record(uid).keywords), 1)
        changed, _ = self.inbox.set_flags([uid], FlagChange.ADD, Flag(0), ["WORK"])
        self.assertEqual(changed, [])
        self.inbox.set_flags([uid], FlagChange.REMOVE, Flag(0), ["wOrK"])
        self.assertEqual(self.inbox.record(uid).keywords, frozenset())

    def test_set_flags_that_change_nothing_report_nothing(self):
        uid = self.inbox.append(MESSAGE, Flag.SEEN)
        before = self.inbox.status().highest_modseq
        changed, refused = self.inbox.set_flags([uid], FlagChange.ADD, Flag.SEEN)
        self.assertEqual((changed, refused), ([], []))
        self.assertEqual(self.inbox.status().highest_modseq, before)

    def test_set_flags_ignores_unknown_uids(self):
        uid = self.inbox.append(MESSAGE)
        changed, refused = self.inbox.set_flags([uid, 99], FlagChange.ADD, Flag.SEEN)
        self.assertEqual([r.uid for r in changed], [uid])
        self.assertEqual(refused, [])

    def test_set_flags_unchanged_since_refuses_newer_messages(self):
        first = self.inbox.append(message(1))
        base = self.inbox.status().highest_modseq
        second = self.inbox.append(message(2))
        changed, refused = self.inbox.set_flags([first, second], FlagChange.ADD, Flag.SEEN,
                                                unchanged_since=base)
        self.assertEqual([r.uid for r in changed], [first])
        self.assertEqual(refused, [second])
        self.assertEqual(self.inbox.record(second).flags, Flag(0))

    def test_copy_gives_new_uids_and_keeps_flags_and_date(self):
        self.tree.create("Work")
        work = self.tree.open("Work")
        work.append(message(0))  # so that the copies' UIDs differ from the originals'
        uids = [self.inbox.append(message(1), Flag.SEEN, ["$Work"], 1_000_000_000.0),
                self.inbox.append(message(2), Flag.ANSWERED | Flag.DELETED, (), 1_000_000_060.0)]
        pairs = self.inbox.copy(uids + [99], work)
        self.assertEqual([old for old, _ in pairs], uids)
        new_uids = [new for _, new in pairs]
        self.assertEqual(new_uids, sorted(new_uids))
        self.assertGreater(new_uids[0], work.record(1).uid)
        for old, new in pairs:
            source, copied = self.inbox.record(old), work.record(new)
            self.assertEqual((copied.flags, copied.keywords, copied.internal_date, copied.size),
                             (source.flags, source.keywords, source.internal_date, source.size))
            self.assertEqual(work.read(new), self.inbox.read(old))
            self.assertNotEqual(copied.guid, source.guid)
        self.assertEqual(self.inbox.status().messages, 2)

    def test_copy_of_nothing_changes_nothing(self):
        self.tree.create("Work")
        work = self.tree.open("Work")
        before = work.status()
        self.assertEqual(self.inbox.copy([], work), [])
        self.assertEqual(self.inbox.copy([42], work), [])
        self.assertEqual(work.status(), before)

    def test_move_gives_new_uids_and_expunges_the_originals(self):
        self.tree.create("Work")
        work = self.tree.open("Work")
        keep = self.inbox.append(message(0))
        uids = [self.inbox.append(message(1), Flag.SEEN, ["x"], 1_000_000_000.0),
                self.inbox.append(message(2), Flag.FLAGGED, (), 1_000_000_060.0)]
        base = self.inbox.status().highest_modseq
        pairs = self.inbox.move(uids, work)
        self.assertEqual([old for old, _ in pairs], uids)
        self.assertEqual([r.uid for r in self.inbox.messages()], [keep])
        self.assertEqual(self.inbox.changes_since(base).expunged, uids)
        moved = [work.record(new) for _, new in pairs]
        self.assertEqual([(r.flags, r.keywords, r.internal_date) for r in moved],
                         [(Flag.SEEN, frozenset({"x"}), 1_000_000_000.0), (Flag.FLAGGED, frozenset(), 1_000_000_060.0)])
        self.assertEqual([work.read(new) for _, new in pairs], [message(1), message(2)])

    def test_expunge_removes_only_deleted_messages_and_returns_their_uids(self):
        uids = [self.inbox.append(message(n)) for n in range(4)]
        self.inbox.set_flags([uids[0], uids[2]], FlagChange.ADD, Flag.DELETED)
        self.assertEqual(self.inbox.expunge(), [uids[0], uids[2]])
        self.assertEqual([r.uid for r in self.inbox.messages()], [uids[1], uids[3]])
        self.assertRaises(NoSuchMessage, self.inbox.read, uids[0])
        self.assertEqual(self.inbox.expunge(), [])

    def test_expunge_of_given_uids_leaves_other_deleted_messages(self):
        uids = [self.inbox.append(message(n), Flag.DELETED) for n in range(3)]
        self.inbox.append(message(3))
        self.assertEqual(self.inbox.expunge([uids[1], 99, uids[2] + 100]), [uids[1]])
        self.assertEqual(self.inbox.expunge([self.inbox.messages()[-1].uid]), [])
        self.assertEqual(self.inbox.expunge(), [uids[0], uids[2]])

    def test_status_counts(self):
        self.assertEqual(self.inbox.status().uid_validity, self.inbox.uid_validity)
        uids = [self.inbox.append(message(1), Flag.SEEN), self.inbox.append(message(2)),
                self.inbox.append(message(3), Flag.DELETED)]
        status = self.inbox.status()
        self.assertEqual(status.messages, 3)
        self.assertEqual(status.recent, 3)
        self.assertEqual(status.unseen, 2)
        self.assertEqual(status.size, len(message(1)) + len(message(2)) + len(message(3)))
        self.assertGreater(status.uid_next, max(uids))
        self.assertEqual(status.uid_validity, self.inbox.uid_validity)
        self.assertEqual(status.highest_modseq, max(r.modseq for r in self.inbox.messages()))
        self.inbox.set_flags([uids[1]], FlagChange.ADD, Flag.SEEN)
        self.inbox.expunge()
        self.inbox.claim_recent()
        status = self.inbox.status()
        self.assertEqual((status.messages, status.recent, status.unseen), (2, 0, 0))
        self.assertEqual(status.size, len(message(1)) + len(message(2)))

    # -- UIDs and MODSEQs ----------------------------------------------------------

    def test_uids_strictly_ascend(self):
        uids = [self.inbox.append(message(n)) for n in range(5)]
        uids += self.inbox.append_many([(message(n), None, (), None) for n in range(5, 8)])
        self.assertEqual(uids, sorted(set(uids)))
        self.assertEqual([r.uid for r in self.inbox.messages()], uids)

    def test_uid_of_expunged_highest_message_is_not_reused(self):
        first = self.inbox.append(message(1))
        highest = self.inbox.append(message(2), Flag.DELETED)
        self.inbox.expunge()
        self.assertGreater(self.inbox.append(message(3)), highest)
        self.assertGreater(highest, first)

    def test_uids_are_not_reused_after_reopening_the_store(self):
        highest = self.inbox.append(message(1), Flag.DELETED)
        validity = self.inbox.uid_validity
        self.inbox.expunge()
        self.store.close()
        store = self.open_store()
        inbox = store.mailboxes(USER).open("INBOX")
        self.assertEqual(inbox.uid_validity, validity)
        self.assertGreater(inbox.status().uid_next, highest)
        self.assertGreater(inbox.append(message(2)), highest)

    def test_uid_validity_of_distinct_mailboxes_differ_after_recreation(self):
        seen = set()
        for _ in range(3):
            self.tree.create("Work")
            seen.add(self.tree.open("Work").uid_validity)
            self.tree.delete("Work")
        self.assertEqual(len(seen), 3)

    def test_modseq_strictly_ascends_on_every_change(self):
        self.tree.create("Work")
        work = self.tree.open("Work")
        inbox = self.inbox
        steps = [  # (the mailboxes that change, the change)
            ([inbox], lambda: inbox.append(message(1))),
            ([inbox], lambda: inbox.append_many([(message(2), None, (), None), (message(3), Flag.SEEN, (), None)])),
            ([inbox], lambda: inbox.set_flags([1], FlagChange.ADD, Flag.FLAGGED)),
            ([inbox], lambda: inbox.set_flags([1, 2], FlagChange.ADD, Flag.SEEN, ["k"])),
            ([inbox], lambda: inbox.set_flags([2], FlagChange.REMOVE, Flag(0), ["k"])),
            ([inbox], lambda: inbox.set_flags([3], FlagChange.REPLACE, Flag.DELETED)),
            ([work], lambda: inbox.copy([1], work)),
            ([inbox], lambda: inbox.expunge()),
            ([inbox, work], lambda: inbox.move([1], work)),
            ([inbox, work], lambda: inbox.move([2], work)),
            ([], lambda: work.expunge([1, 2, 3])),  # nothing \Deleted there: no change
        ]
        highest = {box.name: box.status().highest_modseq for box in (inbox, work)}
        for changed_boxes, step in steps:
            step()
            for box in (inbox, work):
                now = box.status().highest_modseq
                if box in changed_boxes:
                    self.assertGreater(now, highest[box.name])
                    for record in box.changes_since(highest[box.name]).changed:
                        self.assertEqual(record.modseq, now)
                else:
                    self.assertEqual(now, highest[box.name])
                highest[box.name] = now

    def test_changes_since_lists_changed_and_expunged(self):
        uids = [self.inbox.append(message(n)) for n in range(3)]
        base = self.inbox.status().highest_modseq
        self.assertEqual(self.inbox.changes_since(base).changed, [])
        self.inbox.set_flags([uids[0]], FlagChange.ADD, Flag.DELETED)
        self.inbox.set_flags([uids[2]], FlagChange.ADD, Flag.SEEN)
        self.inbox.expunge()
        new = self.inbox.append(message(9))
        changes = self.inbox.changes_since(base)
        self.assertEqual([r.uid for r in changes.changed], [uids[2], new])
        self.assertEqual(changes.expunged, [uids[0]])
        self.assertEqual(changes.highest_modseq, self.inbox.status().highest_modseq)
        everything = self.inbox.changes_since(0)
        self.assertEqual([r.uid for r in everything.changed], [uids[1], uids[2], new])

    def test_expunged_since_lists_uids_expunged_after_a_modseq(self):
        uids = [self.inbox.append(message(n), Flag.DELETED) for n in range(4)]
        base = self.inbox.status().highest_modseq
        self.inbox.expunge(uids[:1])
        middle = self.inbox.status().highest_modseq
        self.inbox.move(uids[2:3], self.tree.open("Trash"))
        self.inbox.expunge(uids[3:])
        self.assertEqual(self.inbox.expunged_since(base), [uids[0], uids[2], uids[3]])
        self.assertEqual(self.inbox.expunged_since(middle), [uids[2], uids[3]])
        self.assertEqual(self.inbox.expunged_since(self.inbox.status().highest_modseq), [])

    # -- \Recent ---------------------------------------------------------------------

    def test_new_message_is_recent_in_exactly_one_claimant(self):
        other = self.open_store().mailboxes(USER).open("INBOX")
        uids = [self.inbox.append(message(n)) for n in range(2)]
        self.assertEqual(self.inbox.status().recent, 2)
        self.assertEqual(self.inbox.claim_recent(), frozenset(uids))
        self.assertEqual(self.tree.open("INBOX").claim_recent(), frozenset())
        self.assertEqual(other.claim_recent(), frozenset())
        self.assertEqual(self.inbox.status().recent, 0)
        third = other.append(message(3))
        self.assertEqual(self.inbox.status().recent, 1)
        self.assertEqual(other.claim_recent(), frozenset({third}))
        self.assertEqual(self.inbox.claim_recent(), frozenset())

    def test_recent_counts_only_unclaimed_messages_still_present(self):
        first = self.inbox.append(message(1), Flag.DELETED)
        self.inbox.append(message(2))
        self.inbox.expunge()
        self.assertEqual(self.inbox.status().recent, 1)
        self.assertNotIn(first, self.inbox.claim_recent())

    def test_copied_and_moved_messages_are_recent_in_the_target(self):
        self.tree.create("Work")
        work = self.tree.open("Work")
        uids = [self.inbox.append(message(n)) for n in range(2)]
        self.inbox.claim_recent()
        pairs = self.inbox.copy(uids[:1], work) + self.inbox.move(uids[1:], work)
        self.assertEqual(work.status().recent, 2)
        self.assertEqual(work.claim_recent(), frozenset(new for _, new in pairs))

    # -- change notification ------------------------------------------------------------

    def test_watchers_in_process_hear_appends_flag_changes_and_expunges(self):
        other_session = self.tree.open("INBOX")
        calls = self.watcher(other_session)
        uid = self.inbox.append(MESSAGE)
        self.assertEqual(len(calls), 1)
        self.inbox.set_flags([uid], FlagChange.ADD, Flag.DELETED)
        self.assertEqual(len(calls), 2)
        self.inbox.expunge()
        self.assertEqual(len(calls), 3)
        self.store.mailboxes(USER).open("inbox").append(MESSAGE)
        self.assertEqual(len(calls), 4)

    def test_watchers_hear_copies_and_moves_into_their_mailbox(self):
        self.tree.create("Work")
        work_calls = self.watcher(self.tree.open("Work"))
        inbox_calls = self.watcher(self.inbox)
        uid = self.inbox.append(MESSAGE)
        self.inbox.copy([uid], self.tree.open("Work"))
        self.assertEqual((len(inbox_calls), len(work_calls)), (1, 1))
        self.inbox.move([uid], self.tree.open("Work"))
        self.assertEqual(len(work_calls), 2)
        self.assertEqual(len(inbox_calls), 2)

    def test_unwatched_listener_is_not_called(self):
        calls = []
        listener = lambda: calls.append(1)
        self.inbox.watch(listener)
        self.inbox.unwatch(listener)
        self.inbox.append(MESSAGE)
        self.assertEqual(calls, [])

    def test_watchers_of_other_mailboxes_hear_nothing(self):
        self.tree.create("Work")
        calls = self.watcher(self.tree.open("Work"))
        self.inbox.append(MESSAGE)
        self.store.provision("bob@example.org", {})
        bob_calls = self.watcher(self.store.mailboxes("bob@example.org").open("INBOX"))
        self.inbox.append(MESSAGE)
        self.assertEqual((calls, bob_calls), ([], []))

    def test_a_failing_watcher_neither_fails_the_change_nor_silences_others(self):
        def broken():
            raise ZeroDivisionError("a session that went away")

        self.inbox.watch(broken)
        self.addCleanup(self.inbox.unwatch, broken)
        calls = self.watcher(self.inbox)
        uid = self.inbox.append(MESSAGE)
        self.assertEqual(self.inbox.read(uid), MESSAGE)
        self.assertEqual(len(calls), 1)
        changed, _ = self.inbox.set_flags([uid], FlagChange.ADD, Flag.SEEN)
        self.assertEqual(len(changed), 1)
        self.assertEqual(len(calls), 2)
        self.flushLoggedErrors(ZeroDivisionError)

    def test_generation_moves_with_every_change_made_through_another_instance(self):
        other = self.open_store().mailboxes(USER).open("INBOX")
        seen = [self.inbox.generation()]
        self.assertEqual(self.inbox.generation(), seen[0])  # nothing changed: a poll may skip its look
        uid = other.append(MESSAGE)
        seen.append(self.inbox.generation())
        other.set_flags([uid], FlagChange.ADD, Flag.SEEN | Flag.DELETED)
        seen.append(self.inbox.generation())
        other.expunge()
        seen.append(self.inbox.generation())
        for earlier, later in itertools.pairwise(seen):
            self.assertNotEqual(earlier, later)

    def test_poll_watched_wakes_the_watchers_of_a_mailbox_another_instance_changed(self):
        calls = self.watcher(self.inbox)
        self.store.poll_watched()  # the first look may wake them: the watcher checks for itself
        calls.clear()
        self.store.poll_watched()
        self.assertEqual(calls, [])
        self.open_store().mailboxes(USER).open("INBOX").append(MESSAGE)
        self.store.poll_watched()
        self.assertEqual(calls, [1])
        self.store.poll_watched()
        self.assertEqual(calls, [1])

    def test_changes_by_another_store_instance_are_seen_through_changes_since(self):
        first = self.inbox.append(message(1))
        base = self.inbox.status().highest_modseq
        other = self.open_store().mailboxes(USER).open("INBOX")
        second = other.append(message(2))
        other.set_flags([first], FlagChange.ADD, Flag.SEEN | Flag.DELETED)
        self.assertEqual(other.expunge(), [first])
        changes = self.inbox.changes_since(base)
        self.assertEqual([r.uid for r in changes.changed], [second])
        self.assertEqual(changes.expunged, [first])
        self.assertEqual(changes.highest_modseq, self.inbox.status().highest_modseq)
        self.assertEqual(self.inbox.read(second), message(2))

    def run_in_subprocess(self, code: str) -> str:
        """Run ``code`` in a new Python process with ``DATA`` and ``USER`` set; its output."""
        project = str(Path(cyrusmail.__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([project, os.environ.get("PYTHONPATH", "")]))
        source = f"DATA = {str(self.data)!r}\nUSER = {USER!r}\n" + self.subprocess_store_code() + "\n" + code
        result = subprocess.run([sys.executable, "-c", source], env=env, capture_output=True, timeout=120, check=False)
        self.assertEqual(result.returncode, 0, result.stderr.decode(errors="replace"))
        return result.stdout.decode()

    def test_append_by_another_process_is_seen_through_changes_since(self):
        base = self.inbox.status().highest_modseq
        mine = self.inbox.append(message(1))
        output = self.run_in_subprocess(textwrap.dedent("""
            import os
            inbox = store.mailboxes(USER).open("INBOX")
            uid = inbox.append(b"Subject: from afar\\r\\n\\r\\nhello\\r\\n", keywords=["$Far"])
            print(uid, flush=True)
            os._exit(0)  # no close(): as if the process died right after the append
        """))
        theirs = int(output.split()[0])
        self.assertGreater(theirs, mine)
        changes = self.inbox.changes_since(base)
        self.assertEqual([r.uid for r in changes.changed], [mine, theirs])
        self.assertEqual(self.inbox.read(theirs), b"Subject: from afar\r\n\r\nhello\r\n")
        self.assertEqual(self.inbox.record(theirs).keywords, frozenset({"$Far"}))
        self.assertEqual(self.inbox.status().messages, 2)

    # -- durability and concurrency ----------------------------------------------------------

    def test_appended_message_survives_a_crash(self):
        """A new instance, the first never closed, finds the message whole."""
        uid = self.inbox.append(MESSAGE, Flag.SEEN, ["kept"], 1_000_000_000.0)
        survivor = self.make_store(str(self.data))  # the first instance is never closed
        self.addCleanup(survivor.close)
        inbox = survivor.mailboxes(USER).open("INBOX")
        self.assertEqual(inbox.read(uid), MESSAGE)
        record = inbox.record(uid)
        self.assertEqual((record.flags, record.keywords, record.internal_date), (Flag.SEEN, frozenset({"kept"}), 1_000_000_000.0))

    def test_message_files_are_never_modified_after_writing(self):
        self.tree.create("Work")
        work = self.tree.open("Work")
        uids = [self.inbox.append(message(n)) for n in range(4)]
        originals = {message(n) for n in range(4)}
        before = {path: seen for path, seen in self.stored_bodies().items() if seen[2] in originals}
        self.assertTrue(before, "no file holds a message's bytes")
        self.inbox.set_flags(uids, FlagChange.ADD, Flag.SEEN, ["k"])
        self.inbox.copy(uids[:2], work)
        self.inbox.move(uids[2:3], work)
        self.inbox.set_flags(uids[:1], FlagChange.ADD, Flag.DELETED)
        self.inbox.expunge()
        self.tree.rename("Work", "Play")
        after = self.stored_bodies()
        for path, seen in before.items():
            if path in after:
                self.assertEqual(after[path], seen, f"{path} changed")

    def test_two_instances_appending_alternately_get_distinct_ascending_uids(self):
        other = self.open_store().mailboxes(USER).open("INBOX")
        uids = []
        for n in range(10):
            mailbox = self.inbox if n % 2 == 0 else other
            uids.append(mailbox.append(message(n)))
        self.assertEqual(uids, sorted(set(uids)))
        self.assertEqual([r.uid for r in self.inbox.messages()], uids)
        self.assertEqual([self.inbox.read(uid) for uid in uids], [message(n) for n in range(10)])

    def test_append_many_returns_ascending_uids_in_order(self):
        staged = self.store.stage()
        self.addCleanup(staged.discard)
        staged.write(message(2))
        staged.finish()
        uids = self.inbox.append_many([(message(1), Flag.SEEN, ["a"], 1_000_000_000.0),
                                       (staged, None, (), None)])
        self.assertEqual(uids, sorted(uids))
        self.assertEqual([self.inbox.read(uid) for uid in uids], [message(1), message(2)])
        self.assertEqual(self.inbox.record(uids[0]).flags, Flag.SEEN)

    def test_append_many_adds_nothing_when_one_item_fails(self):
        missing = self.store.stage()
        missing.write(message(2))
        missing.finish()
        missing.discard()  # its file is gone
        before = self.inbox.status()
        calls = self.watcher(self.inbox)
        with self.assertRaises((StoreError, OSError)):
            self.inbox.append_many([(message(1), None, (), None), (missing, None, (), None),
                                    (message(3), None, (), None)])
        self.assertEqual(self.inbox.messages(), [])
        self.assertEqual(self.inbox.status(), before)
        self.assertEqual(calls, [])
        self.assertEqual(self.inbox.append(message(4)), before.uid_next)
        self.assertOnlyInsideData()

    def test_append_many_of_nothing_changes_nothing(self):
        before = self.inbox.status()
        self.assertEqual(self.inbox.append_many([]), [])
        self.assertEqual(self.inbox.status(), before)

    def test_random_operations_agree_with_a_model(self):
        machine = store_state_machine(self.make_store, self.mktemp)
        run_state_machine_as_test(machine, settings=settings(
            max_examples=self.state_machine_examples, stateful_step_count=20, deadline=None,
            suppress_health_check=list(HealthCheck), database=None,
        ))

    # -- the MIME cache ------------------------------------------------------------------------

    def test_mime_cache_is_filled_at_delivery_and_kept_by_copy_and_move(self):
        if self.analyser is None:
            self.assertIsInstance(self.inbox.mime_cache(self.inbox.append(MESSAGE)), (bytes, type(None)))
            return
        expected = self.analyser(MESSAGE)
        self.tree.create("Work")
        self.tree.create("Play")
        work, play = self.tree.open("Work"), self.tree.open("Play")
        uid = self.inbox.append(MESSAGE)
        self.assertEqual(self.inbox.mime_cache(uid), expected)
        [(_, copied)] = self.inbox.copy([uid], work)
        self.assertEqual(work.mime_cache(copied), expected)
        [(_, moved)] = work.move([copied], play)
        self.assertEqual(play.mime_cache(moved), expected)
        staged = self.store.stage()
        self.addCleanup(staged.discard)
        staged.write(message(7))
        staged.finish()
        self.assertEqual(work.mime_cache(work.append(staged)), self.analyser(message(7)))

    def test_sort_rows_of_present_messages(self):
        """SORT and THREAD keys of the messages still there, ascending UID (with the
        MIME layer's analyser, made from the header; with another, the empty keys)."""
        self.tree.create("Work")
        work = self.tree.open("Work")
        first = self.inbox.append(MESSAGE, internal_date=1_000_000)
        gone = self.inbox.append(message(2))
        last = self.inbox.append(message(3))
        [(_, copied)] = self.inbox.copy([first], work)
        self.inbox.set_flags([gone], FlagChange.ADD, Flag.DELETED)
        self.inbox.expunge()
        columns = ("subject", "from_", "to", "internal_date", "size", "date", "references", "reply")
        rows = self.inbox.sort_rows([last, gone, 999, first], columns)
        self.assertEqual([row[0] for row in rows], [first, last])
        self.assertEqual(rows[0][4:7], (1_000_000, len(MESSAGE), 1_000_000))  # no Date: the internal date
        self.assertEqual(work.sort_rows([copied], columns), [(copied, *rows[0][1:])])
        if self.analyser is None:
            self.assertEqual(rows[0][1:4] + rows[0][7:], ("HELLO", "BOB", "ALICE", (), False))
        else:
            self.assertEqual(rows[0][1:4] + rows[0][7:], ("", "", "", (), False))


# -- the random walk ----------------------------------------------------------------------------

MAILBOXES = ("INBOX", "Work")
FLAG_SETS = st.sampled_from([Flag(0), Flag.SEEN, Flag.DELETED, Flag.SEEN | Flag.DELETED,
                             Flag.FLAGGED | Flag.ANSWERED, Flag.DRAFT])
KEYWORD_SETS = st.frozensets(st.sampled_from(["$Forwarded", "$Junk", "work"]), max_size=2)
BODIES = st.binary(max_size=200)


def store_state_machine(make_store, make_folder):
    """A state machine over two mailboxes of a store from ``make_store(make_folder())``."""

    class StoreMachine(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.store = make_store(make_folder())
            self.store.provision(USER, {})
            tree = self.store.mailboxes(USER)
            tree.create("Work")
            self.boxes = {name: tree.open(name) for name in MAILBOXES}
            # model: mailbox -> {uid: (body, flags, keywords, internal_date)}
            self.model = {name: {} for name in MAILBOXES}
            self.uid_next = {name: box.status().uid_next for name, box in self.boxes.items()}
            self.modseq = {name: box.status().highest_modseq for name, box in self.boxes.items()}
            self.expected_change = set()

        def teardown(self):
            self.store.close()

        def uids(self, data, name):
            present = sorted(self.model[name])
            chosen = data.draw(st.lists(st.sampled_from(present), unique=True, max_size=4)) if present else []
            return chosen + data.draw(st.lists(st.integers(1, 60), max_size=1))

        def add(self, name, uid, entry):
            self.assertTrue(uid not in self.model[name] and uid >= self.uid_next[name],
                            f"{name}: UID {uid} is not new (next {self.uid_next[name]})")
            self.model[name][uid] = entry
            self.uid_next[name] = uid + 1
            self.expected_change.add(name)

        @staticmethod
        def assertTrue(condition, message):
            assert condition, message

        @rule(name=st.sampled_from(MAILBOXES), body=BODIES, flags=FLAG_SETS, keywords=KEYWORD_SETS,
              date=st.floats(0, 2e9, allow_nan=False))
        def append(self, name, body, flags, keywords, date):
            uid = self.boxes[name].append(body, flags, keywords, date)
            self.add(name, uid, (body, flags, keywords, date))

        @rule(name=st.sampled_from(MAILBOXES), bodies=st.lists(BODIES, min_size=1, max_size=3))
        def append_many(self, name, bodies):
            uids = self.boxes[name].append_many([(body, None, (), 1_000_000_000.0) for body in bodies])
            assert uids == sorted(uids), uids
            for uid, body in zip(uids, bodies):
                self.add(name, uid, (body, Flag(0), frozenset(), 1_000_000_000.0))

        @rule(data=st.data(), name=st.sampled_from(MAILBOXES), change=st.sampled_from(list(FlagChange)),
              flags=FLAG_SETS, keywords=KEYWORD_SETS)
        def set_flags(self, data, name, change, flags, keywords):
            uids = self.uids(data, name)
            changed, refused = self.boxes[name].set_flags(uids, change, flags, keywords)
            assert refused == []
            expected = []
            for uid in sorted(set(uids) & set(self.model[name])):
                body, old_flags, old_keywords, date = self.model[name][uid]
                if change is FlagChange.REPLACE:
                    new = (flags, keywords)
                elif change is FlagChange.ADD:
                    new = (old_flags | flags, old_keywords | keywords)
                else:
                    new = (old_flags & ~flags, old_keywords - keywords)
                if new != (old_flags, old_keywords):
                    self.model[name][uid] = (body, *new, date)
                    expected.append(uid)
            assert [r.uid for r in changed] == expected, (changed, expected)
            if expected:
                self.expected_change.add(name)

        @rule(data=st.data(), source=st.sampled_from(MAILBOXES), destination=st.sampled_from(MAILBOXES),
              move=st.booleans())
        def copy_or_move(self, data, source, destination, move):
            uids = self.uids(data, source)
            operation = self.boxes[source].move if move else self.boxes[source].copy
            pairs = operation(uids, self.boxes[destination])
            present = sorted(set(uids) & set(self.model[source]))
            assert [old for old, _ in pairs] == present, (pairs, present)
            entries = [self.model[source][old] for old in present]
            if move:
                for old in present:
                    del self.model[source][old]
                if present:
                    self.expected_change.add(source)
            for (_, new), entry in zip(pairs, entries):
                self.add(destination, new, entry)

        @rule(data=st.data(), name=st.sampled_from(MAILBOXES), everything=st.booleans())
        def expunge(self, data, name, everything):
            uids = None if everything else self.uids(data, name)
            candidates = self.model[name] if uids is None else set(uids) & set(self.model[name])
            doomed = sorted(uid for uid in candidates if self.model[name][uid][1] & Flag.DELETED)
            assert self.boxes[name].expunge(uids) == doomed
            for uid in doomed:
                del self.model[name][uid]
            if doomed:
                self.expected_change.add(name)

        @invariant()
        def agrees_with_the_model(self):
            for name, box in self.boxes.items():
                records = box.messages()
                uids = [r.uid for r in records]
                assert uids == sorted(set(uids)), uids
                assert uids == sorted(self.model[name]), (name, uids, sorted(self.model[name]))
                for record in records:
                    body, flags, keywords, date = self.model[name][record.uid]
                    assert (record.size, record.flags, record.keywords, record.internal_date) == \
                        (len(body), flags, keywords, date), (record, self.model[name][record.uid])
                status = box.status()
                model = self.model[name]
                assert status.messages == len(model)
                assert status.unseen == sum(1 for entry in model.values() if not entry[1] & Flag.SEEN)
                assert status.size == sum(len(entry[0]) for entry in model.values())
                assert status.uid_next == self.uid_next[name], (status.uid_next, self.uid_next[name])
                if name in self.expected_change:
                    assert status.highest_modseq > self.modseq[name], (name, status, self.modseq[name])
                else:
                    assert status.highest_modseq == self.modseq[name], (name, status, self.modseq[name])
                for record in records:
                    assert record.modseq <= status.highest_modseq
                    assert box.read(record.uid) == model[record.uid][0]
                self.modseq[name] = status.highest_modseq
            self.expected_change.clear()

    return StoreMachine
