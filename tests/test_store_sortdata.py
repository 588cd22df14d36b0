"""The SORT and THREAD keys in the maildir index: made at delivery, made from the
MIME cache (never the message file) for an index that lacks them, dropped with
their message, copied with it, and rebuilt by reconstruct."""

from __future__ import annotations

import sqlite3

from twisted.trial.unittest import TestCase

from cyrusmail.store.maildir import MaildirStore
from cyrusmail.store.maildir.reconstruct import reconstruct
from cyrusmail.store.maildir.schema import SORTDATA_VERSION
from cyrusmail.store.records import Flag, FlagChange


def header_message(header: str, body: str = "body") -> bytes:
    return (header.strip("\n").replace("\n", "\r\n") + "\r\n\r\n" + body + "\r\n").encode()


class StoredKeysTests(TestCase):
    """The keys are made at delivery and kept in the index; an index without them
    gets them from the MIME cache, never from the message file."""

    def setUp(self) -> None:
        self.store = MaildirStore(self.mktemp())
        self.addCleanup(self.store.close)
        self.store.provision("alice")
        self.inbox = self.store.mailboxes("alice").open("INBOX")
        self.uids = [self.inbox.append(header_message(f"Subject: Re: topic {n}\nFrom: a{n}@x")) for n in range(3)]

    def subjects(self, uids: list[int], inbox=None) -> dict[int, str]:
        return dict((inbox or self.inbox).sort_rows(uids, ("subject",)))

    def rows(self) -> int:
        return self.store.index("alice").db.execute("SELECT count(*) FROM sortdata").fetchone()[0]

    def test_made_at_delivery(self) -> None:
        self.assertEqual(self.rows(), 3)
        rows = self.inbox.sort_rows(self.uids, ("subject", "reply", "from_"))
        self.assertEqual(rows, [(uid, f"TOPIC {n}", 1, f"A{n}") for n, uid in enumerate(self.uids)])

    def test_old_index_gets_them_from_the_cache_once(self) -> None:
        with self.store.index("alice").write() as db:
            db.execute("DELETE FROM sortdata")
        for uid in self.uids:  # the files are not read: the MIME cache has the header
            self.inbox.path(self.inbox.record(uid)).unlink()
        self.assertEqual(list(self.subjects(self.uids).values()), ["TOPIC 0", "TOPIC 1", "TOPIC 2"])
        self.assertEqual(self.rows(), 3)  # kept for the next SORT

    def test_index_without_mime_cache_parses_the_file_once(self) -> None:
        with self.store.index("alice").write() as db:
            db.execute("DELETE FROM sortdata")
            db.execute("DELETE FROM mime")
        self.assertEqual(self.subjects(self.uids[:1]), {self.uids[0]: "TOPIC 0"})
        (count,) = self.store.index("alice").db.execute("SELECT count(*) FROM mime").fetchone()
        self.assertEqual((count, self.rows()), (1, 3 - 2))

    def test_other_rules_drop_the_keys(self) -> None:
        """An index whose keys were made by other rules (SORTDATA_VERSION) has them dropped on opening."""
        with self.store.index("alice").write() as db:
            db.execute("UPDATE meta SET value = ? WHERE key = 'sortdata'", (SORTDATA_VERSION - 1,))
        self.store.close()
        store = MaildirStore(self.store.root)
        self.addCleanup(store.close)
        self.assertEqual(store.index("alice").db.execute("SELECT count(*) FROM sortdata").fetchone()[0], 0)
        inbox = store.mailboxes("alice").open("INBOX")
        self.assertEqual(self.subjects(self.uids, inbox)[self.uids[0]], "TOPIC 0")

    def test_expunge_and_copy(self) -> None:
        other = self.store.mailboxes("alice")
        other.create("Other")
        target = other.open("Other")
        pairs = self.inbox.copy(self.uids[:2], target)
        self.assertEqual(self.subjects([new for _, new in pairs], target)[pairs[1][1]], "TOPIC 1")
        self.inbox.set_flags(self.uids[:1], FlagChange.ADD, Flag.DELETED)
        self.inbox.expunge()
        self.assertEqual(self.rows(), 4)
        self.assertEqual(set(self.subjects(self.uids)), set(self.uids[1:]))

    def test_reconstruct_rebuilds_them(self) -> None:
        with self.store.index("alice").write() as db:
            db.execute("DELETE FROM sortdata")
            db.execute("DELETE FROM mime WHERE uid = ?", (self.uids[0],))
        report = reconstruct(self.store, "alice")
        self.assertEqual(self.rows(), 3)
        self.assertIn("INBOX: UID 1 had no MIME cache; rebuilt", report.fixes)
        db = sqlite3.connect(self.store.user_dir("alice") / "index.sqlite")
        self.addCleanup(db.close)
        self.assertEqual(db.execute("SELECT subject FROM sortdata ORDER BY uid").fetchall(),
                         [("TOPIC 0",), ("TOPIC 1",), ("TOPIC 2",)])
