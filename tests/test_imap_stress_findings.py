"""What imaptest's stress runs (bench/stress_bench.py) found.

imaptest checks every answer of many clients sharing mailboxes: a keyword
another session set must be named in FLAGS before a FETCH shows it.  (A
STORE of no flags at all, found the same way, is in test_session_regressions.)
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.imap_support import Client, deliver, session_context

FLAGS = "* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft $Label5)"
PERMANENT = "* OK [PERMANENTFLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft $Label5 \\*)] Flags permitted"


class StressFindingsTests(TestCase):
    def test_fetch_names_a_keyword_set_by_another_session_in_flags_first(self) -> None:
        context, clock = session_context(self), Clock()
        deliver(context, "alice", "INBOX")
        first, second = Client(context, clock), Client(context, clock)
        for client in (first, second):
            client.login()
            client.command("s SELECT INBOX")
        self.assertEqual(second.command("t STORE 1 +FLAGS.SILENT ($Label5)"),
                         [FLAGS, PERMANENT, "t OK STORE completed"])
        self.assertEqual(first.command("f FETCH 1 (FLAGS)"),
                         [FLAGS, PERMANENT, "* 1 FETCH (FLAGS (\\Recent $Label5))", "f OK FETCH completed"])
        self.assertEqual(first.command("n NOOP"), ["n OK NOOP completed"])
