"""The POP3 wire layer: command parsing tables, bounded lines, stuffing split anywhere."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from cyrusmail.pop3 import wire
from cyrusmail.pop3.wire import (
    BadCommand,
    Command,
    DotStuffer,
    LineReader,
    TopFilter,
    parse_command,
)

# (line, expected Command, or the start of the BadCommand reason)
COMMANDS = [
    (b"USER alice", Command("USER", ("alice",))),
    (b"user alice", Command("USER", ("alice",))),
    (b"PASS a pass with spaces", Command("PASS", ("a pass with spaces",))),
    (b"STAT", Command("STAT")),
    (b"LIST", Command("LIST")),
    (b"LIST 3", Command("LIST", (3,))),
    (b"RETR 1", Command("RETR", (1,))),
    (b"DELE 12", Command("DELE", (12,))),
    (b"TOP 1 0", Command("TOP", (1, 0))),
    (b"UIDL", Command("UIDL")),
    (b"UIDL 2", Command("UIDL", (2,))),
    (b"NOOP", Command("NOOP")),
    (b"RSET", Command("RSET")),
    (b"QUIT", Command("QUIT")),
    (b"CAPA", Command("CAPA")),
    (b"STLS", Command("STLS")),
    (b"AUTH", Command("AUTH")),
    (b"AUTH PLAIN", Command("AUTH", ("PLAIN",))),
    (b"AUTH PLAIN AGFsaWNlAHNlY3JldA==", Command("AUTH", ("PLAIN", "AGFsaWNlAHNlY3JldA=="))),
    (b"", "Empty command line"),
    (b"FOO", "Unknown command FOO"),
    (b"APOP alice 0123", "Unknown command APOP"),
    (b"\xff\xfe", "Unknown command"),
    (b"USER", "USER: missing argument"),
    (b"USER a b", "USER: too many arguments"),
    (b"PASS", "PASS: missing argument"),
    (b"STAT 1", "STAT: too many arguments"),
    (b"RETR", "RETR: missing argument"),
    (b"RETR 1 2", "RETR: too many arguments"),
    (b"RETR 0", "RETR: invalid message number"),
    (b"DELE 0", "DELE: invalid message number"),
    (b"DELE -1", "DELE: invalid message number"),
    (b"DELE x", "DELE: invalid message number"),
    (b"DELE 99999999999", "DELE: invalid message number"),
    (b"DELE \xd9\xa1", "DELE: invalid message number"),  # an Arabic-Indic digit is no digit here
    (b"TOP 1", "TOP: missing argument"),
    (b"TOP 1 -1", "TOP: invalid line count"),
    (b"LIST 1 2", "LIST: too many arguments"),
    (b"NOOP " + b"x" * 300, "Line too long"),
    (b"X" * 300, "Line too long"),
    (b"AUTH PLAIN " + b"A" * 1000, Command("AUTH", ("PLAIN", "A" * 1000))),
]


class ParseCommandTests(TestCase):
    def test_table(self) -> None:
        for line, expected in COMMANDS:
            parsed = parse_command(line)
            if isinstance(expected, Command):
                self.assertEqual(parsed, expected, line)
            else:
                self.assertIsInstance(parsed, BadCommand, line)
                self.assertTrue(parsed.reason.startswith(expected), (line, parsed.reason))


class LineReaderTests(TestCase):
    def lines(self, reader: LineReader) -> list:
        found = []
        while (line := reader.next_line()) is not None:
            found.append(line)
        return found

    def test_crlf_and_lf(self) -> None:
        reader = LineReader(100)
        reader.feed(b"STAT\r\nLIST\nNOOP")
        self.assertEqual(self.lines(reader), [b"STAT", b"LIST"])
        reader.feed(b"\r\n")
        self.assertEqual(self.lines(reader), [b"NOOP"])

    def test_one_byte_at_a_time(self) -> None:
        reader = LineReader(100)
        found = []
        for byte in b"USER alice\r\nPASS x y\r\n":
            reader.feed(bytes([byte]))
            found += self.lines(reader)
        self.assertEqual(found, [b"USER alice", b"PASS x y"])

    def test_long_line_reported_once_and_reading_goes_on(self) -> None:
        reader = LineReader(255)
        reader.feed(b"X" * 10_000 + b"\r\nNOOP\r\n")
        self.assertEqual(self.lines(reader), [wire.LINE_TOO_LONG, b"NOOP"])

    def test_long_line_in_pieces_is_not_held(self) -> None:
        reader = LineReader(255)
        for _ in range(100):
            reader.feed(b"X" * 1000)
            self.assertEqual(self.lines(reader), [])
            self.assertLessEqual(reader.pending, 1000)
        reader.feed(b"\r\nSTAT\r\n")
        self.assertEqual(self.lines(reader), [wire.LINE_TOO_LONG, b"STAT"])

    def test_limit_counts_the_line_end(self) -> None:
        reader = LineReader(10)
        reader.feed(b"12345678\r\n123456789\r\n")
        self.assertEqual(self.lines(reader), [b"12345678", wire.LINE_TOO_LONG])

    def test_clear_forgets_pipelined_input(self) -> None:
        reader = LineReader(100)
        reader.feed(b"STLS\r\nCAPA\r\n")
        self.assertEqual(reader.next_line(), b"STLS")
        reader.clear()
        self.assertIsNone(reader.next_line())


def stuffed_whole(message: bytes) -> bytes:
    stuffer = DotStuffer()
    return stuffer.feed(message) + stuffer.finish()


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    return [*pieces, data[start:]]


class DotStuffingTests(TestCase):
    TABLE = (
        (b"", b".\r\n"),
        (b"a\r\n", b"a\r\n.\r\n"),
        (b"a", b"a\r\n.\r\n"),
        (b".\r\n", b"..\r\n.\r\n"),
        (b"a\r\n.\r\nb\r\n", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"a\r\n..x\r\n", b"a\r\n...x\r\n.\r\n"),
        (b"a\r\n.", b"a\r\n..\r\n.\r\n"),
        (b"x.y\r\n", b"x.y\r\n.\r\n"),
    )

    def test_table(self) -> None:
        for message, expected in self.TABLE:
            self.assertEqual(stuffed_whole(message), expected, message)

    def test_dot_at_every_chunk_boundary(self) -> None:
        message = b"a\r\n.\r\n.b\r\nc\r\n."
        expected = stuffed_whole(message)
        for cut in range(len(message) + 1):
            stuffer = DotStuffer()
            out = stuffer.feed(message[:cut]) + stuffer.feed(message[cut:]) + stuffer.finish()
            self.assertEqual(out, expected, cut)

    @given(st.lists(st.sampled_from([b".", b"\r\n", b"\n", b"x", b"..", b"\r"]), max_size=40),
           st.lists(st.integers(0, 80), max_size=6))
    def test_split_anywhere_equals_whole(self, parts: list[bytes], cuts: list[int]) -> None:
        message = b"".join(parts)
        stuffer = DotStuffer()
        out = b"".join(stuffer.feed(piece) for piece in split_at(message, cuts)) + stuffer.finish()
        self.assertEqual(out, stuffed_whole(message))
        # A client un-stuffing CRLF lines gets the message back (CRLF messages only).
        if b"\r" not in message.replace(b"\r\n", b"") and b"\n" not in message.replace(b"\r\n", b""):
            body = out[:-3]
            lines = body.split(b"\r\n")
            restored = b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)
            if message.endswith(b"\r\n") or not message:
                self.assertEqual(restored, message)
            else:
                self.assertEqual(restored, message + b"\r\n")


class TopFilterTests(TestCase):
    MESSAGE = b"From: a\r\nSubject: b\r\n\r\none\r\ntwo\r\nthree\r\n"

    def top(self, message: bytes, lines: int, cuts: list[int] = ()) -> tuple[bytes, bool]:
        top = TopFilter(lines)
        out = b""
        for piece in split_at(message, list(cuts)):
            out += top.feed(piece)
            if top.done:
                break
        return out, top.done

    def test_table(self) -> None:
        table = [
            (0, b"From: a\r\nSubject: b\r\n\r\n", True),
            (1, b"From: a\r\nSubject: b\r\n\r\none\r\n", True),
            (2, b"From: a\r\nSubject: b\r\n\r\none\r\ntwo\r\n", True),
            (3, self.MESSAGE, True),
            (10, self.MESSAGE, False),
        ]
        for lines, expected, done in table:
            self.assertEqual(self.top(self.MESSAGE, lines), (expected, done), lines)

    def test_split_anywhere(self) -> None:
        for lines in range(5):
            whole = self.top(self.MESSAGE, lines)
            for first in range(len(self.MESSAGE) + 1):
                for second in (first + 1, first + 3):
                    self.assertEqual(self.top(self.MESSAGE, lines, [first, second]), whole, (lines, first))

    def test_header_only_and_empty_header(self) -> None:
        self.assertEqual(self.top(b"Subject: x\r\n", 0), (b"Subject: x\r\n", False))
        self.assertEqual(self.top(b"\r\nbody\r\nmore\r\n", 1), (b"\r\nbody\r\n", True))
        self.assertEqual(self.top(b"Subject: x\r\n\r\nlast line, no CRLF", 5),
                         (b"Subject: x\r\n\r\nlast line, no CRLF", False))


class ReplyTests(TestCase):
    def test_codes_and_lines(self) -> None:
        self.assertEqual(wire.err("Maildrop busy", wire.IN_USE), b"-ERR [IN-USE] Maildrop busy\r\n")
        self.assertEqual(wire.ok(), b"+OK\r\n")
        self.assertEqual(wire.ok("a\r\nb"), b"+OK a  b\r\n")
        self.assertEqual(wire.multiline("x", ["1 2", ".hidden"]), b"+OK x\r\n1 2\r\n..hidden\r\n.\r\n")
