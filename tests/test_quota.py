"""Quotas (RFC 9208): limits checked in the inserting transaction, usage derived from the index."""

from __future__ import annotations

import threading

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from twisted.trial import unittest

from cyrusmail import quota
from cyrusmail.store.errors import (
    MailboxExists,
    MailboxNotFound,
    NoSuchQuotaRoot,
    OverQuota,
    PermissionDenied,
)
from cyrusmail.store.records import Flag, FlagChange
from tests.acl_support import TwoUsers


def message(size: int) -> bytes:
    header = b"Subject: q\r\n\r\n"
    return header + b"x" * max(0, size - len(header))


class QuotaTests(TwoUsers, unittest.TestCase):
    def limit(self, root: str, **limits: int) -> None:
        self.root_account.set_quota(root, limits)

    def test_storage_limit_on_append_and_delivery(self):
        self.limit("user/alice", STORAGE=2)
        inbox = self.alice_account.mailboxes.open("INBOX")
        inbox.append(message(1500))
        error = self.assertRaises(OverQuota, inbox.append, message(1000))
        self.assertFalse(error.permanent)
        error = self.assertRaises(OverQuota, self.realm.delivery_target("alice").append, message(3000))
        self.assertTrue(error.permanent)
        inbox.append(message(500))
        self.assertEqual(self.alice_account.quota("user/alice").resources["STORAGE"], (2, 2))

    def test_message_limit(self):
        self.limit("user/alice", MESSAGE=2)
        inbox = self.alice_account.mailboxes.open("INBOX")
        inbox.append_many([(message(10), None, (), None)] * 2)
        self.assertRaises(OverQuota, inbox.append, message(10))
        inbox.set_flags([record.uid for record in inbox.messages()], FlagChange.ADD, Flag.DELETED)
        inbox.expunge()
        inbox.append(message(10))
        self.assertEqual(self.alice_account.quota("user/alice").resources["MESSAGE"], (1, 2))

    def test_multiappend_is_all_or_nothing(self):
        self.limit("user/alice", MESSAGE=2)
        inbox = self.alice_account.mailboxes.open("INBOX")
        self.assertRaises(OverQuota, inbox.append_many, [(message(10), None, (), None)] * 3)
        self.assertEqual(inbox.messages(), [])

    def test_mailbox_limit_on_create(self):
        self.limit("user/alice", MAILBOX=4)  # INBOX, Sent, Trash already
        self.alice_account.mailboxes.create("One")
        self.assertRaises(OverQuota, self.alice_account.mailboxes.create, "Two")
        self.assertRaises(OverQuota, self.alice_account.mailboxes.create, "One/Two/Three")
        self.assertFalse(self.alice_account.mailboxes.exists("One/Two"))

    def test_copy_and_move_across_roots(self):
        self.limit("user/bob", STORAGE=1)
        self.alice_account.set_acl("INBOX", "bob", "lrstei")
        uid = self.alice_account.mailboxes.open("INBOX").append(message(800))
        source = self.bob_account.mailboxes.open("Other Users/alice/INBOX")
        inbox = self.bob_account.mailboxes.open("INBOX")
        source.copy([uid], inbox)
        self.assertRaises(OverQuota, source.copy, [uid], inbox)
        self.assertRaises(OverQuota, source.move, [uid], inbox)
        self.assertEqual(len(source.messages()), 1)

    def test_move_within_a_full_root(self):
        self.limit("user/alice", MESSAGE=1)
        inbox = self.alice_account.mailboxes.open("INBOX")
        uid = inbox.append(message(10))
        inbox.move([uid], self.alice_account.mailboxes.open("Trash"))
        self.assertEqual(self.alice_account.quota("user/alice").resources["MESSAGE"], (1, 1))

    def test_shared_roots_and_rename_across_them(self):
        for name in ("a", "b"):
            self.root_account.mailboxes.create(f"Shared Folders/{name}")
        self.root_account.mailboxes.create("Shared Folders/a/big")
        self.root_account.mailboxes.open("Shared Folders/a/big").append(message(2000))
        self.limit("shared/b", STORAGE=1)
        self.assertRaises(OverQuota, self.root_account.mailboxes.rename, "Shared Folders/a/big",
                          "Shared Folders/b/big")
        self.assertTrue(self.root_account.mailboxes.exists("Shared Folders/a/big"))
        self.limit("shared/b", STORAGE=2)
        self.root_account.mailboxes.rename("Shared Folders/a/big", "Shared Folders/b/big")
        self.assertEqual(self.root_account.quota("shared/b").resources["STORAGE"], (2, 2))
        self.assertEqual(self.root_account.quota_roots("Shared Folders/b/big"), ["shared/b"])
        self.assertEqual(self.root_account.quota_roots("Shared Folders/a"), [])

    def test_a_renamed_root_follows_its_mailbox(self):
        self.root_account.mailboxes.create("Shared Folders/a")
        self.limit("shared/a", MESSAGE=5)
        self.root_account.mailboxes.rename("Shared Folders/a", "Shared Folders/c")
        self.assertEqual(self.root_account.quota_roots("Shared Folders/c"), ["shared/c"])

    def test_setquota_is_for_admins(self):
        self.assertRaises(PermissionDenied, self.alice_account.set_quota, "user/alice", {"STORAGE": 10})
        self.assertRaises(ValueError, self.root_account.set_quota, "user/alice", {"FOO": 10})
        self.assertRaises(NoSuchQuotaRoot, self.root_account.set_quota, "user/nobody", {"STORAGE": 10})
        self.assertRaises(NoSuchQuotaRoot, self.root_account.set_quota, "shared/none", {"STORAGE": 10})
        self.assertRaises(NoSuchQuotaRoot, self.root_account.set_quota, "elsewhere", {"STORAGE": 10})

    def test_getquota_and_getquotaroot(self):
        self.assertEqual(self.alice_account.quota_roots("INBOX"), [])
        self.assertRaises(NoSuchQuotaRoot, self.alice_account.quota, "user/alice")
        self.limit("user/alice", STORAGE=100, MESSAGE=10)
        self.assertEqual(self.alice_account.quota_roots("Sent"), ["user/alice"])
        report = self.alice_account.quota("user/alice")
        self.assertEqual(report.resources, {"STORAGE": (0, 100), "MESSAGE": (0, 10)})
        self.limit("user/bob", STORAGE=100)
        self.assertRaises(NoSuchQuotaRoot, self.alice_account.quota, "user/bob")
        self.assertRaises(MailboxNotFound, self.alice_account.quota_roots, "Other Users/bob/INBOX")
        self.root_account.quota("user/bob")
        self.limit("user/alice")
        self.assertEqual(self.alice_account.quota_roots("INBOX"), [])

    def test_warnings_past_the_percentage(self):
        self.limit("user/alice", MESSAGE=10)
        inbox = self.alice_account.mailboxes.open("INBOX")
        inbox.append_many([(message(10), None, (), None)] * 8)
        self.assertEqual(self.alice_account.quota_warnings(), [])
        inbox.append(message(10))
        self.assertEqual(self.alice_account.quota_warnings(), ["Your mailbox is 90% full: MESSAGE 9 of 10"])

    def test_recount_from_files_matches(self):
        self.limit("user/alice", STORAGE=100)
        self.alice_account.mailboxes.open("INBOX").append(message(3000))
        self.assertEqual(quota.recount(self.store, "user/alice"), self.alice_account.mailboxes.personal.quota_usage(""))

    def test_concurrent_deliveries_never_pass_the_limit(self):
        """Two store objects (as two processes) racing for the same root."""
        self.limit("user/alice", MESSAGE=25)
        stores = [self.another_store() for _ in range(2)]
        for store in stores:
            self.addCleanup(store.close)
        outcomes: list[str] = []

        def deliver(store):
            inbox = store.mailboxes("alice").open("INBOX")
            for _ in range(20):
                try:
                    inbox.append(message(50))
                    outcomes.append("ok")
                except OverQuota:
                    outcomes.append("full")

        threads = [threading.Thread(target=deliver, args=(store,)) for store in stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(outcomes.count("ok"), 25)
        self.assertEqual(len(self.alice_account.mailboxes.open("INBOX").messages()), 25)


# -- the state machine ----------------------------------------------------------------

ROOTS = ("a", "b")
LIMITS = {"STORAGE": 4, "MESSAGE": 6, "MAILBOX": 4}  # per root; STORAGE in KiB
SIZES = st.sampled_from([200, 700, 1500, 5000])


class QuotaMachine(RuleBasedStateMachine):
    """Random appends, copies, moves, expunges, deletes and renames over two shared roots.

    After every step: each root's usage (from the index counters) equals
    what its message files add up to, and no limit is passed.
    """

    def __init__(self, case: TwoUsers):
        super().__init__()
        self.case = case
        self.store = case.store
        self.admin = case.root_account
        self.boxes = self.admin.mailboxes
        self.serial = getattr(case, "_serial", 0)
        for root in ROOTS:
            name = f"Shared Folders/{root}{self.serial}"
            self.boxes.create(name)
            self.admin.set_quota(f"shared/{root}{self.serial}", dict(LIMITS))
        case._serial = self.serial + 1
        self.counter = 0

    def root_path(self, root: str) -> str:
        return f"Shared Folders/{root}{self.serial}"

    def mailboxes(self) -> list[str]:
        return [listing.name for root in ROOTS for listing in self.boxes.list(self.root_path(root) + "*")]

    def pick(self, data, names=None) -> str:
        return data.draw(st.sampled_from(sorted(names or self.mailboxes())))

    @rule(data=st.data(), size=SIZES, seen=st.booleans())
    def append(self, data, size, seen):
        try:
            self.boxes.open(self.pick(data)).append(message(size), Flag.SEEN if seen else None)
        except OverQuota:
            pass

    @rule(data=st.data(), moving=st.booleans())
    def copy_or_move(self, data, moving):
        source = self.boxes.open(self.pick(data))
        target = self.boxes.open(self.pick(data))
        uids = [record.uid for record in source.messages()]
        if not uids:
            return
        chosen = data.draw(st.lists(st.sampled_from(uids), min_size=1, max_size=3, unique=True))
        try:
            (source.move if moving else source.copy)(chosen, target)
        except OverQuota:
            pass

    @rule(data=st.data())
    def expunge(self, data):
        mailbox = self.boxes.open(self.pick(data))
        uids = [record.uid for record in mailbox.messages()]
        if uids:
            chosen = data.draw(st.lists(st.sampled_from(uids), min_size=1, unique=True))
            mailbox.set_flags(chosen, FlagChange.ADD, Flag.DELETED)
            mailbox.expunge()

    @rule(data=st.data(), root=st.sampled_from(ROOTS))
    def create(self, data, root):
        self.counter += 1
        try:
            self.boxes.create(f"{self.root_path(root)}/m{self.counter}")
        except OverQuota:
            pass

    @precondition(lambda self: len(self.mailboxes()) > len(ROOTS))
    @rule(data=st.data())
    def delete(self, data):
        tops = {self.root_path(root) for root in ROOTS}
        name = self.pick(data, [name for name in self.mailboxes() if name not in tops])
        try:
            self.boxes.delete(name)
        except MailboxNotFound:
            pass

    @precondition(lambda self: len(self.mailboxes()) > len(ROOTS))
    @rule(data=st.data(), root=st.sampled_from(ROOTS))
    def rename(self, data, root):
        tops = {self.root_path(root) for root in ROOTS}
        name = self.pick(data, [name for name in self.mailboxes() if name not in tops])
        self.counter += 1
        try:
            self.boxes.rename(name, f"{self.root_path(root)}/r{self.counter}")
        except (OverQuota, MailboxExists):
            pass

    @invariant()
    def usage_is_exact_and_within_limits(self):
        for root in ROOTS:
            root_name = f"shared/{root}{self.serial}"
            report = quota.report(self.store, root_name)
            files = quota.recount(self.store, root_name)
            index = self.store.shared_mailboxes().quota_usage(f"{root}{self.serial}")
            assert index == files, (root_name, index, files)
            assert files.storage_bytes <= LIMITS["STORAGE"] * 1024, (root_name, files)
            assert files.messages <= LIMITS["MESSAGE"], (root_name, files)
            assert files.mailboxes <= LIMITS["MAILBOX"], (root_name, files)
            assert report.resources["MESSAGE"][0] == files.messages


class QuotaStateMachineTests(TwoUsers, unittest.TestCase):
    def test_usage_stays_exact(self):
        run_state_machine_as_test(
            lambda: QuotaMachine(self),
            settings=settings(max_examples=25, stateful_step_count=30, deadline=None,
                              suppress_health_check=list(HealthCheck)),
        )
