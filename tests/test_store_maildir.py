"""The store conformance suite bound to the embedded maildir+SQLite backend."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import tempfile

from twisted.trial import unittest

from cyrusmail.store.maildir import MaildirStore
from cyrusmail.store.records import Flag
from tests.store_conformance import MESSAGE, USER, StoreConformanceMixin


def summary_analyser(data: bytes) -> bytes:
    """A stand-in for the MIME parser: the header block and a digest of the bytes."""
    header, _, _ = data.partition(b"\r\n\r\n")
    return header.upper() + b"|" + hashlib.sha1(data).hexdigest().encode()


class _TempFolders:
    """Folders outside the checkout, so that pytest runs leave it clean."""

    def mktemp(self) -> str:
        root = tempfile.mkdtemp(prefix="cyrusmail-store-")
        self.addCleanup(shutil.rmtree, root, True)
        return os.path.join(root, "folder")


class MaildirStoreTests(_TempFolders, StoreConformanceMixin, unittest.TestCase):
    """The conformance suite with no MIME analyser."""

    def make_store(self, path: str) -> MaildirStore:
        return MaildirStore(path, analyser=None)

    def subprocess_store_code(self) -> str:
        return "from cyrusmail.store.maildir import MaildirStore\nstore = MaildirStore(DATA)"

    def test_append_returns_after_file_and_index_row_exist(self):
        """Durability, as the backend lays it out: the file and its index row."""
        uid = self.inbox.append(MESSAGE)
        guid = self.inbox.record(uid).guid
        index = self.data / "users" / USER / "index.sqlite"
        reader = sqlite3.connect(index)
        self.addCleanup(reader.close)
        row = reader.execute(
            "SELECT m.id, x.size FROM messages x JOIN mailboxes m ON m.id = x.mailbox_id"
            " WHERE m.name = 'INBOX' AND x.uid = ? AND x.guid = ?", (uid, guid)
        ).fetchone()
        self.assertEqual(row[1], len(MESSAGE))
        path = self.data / "users" / USER / "mail" / str(row[0]) / f"{uid}.{guid}"
        self.assertEqual(path.read_bytes(), MESSAGE)

    def test_staging_folder_is_left_empty(self):
        self.inbox.append(MESSAGE)
        self.inbox.append_many([(MESSAGE, None, (), None)] * 2)
        self.assertEqual(list((self.data / "tmp").iterdir()), [])


class ExpungeHistoryTests(_TempFolders, unittest.TestCase):
    """The expunged-UID history is bounded per mailbox, and says when it is cut short."""

    def setUp(self):
        super().setUp()
        self.store = MaildirStore(self.mktemp(), analyser=None, expunged_history=3)
        self.addCleanup(self.store.close)
        self.store.provision(USER)
        self.inbox = self.store.mailboxes(USER).open("INBOX")

    def expunge(self, count: int) -> tuple[list[int], int]:
        """Expunge ``count`` new messages at once; their UIDs and the modseq before."""
        before = self.inbox.status().highest_modseq
        uids = [self.inbox.append(MESSAGE, Flag.DELETED) for _ in range(count)]
        self.inbox.expunge(uids)
        return uids, before

    def test_history_within_the_bound_is_exact(self):
        first, before = self.expunge(2)
        second, _ = self.expunge(1)
        self.assertEqual(self.inbox.expunged_since(before), first + second)
        self.assertTrue(self.inbox.changes_since(before).complete)

    def test_past_the_bound_older_modseqs_are_answered_none(self):
        _, before_first = self.expunge(2)
        second, before_second = self.expunge(2)  # four kept would pass the bound: the first expunge goes
        self.assertIsNone(self.inbox.expunged_since(before_first))
        changes = self.inbox.changes_since(before_first)
        self.assertFalse(changes.complete)
        self.assertEqual(self.inbox.expunged_since(before_second), second)
        self.assertTrue(self.inbox.changes_since(before_second).complete)

    def test_one_expunge_larger_than_the_bound_keeps_nothing_and_says_so(self):
        _, before = self.expunge(5)
        self.assertIsNone(self.inbox.expunged_since(before))
        self.assertEqual(self.inbox.expunged_since(self.inbox.status().highest_modseq), [])

    def test_an_index_from_before_the_bound_counts_its_rows_once(self):
        unbounded = MaildirStore(self.store.root, analyser=None)
        self.addCleanup(unbounded.close)
        old = unbounded.mailboxes(USER).open("INBOX")
        before = old.status().highest_modseq
        uids = [old.append(MESSAGE, Flag.DELETED) for _ in range(3)]
        old.expunge(uids)
        with old.index.write() as db:  # as an index made before the floor table
            db.execute("DELETE FROM expunged_floor")
        self.expunge(1)
        self.assertIsNone(self.inbox.expunged_since(before))


class MaildirStoreWithAnalyserTests(MaildirStoreTests):
    """The conformance suite again, with a MIME analyser filling the cache slot."""

    analyser = staticmethod(summary_analyser)
    state_machine_examples = 10

    def make_store(self, path: str) -> MaildirStore:
        return MaildirStore(path, analyser=summary_analyser)

    def test_cache_prefilter_finds_words_in_any_case_and_keeps_uncached_messages(self):
        first = self.inbox.append(b"Subject: Quarterly Report\r\n\r\nx\r\n")
        second = self.inbox.append(b"Subject: lunch\r\n\r\nx\r\n")
        third = self.inbox.append(b"Subject: lunch again\r\n\r\nx\r\n")
        with self.inbox.index.write() as db:  # as in an index from before the MIME layer
            db.execute("DELETE FROM mime WHERE uid = ?", (third,))
        found = self.inbox.cache_may_contain([b"QUARTERLY", b"report"])
        self.assertEqual(found, {first, third})
        self.assertEqual(self.inbox.cache_may_contain([b"quarterly"], any_of=[b"LUNCH"]), set(found) | {second})
        self.assertEqual(self.inbox.cache_may_contain([b"quarterly_report"]), {third})  # no wildcards
        self.assertEqual(self.inbox.cache_may_contain([b"quarterly%report"]), {third})

    def test_records_of_unordered_uids_are_exactly_those(self):
        uids = [self.inbox.append(b"Subject: %d\r\n\r\n" % n) for n in range(6)]
        for asked in ([uids[0], uids[4], uids[2]], [uids[3], uids[1], uids[2]], uids[::-1], [uids[1], uids[1]]):
            with self.subTest(asked=asked):
                self.assertEqual([r.uid for r in self.inbox.records(asked)], sorted(set(asked)))
                self.assertEqual(sorted(self.inbox.mime_caches(asked)), sorted(set(asked)))
