"""The store conformance suite bound to the embedded maildir+SQLite backend."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import tempfile

from twisted.trial import unittest

from cyrusmail.store.maildir import MaildirStore
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
