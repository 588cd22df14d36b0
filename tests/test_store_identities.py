"""What the store keeps for OBJECTID, SAVEDATE and PREVIEW, and the schema 2 migration.

MAILBOXID (RFC 8474 4): one per mailbox, kept across RENAME, new when a
name is made again.  EMAILID (5.1): shared by a message and its copies.
Save dates (RFC 8514): when a message was put in this mailbox.  Previews
(RFC 8970): made with the MIME cache at delivery, or once on first request
for a message stored before, and kept.
"""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

from twisted.trial import unittest

from cyrusmail.store.maildir.store import MaildirStore
from cyrusmail.store.records import Flag

USER = "alice"
OBJECT_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")


def message(subject: str, body: str = "Hello there.\r\n") -> bytes:
    return f"From: bob@example.org\r\nSubject: {subject}\r\n\r\n{body}".encode()


class _Store(unittest.TestCase):
    def setUp(self) -> None:
        self.data = Path(self.mktemp())
        self.store = MaildirStore(self.data)
        self.addCleanup(self.store.close)
        self.store.provision(USER, {"Trash": "trash"})
        self.tree = self.store.mailboxes(USER)


class MailboxIdTests(_Store):
    def test_every_mailbox_has_its_own_valid_id(self) -> None:
        made = self.tree.create("Work")
        ids = {self.tree.open(name).object_id for name in ("INBOX", "Trash", "Work")}
        self.assertEqual(len(ids), 3)
        self.assertIn(made, ids)
        for object_id in ids:
            self.assertRegex(object_id, OBJECT_ID)

    def test_kept_across_rename_with_children(self) -> None:
        self.tree.create("A/B")
        before = (self.tree.open("A").object_id, self.tree.open("A/B").object_id)
        self.tree.rename("A", "Z")
        self.assertEqual((self.tree.open("Z").object_id, self.tree.open("Z/B").object_id), before)

    def test_new_after_delete_and_create(self) -> None:
        first = self.tree.create("Gone")
        self.tree.delete("Gone")
        self.assertNotEqual(self.tree.create("Gone"), first)

    def test_new_when_a_noselect_node_is_made_a_mailbox_again(self) -> None:
        first = self.tree.create("P")
        self.tree.create("P/child")
        self.tree.delete("P")  # has a child: stays as a \Noselect node
        second = self.tree.create("P")
        self.assertNotEqual(second, first)
        self.assertEqual(self.tree.open("P").object_id, second)

    def test_reconstruct_keeps_it(self) -> None:
        from cyrusmail.store.maildir.reconstruct import reconstruct

        kept = self.tree.create("Kept")
        index = self.data / "users" / USER / "index.sqlite"
        self.store.close()
        index.unlink()
        store = MaildirStore(self.data)
        self.addCleanup(store.close)
        reconstruct(store, USER)
        self.assertEqual(store.mailboxes(USER).open("Kept").object_id, kept)


class EmailIdAndSaveDateTests(_Store):
    def test_copies_and_moves_share_the_email_id_new_messages_do_not(self) -> None:
        inbox, trash = self.tree.open("INBOX"), self.tree.open("Trash")
        first, second = inbox.append(message("one")), inbox.append(message("one"))
        original = inbox.record(first)
        self.assertNotEqual(original.email_id, inbox.record(second).email_id)  # same bytes, new message
        ((_, copied),) = inbox.copy([first], trash)
        self.assertEqual(trash.record(copied).email_id, original.email_id)
        ((_, moved),) = trash.move([copied], inbox)
        self.assertEqual(inbox.record(moved).email_id, original.email_id)
        self.assertNotEqual(inbox.record(moved).guid, original.guid)

    def test_save_date_is_when_saved_here_not_the_internal_date(self) -> None:
        inbox, trash = self.tree.open("INBOX"), self.tree.open("Trash")
        before = time.time()
        uid = inbox.append(message("old"), internal_date=86400.0)
        record = inbox.record(uid)
        self.assertEqual(record.internal_date, 86400.0)
        self.assertGreaterEqual(record.save_date, before)
        ((_, copied),) = inbox.copy([uid], trash)
        copy = trash.record(copied)
        self.assertEqual(copy.internal_date, 86400.0)
        self.assertGreaterEqual(copy.save_date, record.save_date)

    def test_flag_changes_keep_both(self) -> None:
        inbox = self.tree.open("INBOX")
        uid = inbox.append(message("x"))
        record = inbox.record(uid)
        from cyrusmail.store.records import FlagChange

        (changed,), _ = inbox.set_flags([uid], FlagChange.ADD, Flag.SEEN)
        self.assertEqual((changed.save_date, changed.email_id), (record.save_date, record.email_id))


