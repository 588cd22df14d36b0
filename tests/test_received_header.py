"""The Received header holds only checked names: no client bytes can add header content.

The greeting's name is written only when it is a domain or an IP literal
(RFC 5321 4.1.4, 4.1.3), else ``unknown``, as Dovecot does; the greeting
itself is accepted, as Postfix and Dovecot accept it.  The ``for`` clause
is left out for an address that could end it early.
"""

from __future__ import annotations

from twisted.trial import unittest

from cyrusmail.smtp import codes
from tests.test_smtp_session_support import (
    Conversation,
    expected,
    inbox_messages,
    lmtp_factory,
    make_server,
    plain,
    submission_factory,
)

MESSAGE = b"From: alice@example.org\r\nSubject: trace\r\n\r\nbody\r\n"


def received_of(stored: bytes) -> bytes:
    """The Received field the server added (the first field, with its folded lines)."""
    field = stored.split(b"\r\n")[0]
    for line in stored.split(b"\r\n")[1:]:
        if not line.startswith(b"\t"):
            break
        field += b"\r\n" + line
    return field


class ReceivedTests(unittest.TestCase):
    def setUp(self) -> None:
        self.context, self.clock = make_server(self.mktemp())
        self.submission = submission_factory(self.context, self.clock)
        self.lmtp = lmtp_factory(self.context, self.clock)

    def submit(self, greeting: bytes, rcpt: bytes = b"<bob@example.org>") -> bytes:
        talk = Conversation(self.submission)
        self.assertEqual(talk.codes(greeting + b"\r\n")[0][0], 250)
        self.assertEqual(talk.codes(b"AUTH PLAIN " + plain("alice") + b"\r\n"), expected(codes.AUTH_OK))
        talk.send(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:" + rcpt + b"\r\nDATA\r\n")
        self.assertEqual(talk.codes(MESSAGE + b".\r\n"), expected(codes.MESSAGE_ACCEPTED))
        return received_of(inbox_messages(self.context, "bob")[-1])

    def test_a_valid_name_is_recorded(self) -> None:
        for greeting, name in ((b"EHLO client.example", b"client.example"),
                               (b"EHLO [127.0.0.1]", b"[127.0.0.1]"),
                               (b"EHLO [IPv6:2001:DB8:0::1]", b"[IPv6:2001:db8::1]"),
                               (b"EHLO Mail-1.Example.ORG", b"Mail-1.Example.ORG")):
            with self.subTest(greeting=greeting):
                self.assertTrue(self.submit(greeting).startswith(b"Received: from " + name + b" ([127.0.0.1])"))

    def test_an_invalid_name_is_accepted_but_recorded_as_unknown(self) -> None:
        for greeting in (b"EHLO evil)(by", b"EHLO x;for", b"EHLO caf\xc3\xa9.example", b"EHLO my_pc",
                         b"EHLO a\xc2\x85X-Injected:yes", b"EHLO a\xe2\x80\xa8b", b"EHLO [x:a;b]",
                         b"EHLO [1.2.3]", b"EHLO host.", b"EHLO -a.example", b"EHLO " + b"a" * 64 + b".example",
                         b"EHLO \\x", b"EHLO <script>"):
            with self.subTest(greeting=greeting):
                field = self.submit(greeting)
                self.assertTrue(field.startswith(b"Received: from unknown ([127.0.0.1])\r\n"), field)
                self.assertTrue(field.isascii(), field)
                self.assertEqual(field.count(b"("), field.count(b")"))

    def test_the_for_clause_holds_only_a_plain_address(self) -> None:
        field = self.submit(b"EHLO client.example", b"<Bob@example.org>")
        self.assertIn(b"\tfor <Bob@example.org>; ", field)
        # bob+FOLDER: a quoted local part the server accepts, holding what would end the clause.
        field = self.submit(b"EHLO client.example", b'<"bob+x>; Mon, 1 Jan 2001 00:00:00 +0000 (y"@example.org>')
        self.assertNotIn(b"for <", field)
        self.assertNotIn(b"2001", field)
        self.assertEqual(field.count(b";"), 1)

    def test_lmtp_records_the_checked_lhlo_name(self) -> None:
        for greeting, name in ((b"LHLO mx.example.org", b"mx.example.org"), (b"LHLO mx(1);", b"unknown")):
            with self.subTest(greeting=greeting):
                talk = Conversation(self.lmtp)
                talk.send(greeting + b"\r\nMAIL FROM:<x@remote.example>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
                self.assertEqual(talk.codes(MESSAGE + b".\r\n"), expected(codes.MESSAGE_ACCEPTED))
                stored = inbox_messages(self.context, "alice")[-1]
                received = stored.split(b"\r\n")[1]
                self.assertEqual(received, b"Received: from " + name + b" ([127.0.0.1])")
