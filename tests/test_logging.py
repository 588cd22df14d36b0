"""What the logs say: connections and logins with the address, never a password or message text."""

from __future__ import annotations

from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from tests.imap_support import Client, session_context
from tests.test_pop3_support import Pop3Server
from tests.test_smtp_session_support import (
    Conversation,
    make_server,
    plain,
    submission_factory,
)

SECRET = "s3cret-horse-battery"


class LogCapture:
    def __init__(self, test: unittest.TestCase):
        self.lines: list[str] = []
        globalLogPublisher.addObserver(self.observe)
        test.addCleanup(globalLogPublisher.removeObserver, self.observe)

    def observe(self, event) -> None:
        self.lines.append(formatEvent(event) or "")

    def text(self) -> str:
        return "\n".join(self.lines)


class LoggingTests(unittest.TestCase):
    def assertLogged(self, capture: LogCapture, service: str) -> None:
        text = capture.text()
        self.assertIn(f"{service}: connection from 127.0.0.1", text)
        self.assertIn(f"{service}: failed login for 'alice' from 127.0.0.1", text)
        self.assertIn(f"{service}: alice logged in from 127.0.0.1", text)
        self.assertNotIn(SECRET, text)
        self.assertNotIn("wrong-password", text)
        self.assertNotIn("Body text that must not be logged", text)

    def test_imap(self):
        from twisted.internet.task import Clock

        context = session_context(self)
        context.users.set_password("alice", SECRET)
        capture = LogCapture(self)
        client = Client(context, Clock())
        client.command("a LOGIN alice wrong-password")
        client.clock.advance(30)
        client.take()
        self.assertTrue(client.command(f"b LOGIN alice {SECRET}")[-1].startswith("b OK"))
        client.command("c APPEND INBOX {37+}\r\nBody text that must not be logged\r\n")
        client.command("d LOGOUT")
        self.assertLogged(capture, "imap")
        self.assertIn("imap: connection from 127.0.0.1", capture.text())

    def test_pop3(self):
        server = Pop3Server(self)
        server.context.users.set_password("alice", SECRET)
        capture = LogCapture(self)
        talk = server.connect()
        talk.command("USER alice")
        talk.command("PASS wrong-password")
        server.clock.advance(30)
        talk.take()
        talk.command("USER alice")
        talk.command(f"PASS {SECRET}")
        talk.command("QUIT")
        self.assertLogged(capture, "pop3")

    def test_submission(self):
        context, clock = make_server(self.mktemp())
        context.users.set_password("alice", SECRET)
        capture = LogCapture(self)
        talk = Conversation(submission_factory(context, clock))
        talk.send("EHLO client\r\n")
        talk.send(b"AUTH PLAIN " + plain("alice", "wrong-password") + b"\r\n")
        clock.advance(30)
        talk.take()
        talk.send(b"AUTH PLAIN " + plain("alice", SECRET) + b"\r\n")
        talk.send(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n")
        talk.send(b"Subject: x\r\n\r\nBody text that must not be logged\r\n.\r\nQUIT\r\n")
        self.assertLogged(capture, "submission")
