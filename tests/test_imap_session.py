"""IMAP session transcripts: every command, response code and state rule.

Each file in ``tests/imap_transcripts`` is one test (see
``tests/imap_support.py`` for the format); the tests below cover what a
transcript cannot say as well (greeting, timers, flow control).
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.imap_support import TRANSCRIPTS, Client, run_transcript, session_context


class TranscriptTests(TestCase):
    """One test per transcript file."""


def _transcript_test(path):
    def test(self) -> None:
        run_transcript(self, path.read_text(encoding="utf-8"))

    test.__doc__ = path.read_text(encoding="utf-8").splitlines()[0].lstrip("# ")
    return test


for _path in sorted(TRANSCRIPTS.glob("*.txt")):
    setattr(TranscriptTests, f"test_{_path.stem}", _transcript_test(_path))


class GreetingTests(TestCase):
    def test_greeting_has_capabilities(self) -> None:
        client = Client(session_context(self), Clock())
        self.assertRegex(client.greeting, rb"^\* OK \[CAPABILITY IMAP4rev1 .*\] mail.example.org cyrusmail IMAP4rev1 ready\r\n$")
