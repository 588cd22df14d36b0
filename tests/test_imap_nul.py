"""NUL octets and IMAP: APPEND refuses them, FETCH never sends one in a literal.

RFC 3501's CHAR8 excludes %x00, so a literal may not carry a NUL.  APPEND
of a message holding one is refused (``NO``) and stores nothing, unless it
comes in an RFC 3516 literal8: then its NUL parts are stored base64; a message
that already holds one (an old store, a reconstruct) is sent with each NUL
replaced by 0x80, as Dovecot does, so that the literal keeps its length.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from cyrusmail.imap import codes
from tests.imap_support import Client, session_context

MESSAGE = b"From: carol@example.org\r\nSubject: nul\r\n\r\nbefore\x00after\r\n"
CLEAN = b"From: carol@example.org\r\nSubject: clean\r\n\r\nnothing odd\r\n"


class AppendTests(TestCase):
    def setUp(self) -> None:
        self.context = session_context(self)
        self.client = Client(self.context, Clock())
        self.client.login()
        self.addCleanup(self.client.server.connectionLost, None)

    def stored(self) -> list[bytes]:
        box = self.context.store.mailboxes("alice").open("INBOX")
        return [box.read(record.uid) for record in box.messages()]

    def tmp_files(self) -> list:
        return list(self.context.store.tmp_dir.iterdir())

    def test_append_with_nul_is_refused(self) -> None:
        self.client.send(b"a APPEND INBOX {%d+}\r\n%s\r\n" % (len(MESSAGE), MESSAGE))
        answer = self.client.lines()
        self.assertEqual(len(answer), 1)
        self.assertRegex(answer[0], rf"^a NO \[{codes.CANNOT}\] .*NUL")
        self.assertEqual(self.stored(), [])
        self.assertEqual(self.tmp_files(), [])
        self.assertEqual(self.client.command("b NOOP"), ["b OK NOOP completed"])

    def test_staged_file_goes_as_soon_as_the_nul_arrives(self) -> None:
        """Detected while streaming: nothing half-written waits in tmp/ for the literal's end."""
        self.client.send(b"a APPEND INBOX {%d}\r\n" % len(MESSAGE))
        self.assertEqual(self.client.lines(), ["+ Ready for literal data"])
        self.client.send(MESSAGE[:10])
        self.assertEqual(len(self.tmp_files()), 1)  # the literal streams into a staged file
        self.client.send(MESSAGE[10:-5])
        self.assertEqual(self.tmp_files(), [])
        self.client.send(MESSAGE[-5:] + b"\r\n")
        self.assertRegex(self.client.lines()[0], rf"^a NO \[{codes.CANNOT}\]")
        self.assertEqual(self.stored(), [])

    def test_multiappend_with_one_nul_appends_nothing(self) -> None:
        line = b"a APPEND INBOX"
        for message in (CLEAN, MESSAGE, CLEAN):
            line += b" {%d+}\r\n%s" % (len(message), message)
        self.client.send(line + b"\r\n")
        self.assertRegex(self.client.lines()[0], rf"^a NO \[{codes.CANNOT}\]")
        self.assertEqual(self.stored(), [])
        self.assertEqual(self.tmp_files(), [])
        self.client.send(b"b APPEND INBOX {%d+}\r\n%s\r\n" % (len(CLEAN), CLEAN))
        self.assertRegex(self.client.lines()[0], r"^b OK \[APPENDUID \d+ 1\]")
        self.assertEqual(self.stored(), [CLEAN])

    def test_literal8_with_nul_in_a_header_is_unknown_cte(self) -> None:
        """RFC 3516 4.3: content the store cannot keep is NO [UNKNOWN-CTE]; nothing is stored."""
        for sync in (b"", b"+"):
            self.client.send(b"a APPEND INBOX ~{%d%s}\r\n" % (len(STORED), sync))
            if not sync:
                self.assertEqual(self.client.lines(), ["+ Ready for literal data"])
            self.client.send(STORED + b"\r\n")
            self.assertRegex(self.client.lines()[0], rf"^a NO \[{codes.UNKNOWN_CTE}\]")
        self.assertEqual(self.stored(), [])
        self.assertEqual(self.tmp_files(), [])

    def test_literal8_with_nul_is_stored_base64(self) -> None:
        """RFC 3516 4.3: the part is re-encoded as base64 (no data lost); BINARY gives it back."""
        self.client.send(b"a APPEND INBOX ~{%d+}\r\n%s\r\n" % (len(MESSAGE), MESSAGE))
        self.assertRegex(self.client.lines()[0], r"^a OK \[APPENDUID \d+ 1\]")
        self.assertEqual(self.stored(), [(
            b"From: carol@example.org\r\nSubject: nul\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            b"YmVmb3JlAGFmdGVyDQo=\r\n")])
        self.assertEqual(self.tmp_files(), [])
        self.client.command("s SELECT INBOX")
        self.client.send(b"f FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1] BODY.PEEK[1])\r\n")
        self.assertEqual(self.client.take(),
                         b"* 1 FETCH (BINARY.SIZE[1] 14 BINARY[1] ~{14}\r\nbefore\x00after\r\n"
                         b" BODY[1] {22}\r\nYmVmb3JlAGFmdGVyDQo=\r\n)\r\nf OK FETCH completed\r\n")

    def test_literal8_without_nul_is_stored_as_sent(self) -> None:
        self.client.send(b"a APPEND INBOX ~{%d+}\r\n%s\r\n" % (len(CLEAN), CLEAN))
        self.assertRegex(self.client.lines()[0], r"^a OK \[APPENDUID \d+ 1\]")
        self.assertEqual(self.stored(), [CLEAN])


STORED = (b"From: carol@example.org\r\nSubject: a\x00b\r\nX-Odd: \x00\r\n\r\n"
          b"line one\x00\r\n\x00\x00 line two\r\n")


class FetchTests(TestCase):
    """A message stored with NULs (put in behind delivery's back, as an old store may hold)."""

    def setUp(self) -> None:
        self.context = session_context(self)
        self.box = self.context.store.mailboxes("alice").open("INBOX")
        self.client = Client(self.context, Clock())
        self.client.login()
        self.addCleanup(self.client.server.connectionLost, None)

    def fetch(self, message: bytes, items: str) -> bytes:
        self.box.append(message)
        self.client.command("s SELECT INBOX")
        self.client.send(f"f FETCH * {items}\r\n")
        answer = self.client.take()
        self.assertTrue(answer.endswith(b"f OK FETCH completed\r\n"), answer[-200:])
        return answer

    def test_no_nul_in_any_literal(self) -> None:
        items = ("(BODY.PEEK[] BODY.PEEK[TEXT] BODY.PEEK[HEADER] BODY.PEEK[HEADER.FIELDS (SUBJECT X-ODD)] "
                 "BODY.PEEK[1] BODY.PEEK[]<5.40> RFC822.HEADER ENVELOPE BODYSTRUCTURE)")
        answer = self.fetch(STORED, items)
        self.assertNotIn(b"\x00", answer)
        # Same length: each NUL is one 0x80.
        stand_in = STORED.replace(b"\x00", b"\x80")
        self.assertIn(b"BODY[] {%d}\r\n%s" % (len(STORED), stand_in), answer)
        self.assertIn(b"BODY[]<5> {40}\r\n" + stand_in[5:45], answer)
        self.assertIn(b"(SUBJECT X-ODD)] {26}\r\nSubject: a\x80b\r\nX-Odd: \x80\r\n\r\n", answer)
        self.assertIn(b"ENVELOPE (NIL {3}\r\na\x80b (", answer)

    def test_rfc822_and_fast_path_envelope(self) -> None:
        for items in ("RFC822", "ENVELOPE", "(UID ENVELOPE BODYSTRUCTURE)", "RFC822.TEXT"):
            with self.subTest(items=items):
                self.assertNotIn(b"\x00", self.fetch(STORED, items))

    def test_streamed_literal_is_nul_free_and_keeps_its_length(self) -> None:
        from cyrusmail.imap.fetch import INLINE_LIMIT

        big = STORED + (b"padding \x00 padding\r\n" * (2 * INLINE_LIMIT // 20))
        answer = self.fetch(big, "BODY.PEEK[]")
        self.assertNotIn(b"\x00", answer)
        self.assertIn(b"BODY[] {%d}\r\n" % len(big) + big.replace(b"\x00", b"\x80") + b")\r\n", answer)

    def test_binary_keeps_its_nul_in_a_literal8(self) -> None:
        """RFC 3516: literal8 may carry NUL, so BINARY[] sends the stored bytes."""
        answer = self.fetch(STORED, "BINARY.PEEK[]")
        self.assertIn(b"BINARY[] ~{%d}\r\n%s" % (len(STORED), STORED), answer)
