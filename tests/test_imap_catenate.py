"""CATENATE (RFC 4469): APPEND made of TEXT literals and IMAP URLs (RFC 5092) of messages the user may read."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from cyrusmail.imap import codes, urls
from cyrusmail.imap.commands import Section
from tests.imap_support import Client, session_context

FIRST = b"From: carol@example.org\r\nSubject: first\r\n\r\nfirst body\r\n"
MULTI = (b"From: carol@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
         b"--b\r\nContent-Type: text/plain\r\n\r\npart one\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>two</p>\r\n--b--\r\n")
FIRST_HEADER = b"From: carol@example.org\r\nSubject: first\r\n\r\n"


class UrlTests(TestCase):
    def test_good(self) -> None:
        table = [
            ("/INBOX/;UID=3", urls.MessageUrl(3, "INBOX")),
            ("/INBOX;UIDVALIDITY=7/;UID=3/;SECTION=HEADER",
             urls.MessageUrl(3, "INBOX", 7, Section((), "HEADER"))),
            ("/a%2fb%20c/;uid=3/;section=1.2.mime", urls.MessageUrl(3, "a/b c", section=Section((1, 2), "MIME"))),
            ("/Caf%C3%A9/Sub/;UID=9/;PARTIAL=10.20", urls.MessageUrl(9, "Café/Sub", partial=(10, 20))),
            ("/INBOX/;UID=9/;PARTIAL=10", urls.MessageUrl(9, "INBOX", partial=(10, None))),
            ("/INBOX/;UID=1/;SECTION=HEADER.FIELDS%20(FROM%20TO)",
             urls.MessageUrl(1, "INBOX", section=Section((), "HEADER.FIELDS", ("FROM", "TO")))),
            (";UID=5/;SECTION=TEXT", urls.MessageUrl(5, section=Section((), "TEXT"))),
            ("imap://alice@Mail.Example.org:143/INBOX/;UID=2",
             urls.MessageUrl(2, "INBOX", host="mail.example.org", port=143, user="alice")),
            ("IMAP://alice;AUTH=*@[::1]/INBOX/;UID=2", urls.MessageUrl(2, "INBOX", host="[::1]", user="alice")),
        ]
        for text, expected in table:
            with self.subTest(url=text):
                self.assertEqual(urls.parse(text), expected)

    def test_bad(self) -> None:
        for text in ("", "INBOX/;UID=1", "/INBOX", "/INBOX/;UID=0", "/;UID=1", "/INBOX/;UID=1/;SECTION=BOGUS",
                     "/INBOX/;UID=1/;SECTION=1/;PARTIAL=x", "/INBOX/;UID=99999999999", "http://x/INBOX/;UID=1",
                     "imap://host", "imap://host/INBOX/;UID=1/;URLAUTH=anonymous", "/INBOX?SUBJECT%20x",
                     "/%FF/;UID=1", "/INBOX/;UID=1/extra"):
            with self.subTest(url=text):
                self.assertRaises(urls.BadUrl, urls.parse, text)


class CatenateTests(TestCase):
    def setUp(self) -> None:
        self.context = session_context(self, server={"max_message_size": "4k"})
        self.inbox = self.context.store.mailboxes("alice").open("INBOX")
        self.inbox.append(FIRST)
        self.inbox.append(MULTI)
        self.client = self.connect()

    def connect(self, user: str = "alice") -> Client:
        client = Client(self.context, Clock())
        client.login(user)
        self.addCleanup(client.server.connectionLost, None)
        return client

    def drafts(self) -> list[bytes]:
        box = self.context.store.mailboxes("alice").open("Drafts")
        return [box.read(record.uid) for record in box.messages()]

    def append(self, parts: bytes, client: Client | None = None) -> str:
        (client or self.client).send(b"a APPEND Drafts " + parts + b"\r\n")
        return (client or self.client).lines()[-1]

    def assertNothingStored(self) -> None:
        self.assertEqual(self.drafts(), [])
        self.assertEqual(list(self.context.store.tmp_dir.iterdir()), [])

    def test_text_and_urls(self) -> None:
        answer = self.append(b'(\\Seen) CATENATE (URL "/INBOX/;UID=1/;SECTION=HEADER" TEXT {8+}\r\nnew body'
                             b" URL /INBOX/;UID=2/;SECTION=2 URL /INBOX;UIDVALIDITY=%d/;UID=2/;SECTION=1/;PARTIAL=5.3)"
                             % self.inbox.uid_validity)
        self.assertRegex(answer, r"^a OK \[APPENDUID \d+ 1\] APPEND completed$")
        self.assertEqual(self.drafts(), [FIRST_HEADER + b"new body<p>two</p>one"])
        box = self.context.store.mailboxes("alice").open("Drafts")
        self.assertEqual(box.messages()[0].flags.name, "SEEN")
        self.assertEqual(list(self.context.store.tmp_dir.iterdir()), [])

    def test_whole_message_absolute_url_and_relative_url(self) -> None:
        self.assertRegex(self.append(b"CATENATE (URL imap://alice@mail.example.org/INBOX/;UID=1)"), r"^a OK")
        self.client.command("s SELECT INBOX")
        self.assertRegex(self.append(b"CATENATE (URL ;UID=1/;SECTION=TEXT)"), r"^a OK")
        self.assertEqual(self.drafts(), [FIRST, b"first body\r\n"])

    def test_multiappend(self) -> None:
        answer = self.append(b"CATENATE (URL /INBOX/;UID=1) {3+}\r\nraw CATENATE (TEXT {3+}\r\nxyz)")
        self.assertRegex(answer, r"^a OK \[APPENDUID \d+ 1:3\]")
        self.assertEqual(self.drafts(), [FIRST, b"raw", b"xyz"])

    def test_bad_urls(self) -> None:
        """Anything but a message the user may read on this server: NO [BADURL url], nothing stored."""
        bob = self.connect("bob")
        bob.command('b CREATE Private')
        bad = [
            b"/INBOX;UIDVALIDITY=1/;UID=1",  # UIDVALIDITY has changed
            b"/INBOX/;UID=77",  # no such message
            b"/Nowhere/;UID=1",
            b'"/Other Users/bob/INBOX/;UID=1"',  # not shared with alice
            b"imap://elsewhere.example/INBOX/;UID=1",
            b"imap://mail.example.org:9/INBOX/;UID=1",  # another port
            b"imap://bob@mail.example.org/INBOX/;UID=1",
            b";UID=1",  # relative, but nothing is selected
            b'"/INBOX/;UID=1/;URLAUTH=anonymous"',
            b"http://mail.example.org/",
        ]
        for url in bad:
            with self.subTest(url=url):
                answer = self.append(b"CATENATE (TEXT {2+}\r\nhi URL %s TEXT {2+}\r\nho)" % url)
                shown = url.strip(b'"').decode()
                self.assertTrue(answer.startswith(f"a NO [{codes.BADURL} {shown}] "), answer)
        self.assertNothingStored()

    def test_shared_mailbox_needs_read(self) -> None:
        bob = self.connect("bob")
        self.context.store.mailboxes("bob").open("INBOX").append(FIRST)
        url = b'"/Other Users/bob/INBOX/;UID=1/;SECTION=TEXT"'
        bob.command("b SETACL INBOX alice l")
        self.assertTrue(self.append(b"CATENATE (URL %s)" % url).startswith("a NO [BADURL"))
        bob.command("b SETACL INBOX alice lr")
        self.assertRegex(self.append(b"CATENATE (URL %s)" % url), r"^a OK")
        self.assertEqual(self.drafts(), [b"first body\r\n"])
        self.assertEqual(self.context.store.mailboxes("bob").open("INBOX").messages()[0].flags.name, None)

    def test_multiappend_with_one_bad_url_stores_nothing(self) -> None:
        answer = self.append(b"CATENATE (URL /INBOX/;UID=1) CATENATE (URL /INBOX/;UID=9)")
        self.assertTrue(answer.startswith("a NO [BADURL /INBOX/;UID=9]"), answer)
        self.assertNothingStored()

    def test_too_big(self) -> None:
        """The result is bounded by max_message_size (4k here) however it is made."""
        answer = self.append(b"CATENATE (TEXT {3900+}\r\n%s URL /INBOX/;UID=2 URL /INBOX/;UID=2 URL /INBOX/;UID=2 "
                             b"URL /INBOX/;UID=2 URL /INBOX/;UID=2)" % (b"x" * 3900))
        self.assertTrue(answer.startswith(f"a NO [{codes.TOOBIG}]"), answer)
        self.assertNothingStored()

    def test_trycreate_comes_first(self) -> None:
        self.client.send(b"a APPEND Missing CATENATE (URL /INBOX;UIDVALIDITY=1/;UID=1)\r\n")
        self.assertTrue(self.client.lines()[-1].startswith(f"a NO [{codes.TRYCREATE}]"))

    def test_text_with_nul_is_refused(self) -> None:
        answer = self.append(b"CATENATE (URL /INBOX/;UID=1 TEXT {3+}\r\na\x00b)")
        self.assertTrue(answer.startswith(f"a NO [{codes.CANNOT}]"), answer)
        self.assertNothingStored()

    def test_a_stored_nul_comes_as_fetch_sends_it(self) -> None:
        self.inbox.append(b"Subject: old\r\n\r\na\x00b\r\n")
        self.assertRegex(self.append(b"CATENATE (URL /INBOX/;UID=3)"), r"^a OK")
        self.assertEqual(self.drafts(), [b"Subject: old\r\n\r\na\x80b\r\n"])

    def test_sync_literals(self) -> None:
        self.client.send(b"a APPEND Drafts CATENATE (URL /INBOX/;UID=1/;SECTION=HEADER TEXT {4}\r\n")
        self.assertEqual(self.client.lines(), ["+ Ready for literal data"])
        self.client.send(b"body)\r\n")
        self.assertRegex(self.client.lines()[-1], r"^a OK")
        self.assertEqual(self.drafts(), [FIRST_HEADER + b"body"])
