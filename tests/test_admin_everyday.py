"""Everyday administration through the real command line: ``config check|show``, ``import``'s progress
bar and ``--create``."""

from __future__ import annotations

import io
import os
from pathlib import Path

from twisted.trial import unittest

from cyrusmail import config as schema
from cyrusmail.admin.main import Progress, parser, run
from tests.test_admin import MBOX, AdminCommands


class Terminal(io.StringIO):
    """What a terminal's stderr looks like to the admin tool."""

    def isatty(self) -> bool:
        return True


class ConfigCommandTests(AdminCommands, unittest.TestCase):
    def test_check_says_ok_and_makes_nothing(self):
        said = self.ok("config", "check")
        self.assertIn(f"{self.config}: OK (services: ", said)
        self.assertFalse(self.data.exists(), "a check makes no data folder")

    def test_check_refuses_what_the_server_would_with_its_one_line(self):
        cert = self.folder / "missing.pem"
        with self.config.open("a") as config:
            config.write(f"[tls]\ncertificate = {cert}\nkey = {cert}\n")
        code, out, err = self.admin("config", "check")
        self.assertEqual((code, out), (2, ""))
        self.assertEqual(err.count("\n"), 1, err)
        self.assertIn("[tls]", err)
        self.assertIn("missing.pem", err)

    def test_show_prints_every_key_and_reads_back_the_same(self):
        with self.config.open("a") as config:
            config.write("[queue]\nsmarthost = relay.example.net:587\nsmarthost_user = me\n"
                         "smarthost_password = hunter2\nretry_max = 2d\n[expire]\ntrash = 30d\n")
        shown = self.ok("config", "show")
        self.assertNotIn("hunter2", shown)
        self.assertIn("smarthost_password = ********", shown)
        self.assertIn("retry_max = 2d", shown)
        self.assertIn("[expire]\ntrash = 30d", shown)
        for section, keys in schema.SCHEMA.items():
            self.assertIn(f"[{section}]", shown)
            for key in keys:
                self.assertRegex(shown, rf"(?m)^{key} =", (section, key))
        again = self.folder / "shown.conf"
        again.write_text(shown)
        original, reread = schema.load(self.config), schema.load(again)
        original.values["queue"]["smarthost_password"] = "********"
        self.assertEqual(reread.values, original.values)


class ImportProgressTests(AdminCommands, unittest.TestCase):
    def setUp(self):
        super().setUp()
        self.ok("user", "add", "alice", "--password", "pw")
        self.mbox = self.folder / "old.mbox"
        self.mbox.write_bytes(MBOX)

    def test_a_terminal_gets_a_bar_with_counts_rate_and_time_left(self):
        terminal, out = Terminal(), io.StringIO()
        args = parser().parse_args(["--config", str(self.config), "import", str(self.mbox), "alice/INBOX"])
        self.assertEqual(run(args, out, terminal), 0)
        drawn = terminal.getvalue()
        self.assertIn("2/2 messages", drawn)
        self.assertRegex(drawn, r"\[#+\] 2/2 messages  \d+\.\d MB/s  ETA 0:00")
        self.assertTrue(drawn.endswith("\r\x1b[K"), "the bar is cleared at the end")
        self.assertIn("imported 2 messages into alice/INBOX", out.getvalue())

    def test_elsewhere_it_is_quiet(self):
        self.assertEqual(self.ok("import", str(self.mbox), "alice/INBOX").count("\n"), 1)

    def test_the_bar_is_drawn_at_most_five_times_a_second(self):
        now = [0.0]
        terminal = Terminal()
        progress = Progress(terminal, 1000, 1000 * 1000, clock=lambda: now[0])
        for count in range(1, 1001):
            now[0] += 0.001  # a message each millisecond: one second in all
            progress.step(count, 1000)
        lines = terminal.getvalue().split("\r\x1b[K")[1:]
        self.assertLessEqual(len(lines), 6)
        self.assertIn("1000/1000 messages  1.0 MB/s  ETA 0:00", lines[-1])
        self.assertRegex(lines[0], r"^\[#*\.+\] \d+/1000 messages  1\.0 MB/s  ETA 0:0\d$")

    def test_the_count_of_an_mbox_is_found_in_pieces(self):
        from cyrusmail.admin import importer

        big = self.folder / "big.mbox"
        message = b"From a@b Mon Jan  3 10:00:00 2022\nSubject: x\n\n" + b"y" * 5000 + b"\nFrom inside a body\n\n"
        big.write_bytes(message * 500)  # separators land across the 1 MiB reads
        self.assertEqual(importer.count_source(big), (500, len(message) * 500))
        self.assertEqual(importer.count_source(self.mbox), (2, len(MBOX)))

    def test_create_makes_the_mailbox_and_a_failed_import_leaves_none(self):
        self.assertIn("does not exist", self.refused("import", str(self.mbox), "alice/Old"))
        said = self.ok("import", "--create", str(self.mbox), "alice/Old")
        self.assertIn("imported 2 messages into alice/Old (mailbox created)", said)
        self.assertEqual(self.store().mailboxes("alice").status("Old").messages, 2)
        junk = self.folder / "notes.txt"
        junk.write_bytes(b"just some notes\n")
        self.assertIn("not an mbox", self.refused("import", "--create", str(junk), "alice/Junkier"))
        self.assertFalse(self.store().mailboxes("alice").exists("Junkier"))
        self.assertNotIn("Junkier", self.ok("mailbox", "list", "alice"))
        self.assertEqual(os.listdir(self.data / "tmp"), [])
        self.assertTrue(Path(self.data).exists())
