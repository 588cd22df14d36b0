"""``cyrusmail-admin`` end to end: users, mailboxes, import and reconstruct."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from twisted.trial import unittest

from cyrusmail.admin.main import main
from cyrusmail.portal import MailRealm
from cyrusmail.store.maildir import MaildirStore
from cyrusmail.store.records import Flag
from tests.helpers import modes_not_private

MBOX = b"""From alice@example.org Mon Jan  3 10:00:00 2022
From: Alice <alice@example.org>
Subject: first
Status: RO

Hello.
>From the mbox escaping rules, this line had a '>' added.

From bob@example.org Tue Jan  4 11:30:00 2022
From: Bob <bob@example.org>
Subject: second
Status: O
X-Status: AF

Reply.
"""


class AdminFileModeTests(unittest.TestCase):
    def test_what_the_admin_tool_makes_is_private_whatever_the_umask(self):
        folder = Path(self.mktemp()).resolve()
        folder.mkdir()
        config = folder / "c.conf"
        config.write_text(f"[server]\ndata = {folder / 'data'}\nhostname = mail.example.org\n")
        mbox = folder / "in.mbox"
        mbox.write_bytes(MBOX)
        previous = os.umask(0)
        self.addCleanup(os.umask, previous)
        for argv in (["user", "add", "alice", "--password", "pw"], ["import", str(mbox), "alice/Archive"],
                     ["acl", "set", "alice/Archive", "anyone", "lr"], ["queue", "flush"], ["reconstruct", "alice"]):
            self.assertEqual(main(["--config", str(config), *argv], io.StringIO(), io.StringIO()), 0, argv)
        self.assertEqual(os.umask(0), 0, "the caller's umask is given back")
        self.assertEqual(modes_not_private(folder / "data"), {})


class AdminCommands:
    """A mixin: a config over a temporary data folder, and ``cyrusmail-admin`` run in-process."""

    def setUp(self):
        self.folder = Path(self.mktemp()).resolve()
        self.folder.mkdir()
        self.data = self.folder / "data"
        self.config = self.folder / "c.conf"
        self.config.write_text(f"[server]\ndata = {self.data}\nhostname = mail.example.org\n")

    def admin(self, *argv: str, stdin: str = "") -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        old_stdin = sys.stdin
        sys.stdin = io.StringIO(stdin)
        try:
            code = main(["--config", str(self.config), *argv], out, err)
        finally:
            sys.stdin = old_stdin
        return code, out.getvalue(), err.getvalue()

    def ok(self, *argv: str, stdin: str = "") -> str:
        code, out, err = self.admin(*argv, stdin=stdin)
        self.assertEqual((code, err), (0, ""))
        return out

    def refused(self, *argv: str) -> str:
        code, _out, err = self.admin(*argv)
        self.assertEqual(code, 1)
        self.assertEqual(err.count("\n"), 1, err)
        return err

    def store(self) -> MaildirStore:
        store = MaildirStore(self.data, analyser=None)
        self.addCleanup(store.close)
        return store

    def realm(self) -> MailRealm:
        """The accounts a server over this data folder would hand out."""
        store = MaildirStore(self.data, analyser=None)
        realm = MailRealm(store, [], ["example.org"], {})
        self.addCleanup(store.close)
        self.addCleanup(realm.close)
        return realm


class AdminTests(AdminCommands, unittest.TestCase):
    def test_user_lifecycle(self):
        self.assertIn("user alice added", self.ok("user", "add", "Alice", stdin="pw\n"))
        self.assertIn("already exists", self.refused("user", "add", "alice", "--password", "x"))
        self.ok("user", "add", "bob@example.org", "--password", "pw2")
        self.assertEqual(self.ok("user", "list"), "alice\nbob@example.org\n")
        self.ok("user", "passwd", "alice", "--password", "new")
        self.assertIn("--yes", self.refused("user", "delete", "alice"))
        self.ok("user", "delete", "alice", "--yes")
        self.assertEqual(self.ok("user", "list"), "bob@example.org\n")
        self.assertFalse((self.data / "users" / "alice").exists())
        self.assertIn("no such user", self.refused("user", "passwd", "alice", "--password", "x"))
        self.assertIn("Invalid user name", self.refused("user", "add", "../etc", "--password", "x"))

    def test_empty_password_refused(self):
        self.assertIn("empty", self.refused("user", "add", "alice"))
        self.assertEqual(self.ok("user", "list"), "")

    def test_mailboxes(self):
        self.ok("user", "add", "alice", "--password", "pw")
        listing = self.ok("mailbox", "list", "alice")
        self.assertIn("INBOX\t0 messages", listing)
        self.assertIn("Sent\t0 messages\t0 unseen\t0 bytes\t\\Sent", listing)
        self.ok("mailbox", "create", "alice/Work/2024")
        self.ok("mailbox", "rename", "alice/Work", "alice/Jobs")
        listing = self.ok("mailbox", "list", "alice")
        self.assertIn("Jobs/2024\t", listing)
        self.assertNotIn("Work", listing)
        self.assertIn("already exists", self.refused("mailbox", "create", "alice/Jobs"))
        self.assertIn("does not exist", self.refused("mailbox", "delete", "alice/Nope"))
        self.assertIn("no such user", self.refused("mailbox", "create", "bob/x"))
        self.assertIn("'..'", self.refused("mailbox", "create", "alice/../../etc"))
        self.assertIn("INBOX cannot be deleted", self.refused("mailbox", "delete", "alice/inbox"))
        self.ok("mailbox", "delete", "alice/Jobs")
        self.assertIn("Jobs\t(no messages: hierarchy only)", self.ok("mailbox", "list", "alice"))

    def test_import_mbox_keeps_flags_dates_and_unescapes(self):
        self.ok("user", "add", "alice", "--password", "pw")
        mbox = self.folder / "old.mbox"
        mbox.write_bytes(MBOX)
        self.assertIn("imported 2 messages into alice/Archive", self.ok("import", str(mbox), "alice/Archive"))
        box = self.store().mailboxes("alice").open("Archive")
        first, second = box.messages()
        self.assertEqual(first.flags, Flag.SEEN)
        self.assertEqual(second.flags, Flag.ANSWERED | Flag.FLAGGED)
        body = box.read(first.uid)
        self.assertNotIn(b"Status:", body)
        self.assertIn(b"\r\nFrom the mbox escaping rules", body)
        self.assertNotIn(b"\n\n", body.replace(b"\r\n", b""))
        self.assertTrue(body.endswith(b"had a '>' added.\r\n"))
        self.assertTrue(box.read(second.uid).endswith(b"Reply.\r\n"))
        self.assertEqual(first.internal_date, __import__("time").mktime((2022, 1, 3, 10, 0, 0, 0, 0, -1)))

    def test_import_reference_mbox(self):
        self.ok("user", "add", "alice", "--password", "pw")
        mbox = self.folder / "gen.mbox"
        generator = Path(__file__).resolve().parents[2] / "shared" / "bench" / "reference" / "gen_mbox.py"
        if not generator.exists():
            raise unittest.SkipTest("../shared/bench/reference/gen_mbox.py is not here")
        subprocess.run([sys.executable, str(generator), str(mbox), "30", "7"], check=True, capture_output=True)
        self.assertIn("imported 30 messages", self.ok("import", str(mbox), "alice/INBOX"))
        self.assertEqual(self.store().mailboxes("alice").status("INBOX").messages, 30)

    def maildir(self, files: dict[str, bytes]) -> Path:
        """A maildir folder holding ``files`` (``cur/NAME`` or ``new/NAME``: contents)."""
        maildir = self.folder / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True)
        for name, data in files.items():
            (maildir / name).write_bytes(data)
        return maildir

    def test_import_maildir_keeps_flags(self):
        self.ok("user", "add", "alice", "--password", "pw")
        maildir = self.maildir({"cur/1600000000.1.host:2,RS": b"Subject: a\n\nread and replied\n",
                                "cur/1600000001.2.host:2,FT": b"Subject: b\n\nflagged and trashed\n",
                                "new/1600000002.3.host": b"Subject: c\n\nnew\n"})
        said = self.ok("import", str(maildir), "alice/INBOX")
        self.assertIn("imported 3 messages", said)
        self.assertNotIn("NUL", said)
        records = self.store().mailboxes("alice").open("INBOX").messages()
        self.assertEqual([r.flags for r in records],
                         [Flag.ANSWERED | Flag.SEEN, Flag.FLAGGED | Flag.DELETED, Flag(0)])
        self.assertEqual([r.internal_date for r in records], [1600000000, 1600000001, 1600000002])

    def test_import_removes_nul_octets_and_says_so(self):
        """No protocol may carry a NUL: the import takes them out rather than failing the whole mailbox."""
        self.ok("user", "add", "alice", "--password", "pw")
        maildir = self.maildir({"cur/1600000000.1.host:2,S": b"Subject: a\x00\n\nbro\x00ken\x00\n",
                                "cur/1600000001.2.host:2,S": b"Subject: b\n\nfine\n"})
        mbox = self.folder / "old.mbox"
        mbox.write_bytes(b"From a@b Mon Jan  3 10:00:00 2022\nSubject: c\n\nnul\x00\n")
        said = self.ok("import", str(maildir), "alice/INBOX")
        self.assertIn("imported 2 messages", said)
        self.assertIn("removed NUL octets from 1 of them", said)
        self.assertIn("removed NUL octets from 1 of them", self.ok("import", str(mbox), "alice/INBOX"))
        box = self.store().mailboxes("alice").open("INBOX")
        self.assertEqual([box.read(r.uid) for r in box.messages()],
                         [b"Subject: a\r\n\r\nbroken\r\n", b"Subject: b\r\n\r\nfine\r\n",
                          b"Subject: c\r\n\r\nnul\r\n"])

    def test_import_of_something_else_changes_nothing(self):
        self.ok("user", "add", "alice", "--password", "pw")
        junk = self.folder / "notes.txt"
        junk.write_bytes(b"just some notes\n")
        self.assertIn("not an mbox", self.refused("import", str(junk), "alice/INBOX"))
        self.assertIn("does not exist", self.refused("import", str(self.folder / "nope"), "alice/INBOX"))
        self.assertIn("does not exist", self.refused("import", str(junk), "alice/Nope"))
        self.assertEqual(self.store().mailboxes("alice").status("INBOX").messages, 0)
        self.assertEqual(os.listdir(self.data / "tmp"), [])

    def test_reconstruct_after_losing_the_index(self):
        self.ok("user", "add", "alice", "--password", "pw")
        self.ok("mailbox", "create", "alice/Lists/python")
        store = MaildirStore(self.data, analyser=None)
        box = store.mailboxes("alice").open("Lists/python")
        uids = [box.append(b"Subject: %d\r\n\r\nx\r\n" % n) for n in range(5)]
        box.set_flags(uids[:1], __import__("cyrusmail.store.records").store.records.FlagChange.ADD, Flag.DELETED)
        box.expunge()
        uidvalidity = box.uid_validity
        store.close()
        for name in os.listdir(self.data / "users" / "alice"):
            if name.startswith("index.sqlite"):
                os.unlink(self.data / "users" / "alice" / name)
        out = self.ok("reconstruct", "alice")
        self.assertIn("index was missing", out)
        tree = self.store().mailboxes("alice")
        rebuilt = tree.open("Lists/python")
        self.assertEqual(rebuilt.uid_validity, uidvalidity)
        self.assertEqual([r.uid for r in rebuilt.messages()], uids[1:])
        self.assertTrue(tree.exists("Lists"))
        self.assertEqual(rebuilt.status().uid_next, uids[-1] + 1)
        self.assertEqual(rebuilt.append(b"Subject: new\r\n\r\n"), uids[-1] + 1)

    def test_reconstruct_keeps_what_the_index_knows(self):
        self.ok("user", "add", "alice", "--password", "pw")
        store = MaildirStore(self.data, analyser=None)
        box = store.mailboxes("alice").open("INBOX")
        kept = box.append(b"Subject: kept\r\n\r\n", Flag.SEEN | Flag.FLAGGED, ["$Work"])
        lost = box.append(b"Subject: lost\r\n\r\n")
        os.unlink(box.path(box.record(lost)))
        stray = box.folder / "99.00112233445566778899aabbccddeeff"
        stray.write_bytes(b"Subject: stray\r\n\r\n")
        store.close()
        out = self.ok("reconstruct", "alice")
        self.assertIn(f"UID {lost} had no message file", out)
        self.assertIn("UID 99 was missing from the index", out)
        rebuilt = self.store().mailboxes("alice").open("INBOX")
        record = rebuilt.record(kept)
        self.assertEqual((record.flags, record.keywords), (Flag.SEEN | Flag.FLAGGED, frozenset({"$Work"})))
        self.assertEqual([r.uid for r in rebuilt.messages()], [kept, 99])
        self.assertEqual(rebuilt.status().uid_next, 100)
        self.assertEqual(rebuilt.status().messages, 2)

    def test_bad_config_is_one_line(self):
        self.config.write_text("[server]\n")
        code, _out, err = self.admin("user", "list")
        self.assertEqual(code, 2)
        self.assertIn("[server] data: is required", err)

    def test_console_script_runs(self):
        result = subprocess.run(
            [sys.executable, "-m", "cyrusmail.admin.main", "--config", str(self.config), "user", "list"],
            capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], check=False,
        )
        self.assertEqual((result.returncode, result.stderr), (0, ""))
