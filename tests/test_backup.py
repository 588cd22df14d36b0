"""``cyrusmail-admin backup`` and ``restore`` through the real command line, checked through IMAP: a
user's mail comes back on a new server with the same UIDVALIDITY, UIDs, flags, keywords and dates."""

from __future__ import annotations

import hashlib
import io
import json
import re
import sqlite3
import tarfile
import time
from pathlib import Path

from twisted.cred.credentials import IUsernamePassword
from twisted.internet.task import Clock
from twisted.trial import unittest

from cyrusmail.admin.main import main as admin_main
from cyrusmail.config import load
from cyrusmail.service import open_context
from cyrusmail.store.maildir.archive import MANIFEST
from tests.imap_support import Client, message
from tests.test_admin import MBOX
from tests.test_twistd import LiveServer


class ArchiveCase:
    """A mixin: data folders with their config files, the admin tool on them, and IMAP sessions."""

    def setUp(self):
        self.folder = Path(self.mktemp()).resolve()
        self.folder.mkdir()

    def server(self, name: str):
        """A data folder with its config, the admin tool on it, and alice added."""
        data = self.folder / name
        config = self.folder / f"{name}.conf"
        config.write_text(f"[server]\ndata = {data}\nhostname = mail.example.org\n")
        self.ok(config, "user", "add", "alice", "--password", "secret")
        return config

    def admin(self, config: Path, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = admin_main(["--config", str(config), *argv], out, err)
        return code, out.getvalue(), err.getvalue()

    def ok(self, config: Path, *argv: str) -> str:
        code, out, err = self.admin(config, *argv)
        self.assertEqual((code, err), (0, ""), argv)
        return out

    def refused(self, config: Path, *argv: str) -> str:
        code, out, err = self.admin(config, *argv)
        self.assertEqual(code, 1, out)
        self.assertEqual(err.count("\n"), 1, err)
        return err

    def imap(self, config: Path) -> Client:
        context = open_context(load(config))  # the server the config file describes
        context.portal.checkers[IUsernamePassword].hash_in_thread = False
        self.addCleanup(context.store.close)
        self.addCleanup(context.users.close)
        client = Client(context, Clock())
        self.addCleanup(lambda: None if client.transport.disconnecting else client.server.connectionLost(None))
        client.login()
        return client

    def seen_through_imap(self, client: Client, mailboxes: list[str]) -> dict:
        """What a client knows of each mailbox: UIDVALIDITY, UIDNEXT, and each message's UID, flags,
        internal date and a digest of its bytes."""
        seen = {}
        for name in mailboxes:
            selected = "\n".join(client.command(f'S SELECT "{name}"'))
            self.assertIn("S OK", selected)
            validity = re.search(r"UIDVALIDITY (\d+)", selected).group(1)
            uidnext = re.search(r"UIDNEXT (\d+)", selected).group(1)
            client.send("F UID FETCH 1:* (FLAGS INTERNALDATE BODY.PEEK[])\r\n")
            raw = client.take()
            messages = []
            for match in re.finditer(rb"\* \d+ FETCH \(UID (\d+) FLAGS \(([^)]*)\) INTERNALDATE \"([^\"]+)\" "
                                     rb"BODY\[\] \{(\d+)\}\r\n", raw):
                start = match.end()
                body = raw[start:start + int(match.group(4))]
                messages.append((int(match.group(1)), sorted(set(match.group(2).decode().split()) - {"\\Recent"}),
                                 match.group(3).decode(), hashlib.sha256(body).hexdigest()))
            seen[name] = (validity, uidnext, messages)
        return seen

    def work_deleted(self) -> Path:
        """Server "one" with alice's mail (:meth:`fill`), then Work/2024 and Work deleted over IMAP; its config."""
        config = self.server("one")
        client = self.imap(config)
        self.fill(client)
        client.command("D DELETE Work/2024")
        client.command("D DELETE Work")
        return config

    def fill(self, client: Client) -> None:
        """alice's mail: gaps in the UIDs, system flags and keywords, a nested folder."""
        client.command("C CREATE Work/2024")
        client.command("U SUBSCRIBE Work/2024")
        for number in range(1, 6):
            data = message(f"note {number}")
            client.send(f'A APPEND INBOX (\\Seen $Label{number}) "0{number}-Feb-2021 10:00:00 +0000" '
                        f"{{{len(data)}}}\r\n")
            client.send(data + b"\r\n")
        client.command("S SELECT INBOX")
        client.command("T STORE 2 +FLAGS (\\Flagged \\Answered $Important)")
        client.command("T STORE 3 +FLAGS (\\Deleted)")
        client.command("E EXPUNGE")
        client.command("T STORE 3 -FLAGS (\\Seen)")
        client.command("T STORE 3 +FLAGS (\\Draft \\Deleted)")
        client.command("K COPY 1:2 Work/2024")



class BackupRestoreTests(ArchiveCase, unittest.TestCase):
    def test_a_user_comes_back_on_a_new_server_as_clients_knew_it(self):
        old = self.server("old")
        client = self.imap(old)
        self.fill(client)
        mailboxes = ["INBOX", "Work/2024", "Trash"]
        before = self.seen_through_imap(client, mailboxes)
        self.assertEqual([uid for uid, *_ in before["INBOX"][2]], [1, 2, 4, 5])
        archive = self.folder / "alice.tar.gz"
        said = self.ok(old, "backup", "alice", str(archive))
        self.assertIn("backed up 6 messages in ", said)
        self.assertEqual(archive.stat().st_mode & 0o777, 0o600)
        self.assertIn("already exists", self.refused(old, "backup", "alice", str(archive)))

        new = self.server("new")  # the old index (and everything else) is gone
        said = self.ok(new, "restore", str(archive))
        self.assertIn("restored alice/INBOX: 4 messages", said)
        self.assertIn("restored 6 messages in", said)
        after = self.seen_through_imap(self.imap(new), mailboxes)
        self.assertEqual(after, before)
        self.assertIn('* LSUB () "/" "Work/2024"', self.imap(new).command('L LSUB "" "*"'))

    def test_a_restore_over_mail_changes_nothing_and_prefix_puts_it_beside(self):
        config = self.server("one")
        client = self.imap(config)
        self.fill(client)
        archive = self.folder / "alice.tar"
        self.ok(config, "backup", "alice", str(archive))
        before = self.seen_through_imap(client, ["INBOX", "Work/2024"])
        err = self.refused(config, "restore", str(archive))
        self.assertIn("Mailbox INBOX already exists and is not new and empty", err)
        self.assertEqual(self.seen_through_imap(client, ["INBOX", "Work/2024"]), before)
        self.assertNotIn("Restored", "".join(client.command('L LIST "" "*"')))
        said = self.ok(config, "restore", str(archive), "--prefix", "Restored", "--mailbox", "INBOX")
        self.assertIn("restored alice/Restored/INBOX: 4 messages", said)
        again = self.seen_through_imap(client, ["Restored/INBOX"])["Restored/INBOX"]
        self.assertEqual(again[1:], before["INBOX"][1:])
        self.assertIn("holds no mailbox Nope", self.refused(config, "restore", str(archive), "--mailbox", "Nope"))
        self.assertIn("no such user: carol", self.refused(config, "restore", str(archive), "carol"))

    def unpacked_backup(self) -> tuple[Path, Path, dict]:
        """A server with alice's mail, and her backup unpacked: (its config, the folder, the manifest)."""
        config = self.server("one")
        self.fill(self.imap(config))
        archive = self.folder / "alice.tar"
        self.ok(config, "backup", "alice", str(archive))
        unpacked = self.folder / "unpacked"
        with tarfile.open(archive) as tar:
            tar.extractall(unpacked, filter="data")
        return config, unpacked, json.loads((unpacked / MANIFEST).read_text())

    def test_the_maildir_inside_carries_the_flags_for_any_reader(self):
        config, unpacked, manifest = self.unpacked_backup()
        inbox = next(mailbox for mailbox in manifest["mailboxes"] if mailbox["name"] == "INBOX")
        names = sorted(path.name for path in (unpacked / inbox["folder"] / "cur").iterdir())
        self.assertEqual([name.split(":2,")[1] for name in names], ["S", "FRS", "DT", "S"])
        # our own import reads it as a maildir, flags and all
        (unpacked / inbox["folder"] / "new").mkdir()
        self.ok(config, "import", "--create", str(unpacked / inbox["folder"]), "alice/Copy")
        copied = self.seen_through_imap(self.imap(config), ["Copy"])["Copy"][2]
        self.assertEqual([flags for _, flags, *_ in copied], [["\\Seen"], ["\\Answered", "\\Flagged", "\\Seen"],
                                                             ["\\Deleted", "\\Draft"], ["\\Seen"]])

    def test_a_damaged_or_hostile_archive_is_refused_having_changed_nothing(self):
        _config, unpacked, manifest = self.unpacked_backup()
        empty = self.server("empty")
        cases = {
            "uid 99 (each below uidnext": lambda m: m["mailboxes"][0]["messages"][0].update(uid=99),
            "bad file '../../etc/passwd'": lambda m: m["mailboxes"][0]["messages"][0].update(file="../../etc/passwd"),
            "not a cyrusmail archive": lambda m: m.update(format="other"),
            "bad flag '\\\\Recent'": lambda m: m["mailboxes"][0]["messages"][0].update(flags=["\\Recent"]),
        }
        for expected, damage in cases.items():
            broken = json.loads(json.dumps(manifest))
            damage(broken)
            (unpacked / MANIFEST).write_text(json.dumps(broken))
            self.assertIn(expected, self.refused(empty, "restore", str(unpacked)), expected)
        (unpacked / MANIFEST).unlink()
        self.assertIn("not an archive, or an incomplete one", self.refused(empty, "restore", str(unpacked)))
        junk = self.folder / "junk.tar"
        junk.write_bytes(b"not a tar file at all" * 100)
        self.assertIn("not a readable archive", self.refused(empty, "restore", str(junk)))
        listing = self.ok(empty, "mailbox", "list", "alice")
        self.assertNotIn("Work", listing)
        self.assertRegex(listing, r"INBOX\t0 messages")


class UndeleteTests(ArchiveCase, unittest.TestCase):
    """``[server] delete_mode = delayed``: an IMAP DELETE keeps the mailbox for ``undelete``."""

    def server(self, name: str, mode: str = "delayed"):
        config = super().server(name)
        with config.open("a") as text:
            text.write(f"delete_mode = {mode}\ndelete_retention = 3d\n")
        return config

    def test_a_mailbox_deleted_over_imap_comes_back_as_it_was(self):
        config = self.server("one")
        client = self.imap(config)
        self.fill(client)
        before = self.seen_through_imap(client, ["Work/2024"])
        client.command("U SELECT INBOX")
        self.assertIn("D OK DELETE completed", client.command("D DELETE Work/2024"))
        self.assertIn("D OK DELETE completed", client.command("D DELETE Work"))
        listing = self.ok(config, "undelete", "alice")
        self.assertRegex(listing, r"^Work/2024\tdeleted \d{4}-\d\d-\d\d \d\d:\d\d UTC\t2 messages\tkept until ")
        self.assertIn("\nWork\tdeleted ", listing)  # its superior, a mailbox too
        self.assertIn("2 deleted mailboxes of alice kept", listing)
        self.assertIn("no deleted mailbox alice/Nope is kept", self.refused(config, "undelete", "alice/Nope"))
        said = self.ok(config, "undelete", "alice/Work/2024")
        self.assertIn("undeleted alice/Work/2024: 2 messages (deleted ", said)
        self.assertEqual(self.seen_through_imap(client, ["Work/2024"]), before)
        self.assertIn("1 deleted mailboxes of alice kept", self.ok(config, "undelete", "alice"))

    def test_a_name_taken_meanwhile_needs_another_name(self):
        config = self.server("one")
        client = self.imap(config)
        self.fill(client)
        before = self.seen_through_imap(client, ["Work/2024"])["Work/2024"]
        client.command("D DELETE Work/2024")
        client.command("C CREATE Work/2024")
        data = message("new one")
        client.send(f"A APPEND Work/2024 {{{len(data)}}}\r\n")
        client.send(data + b"\r\n")
        self.assertIn("Mailbox Work/2024 already exists", self.refused(config, "undelete", "alice/Work/2024"))
        self.assertIn("undeleted alice/Old: 2 messages",
                      self.ok(config, "undelete", "alice/Work/2024", "--as", "Old"))
        self.assertEqual(self.seen_through_imap(client, ["Old"])["Old"], before)

    def test_immediate_mode_keeps_nothing(self):
        config = self.server("one", mode="immediate")
        client = self.imap(config)
        self.fill(client)
        client.command("D DELETE Work/2024")
        self.assertIn("0 deleted mailboxes of alice kept", self.ok(config, "undelete", "alice"))
        self.assertIn("delete_mode is immediate", self.refused(config, "undelete", "alice/Work/2024"))
        self.assertFalse((self.folder / "one" / "users" / "alice" / "deleted").exists())


def age_messages(data: Path, user: str, mailbox: str, days: float, uids: list[int] | None = None) -> None:
    """Make messages look saved ``days`` ago (as if moved there then): their save and internal dates."""
    index = sqlite3.connect(data / "users" / user / "index.sqlite")
    with index:
        (mailbox_id,) = index.execute("SELECT id FROM mailboxes WHERE name = ?", (mailbox,)).fetchone()
        then = time.time() - days * 86400
        chosen = "" if uids is None else f" AND uid IN ({','.join(str(uid) for uid in uids)})"
        index.execute(f"UPDATE messages SET savedate = ?, internaldate = ? WHERE mailbox_id = ?{chosen}",
                      (then, then, mailbox_id))
    index.close()


class ExpireTests(ArchiveCase, unittest.TestCase):
    """``[expire]`` rules by name and special use, and the purge of deleted mailboxes past retention."""

    def server(self, name: str):
        config = super().server(name)
        with config.open("a") as text:
            text.write("delete_mode = delayed\ndelete_retention = 3d\n[expire]\ntrash = 30d\nJunk = 7d\n"
                       "Lists/Old = 1d\n")
        return config

    def append(self, client: Client, mailbox: str, count: int) -> None:
        for number in range(count):
            data = message(f"{mailbox} {number}")
            client.send(f'A APPEND "{mailbox}" (\\Seen) {{{len(data)}}}\r\n')
            client.send(data + b"\r\n")

    def test_old_mail_goes_from_the_folders_named_and_nothing_else(self):
        config = self.server("one")
        data = self.folder / "one"
        client = self.imap(config)
        client.command("C CREATE Lists/Old")
        for mailbox in ("INBOX", "Trash", "Junk", "Lists/Old", "Archive"):
            self.append(client, mailbox, 3)
            age_messages(data, "alice", mailbox, 40, [1, 2])  # two old, one new in each
        age_messages(data, "alice", "Junk", 8, [3])
        client.command("S SELECT Trash")
        dry = self.ok(config, "expire", "--dry-run")
        self.assertIn("alice/Trash: 2 messages older than 30d would be removed", dry)
        self.assertIn("7 messages would expire, 0 deleted mailboxes past retention would be removed", dry)
        self.assertEqual(len(self.seen_through_imap(client, ["Trash"])["Trash"][2]), 3)
        said = self.ok(config, "expire")
        self.assertIn("alice/Trash: 2 messages older than 30d removed", said)
        self.assertIn("alice/Junk: 3 messages older than 7d removed", said)
        self.assertIn("alice/Lists/Old: 2 messages older than 1d removed", said)
        self.assertIn("7 messages expired, 0 deleted mailboxes past retention removed", said)
        client.command("S SELECT Trash")
        left = {name: [uid for uid, *_ in seen[2]] for name, seen in
                self.seen_through_imap(client, ["INBOX", "Trash", "Junk", "Lists/Old", "Archive"]).items()}
        self.assertEqual(left, {"INBOX": [1, 2, 3], "Trash": [3], "Junk": [], "Lists/Old": [3],
                                "Archive": [1, 2, 3]})
        self.assertIn("0 messages expired", self.ok(config, "expire"))

    def test_deleted_mailboxes_go_after_their_retention(self):
        config = self.work_deleted()
        kept = sorted((self.folder / "one" / "users" / "alice" / "deleted").iterdir())
        self.assertEqual(len(kept), 2)
        stamp, rest = kept[0].name.split("-", 1)
        kept[0].rename(kept[0].with_name(f"{int(stamp) - 3 * 86400}-{rest}"))  # deleted three days ago
        self.assertIn("0 messages expired, 1 deleted mailboxes past retention removed", self.ok(config, "expire"))
        self.assertIn("1 deleted mailboxes of alice kept", self.ok(config, "undelete", "alice"))

    def test_bad_rules_are_refused_with_one_line(self):
        config = self.server("one")
        with config.open("a") as text:
            text.write("sent = soon\n")
        code, out, err = self.admin(config, "config", "check")
        self.assertEqual((code, out), (2, ""))
        self.assertIn("[expire] sent: expected a duration", err)


class ServerRunsExpireTests(LiveServer, unittest.TestCase):
    """The real twistd runs ``cyrusmail-admin expire`` every ``expire_interval`` and logs what it did."""

    SERVICES = ("imap",)
    SERVER_KEYS = "expire_interval = 1s\n"
    SECTIONS = "[expire]\ntrash = 1d\n"

    def test_the_server_expires_old_trash_by_itself(self):
        mbox = self.data / "old.mbox"
        mbox.write_bytes(MBOX)
        self.admin("import", str(mbox), "alice/Trash")
        process = self.start()
        age_messages(self.data, "alice", "Trash", 2)
        client = self.session("imap")
        deadline = time.monotonic() + 60  # a hang check: the first run comes a second after the start
        while "MESSAGES 0" not in client.send('s STATUS Trash (MESSAGES)') and time.monotonic() < deadline:
            client.read()
            time.sleep(0.2)
        client.read()
        self.assertIn("(MESSAGES 0)", client.send('t STATUS Trash (MESSAGES)'))
        client.close()
        output = self.stop(process)
        self.assertIn("expire: alice/Trash: 2 messages older than 1d removed", output)
