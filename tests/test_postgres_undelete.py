"""``[server] delete_mode = delayed`` on the PostgreSQL store: test_backup's undelete tests again,
and the purge by ``cyrusmail-admin expire`` after ``delete_retention``; the kept mailbox is a row
of the shared database, so any server can put it back.  And test_backup's backup and restore
tests on that store (each ``server()`` a database of its own)."""

from __future__ import annotations

import time

from twisted.trial import unittest

from tests import postgres_support
from tests import test_backup as backup


class OnPostgres:
    """ArchiveCase's servers on the PostgreSQL store (a schema of their own), deleted mailboxes kept."""

    skip = postgres_support.skip_reason()

    def server(self, name: str, mode: str = "delayed", extra: str = ""):
        self.dsn, schema = postgres_support.fresh_dsn()
        self.addCleanup(postgres_support.drop_schema, schema)
        config = self.folder / f"{name}.conf"
        config.write_text(f"[server]\ndata = {self.folder / name}\nhostname = mail.example.org\n"
                          f"delete_mode = {mode}\ndelete_retention = 3d\n{extra}"
                          f"[store]\nbackend = postgresql\ndsn = {self.dsn}\n")
        self.ok(config, "user", "add", "alice", "--password", "secret")
        return config


class PostgresBackupRestoreTests(OnPostgres, backup.BackupRestoreTests):
    pass


class PostgresUndeleteTests(OnPostgres, backup.UndeleteTests):
    def test_another_server_puts_it_back_and_mailbox_delete_says_it_is_kept(self):
        config = self.server("one")
        other = self.folder / "two.conf"  # a second server on the same database
        other.write_text(config.read_text().replace(str(self.folder / "one"), str(self.folder / "two")))
        client = self.imap(config)
        self.fill(client)
        before = self.seen_through_imap(client, ["Work/2024"])
        self.assertIn("(kept for undelete for 3 days)", self.ok(config, "mailbox", "delete", "alice/Work/2024"))
        self.assertIn("Work/2024\tdeleted ", self.ok(other, "undelete", "alice"))
        self.assertEqual(client.command('L LIST "" "Work/*"'), ["L OK LIST completed"])
        self.assertIn("undeleted alice/Work/2024: 2 messages", self.ok(other, "undelete", "alice/Work/2024"))
        self.assertEqual(self.seen_through_imap(client, ["Work/2024"]), before)
        self.assertIn('"Work/2024"', "\n".join(client.command('L LSUB "" "Work/*"')))

    def test_a_selected_mailbox_deleted_elsewhere_is_gone_for_the_session(self):
        config = self.server("one")
        client = self.imap(config)
        self.fill(client)
        client.command("S SELECT Work/2024")
        self.ok(config, "mailbox", "delete", "alice/Work/2024")
        self.assertNotIn("S OK", "\n".join(client.command("S SELECT Work/2024")))


    def test_a_mailbox_with_children_leaves_a_node_that_undelete_fills_again(self):
        config = self.server("one")
        client = self.imap(config)
        self.fill(client)
        data = b"Subject: in Work\r\n\r\nHello\r\n"
        client.send(f"A APPEND Work {{{len(data)}}}\r\n")
        client.send(data + b"\r\n")
        before = self.seen_through_imap(client, ["Work"])
        client.command("U SELECT INBOX")
        self.assertIn("D OK DELETE completed", client.command("D DELETE Work"))
        self.assertIn('* LIST (\\Noselect \\HasChildren) "/" "Work"', client.command('L LIST "" Work'))
        self.assertIn("undeleted alice/Work: 1 messages", self.ok(config, "undelete", "alice/Work"))
        self.assertEqual(self.seen_through_imap(client, ["Work"]), before)
        self.assertEqual(len(self.seen_through_imap(client, ["Work/2024"])["Work/2024"][2]), 2)


class PostgresExpireKeptTests(OnPostgres, backup.ArchiveCase, unittest.TestCase):
    def test_deleted_mailboxes_go_after_their_retention(self):
        config = self.work_deleted()
        from psycopg import connect

        with connect(self.dsn, autocommit=True) as db:  # Work/2024 deleted three days ago
            db.execute("UPDATE kept_mailboxes SET deleted = %s WHERE name = 'Work/2024'", (time.time() - 3 * 86400,))
            (refs,) = db.execute("SELECT sum(refs) FROM blobs").fetchone()
        self.assertIn("1 deleted mailboxes past retention would be removed", self.ok(config, "expire", "--dry-run"))
        self.assertIn("0 messages expired, 1 deleted mailboxes past retention removed", self.ok(config, "expire"))
        self.assertIn("1 deleted mailboxes of alice kept", self.ok(config, "undelete", "alice"))
        with connect(self.dsn, autocommit=True) as db:  # its two messages no longer hold their bodies
            self.assertEqual(db.execute("SELECT sum(refs) FROM blobs").fetchone(), (refs - 2,))

    def test_deleting_the_user_removes_the_kept_mailboxes(self):
        config = self.server("one")
        client = self.imap(config)
        self.fill(client)
        client.command("D DELETE Work/2024")
        client.server.connectionLost(None)
        self.ok(config, "user", "delete", "alice", "--yes")
        from psycopg import connect

        with connect(self.dsn, autocommit=True) as db:
            self.assertEqual(db.execute("SELECT count(*) FROM kept_mailboxes").fetchone(), (0,))
            self.assertEqual(db.execute("SELECT count(*) FROM blobs").fetchone(), (0,))