class PreviewTests(_Store):
    def test_made_at_delivery(self) -> None:
        inbox = self.tree.open("INBOX")
        uid = inbox.append(message("p", "Dear  Alice,\r\n\r\n  see\tyou.\r\n"))
        self.assertEqual(inbox._stored_previews([uid]), {uid: "Dear Alice, see you."})
        self.assertEqual(inbox.previews([uid]), {uid: "Dear Alice, see you."})

    def test_copied_with_the_message(self) -> None:
        inbox, trash = self.tree.open("INBOX"), self.tree.open("Trash")
        uid = inbox.append(message("p", "Copied text\r\n"))
        ((_, copied),) = inbox.copy([uid], trash)
        self.assertEqual(trash._stored_previews([copied]), {copied: "Copied text"})

    def test_an_old_message_gets_one_on_first_request_and_keeps_it(self) -> None:
        inbox = self.tree.open("INBOX")
        uid = inbox.append(message("p", "Made later\r\n"))
        with inbox.index.write() as db:
            db.execute("UPDATE mime SET preview = NULL")  # as stored before previews were kept
        self.assertEqual(inbox.previews([uid]), {uid: "Made later"})
        inbox.path(inbox.record(uid)).unlink()  # the file is not read again for it
        self.assertEqual(inbox.previews([uid]), {uid: "Made later"})

    def test_none_without_a_mime_cache(self) -> None:
        store = MaildirStore(Path(self.mktemp()), analyser=lambda data: None)
        self.addCleanup(store.close)
        store.provision("bob", {})
        inbox = store.mailboxes("bob").open("INBOX")
        uid = inbox.append(message("p"))
        self.assertEqual(inbox.previews([uid]), {})


#: An index as schema 1 made it (the tables the migration changes, as they were).
SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE mailboxes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,
    selectable INTEGER NOT NULL DEFAULT 1, special_use TEXT, uidvalidity INTEGER NOT NULL,
    uidnext INTEGER NOT NULL DEFAULT 1, highestmodseq INTEGER NOT NULL DEFAULT 1,
    recent_uid INTEGER NOT NULL DEFAULT 0, messages INTEGER NOT NULL DEFAULT 0,
    unseen INTEGER NOT NULL DEFAULT 0, size INTEGER NOT NULL DEFAULT 0);
CREATE TABLE messages (
    mailbox_id INTEGER NOT NULL, uid INTEGER NOT NULL, guid TEXT NOT NULL, size INTEGER NOT NULL,
    internaldate REAL NOT NULL, flags INTEGER NOT NULL, keywords TEXT NOT NULL DEFAULT '',
    modseq INTEGER NOT NULL, PRIMARY KEY (mailbox_id, uid));
CREATE TABLE mime (mailbox_id INTEGER NOT NULL, uid INTEGER NOT NULL, cache BLOB NOT NULL,
    PRIMARY KEY (mailbox_id, uid));
INSERT INTO meta VALUES ('schema', 1);
INSERT INTO mailboxes (id, name, uidvalidity, uidnext, highestmodseq) VALUES (1, 'INBOX', 7, 2, 2);
INSERT INTO messages VALUES (1, 1, '0123456789abcdef0123456789abcdef', 40, 1000.0, 0, '', 2);
"""


class MigrationTests(unittest.TestCase):
    def test_a_schema_1_index_is_brought_up_to_date(self) -> None:
        data = Path(self.mktemp())
        folder = data / "users" / USER
        (folder / "mail" / "1").mkdir(parents=True)
        body = b"From: bob@example.org\r\nSubject: s\r\n\r\nOld text\r\n"
        (folder / "mail" / "1" / "1.0123456789abcdef0123456789abcdef").write_bytes(body)
        db = sqlite3.connect(folder / "index.sqlite")
        db.executescript(SCHEMA_1)
        db.close()
        store = MaildirStore(data)
        self.addCleanup(store.close)
        inbox = store.mailboxes(USER).open("INBOX")
        self.assertRegex(inbox.object_id, OBJECT_ID)
        record = inbox.record(1)
        self.assertEqual(record.save_date, 1000.0)  # unknown: the internal date stands for it
        self.assertEqual(record.email_id, "0123456789abcdef0123456789abcdef")  # its own guid
        self.assertEqual(inbox.previews([1]), {1: "Old text"})
        (version,) = inbox.index.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        self.assertEqual(version, 2)
        again = MaildirStore(data)  # opening again changes nothing
        self.addCleanup(again.close)
        self.assertEqual(again.mailboxes(USER).open("INBOX").object_id, inbox.object_id)
