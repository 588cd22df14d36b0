"""Sieve in the real twistd process: a script set over ManageSieve (sievelib's client) files what
LMTP delivers (smtplib's client), and a ManageSieve session gets its goodbye at SIGTERM."""

from __future__ import annotations

import base64
import io
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

from twisted.trial import unittest

from cyrusmail.admin.main import main as admin_main
from tests.test_twistd import ROOT, TWISTD, config_text, free_ports, listening

SCRIPT = ('require ["fileinto", "mailbox", "imap4flags"];\r\n'
          'if header :contains "subject" "report" { fileinto :create :flags "\\\\Flagged" "Reports"; }\r\n')


class ManageSieveLine:
    """A raw ManageSieve connection: the greeting's capabilities read to their OK."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.reader = self.sock.makefile("rb")
        self.capabilities = self.response()

    def response(self) -> list[str]:
        lines = []
        while line := self.reader.readline().decode("utf-8", "replace"):
            lines.append(line)
            if line.startswith(("OK", "NO", "BYE")):
                break
        return lines

    def send(self, line: str) -> list[str]:
        self.sock.sendall(line.encode() + b"\r\n")
        return self.response()

    def rest(self) -> list[str]:
        return [line.decode("utf-8", "replace") for line in self.reader]

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


class SieveServerTests(unittest.TestCase):
    timeout = 180

    def setUp(self) -> None:
        try:
            from sievelib.managesieve import Client
        except ImportError:
            raise unittest.SkipTest("sievelib is not installed (pip install sievelib)") from None
        self.client_class = Client
        self.data = Path(tempfile.mkdtemp(prefix="cm-", dir="/tmp"))
        self.addCleanup(shutil.rmtree, self.data, True)
        self.ports = dict(zip(("lmtp", "managesieve"), free_ports(2), strict=True))
        self.config = self.data / "cyrusmail.conf"
        self.config.write_text(config_text(self.data, {name: f"tcp:{port}:interface=127.0.0.1"
                                                       for name, port in self.ports.items()}))
        self.admin("user", "add", "alice", "--password", "secret")

    def admin(self, *argv: str) -> str:
        out, err = io.StringIO(), io.StringIO()
        code = admin_main(["--config", str(self.config), *argv], out, err)
        self.assertEqual(code, 0, err.getvalue())
        return out.getvalue()

    def start(self) -> subprocess.Popen:
        process = subprocess.Popen([*TWISTD, "--pidfile=", "-n", "cyrusmail", "--config", str(self.config)],
                                   cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.addCleanup(lambda: process.poll() is None and process.kill())
        deadline = time.monotonic() + 60
        waiting = set(self.ports.values())
        while waiting and time.monotonic() < deadline:
            self.assertIsNone(process.poll(), "twistd exited early")
            waiting = {port for port in waiting if not listening(port)}
            time.sleep(0.1)
        self.assertEqual(waiting, set())
        return process

    def deliver(self, subject: str) -> dict:
        message = f"From: someone@remote.example\r\nTo: alice@example.org\r\nSubject: {subject}\r\n\r\nHi.\r\n"
        with smtplib.LMTP("127.0.0.1", self.ports["lmtp"]) as client:
            return client.sendmail("someone@remote.example", ["alice@example.org"], message)

    def test_managesieve_script_filters_lmtp_delivery_and_sigterm_says_bye(self) -> None:
        process = self.start()
        client = self.client_class("127.0.0.1", self.ports["managesieve"])
        with warnings.catch_warnings():  # in the clear: loopback allows it (allow_plaintext_on_loopback)
            warnings.simplefilter("ignore", UserWarning)
            self.assertTrue(client.connect("alice", "secret", starttls=False, authmech="PLAIN"))
        self.assertTrue(client.putscript("main", SCRIPT))
        self.assertTrue(client.setactive("main"))
        client.logout()
        self.assertEqual([self.deliver("Monthly report"), self.deliver("Lunch?")], [{}, {}])
        listing = self.admin("mailbox", "list", "alice")
        self.assertRegex(listing, r"(?m)^Reports\s+1\b")
        self.assertRegex(listing, r"(?m)^INBOX\s+1\b")

        waiting = ManageSieveLine(self.ports["managesieve"])
        self.addCleanup(waiting.close)
        self.assertIn('"SIEVE" ', "".join(waiting.capabilities))
        login = base64.b64encode(b"\0alice\0secret").decode()
        self.assertTrue(waiting.send(f'AUTHENTICATE "PLAIN" "{login}"')[-1].startswith("OK"))
        process.send_signal(signal.SIGTERM)
        self.assertEqual(waiting.rest(), ['BYE "Server shutting down"\r\n'])
        output = process.communicate(timeout=60)[0].decode("utf-8", "replace")
        self.assertEqual(process.returncode, 0, output)
