"""No acknowledged message is lost when the real ``twistd`` is killed with SIGKILL.

Clients append (IMAP) and deliver (LMTP) to one user as fast as the server
answers, from several connections at once, so that store work is in
flight on the server's threads and grouped commits are being made; the
server is killed mid-stream. After a restart every message that got its
OK or 250 must be there, the index must pass SQLite's integrity check, and
every message it lists must have its file.
"""

from __future__ import annotations

import imaplib
import io
import os
import re
import shutil
import signal
import smtplib
import sqlite3
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from twisted.trial import unittest

from cyrusmail.admin.main import main as admin_main
from cyrusmail.store.maildir import MaildirStore
from tests.test_twistd import (
    ROOT,
    TWISTD,
    config_text,
    free_ports,
    listening,
    stop_server,
)

#: Acknowledged messages to wait for before the kill (enough that work is surely in flight).
BEFORE_KILL = 60


def body(subject: str) -> bytes:
    return (f"From: carol@example.org\r\nTo: alice@example.org\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@example.org>\r\n\r\nBody of {subject}.\r\n").encode()


class Stream:
    """One client sending messages until the server goes; what was acknowledged."""

    def __init__(self, name: str, port: int) -> None:
        self.name, self.port = name, port
        self.acknowledged: list[str] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        try:
            self.send_all()
        except (OSError, imaplib.IMAP4.abort, imaplib.IMAP4.error, smtplib.SMTPException):
            pass  # the server was killed

    def subjects(self):
        number = 0
        while True:
            yield f"{self.name}-{number}"
            number += 1


class ImapStream(Stream):
    def send_all(self) -> None:
        client = imaplib.IMAP4("127.0.0.1", self.port)
        client.login("alice", "secret")
        for subject in self.subjects():
            status, _ = client.append("INBOX", None, None, body(subject))
            if status == "OK":
                self.acknowledged.append(subject)


class LmtpStream(Stream):
    def send_all(self) -> None:
        client = smtplib.LMTP("127.0.0.1", self.port)
        client.ehlo("test")
        for subject in self.subjects():
            refused = client.sendmail("carol@example.org", ["alice@example.org"], body(subject))
            if not refused:
                self.acknowledged.append(subject)


class KillTests(unittest.TestCase):
    def setUp(self) -> None:
        self.data = Path(tempfile.mkdtemp(prefix="cm-crash-"))
        self.addCleanup(shutil.rmtree, self.data, True)
        self.imap_port, self.lmtp_port = free_ports(2)
        listen = {"imap": self.imap_port, "lmtp": self.lmtp_port}
        self.config = self.data / "cyrusmail.conf"
        self.config.write_text(config_text(self.data, {name: f"tcp:{port}:interface=127.0.0.1"
                                                       for name, port in listen.items()}))
        code = admin_main(["--config", str(self.config), "user", "add", "alice", "--password", "secret"],
                          io.StringIO(), io.StringIO())
        self.assertEqual(code, 0)

    def start(self) -> subprocess.Popen:
        # The log goes to a file: an unread pipe fills (workers log more) and stalls the server.
        log_path = self.data / "twistd.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen([*TWISTD, "--pidfile=", "-n", "cyrusmail", "--config", str(self.config)],
                                       cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        process.log_path = log_path
        self.addCleanup(lambda: process.poll() is None and os.killpg(process.pid, signal.SIGKILL))
        deadline = time.monotonic() + 60
        while not (listening(self.imap_port) and listening(self.lmtp_port)) and time.monotonic() < deadline:
            self.assertIsNone(process.poll(), "twistd exited early")
            time.sleep(0.1)
        return process

    def test_every_acknowledged_message_survives_a_sigkill(self) -> None:
        server = self.start()
        streams = [ImapStream("imap-a", self.imap_port), ImapStream("imap-b", self.imap_port),
                   LmtpStream("lmtp-a", self.lmtp_port), LmtpStream("lmtp-b", self.lmtp_port)]
        for stream in streams:
            stream.thread.start()
        deadline = time.monotonic() + 120
        while sum(len(stream.acknowledged) for stream in streams) < BEFORE_KILL and time.monotonic() < deadline:
            time.sleep(0.01)
        # SIGKILL to the whole server (with workers: the supervisor and every worker, as a
        # power cut would): no goodbye, no flush, threads cut off mid-work.
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(30)
        # The workers die beside it, each in its own time: until the last has, the
        # old listening sockets take connections and reset them.
        deadline = time.monotonic() + 30
        while (listening(self.imap_port) or listening(self.lmtp_port)) and time.monotonic() < deadline:
            time.sleep(0.05)
        for stream in streams:
            stream.thread.join(30)
        acknowledged = {subject for stream in streams for subject in stream.acknowledged}
        self.assertGreaterEqual(len(acknowledged), BEFORE_KILL)

        restarted = self.start()
        client = imaplib.IMAP4("127.0.0.1", self.imap_port)
        client.login("alice", "secret")
        client.select("INBOX")
        _, data = client.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        present = {match.group(1).decode() for match in re.finditer(rb"Subject: (\S+)", b"".join(
            part[1] for part in data if isinstance(part, tuple)))}
        client.logout()
        stop_server(self, restarted)
        self.assertEqual(acknowledged - present, set(), "acknowledged messages lost")

        index = self.data / "users" / "alice" / "index.sqlite"
        with sqlite3.connect(index) as db:
            self.assertEqual(db.execute("PRAGMA integrity_check").fetchall(), [("ok",)])
        store = MaildirStore(self.data)
        try:
            inbox = store.mailboxes("alice").open("INBOX")
            records = inbox.messages()
            missing = [record.uid for record in records if not inbox.path(record).exists()]
            self.assertEqual(missing, [], "index rows without their message file")
            self.assertEqual(len(records), len(present))
        finally:
            store.close()
