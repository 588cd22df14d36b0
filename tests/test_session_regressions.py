"""Bad input found by fuzzing the sessions (tests/test_fuzz_sessions.py), one
regression each: the input, and the clear error it must get while the
session goes on."""

from __future__ import annotations

import base64
from twisted.trial.unittest import TestCase

from tests.imap_support import run_transcript

TOO_LONG_RESPONSE = base64.b64encode(b"x" * 60000).decode()  # over 64 KiB once encoded


class IMAPRegressionTests(TestCase):
    def test_overlong_authenticate_response_then_commands(self) -> None:
        """A SASL response over the line limit fails AUTHENTICATE; the next
        line is a command again, not one more "unexpected line"."""
        run_transcript(self, f"""
C: a1 AUTHENTICATE PLAIN
S~ \\+ ?
C: {TOO_LONG_RESPONSE}
S: a1 BAD Authentication line too long
C: a2 NOOP
S: a2 OK NOOP completed
""")

    def test_overlong_line_while_idling(self) -> None:
        run_transcript(self, f"""
C: L LOGIN alice secret
S~ L OK .*
C: a1 IDLE
S: + idling
C: {TOO_LONG_RESPONSE}
S: a1 BAD Expected DONE
C: a2 NOOP
S: a2 OK NOOP completed
""")

