"""UTF8=ACCEPT (RFC 6855): after ENABLE, mailbox names are UTF-8 both ways, APPEND takes UTF8 data,
SEARCH takes no CHARSET; without it, nothing changes."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from cyrusmail.imap import commands as c
from cyrusmail.imap.wire import CommandParser, ParseError
from tests.imap_support import Client, session_context

CREATED = r"^c OK \[MAILBOXID \(F[0-9a-f]+\)\] CREATE completed$"
UTF8_MESSAGE = "From: Zoë <zoë@example.org>\r\nSubject: café\r\n\r\nbody\r\n".encode()


class ParserTests(TestCase):
    def parse(self, wire: bytes, utf8: bool = True) -> list:
        parser = CommandParser()
        parser.utf8 = utf8
        return [event for event in parser.feed(wire) if not hasattr(event, "size") or isinstance(event, c.Command)]

    def test_names_become_modified_utf7(self) -> None:
        table = [
            ('a SELECT "Café"\r\n'.encode(), c.Select("a", "Caf&AOk-")),
            (b"a SELECT a&b\r\n", c.Select("a", "a&-b")),  # "&" is just "&" in UTF-8 names
            ('a LIST "" "Ünter/%"\r\n'.encode(), c.List("a", "", ("&ANw-nter/%",))),
            ('a RENAME "Café" INBOX/Tee\r\n'.encode(), c.Rename("a", "Caf&AOk-", "INBOX/Tee")),
        ]
        for wire, expected in table:
            with self.subTest(wire=wire):
                self.assertEqual(self.parse(wire), [expected])
        # Without UTF8=ACCEPT the name is kept as sent (the session refuses 8-bit ones).
        self.assertEqual(self.parse(b"a SELECT a&b\r\n", utf8=False), [c.Select("a", "a&b")])

    def test_append_utf8_data(self) -> None:
        (append,) = self.parse(b"a APPEND INBOX (\\Seen) UTF8 (~{4+}\r\nm\xc3\xa9\r)\r\n")
        (message,) = append.messages
        self.assertTrue(message.utf8 and message.binary)
        self.assertEqual(message.content.getvalue(), b"m\xc3\xa9\r")
        (append,) = self.parse(b"a APPEND INBOX CATENATE (UTF8 (~{2+}\r\nhi) URL /INBOX/;UID=1)\r\n")
        self.assertEqual(append.messages[0].parts[0].content.getvalue(), b"hi")

    def test_append_utf8_refused(self) -> None:
        for wire, utf8 in ((b"a APPEND INBOX UTF8 (~{2+}\r\nhi)\r\n", False),
                           (b"a APPEND INBOX UTF8 ({2+}\r\nhi)\r\n", True),
                           (b"a APPEND INBOX UTF8 ~{2+}\r\nhi\r\n", True)):
            with self.subTest(wire=wire):
                (error,) = self.parse(wire, utf8)
                self.assertIsInstance(error, ParseError)


class SessionTests(TestCase):
    def setUp(self) -> None:
        self.context = session_context(self)
        self.client = self.connect()

    def connect(self) -> Client:
        client = Client(self.context, Clock())
        client.login()
        self.addCleanup(client.server.connectionLost, None)
        return client

    def enable(self, client: Client | None = None) -> None:
        client = client or self.client
        self.assertEqual(client.command("e ENABLE UTF8=ACCEPT"), ["* ENABLED UTF8=ACCEPT", "e OK ENABLE completed"])

    def test_advertised(self) -> None:
        self.assertIn("UTF8=ACCEPT", self.client.command("c CAPABILITY")[0].split())

    def test_names_without_enable(self) -> None:
        self.assertTrue(self.client.command('c CREATE "Café"')[-1].startswith("c NO [CANNOT]"))
        self.assertRegex(self.client.command("c CREATE Caf&AOk-")[-1], CREATED)
        self.assertIn('* LIST (\\HasNoChildren) "/" "Caf&AOk-"', self.client.command('l LIST "" Caf*'))

    def test_names_after_enable(self) -> None:
        self.enable()
        self.assertRegex(self.client.command('c CREATE "Café/Thé"')[-1], CREATED)
        self.assertRegex(self.client.command("c CREATE a&b")[-1], CREATED)
        self.assertEqual(self.client.command('l LIST "" "Caf*"'),
                         ['* LIST (\\HasChildren) "/" "Café"', '* LIST (\\HasNoChildren) "/" "Café/Thé"',
                          "l OK LIST completed"])
        self.assertEqual(self.client.command('l LIST "" a*')[0], '* LIST (\\HasNoChildren) "/" "a&b"')
        self.assertEqual(self.client.command('s STATUS "Café/Thé" (MESSAGES)')[0], '* STATUS "Café/Thé" (MESSAGES 0)')
        self.assertEqual(self.client.command('s MYRIGHTS "Café"')[0], '* MYRIGHTS "Café" lrswipkxteacd')
        self.assertTrue(self.client.command('s SELECT "Café/Thé"')[-1].startswith("s OK"))
        store = self.context.store.mailboxes("alice")
        self.assertTrue(store.exists("Café/Thé") and store.exists("a&b"))
        # A session that did not enable sees the same names in modified UTF-7.
        other = self.connect()
        self.assertEqual(other.command('l LIST "" a*')[0], '* LIST (\\HasNoChildren) "/" "a&-b"')
        self.assertIn('* LIST (\\HasChildren) "/" "Caf&AOk-"', other.command('l LIST "" Caf*'))

    def test_append_utf8(self) -> None:
        wire = b"a APPEND INBOX UTF8 (~{%d+}\r\n%s)\r\n" % (len(UTF8_MESSAGE), UTF8_MESSAGE)
        self.client.send(wire)
        self.assertTrue(self.client.lines()[-1].startswith("a BAD"))
        self.enable()
        self.client.send(wire)
        self.assertRegex(self.client.lines()[-1], r"^a OK \[APPENDUID \d+ 1\]")
        box = self.context.store.mailboxes("alice").open("INBOX")
        self.assertEqual(box.read(1), UTF8_MESSAGE)

    def test_search(self) -> None:
        self.context.store.mailboxes("alice").open("INBOX").append(UTF8_MESSAGE)
        self.enable()
        self.client.command("s SELECT INBOX")
        self.assertTrue(self.client.command("f SEARCH CHARSET UTF-8 ALL")[-1].startswith("f BAD"))
        self.assertEqual(self.client.command('f SEARCH SUBJECT "café"'), ["* SEARCH 1", "f OK SEARCH completed"])

    def test_enable_only_before_select(self) -> None:
        self.client.command("s SELECT INBOX")
        self.assertTrue(self.client.command("e ENABLE UTF8=ACCEPT")[-1].startswith("e BAD"))
        self.assertTrue(self.client.command('c CREATE "Café"')[-1].startswith("c NO [CANNOT]"))

    def test_envelope_is_not_downgraded(self) -> None:
        """UTF-8 header fields go as stored, to every session (as Dovecot; no RFC 6857 downgrade)."""
        self.context.store.mailboxes("alice").open("INBOX").append(UTF8_MESSAGE)
        for enable in (False, True):
            client = self.connect()
            if enable:
                self.enable(client)
            client.command("s SELECT INBOX")
            client.send(b"f FETCH 1 ENVELOPE\r\n")
            answer = client.take()
            self.assertIn("café".encode(), answer)
            self.assertIn("zoë".encode(), answer)
