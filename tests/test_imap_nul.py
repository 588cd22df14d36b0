"""NUL octets and IMAP: APPEND refuses them, FETCH never sends one in a literal.

RFC 3501's CHAR8 excludes %x00, so a literal may not carry a NUL.  APPEND
of a message holding one is refused (``NO``) and stores nothing; a message
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

    def test_literal8_with_nul_is_unknown_cte(self) -> None:
        """RFC 3516 4.3: a store that keeps no binary content says NO [UNKNOWN-CTE]."""
        self.client.send(b"a APPEND INBOX ~{%d+}\r\n%s\r\n" % (len(MESSAGE), MESSAGE))
        self.assertRegex(self.client.lines()[0], rf"^a NO \[{codes.UNKNOWN_CTE}\]")
        self.assertEqual(self.stored(), [])
