"""Tests for cyrusmail.smtp.wire message data: DATA, BDAT and SMTP smuggling.

The rule under test (see the module docstring of wire.py): only CRLF "."
CRLF ends DATA; a bare CR or LF fails the message after its end, and
nothing inside a message is ever read as a command.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from cyrusmail.smtp import codes
from cyrusmail.smtp.wire import (
    Auth,
    AuthResponse,
    Bdat,
    BodyType,
    ChunkEnd,
    Command,
    CommandError,
    Data,
    DataChunk,
    DataEnd,
    Ehlo,
    Event,
    Limits,
    Mail,
    Mode,
    Noop,
    Path,
    Quit,
    Rcpt,
    Rset,
    SMTPParser,
    Starttls,
)


class AcceptingSession:
    """Drives a parser as a session that says yes to everything would.

    354 after DATA, every BDAT chunk accepted, 334 after AUTH and one
    response, 220 after STARTTLS.  Consecutive DataChunks are merged so
    that results do not depend on how the input was split.
    """

    def __init__(self, max_size: int | None = None, *, binary: bool = False) -> None:
        self.parser = SMTPParser()
        self.max_size = max_size
        self.binary = binary
        self.events: list[Event] = []

    def feed(self, data: bytes) -> AcceptingSession:
        pending = self.parser.feed(data)
        while pending:
            for event in pending:
                self._record(event)
            pending = []
            paused = self.parser.paused_on
            if paused is None:
                break
            if isinstance(paused, Data):
                self.parser.start_data(self.max_size)
            elif isinstance(paused, Bdat):
                self.parser.start_data(self.max_size, binary=self.binary)
            elif isinstance(paused, Auth) and paused.initial_response is None:
                self.parser.start_auth()
            elif isinstance(paused, Starttls):
                self.parser.discard_buffered()
            else:
                self.parser.resume()
            pending = self.parser.feed()
        return self

    def _record(self, event: Event) -> None:
        if (
            isinstance(event, DataChunk)
            and self.events
            and isinstance(self.events[-1], DataChunk)
        ):
            self.events[-1] = DataChunk(self.events[-1].data + event.data)
        else:
            self.events.append(event)


def run(data: bytes, cuts: list[int] | None = None, **options: object) -> list[Event]:
    """Feed ``data`` cut at ``cuts`` (default: whole) to an AcceptingSession."""
    session = AcceptingSession(**options)  # type: ignore[arg-type]
    previous = 0
    for cut in sorted(cuts or []):
        session.feed(data[previous:cut])
        previous = cut
    session.feed(data[previous:])
    return session.events


def run_bytewise(data: bytes, **options: object) -> list[Event]:
    return run(data, list(range(len(data))), **options)


def stuff(body: bytes) -> bytes:
    """Dot-stuff as a client must: a "." after each CRLF (and at the start) doubles."""
    stuffed = body.replace(b"\r\n.", b"\r\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed


def is_canonical(text: bytes) -> bool:
    """No bare CR and no bare LF."""
    crlf = text.count(b"\r\n")
    return text.count(b"\r") == crlf and text.count(b"\n") == crlf


# (what follows "DATA\r\n" on the wire, the message it gives, the error)
DATA_TABLE: list[tuple[bytes, bytes, codes.Reply | None]] = [
    (b".\r\n", b"", None),
    (b"\r\n.\r\n", b"\r\n", None),
    (b"a\r\n.\r\n", b"a\r\n", None),
    (b"..\r\n.\r\n", b".\r\n", None),
    (b"...\r\n.\r\n", b"..\r\n", None),
    (b"..x\r\n.\r\n", b".x\r\n", None),
    (b".x\r\n.\r\n", b"x\r\n", None),
    (b"a\r\n..\r\n..a\r\n.\r\n", b"a\r\n.\r\n.a\r\n", None),
    (b"a.\r\n.\r\n", b"a.\r\n", None),
    (b"a\r\n .\r\n.\r\n", b"a\r\n .\r\n", None),
    (b"x" * 998 + b"\r\n.\r\n", b"x" * 998 + b"\r\n", None),
    (b"." + b"x" * 998 + b"\r\n.\r\n", b"x" * 998 + b"\r\n", None),
    (b"x" * 999 + b"\r\n.\r\n", b"", codes.DATA_LINE_TOO_LONG),
    (b"a\nb\r\n.\r\n", b"", codes.BARE_NEWLINE),
    (b"a\rb\r\n.\r\n", b"", codes.BARE_NEWLINE),
    (b"a\r\r\n.\r\n", b"", codes.BARE_NEWLINE),
    (b"\n.\r\n.\r\n", b"", codes.BARE_NEWLINE),
    (b"a\x00b\r\n.\r\n", b"", codes.NUL_IN_MESSAGE),
    (b"\x00\r\n.\r\n", b"", codes.NUL_IN_MESSAGE),
    (b".\x00\r\n.\r\n", b"", codes.NUL_IN_MESSAGE),
    (b"a\r\n\r\n" + b"x" * 500 + b"\x00\r\n.\r\n", b"", codes.NUL_IN_MESSAGE),
]

# Every way a smuggler might end the data early.  None of them may end it;
# the last two hold no bare CR or LF: lines of the message, refused for their NUL.
SMUGGLING_ENDINGS = [
    b"\n.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r\n",
    b"\n.\r",
    b"\r\n.\r",
    b"\r\n.\r\r\n",
    b"\r\n. \r\n",
    b"\r\n.\x00\r\n",
    b"\n\n.\n\n",
    b"\r\n\x00.\r\n",
]
SMUGGLED = (
    b"MAIL FROM:<ceo@example.com>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"
    b"From: ceo@example.com\r\n\r\nwire the money\r\n"
)


class DataTests(TestCase):
    """Dot-unstuffing, the end of data, line limits, whole and byte by byte."""

    def test_table(self) -> None:
        for wire, message, error in DATA_TABLE:
            for runner in (run, run_bytewise):
                with self.subTest(wire=wire[:30], runner=runner.__name__):
                    events = runner(b"DATA\r\n" + wire + b"NOOP\r\n")
                    chunks = [e for e in events if isinstance(e, DataChunk)]
                    end = [e for e in events if isinstance(e, DataEnd)]
                    self.assertEqual(events[-1], Noop())
                    self.assertEqual(len(end), 1)
                    self.assertEqual(end[0].error, error)
                    if error is None:
                        self.assertEqual(b"".join(c.data for c in chunks), message)
                        self.assertEqual(end[0].size, len(message))

    def test_data_without_final_crlf_does_not_end(self) -> None:
        """ "text." then CRLF is a line ending in a dot, not the end."""
        session = AcceptingSession().feed(b"DATA\r\ntext.\r\nQUIT\r\n")
        self.assertEqual(session.events, [Data(), DataChunk(b"text.\r\nQUIT\r\n")])
        self.assertEqual(session.parser.mode, Mode.DATA)
        session.feed(b".\r\n")
        self.assertEqual(session.events[-1], DataEnd(13))

    def test_end_of_data_split_everywhere(self) -> None:
        wire = b"DATA\r\nab\r\n.\r\nQUIT\r\n"
        for cut in range(len(wire) + 1):
            with self.subTest(cut=cut):
                self.assertEqual(
                    run(wire, [cut]), [Data(), DataChunk(b"ab\r\n"), DataEnd(4), Quit()]
                )

    def test_chunks_are_streamed_not_accumulated(self) -> None:
        parser = SMTPParser()
        parser.feed(b"DATA\r\n")
        parser.start_data(None)
        line = b"x" * 78 + b"\r\n"
        for _ in range(100):
            self.assertEqual(parser.feed(line * 10), [DataChunk(line * 10)])
            self.assertEqual(parser.buffered, 0)

    def test_overlong_line_is_not_a_command(self) -> None:
        """The rest of a 2000-octet line, and what follows, stay message."""
        for rest in (b"RSET\r\n", b"\r\nRSET\r\n", b"\r\nQUIT\r\n"):
            for runner in (run, run_bytewise):
                with self.subTest(rest=rest, runner=runner.__name__):
                    events = runner(b"DATA\r\n" + b"x" * 2000 + rest + b".\r\nNOOP\r\n")
                    commands = [e for e in events if isinstance(e, Command)]
                    self.assertEqual(commands, [Data(), Noop()])
                    [end] = [e for e in events if isinstance(e, DataEnd)]
                    self.assertEqual(end.error, codes.DATA_LINE_TOO_LONG)

    def test_failed_message_stops_streaming(self) -> None:
        parser = SMTPParser()
        parser.feed(b"DATA\r\n")
        parser.start_data(None)
        self.assertEqual(parser.feed(b"ok\r\n"), [DataChunk(b"ok\r\n")])
        # What came before the bare LF may already be out; nothing after it.
        self.assertEqual(parser.feed(b"bare\n"), [DataChunk(b"bare")])
        self.assertEqual(parser.feed(b"more\r\n"), [])
        self.assertEqual(parser.feed(b".\r\n"), [DataEnd(8, codes.BARE_NEWLINE)])

    def test_size_limit(self) -> None:
        message = b"0123456789\r\n" * 10
        self.assertEqual(
            run(b"DATA\r\n" + message + b".\r\n", max_size=120)[-1], DataEnd(120)
        )
        for runner in (run, run_bytewise):
            with self.subTest(runner=runner.__name__):
                events = runner(b"DATA\r\n" + message + b".\r\nNOOP\r\n", max_size=119)
                kept = b"".join(e.data for e in events if isinstance(e, DataChunk))
                self.assertLessEqual(len(kept), 119)
                self.assertEqual(
                    events[-2:], [DataEnd(len(kept), codes.TOO_BIG), Noop()]
                )

    def test_large_message_is_consumed_and_discarded(self) -> None:
        parser = SMTPParser()
        parser.feed(b"DATA\r\n")
        parser.start_data(1000)
        streamed = 0
        for _ in range(1000):
            for event in parser.feed(b"y" * 98 + b"\r\n"):
                streamed += len(event.data)  # type: ignore[union-attr]
            self.assertLessEqual(parser.buffered, 4)  # a possible split CRLF.CRLF
        self.assertLessEqual(streamed, 1000)
        self.assertEqual(
            parser.feed(b".\r\nQUIT\r\n"), [DataEnd(1000, codes.TOO_BIG), Quit()]
        )

    def test_mixed_line_and_size_failures_report_the_first(self) -> None:
        events = run(
            b"DATA\r\n" + b"z" * 20 + b"\r\n" + b"z" * 1200 + b"\n\r\n.\r\n",
            max_size=10,
        )
        self.assertEqual(events[-1].error, codes.TOO_BIG)  # type: ignore[union-attr]
        events = run(b"DATA\r\n" + b"z\n" + b"z" * 1200 + b"\r\n.\r\n", max_size=10)
        self.assertEqual(events[-1].error, codes.BARE_NEWLINE)  # type: ignore[union-attr]


class SmugglingTests(TestCase):
    """CVE-2023-51766 and kin: no bare-newline variant ends the data."""

    def test_no_variant_ends_the_data(self) -> None:
        for ending in SMUGGLING_ENDINGS:
            wire = (
                b"DATA\r\nSubject: hi\r\n\r\nhello"
                + ending
                + SMUGGLED
                + b".\r\nQUIT\r\n"
            )
            for runner in (run, run_bytewise):
                with self.subTest(ending=ending, runner=runner.__name__):
                    events = runner(wire)
                    commands = [e for e in events if isinstance(e, Command)]
                    self.assertEqual(commands, [Data(), Quit()])
                    ends = [e for e in events if isinstance(e, DataEnd)]
                    self.assertEqual(len(ends), 1)
                    expected = None if is_canonical(ending) else codes.BARE_NEWLINE
                    if b"\x00" in ending:
                        expected = codes.NUL_IN_MESSAGE
                    self.assertEqual(ends[0].error, expected)

    def test_bare_newlines_in_commands_are_not_line_ends(self) -> None:
        for separator in (b"\n", b"\r"):
            with self.subTest(separator=separator):
                events = run(b"NOOP" + separator + b"RSET\r\nQUIT\r\n")
                self.assertEqual(events[0].reply, codes.BARE_NEWLINE)  # type: ignore[union-attr]
                self.assertEqual(events[1:], [Quit()])

    @settings(max_examples=300, deadline=None)
    @given(
        body=st.lists(
            st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"\r\n."])
        ).map(b"".join),
        cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
    )
    def test_only_the_real_terminator_ends(self, body: bytes, cuts: list[int]) -> None:
        """Any body, stuffed as a client should, ends exactly at CRLF.CRLF:
        whole if it has no bare CR/LF, refused otherwise."""
        message = body + b"\r\n"
        wire = b"DATA\r\n" + stuff(message) + b".\r\nNOOP\r\n"
        events = run(wire, [c for c in cuts if c <= len(wire)])
        self.assertEqual(events[-1], Noop())
        end = events[-2]
        assert isinstance(end, DataEnd)
        if is_canonical(message):
            self.assertEqual(end, DataEnd(len(message)))
            self.assertEqual(events[1:-2], [DataChunk(message)] if message else [])
        else:
            self.assertEqual(end.error, codes.BARE_NEWLINE)


class BdatTests(TestCase):
    """RFC 3030 chunks: exactly n raw octets, no dot handling."""

    def test_chunks(self) -> None:
        wire = b"BDAT 5\r\nhelloBDAT 11 LAST\r\n\r\n.\r\nRSET\r\nQUIT\r\n"
        expected = [
            Bdat(5),
            DataChunk(b"hello"),
            ChunkEnd(5, False),
            Bdat(11, True),
            DataChunk(b"\r\n.\r\nRSET\r\n"),
            ChunkEnd(11, True),
            Quit(),
        ]
        self.assertEqual(run(wire), expected)
        self.assertEqual(run_bytewise(wire), expected)

    def test_bdat_zero_last(self) -> None:
        self.assertEqual(
            run(b"BDAT 0 LAST\r\nQUIT\r\n"), [Bdat(0, True), ChunkEnd(0, True), Quit()]
        )

    def test_chunk_over_the_limit_is_consumed_unseen(self) -> None:
        events = run(b"BDAT 20\r\n" + b"x" * 20 + b"NOOP\r\n", max_size=19)
        self.assertEqual(events, [Bdat(20), ChunkEnd(20, False, codes.TOO_BIG), Noop()])

    def test_refused_chunk_is_skipped(self) -> None:
        parser = SMTPParser()
        self.assertEqual(parser.feed(b"BDAT 12\r\nRSET\r\nQUIT\r\n"), [Bdat(12)])
        parser.resume()
        self.assertEqual(parser.feed(b"NOOP\r\n"), [Noop()])

    def test_bare_newlines(self) -> None:
        table = [
            (b"BDAT 3 LAST\r\na\nb", codes.BARE_NEWLINE),
            (b"BDAT 3 LAST\r\na\rb", codes.BARE_NEWLINE),
            (b"BDAT 2 LAST\r\na\r", codes.BARE_NEWLINE),
            (b"BDAT 2\r\na\rBDAT 2 LAST\r\n\nb", None),
            (b"BDAT 2\r\na\rBDAT 1\r\nbBDAT 0 LAST\r\n", codes.BARE_NEWLINE),
            (b"BDAT 4 LAST\r\n\r\n.\n", codes.BARE_NEWLINE),
        ]
        for wire, error in table:
            for runner in (run, run_bytewise):
                with self.subTest(wire=wire, runner=runner.__name__):
                    ends = [e for e in runner(wire) if isinstance(e, ChunkEnd)]
                    self.assertEqual(ends[-1].error, error)
                    binary = [
                        e for e in runner(wire, binary=True) if isinstance(e, ChunkEnd)
                    ]
                    self.assertEqual([e.error for e in binary], [None] * len(binary))

    def test_nul_fails_the_chunk(self) -> None:
        """A NUL octet fails its chunk, even BINARYMIME (IMAP literals cannot carry it)."""
        table = [
            (b"BDAT 3 LAST\r\na\x00b", [codes.NUL_IN_MESSAGE]),
            (b"BDAT 2\r\nabBDAT 3 LAST\r\n\x00\r\n", [None, codes.NUL_IN_MESSAGE]),
            (b"BDAT 3\r\n\x00\r\nBDAT 2 LAST\r\nok", [codes.NUL_IN_MESSAGE, None]),
        ]
        for wire, errors in table:
            for binary in (False, True):
                for runner in (run, run_bytewise):
                    with self.subTest(wire=wire, binary=binary, runner=runner.__name__):
                        events = runner(wire, binary=binary)
                        ends = [e for e in events if isinstance(e, ChunkEnd)]
                        self.assertEqual([e.error for e in ends], errors)
                        kept = b"".join(e.data for e in events if isinstance(e, DataChunk))
                        self.assertNotIn(b"\x00", kept)

    def test_line_length_across_chunks(self) -> None:
        wire = (
            b"BDAT 600\r\n" + b"x" * 600 + b"BDAT 402 LAST\r\n" + b"x" * 400 + b"\r\n"
        )
        self.assertEqual(run(wire)[-1], ChunkEnd(402, True, codes.DATA_LINE_TOO_LONG))
        wire = (
            b"BDAT 600\r\n" + b"x" * 600 + b"BDAT 400 LAST\r\n" + b"x" * 398 + b"\r\n"
        )
        self.assertEqual(run(wire)[-1], ChunkEnd(400, True))

    def test_rset_starts_a_new_message(self) -> None:
        wire = b"BDAT 1\r\n\rRSET\r\nBDAT 1 LAST\r\nx"
        self.assertEqual(run(wire)[-1], ChunkEnd(1, True))


TRANSCRIPT = (
    b"EHLO client.example\r\n"
    b"STARTTLS\r\n"
    b"EHLO client.example\r\n"
    b"AUTH PLAIN\r\n"
    b"AGFsaWNlAHNlY3JldA==\r\n"
    b"MAIL FROM:<a@example.com> BODY=8BITMIME\r\n"
    b"RCPT TO:<b@example.org>\r\n"
    b"DATA\r\n"
    b"Subject: pipelined\r\n\r\n..leading dot\r\n.\r\n"
    b"MAIL FROM:<>\r\n"
    b"RCPT TO:<b@example.org>\r\n"
    b"BDAT 7\r\n.\r\nRSETBDAT 0 LAST\r\n"
    b"QUIT\r\n"
)
TRANSCRIPT_EVENTS: list[Event] = [
    Ehlo("client.example"),
    Starttls(),
    Ehlo("client.example"),
    Auth("PLAIN"),
    AuthResponse(b"\x00alice\x00secret"),
    Mail(Path("a", "example.com"), body=BodyType.EIGHT_BIT_MIME),
    Rcpt(Path("b", "example.org")),
    Data(),
    DataChunk(b"Subject: pipelined\r\n\r\n.leading dot\r\n"),
    DataEnd(36),
    Mail(None),
    Rcpt(Path("b", "example.org")),
    Bdat(7),
    DataChunk(b".\r\nRSET"),
    ChunkEnd(7, False),
    Bdat(0, True),
    ChunkEnd(0, True),
    Quit(),
]


class SplittingTests(TestCase):
    """However the input is cut, the events are the same.

    The one cut every run makes is right after STARTTLS: from there on each
    read is decrypted TLS, and what came in the same read as STARTTLS is
    dropped (StarttlsTests).
    """

    head = len(b"EHLO client.example\r\nSTARTTLS\r\n")

    def test_whole(self) -> None:
        self.assertEqual(run(TRANSCRIPT, [self.head]), TRANSCRIPT_EVENTS)

    def test_bytewise(self) -> None:
        self.assertEqual(run_bytewise(TRANSCRIPT), TRANSCRIPT_EVENTS)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.integers(min_value=0, max_value=len(TRANSCRIPT)), max_size=12))
    def test_any_split(self, cuts: list[int]) -> None:
        cuts = [cut for cut in cuts if cut >= self.head] + [self.head]
        self.assertEqual(run(TRANSCRIPT, cuts), TRANSCRIPT_EVENTS)

    def test_error_events_are_values(self) -> None:
        self.assertEqual(
            run(b"MAIL FROM:<x\r\n"),
            [
                CommandError(
                    codes.SENDER_SYNTAX, "MAIL", "address is missing its closing '>'"
                )
            ],
        )


class LimitsTests(TestCase):
    def test_data_line_limit_is_configurable(self) -> None:
        session = AcceptingSession()
        session.parser = SMTPParser(Limits(data_line=10))
        session.feed(b"DATA\r\n12345678\r\n123456789\r\n.\r\n")
        self.assertEqual(session.events[-1], DataEnd(10, codes.DATA_LINE_TOO_LONG))

    def test_rcpt_reset_after_data(self) -> None:
        """A message ends its transaction: SMTPUTF8 does not carry over."""
        events = run(
            b"MAIL FROM:<> SMTPUTF8\r\nDATA\r\n.\r\n"
            + "RCPT TO:<jö@example.org>\r\n".encode()
        )
        self.assertEqual(events[-1].reply, codes.UTF8_NOT_ALLOWED)  # type: ignore[union-attr]
        self.assertIsInstance(events[0], Mail)
        self.assertNotIn(Rset(), events)
