"""Bad input found by fuzzing the sessions (tests/test_fuzz_sessions.py), one
regression each: the input, and the clear error it must get while the
session goes on."""

from __future__ import annotations

import base64
import re
import time

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from cyrusmail.imap import commands as c
from cyrusmail.imap.wire import CommandParser, ParseError
from cyrusmail.store.names import pattern_regex
from tests.imap_support import Client, run_transcript, session_context

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


    def test_refused_command_with_literal_plus_split_between_cr_and_lf(self) -> None:
        """A refused command's later non-synchronizing literal is skipped
        wherever the input is cut, even between the CR and the LF after
        its announcement (its content was once run as commands)."""
        data = b"t1 MYRIGHTS{2+}\r\n\x00\x00~{20+}\r\nSubject: x\r\n\r\nbody\r\n INBOX\r\nz NOOP\r\n"
        for cut in range(1, len(data)):
            parser = CommandParser()
            events = parser.feed(data[:cut]) + parser.feed(data[cut:])
            self.assertEqual(events, [ParseError("t1", "unknown command"), c.Noop("z")], f"cut at {cut}")


    def test_append_date_time_beyond_the_year_9999_in_utc(self) -> None:
        """An internal date the index cannot turn back into a date once
        made every later FETCH INTERNALDATE of the message a SERVERBUG."""
        run_transcript(self, """
C: L LOGIN alice secret
S~ L OK .*
C: a1 APPEND INBOX "31-Dec-9999 23:59:59 -2359" {2+}
C: x
S: a1 BAD date-time out of range
C: a2 APPEND INBOX " 1-Jan-0001 00:00:00 +0100" {2+}
C: x
S: a2 BAD date-time out of range
C: a3 APPEND INBOX "31-Dec-9999 23:59:59 +0000" {2+}
C: x
S~ a3 OK \\[APPENDUID [0-9]+ 1\\] APPEND completed
C: a4 EXAMINE INBOX
S~ \\* .*
S~ \\* .*
S~ \\* .*
S~ \\* .*
S~ \\* .*
S~ \\* .*
S~ \\* .*
S~ \\* .*
S~ \\* .*
S~ a4 OK .*
C: a5 FETCH 1 INTERNALDATE
S: * 1 FETCH (INTERNALDATE "31-Dec-9999 23:59:59 +0000")
S: a5 OK FETCH completed
""")


    def test_overlong_keyword_refused(self) -> None:
        """A 60 KB keyword was stored and then sent in every FLAGS response."""
        long_keyword = "k" * 251
        run_transcript(self, f"""
C: L LOGIN alice secret
S~ L OK .*
C: a1 APPEND INBOX ({long_keyword}) {{2+}}
C: x
S: a1 BAD keyword longer than 250 characters
C: a2 APPEND INBOX ({"k" * 250}) {{2+}}
C: x
S~ a2 OK .*
C: a3 SELECT INBOX
S~ \\* FLAGS .*
S~ \\* 1 EXISTS
S~ \\* .*
S~ \\* .*
S~ \\* .*
S~ \\* .*
S~ \\* .*
S~ \\* .*
S~ \\* .*
S~ a3 OK .*
C: a4 STORE 1 +FLAGS ({long_keyword})
S: a4 BAD keyword longer than 250 characters
C: a5 STORE 1 FLAGS (\\{long_keyword})
S: a5 BAD \\{"k" * 249} cannot be set
""")


    def test_search_with_thousands_of_header_keys(self) -> None:
        """Each SUBJECT word went into one SQL prefilter expression, past
        SQLite's depth limit: NO [SERVERBUG] and a logged traceback.  (Now at
        most 1,000 keys: three words in each of them.)"""
        keys = " ".join(f'SUBJECT "w{number} x{number} y{number}"' for number in range(1000))
        run_transcript(self, f"""
@append INBOX w1 w2
C: L LOGIN alice secret
S~ L OK .*
C: a1 EXAMINE INBOX
S~ \\* .*
S~ \\* .*
S~ \\* .*
S~ \\* .*
S~ \\* .*
S~ \\* .*
S~ \\* .*
S~ \\* .*
S~ \\* .*
S~ a1 OK .*
C: a2 SEARCH {keys}
S: * SEARCH
S: a2 OK SEARCH completed
C: a3 SEARCH SUBJECT w1 SUBJECT w2 {" ".join(["SUBJECT w"] * 998)}
S: * SEARCH 1
S: a3 OK SEARCH completed
""")


    def test_logout_while_reading_is_paused(self) -> None:
        """Input over the buffer bound behind a pipelined LOGOUT: reading
        was paused, and once LOGOUT had hung up the session resumed it
        (RuntimeError from the transport, logged as a crash)."""
        clock = Clock()
        client = Client(session_context(self), clock)
        client.send(b"a1 AUTHENTICATE PLAIN\r\n" * 2 + b"a2 LOGOUT\r\n" + b"x" * 300_000)
        output = client.take()
        self.assertTrue(client.transport.disconnecting)
        self.assertIn(b"* BYE Logging out\r\na2 OK LOGOUT completed\r\n", output)


