"""A connection lost mid-message leaves nothing in ``DATA/tmp/``; what a crash left is swept at start.

An APPEND literal (or a DATA/BDAT body) streams into a staged file in
``tmp/`` as it arrives. These tests cut the connection at each point of
that stream and count the files left behind.
"""

from __future__ import annotations

import os
import time

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.helpers import make_context
from tests.imap_support import Client, session_context
from tests.test_logging import LogCapture
from tests.test_smtp_session_support import (
    Conversation,
    lmtp_factory,
    make_server,
    plain,
    submission_factory,
)


def tmp_files(context) -> list[str]:
    return sorted(os.listdir(context.store.tmp_dir))


class AppendCutOffTests(TestCase):
    def setUp(self):
        self.context = session_context(self)
        self.alice = Client(self.context, Clock())
        self.alice.login("alice")

    def cut(self) -> None:
        self.alice.server.connectionLost(None)

    def test_append_cut_mid_literal_removes_its_file(self):
        self.alice.send("a APPEND INBOX {1000}\r\n")
        self.alice.send(b"Subject: half\r\n\r\n" + b"x" * 400)
        self.assertEqual(len(tmp_files(self.context)), 1)  # the literal is being written there
        self.cut()
        self.assertEqual(tmp_files(self.context), [])

    def test_non_synchronizing_literal_cut_removes_its_file(self):
        self.alice.send(b"a APPEND INBOX (\\Seen) {1000+}\r\nSubject: half\r\n")
        self.assertEqual(len(tmp_files(self.context)), 1)
        self.cut()
        self.assertEqual(tmp_files(self.context), [])

    def test_multiappend_cut_after_its_first_message_removes_every_file(self):
        self.alice.send(b"a APPEND INBOX {12+}\r\nSubject: 1\r\n {12+}\r\nSubject: 2\r\n")
        self.assertEqual(len(tmp_files(self.context)), 2)  # two whole messages; the command goes on
        self.cut()
        self.assertEqual(tmp_files(self.context), [])

    def test_multiappend_cut_mid_second_literal_removes_every_file(self):
        self.alice.send(b"a APPEND INBOX {12+}\r\nSubject: 1\r\n (\\Flagged) {500+}\r\nSubject: 2\r\n")
        self.cut()
        self.assertEqual(tmp_files(self.context), [])
        self.assertEqual(self.context.store.mailboxes("alice").status("INBOX").messages, 0)

    def test_a_finished_append_leaves_nothing_either(self):
        answer = self.alice.command("a APPEND INBOX {12+}\r\nSubject: 1\r\n")
        self.assertTrue(answer[-1].startswith("a OK"), answer)
        self.cut()
        self.assertEqual(tmp_files(self.context), [])


class SmtpCutOffTests(TestCase):
    """SMTP and LMTP already discard a message whose connection goes; kept so it stays so."""

    def setUp(self):
        self.context, self.clock = make_server(self.mktemp())

    def test_lmtp_data_cut_removes_its_file(self):
        talk = Conversation(lmtp_factory(self.context, self.clock))
        talk.send("LHLO client.example.org\r\nMAIL FROM:<carol@example.org>\r\n"
                  "RCPT TO:<alice@example.org>\r\nDATA\r\nSubject: half\r\n\r\nbody")
        self.assertEqual(len(tmp_files(self.context)), 1)
        talk.session.connectionLost(None)
        self.assertEqual(tmp_files(self.context), [])

    def test_submission_bdat_cut_removes_its_file(self):
        talk = Conversation(submission_factory(self.context, self.clock))
        talk.send(b"EHLO client.example.org\r\nAUTH PLAIN " + plain("alice") + b"\r\n")
        talk.send("MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\n"
                  "BDAT 20\r\nSubject: one\r\n\r\nabcde" "BDAT 100 LAST\r\nhalf")
        self.assertEqual(len(tmp_files(self.context)), 1)
        talk.session.connectionLost(None)
        self.assertEqual(tmp_files(self.context), [])


class SweepAtStartTests(TestCase):
    def test_stale_tmp_files_and_half_deleted_trees_are_removed_at_start(self):
        data = self.mktemp()
        context = make_context(data)
        tmp, users = context.store.tmp_dir, context.store.users_dir
        context.store.close()
        context.users.close()
        long_ago = time.time() - 2 * 3600
        for name in ("1700000000.crashed-append", "1700000001.crashed-lmtp"):
            (tmp / name).write_bytes(b"Subject: left by a crash\r\n")
            os.utime(tmp / name, (long_ago, long_ago))
        (tmp / "in-progress").write_bytes(b"Subject: being written now\r\n")
        (users / ".deleted-carol-0a1b2c3d" / "mail").mkdir(parents=True)
        capture = LogCapture(self)
        context = make_context(data)
        self.addCleanup(context.store.close)
        self.addCleanup(context.users.close)
        self.assertEqual(sorted(os.listdir(tmp)), ["in-progress"])
        self.assertFalse((users / ".deleted-carol-0a1b2c3d").exists())
        self.assertIn(f"cyrusmail: at start, removed 2 stale files from {tmp} and 1 half-deleted user tree(s)",
                      capture.text())
