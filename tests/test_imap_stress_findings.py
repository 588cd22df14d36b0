"""What imaptest's stress runs (bench/stress_bench.py) found, as transcripts.

imaptest checks every answer of many clients sharing mailboxes: a keyword
another session set must be named in FLAGS before a FETCH shows it.  (A
STORE of no flags at all, found the same way, is in test_session_regressions.)
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.imap_support import run_transcript


class StressFindingsTests(TestCase):
    def test_fetch_names_a_keyword_set_by_another_session_in_flags_first(self) -> None:
        run_transcript(self, r"""
@append INBOX One
@session a
C: a1 LOGIN alice secret
S~ a1 OK .*
C: a2 SELECT INBOX
S~ \* FLAGS \(\\Seen \\Answered \\Flagged \\Deleted \\Draft\)
S~ .*
S~ .*
S~ .*
S~ .*
S~ .*
S~ .*
S~ .*
S~ .*
S~ a2 OK .*
@session b
C: b1 LOGIN alice secret
S~ b1 OK .*
C: b2 SELECT INBOX
S~ .*
S~ .*
S~ .*
S~ .*
S~ .*
S~ .*
S~ .*
S~ .*
S~ .*
S~ b2 OK .*
C: b3 STORE 1 +FLAGS.SILENT ($Label5)
S: * FLAGS (\Seen \Answered \Flagged \Deleted \Draft $Label5)
S: * OK [PERMANENTFLAGS (\Seen \Answered \Flagged \Deleted \Draft $Label5 \*)] Flags permitted
S: b3 OK STORE completed
@session a
C: a3 FETCH 1 (FLAGS)
S: * FLAGS (\Seen \Answered \Flagged \Deleted \Draft $Label5)
S: * OK [PERMANENTFLAGS (\Seen \Answered \Flagged \Deleted \Draft $Label5 \*)] Flags permitted
S: * 1 FETCH (FLAGS (\Recent $Label5))
S: a3 OK FETCH completed
C: a4 NOOP
S: a4 OK NOOP completed
""")
