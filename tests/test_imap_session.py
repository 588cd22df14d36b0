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


class StartTLSTests(TestCase):
    def test_plaintext_pipelined_after_starttls_is_discarded(self) -> None:
        """RFC 3501 / CVE-2011-0411 style injection: nothing sent in the
        clear after STARTTLS runs once TLS is up."""
        from tests.imap_support import REMOTE

        context = session_context(self)
        client = Client(context, Clock(), peer=REMOTE)
        client.send(b"a STARTTLS\r\nb LOGIN alice secret\r\nc CREATE Injected\r\n")
        self.assertEqual(client.lines(), ["a OK Begin TLS negotiation now"])
        self.assertTrue(client.transport.tls_started)
        client.send(b"d NOOP\r\n")
        self.assertEqual(client.lines(), ["d OK NOOP completed"])
        self.assertFalse(context.store.mailboxes("alice").exists("Injected"))


class TimerTests(TestCase):
    def test_autologout_after_thirty_minutes(self) -> None:
        clock = Clock()
        client = Client(session_context(self), clock)
        client.login()
        clock.advance(29 * 60)
        self.assertEqual(client.lines(), [])
        client.send(b"a NOOP\r\n")
        client.take()
        clock.advance(30 * 60)
        self.assertEqual(client.lines(), ["* BYE Autologout; idle for too long"])
        self.assertTrue(client.transport.disconnecting)

    def test_unauthenticated_timeout_is_shorter(self) -> None:
        clock = Clock()
        client = Client(session_context(self), clock)
        clock.advance(client.server.PREAUTH_TIMEOUT)
        self.assertEqual(client.lines(), ["* BYE Autologout; idle for too long"])

    def test_logout_closes(self) -> None:
        client = Client(session_context(self), Clock())
        self.assertEqual(client.command("a LOGOUT"), ["* BYE Logging out", "a OK LOGOUT completed"])
        self.assertTrue(client.transport.disconnecting)
        client.send(b"b NOOP\r\n")
        self.assertEqual(client.lines(), [])


class BoundsAndFlowTests(TestCase):
    def _selected(self, count: int, body: str = "x" * 100):
        from tests.imap_support import message

        context = session_context(self)
        box = context.store.mailboxes("alice").open("INBOX")
        box.append_many([(message(f"m{n}", body), None, (), None) for n in range(count)])
        clock = Clock()
        client = Client(context, clock)
        client.login()
        client.command("s SELECT INBOX")
        return client, clock

    def test_huge_sequence_set_resolves_against_the_map(self) -> None:
        client, _ = self._selected(3)
        self.assertEqual(client.command("a UID FETCH 1:4294967295 UID")[-1], "a OK UID FETCH completed")
        self.assertEqual(client.command("b FETCH 1:4294967295 UID"), ["b BAD Invalid message sequence number"])
        answer = client.command("c SEARCH 1:4294967295")
        self.assertEqual(answer, ["* SEARCH 1 2 3", "c OK SEARCH completed"])

    def test_fetch_is_produced_only_while_the_reader_keeps_up(self) -> None:
        """A slow reader: the transport pauses the writer whenever 200 kB
        wait unsent, and the FETCH never runs ahead of it."""
        client, clock = self._selected(40, "y" * 60_000)
        transport = client.transport
        limit = 200_000

        def write(data, original=transport.write):
            original(data)
            if len(transport.value()) > limit and transport.producer is not None:
                transport.producer.pauseProducing()

        transport.write = write
        client.server.dataReceived(b"f FETCH 1:* BODY.PEEK[]\r\n")
        received, rounds = b"", 0
        while not received.endswith(b"f OK FETCH completed\r\n"):
            clock.advance(0)
            pending = transport.value()
            self.assertLessEqual(len(pending), limit + 70_000)
            received += pending
            transport.clear()
            rounds += 1
            self.assertLess(rounds, 1000)
            if transport.producer is not None:
                transport.producer.resumeProducing()
        self.assertGreater(rounds, 10)
        self.assertEqual(received.count(b" FETCH (BODY[] {"), 40)

    def test_pipelined_commands_run_in_order_one_at_a_time(self) -> None:
        client, _ = self._selected(2)
        client.send(b"a FETCH 1 UID\r\nb STORE 2 +FLAGS (\\Seen)\r\nc NOOP\r\n")
        self.assertEqual(
            client.lines(),
            ["* 1 FETCH (UID 1)", "a OK FETCH completed", "* 2 FETCH (FLAGS (\\Seen \\Recent))",
             "b OK STORE completed", "c OK NOOP completed"],
        )

    def test_reading_pauses_when_much_input_waits(self) -> None:
        client, _ = self._selected(1)
        client.server.MAX_BUFFERED = 1000
        client.server._running = object()  # as if a command were still running
        client.server.dataReceived(b"x NOOP\r\n" * 500)
        self.assertEqual(client.transport.producerState, "paused")
        client.server._running = None
        client.server._advance()
        client.settle()
        self.assertEqual(client.transport.producerState, "producing")
        self.assertEqual(client.lines().count("x OK NOOP completed"), 500)

    def test_append_before_login_is_refused_without_reading_the_literal(self) -> None:
        client = Client(session_context(self), Clock())
        self.assertEqual(client.command("a APPEND INBOX {5}"), ["a BAD APPEND needs authentication"])

    def test_oversized_append_is_toobig(self) -> None:
        client, _ = self._selected(0)
        answer = client.command("a APPEND INBOX {999999999}")
        self.assertEqual(answer, ["a NO [TOOBIG] message too big"])

    def test_select_failure_leaves_authenticated_state(self) -> None:
        client, _ = self._selected(1)
        self.assertEqual(client.command("a SELECT Nope"), ["* OK [CLOSED] Previous mailbox closed",
                                                           "a NO [NONEXISTENT] Mailbox Nope does not exist"])
        self.assertEqual(client.command("b FETCH 1 UID"), ["b BAD FETCH is not allowed in the authenticated state"])


class SearchPrefilterTests(TestCase):
    """The index prefilter for header keys never hides a match over the wire."""

    def test_folded_and_encoded_headers_still_match(self) -> None:
        context = session_context(self)
        inbox = context.store.mailboxes("alice").open("INBOX")
        folded = inbox.append(b"From: a@example.org\r\nSubject: Quarterly\r\n Report\r\n\r\nx\r\n")
        encoded = inbox.append(b"From: a@example.org\r\nSubject: =?utf-8?q?Caf=C3=A9_Quarterly_Report?=\r\n\r\nx\r\n")
        inbox.append(b"From: a@example.org\r\nSubject: lunch\r\n\r\nx\r\n")
        client = Client(context, Clock())
        client.login()
        client.command("s SELECT INBOX")
        for criteria, expected in ((b'SUBJECT "quarterly report"', [folded, encoded]),
                                   (b'HEADER Subject "QUARTERLY"', [folded, encoded]),
                                   (b"CHARSET UTF-8 SUBJECT {5+}\r\ncaf\xc3\xa9", [encoded]),
                                   (b"SUBJECT nothing-like-this", [])):
            with self.subTest(criteria=criteria):
                answer = client.command((b"u UID SEARCH " + criteria).decode("utf-8"))
                self.assertEqual(answer[0], "* SEARCH" + "".join(f" {uid}" for uid in expected))
                self.assertTrue(answer[-1].startswith("u OK"))