def _reference_regex(pattern: str) -> re.Pattern[str]:
    """The LIST pattern as the regular expression it used to be compiled to."""
    def glob(text: str) -> str:
        return "".join(".*" if ch == "*" else "[^/]*" if ch == "%" else re.escape(ch) for ch in text)

    alternatives = [glob(pattern)]
    if pattern[:5].upper() == "INBOX":
        alternatives.append(r"(?=INBOX(?:/|\Z))" + glob("INBOX" + pattern[5:]))
    return re.compile("|".join(rf"(?:{regex}\Z)" for regex in alternatives), re.DOTALL)


class ListPatternTests(TestCase):
    def test_backtracking_pattern_answers_at_once(self) -> None:
        """``LIST "" *a*a...*ab`` against a mailbox named with forty ``a``
        once took minutes of CPU (a backtracking regular expression)."""
        started = time.monotonic()
        run_transcript(self, f"""
C: L LOGIN alice secret
S~ L OK .*
C: a1 CREATE {"a" * 40}
S~ a1 OK \\[MAILBOXID \\(F[0-9a-f]+\\)\\] CREATE completed
C: a2 LIST "" {"*a" * 16}b
S: a2 OK LIST completed
C: a3 LIST "" {"*a" * 16}
S: * LIST (\\HasNoChildren) "/" "{"a" * 40}"
S: a3 OK LIST completed
""")
        self.assertLess(time.monotonic() - started, 60)  # a hang, not a speed, check

    @settings(max_examples=300, deadline=None)
    @given(st.text("aIN/BOXb*%", max_size=10), st.text("aIN/BOXb", max_size=12))
    def test_same_as_the_regular_expression(self, pattern: str, name: str) -> None:
        self.assertEqual(pattern_regex(pattern).match(name), bool(_reference_regex(pattern).match(name)))


class EhloEchoTests(TestCase):
    def test_an_unprintable_ehlo_name_is_not_echoed_raw(self):
        from tests.test_smtp_session_support import (
            Conversation,
            make_server,
            submission_factory,
        )

        context, clock = make_server(self.mktemp())
        talk = Conversation(submission_factory(context, clock))
        [(code, _, lines)] = talk.send(b"EHLO \x7fclient\r\n")
        self.assertEqual(code, 250)
        self.assertIn("Hello ?client", lines[0])
        [(code, _, lines)] = talk.send(b"HELO \x7fclient\r\n")
        self.assertEqual((code, lines[0].endswith("Hello ?client")), (250, True))


class AbsurdChunkTests(TestCase):
    def test_a_chunk_far_over_the_limit_is_refused_and_the_session_closed(self):
        from cyrusmail.smtp import codes
        from tests.test_smtp_session_support import (
            Conversation,
            expected,
            lmtp_factory,
            make_server,
        )

        context, clock = make_server(self.mktemp())
        talk = Conversation(lmtp_factory(context, clock))
        talk.send("LHLO mx\r\nMAIL FROM:<x@remote.example>\r\nRCPT TO:<alice@example.org>\r\n")
        self.assertEqual(talk.codes("BDAT 99999999999999999999 LAST\r\nRSET\r\n"),
                         expected(codes.TOO_BIG, codes.CLOSING_AFTER_BAD_BDAT))
        self.assertTrue(talk.transport.disconnecting)
        self.assertEqual(context.store.mailboxes("alice").open("INBOX").status().messages, 0)


class KeywordLimitTests(TestCase):
    def test_a_mailbox_holds_a_bounded_number_of_distinct_keywords(self):
        from cyrusmail.imap.selected import MAX_KEYWORDS

        context = session_context(self)
        context.store.mailboxes("alice").open("INBOX").append(b"Subject: x\r\n\r\nx\r\n")
        client = Client(context, Clock())
        client.login()
        client.command("s SELECT INBOX")
        batch = 200
        for start in range(0, MAX_KEYWORDS, batch):
            words = " ".join(f"k{n}" for n in range(start, start + batch))
            self.assertTrue(client.command(f"a STORE 1 +FLAGS.SILENT ({words})")[-1].startswith("a OK"))
        self.assertEqual(client.command("b STORE 1 +FLAGS (one-too-many)")[-1],
                         "b NO [LIMIT] Too many distinct keywords in this mailbox")
        self.assertTrue(client.command("c STORE 1 +FLAGS (k5 \\Seen)")[-1].startswith("c OK"))  # known ones are fine
        self.assertTrue(client.command("d STORE 1 -FLAGS (k5)")[-1].startswith("d OK"))


class EmptyFlagListTests(TestCase):
    """``STORE n +FLAGS ()`` asks to change nothing: OK, nothing changed (imaptest's stress run
    got NO [NOPERM] for it)."""

    def test_adding_or_removing_no_flags_is_a_plain_ok(self):
        context = session_context(self)
        context.store.mailboxes("alice").open("INBOX").append(b"Subject: x\r\n\r\nx\r\n")
        client = Client(context, Clock())
        client.login()
        client.command("s SELECT INBOX")
        before = client.command("f FETCH 1 (FLAGS)")
        for line in ("a STORE 1 +FLAGS ()", "b STORE 1 -FLAGS.SILENT ()", "c UID STORE 1 +FLAGS ()"):
            self.assertTrue(client.command(line)[-1].startswith(line.split()[0] + " OK"), line)
        self.assertEqual(client.command("f FETCH 1 (FLAGS)"), before)
