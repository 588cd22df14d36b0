"""The parser's bounds, resynchronisation after errors, pausing and line
mode.  Every limit is checked for the error it gives and for the command
after it being parsed normally."""

from __future__ import annotations

import itertools
import time
from typing import ClassVar

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from cyrusmail.imap import commands as c
from cyrusmail.imap import responses
from cyrusmail.imap.sequence import SequenceSet
from cyrusmail.imap.wire import (
    CommandParser,
    ContinuationNeeded,
    Line,
    LiteralRefused,
    ParseError,
)

NOOP = b"z NOOP\r\n"


def feed_bytewise(parser: CommandParser, data: bytes) -> list:
    events = []
    for i in range(len(data)):
        events += parser.feed(data[i : i + 1])
    return events


class LineLengthTests(TestCase):
    def test_long_line_refused_before_its_end(self) -> None:
        """The error comes as soon as 64 KiB are buffered without a line end."""
        parser = CommandParser()
        (error,) = parser.feed(b"a1 LOGIN " + b"x" * 70000)
        self.assertEqual(error, ParseError("a1", "command line too long", "TOOBIG"))
        self.assertLess(parser.buffered, 64)
        self.assertEqual(parser.feed(b"x" * 100000), [])
        self.assertEqual(parser.buffered, 0)
        self.assertEqual(parser.feed(b" y\r\n" + NOOP), [c.Noop("z")])

    def test_exactly_at_limit_is_fine(self) -> None:
        parser = CommandParser(max_line_length=100)
        line = b"a LOGIN u " + b"p" * 90
        self.assertEqual(len(line), 100)
        self.assertEqual(parser.feed(line + b"\r\n"), [c.Login("a", b"u", b"p" * 90)])
        (error, noop) = parser.feed(line + b"p\r\n" + NOOP)
        self.assertEqual(error.code, "TOOBIG")  # type: ignore[union-attr]
        self.assertEqual(noop, c.Noop("z"))

    def test_fragments_count_together(self) -> None:
        """The line limit covers all fragments of one command."""
        parser = CommandParser(max_line_length=100)
        events = parser.feed(b"a LOGIN " + b"u" * 60 + b" {1}\r\n")
        self.assertEqual(events, [ContinuationNeeded("a", 1)])
        (error, noop) = parser.feed(b"p " + b"x" * 60 + b"\r\n" + NOOP)
        self.assertEqual(error.code, "TOOBIG")  # type: ignore[union-attr]
        self.assertEqual(noop, c.Noop("z"))

    def test_long_line_byte_at_a_time_is_linear(self) -> None:
        parser = CommandParser()
        started = time.monotonic()
        events = feed_bytewise(parser, b"a NOOP " + b"x" * 65000 + b"\r\n")
        self.assertLess(time.monotonic() - started, 30)  # a hang, not a speed, check
        self.assertEqual(len(events), 1)

    def test_skipped_line_ending_in_non_sync_literal(self) -> None:
        """The literal announced at the end of a too-long line is skipped too."""
        parser = CommandParser(max_line_length=50)
        events = parser.feed(b"a LOGIN " + b"x" * 60 + b" {5+}\r\nab\r\nc y\r\n" + NOOP)
        self.assertEqual(
            events, [ParseError("a", "command line too long", "TOOBIG"), c.Noop("z")]
        )

    def test_untagged_when_tag_unreadable(self) -> None:
        parser = CommandParser(max_line_length=20)
        (error,) = parser.feed(b"(" * 30)
        self.assertIsNone(error.tag)  # type: ignore[union-attr]
        self.assertEqual(
            responses.parse_error(error), b"* BAD [TOOBIG] command line too long\r\n"
        )  # type: ignore[arg-type]


    def test_a_huge_first_word_is_not_echoed_as_a_tag(self) -> None:
        parser = CommandParser()
        (error,) = parser.feed(b"x" * 70000)
        self.assertIsNone(error.tag)  # type: ignore[union-attr]
        self.assertEqual(parser.feed(b"\r\n" + NOOP), [c.Noop("z")])
        (error,) = parser.feed(b"t" * 65 + b" NOOP\r\n")
        self.assertIsNone(error.tag)  # type: ignore[union-attr]


class LiteralLimitTests(TestCase):
    def test_sync_literal_too_big_not_waited_for(self) -> None:
        """Refused at once, no continuation; the next line is a command."""
        parser = CommandParser()
        (error,) = parser.feed(b"a LOGIN {70000}\r\n")
        self.assertEqual(error, ParseError("a", "literal too big", "TOOBIG"))
        self.assertEqual(parser.feed(NOOP), [c.Noop("z")])

    def test_non_sync_literal_too_big_is_skipped(self) -> None:
        parser = CommandParser()
        events = parser.feed(b"a LOGIN {70000+}\r\n")
        self.assertEqual(events, [ParseError("a", "literal too big", "TOOBIG")])
        self.assertEqual(
            parser.feed(b"b NOOP\r\n" * 8750), []
        )  # exactly the 70000 literal bytes
        self.assertEqual(
            parser.feed(b" rest of the line {3+}\r\nabc more\r\n" + NOOP), [c.Noop("z")]
        )

    def test_message_too_big(self) -> None:
        parser = CommandParser(max_message_size=1000)
        (error,) = parser.feed(b"a APPEND INBOX {1001}\r\n")
        self.assertEqual(error, ParseError("a", "message too big", "TOOBIG", "NO"))
        self.assertEqual(
            responses.parse_error(error), b"a NO [TOOBIG] message too big\r\n"
        )  # type: ignore[arg-type]
        self.assertEqual(parser.feed(NOOP), [c.Noop("z")])

    def test_message_too_big_non_sync(self) -> None:
        parser = CommandParser(max_message_size=10)
        events = parser.feed(b"a APPEND INBOX {11+}\r\n0123456789a\r\n" + NOOP)
        self.assertEqual(
            events, [ParseError("a", "message too big", "TOOBIG", "NO"), c.Noop("z")]
        )

    def test_message_may_exceed_string_limit(self) -> None:
        """APPEND data is not bound by the 64 KiB in-memory literal limit,
        but the mailbox name literal is."""
        parser = CommandParser(max_literal_size=10)
        (cont,) = parser.feed(b"a APPEND x {100}\r\n")
        self.assertEqual(cont, ContinuationNeeded("a", 100))
        (append,) = parser.feed(b"m" * 100 + b"\r\n")
        self.assertEqual(append.messages[0].size, 100)  # type: ignore[union-attr]
        (error,) = parser.feed(b"b APPEND {11}\r\n")
        self.assertEqual(error.code, "TOOBIG")  # type: ignore[union-attr]

    def test_command_memory_total(self) -> None:
        """Many small literals cannot add up past max_command_size."""
        parser = CommandParser(max_literal_size=100, max_command_size=250)
        events = parser.feed(
            b"a SEARCH TEXT {100+}\r\n" + b"x" * 100 + b" TEXT {100+}\r\n" + b"y" * 100
        )
        self.assertEqual(events, [])
        events = parser.feed(b" TEXT {100+}\r\n" + b"z" * 100 + b"\r\n" + NOOP)
        self.assertEqual(
            events, [ParseError("a", "literal too big", "TOOBIG"), c.Noop("z")]
        )

    def test_literal_minus(self) -> None:
        """RFC 7888: with LITERAL-, non-sync literals over 4096 are refused
        (and skipped); sync ones of any acceptable size are fine."""
        parser = CommandParser(literal_minus=True)
        events = parser.feed(b"a LOGIN {4097+}\r\n" + b"x" * 4097 + b" y\r\n" + NOOP)
        self.assertEqual(
            events[0],
            ParseError("a", "non-synchronizing literal over 4096 bytes", "TOOBIG"),
        )
        self.assertEqual(events[1:], [c.Noop("z")])
        events = parser.feed(b"a LOGIN {4096+}\r\n" + b"x" * 4096 + b" y\r\n")
        self.assertEqual(events, [c.Login("a", b"x" * 4096, b"y")])
        events = parser.feed(b"a LOGIN {5000}\r\n")
        self.assertEqual(events, [ContinuationNeeded("a", 5000)])

    def test_sink_factory_may_refuse(self) -> None:
        def over_quota(size: int) -> c.LiteralSink:
            raise LiteralRefused("over quota", "OVERQUOTA")

        parser = CommandParser(sink_factory=over_quota)
        (error,) = parser.feed(b"a APPEND INBOX {10}\r\n")
        self.assertEqual(error, ParseError("a", "over quota", "OVERQUOTA", "NO"))
        self.assertEqual(parser.feed(NOOP), [c.Noop("z")])

    def test_literal_for_unknown_command_refused(self) -> None:
        parser = CommandParser()
        self.assertEqual(
            parser.feed(b"a XYZZY {5}\r\n" + NOOP),
            [ParseError("a", "unknown command"), c.Noop("z")],
        )

    def test_literal8_only_for_append(self) -> None:
        parser = CommandParser()
        (error, noop) = parser.feed(b"a LOGIN ~{1+}\r\nx y\r\n" + NOOP)
        self.assertIsInstance(error, ParseError)
        self.assertEqual(noop, c.Noop("z"))

    def test_huge_literal_number(self) -> None:
        parser = CommandParser()
        (error,) = parser.feed(b"a LOGIN {99999999999999999999}\r\n")
        self.assertEqual(error.code, "TOOBIG")  # type: ignore[union-attr]
        self.assertEqual(parser.feed(NOOP), [c.Noop("z")])


class NestingTests(TestCase):
    def test_parentheses(self) -> None:
        parser = CommandParser()
        ok = b"a SEARCH " + b"(" * 99 + b"SEEN" + b")" * 99 + b"\r\n"
        self.assertIsInstance(parser.feed(ok)[0], c.Search)
        deep = b"a SEARCH " + b"(" * 101 + b"SEEN" + b")" * 101 + b"\r\n"
        (error, noop) = parser.feed(deep + NOOP)
        self.assertEqual(
            error, ParseError("a", "too deeply nested (over 100 levels)", "LIMIT")
        )
        self.assertEqual(noop, c.Noop("z"))

    def test_not_chain(self) -> None:
        parser = CommandParser(max_line_length=1 << 20)
        (error,) = parser.feed(b"a SEARCH " + b"NOT " * 200000 + b"SEEN\r\n")
        self.assertEqual(error.code, "LIMIT")  # type: ignore[union-attr]

    def test_ten_thousand_ors_bounded(self) -> None:
        """10,000 nested ORs: refused quickly; 333 flat ORs (999 keys): parsed quickly.

        The line limit is raised so that the nesting limit is what stops it.
        """
        parser = CommandParser(max_line_length=1 << 20)
        started = time.monotonic()
        nested = b"a SEARCH " + b"OR " * 10000 + b"SEEN " * 10001
        (error,) = parser.feed(nested.rstrip() + b"\r\n")
        self.assertEqual(error.code, "LIMIT")  # type: ignore[union-attr]
        flat = b"b SEARCH " + b"OR SEEN DRAFT " * 333
        (search,) = parser.feed(flat.rstrip() + b"\r\n")
        self.assertEqual(len(search.criteria.keys), 333)  # type: ignore[union-attr]
        self.assertLess(time.monotonic() - started, 30)  # a hang, not a speed, check

    def test_search_keys_bounded(self) -> None:
        """At most 1,000 keys, NOT, OR and parenthesised lists counting one each:
        ``BAD [LIMIT]`` beyond, and the next command is parsed as usual."""
        parser = CommandParser(max_line_length=1 << 20)
        at_limit = [
            b" ".join([b"SEEN"] * 1000),
            b"NOT BODY x " * 498 + b"(SEEN DRAFT DELETED)",
            b"OR SEEN DRAFT " * 333 + b"ALL",
            b"UNSEEN " * 999 + b"1:*,7",
        ]
        for keys in at_limit:
            with self.subTest(keys=keys[:30]):
                (search,) = parser.feed(b"a SEARCH " + keys + b"\r\n")
                self.assertIsInstance(search, c.Search)
        over = [
            b" ".join([b"SEEN"] * 1001),
            b"NOT BODY x " * 500 + b"SEEN",
            b"CHARSET UTF-8 (" + b"SEEN " * 1000 + b")",
            b"OR SEEN DRAFT " * 3000 + b"ALL",
        ]
        for keys in over:
            with self.subTest(keys=keys[:30]):
                (error, noop) = parser.feed(b"a UID SEARCH " + keys.rstrip() + b"\r\n" + NOOP)
                self.assertEqual(error, ParseError("a", "too many search keys (over 1000)", "LIMIT"))
                self.assertEqual(noop, c.Noop("z"))

    def test_search_keys_configurable(self) -> None:
        parser = CommandParser(max_search_keys=3)
        self.assertIsInstance(parser.feed(b"a SEARCH NOT (SEEN)\r\n")[0], c.Search)
        self.assertIsInstance(parser.feed(b"a SEARCH NOT (SEEN DRAFT)\r\n")[0], ParseError)

    def test_parameter_lists(self) -> None:
        parser = CommandParser()
        (error,) = parser.feed(b"a SELECT x (P " + b"(" * 150 + b")" * 150 + b")\r\n")
        self.assertEqual(error.code, "LIMIT")  # type: ignore[union-attr]

    def test_depth_configurable(self) -> None:
        parser = CommandParser(max_depth=3)
        self.assertIsInstance(parser.feed(b"a SEARCH ((SEEN))\r\n")[0], c.Search)
        self.assertIsInstance(parser.feed(b"a SEARCH (((SEEN)))\r\n")[0], ParseError)


class ClientControlledCostTests(TestCase):
    def test_whole_uid_range(self) -> None:
        (fetch,) = CommandParser().feed(b"a UID FETCH 1:4294967295 FLAGS\r\n")
        self.assertEqual(fetch.sequence_set, SequenceSet(((1, 4294967295),)))  # type: ignore[union-attr]

    def test_huge_numbers(self) -> None:
        parser = CommandParser()
        for wire in (
            b"a FETCH 99999999999999999999999999 FLAGS\r\n",
            b"a SEARCH LARGER 4294967296\r\n",
            b"a FETCH 1 BODY[]<0.4294967296>\r\n",
        ):
            (error,) = parser.feed(wire)
            self.assertIsInstance(error, ParseError, wire)

    def test_big_flag_list_bounded(self) -> None:
        """A 10 MB flag list costs at most one 64 KiB buffer."""
        parser = CommandParser()
        events = parser.feed(b"a STORE 1 FLAGS (")
        for _ in range(1000):
            events += parser.feed(b"\\Seen " * 1700)
            self.assertLess(parser.buffered, 65536)
        events += parser.feed(b")\r\n" + NOOP)
        self.assertEqual([type(event) for event in events], [ParseError, c.Noop])

    def test_many_sequence_ranges(self) -> None:
        wire = (
            b"a FETCH "
            + b",".join(b"%d" % (n * 2) for n in range(1, 9000))
            + b" UID\r\n"
        )
        (fetch,) = CommandParser().feed(wire)
        self.assertEqual(len(fetch.sequence_set.ranges), 8999)  # type: ignore[union-attr]


class PauseTests(TestCase):
    def test_idle_then_done(self) -> None:
        parser = CommandParser()
        self.assertEqual(parser.feed(b"a IDLE\r\nDONE\r\nb NOOP\r\n"), [c.Idle("a")])
        self.assertTrue(parser.paused)
        self.assertEqual(parser.feed(b"more"), [])
        self.assertEqual(parser.read_lines(), [Line(b"DONE")])
        self.assertEqual(parser.read_commands(), [c.Noop("b")])
        self.assertEqual(
            parser.feed(b"\r\n"),
            [ParseError("more", "missing or invalid command name")],
        )

    def test_authenticate_lines(self) -> None:
        parser = CommandParser()
        self.assertEqual(
            parser.feed(b"a AUTHENTICATE CRAM-MD5\r\n"),
            [c.Authenticate("a", "CRAM-MD5")],
        )
        self.assertEqual(parser.read_lines(), [])
        self.assertEqual(feed_bytewise(parser, b"dGltIGY\r\n"), [Line(b"dGltIGY")])
        self.assertEqual(parser.read_lines(), [])
        self.assertEqual(parser.feed(b"*\r\n"), [Line(b"*")])
        self.assertEqual(parser.read_commands(), [])
        self.assertEqual(parser.feed(NOOP), [c.Noop("z")])

    def test_line_mode_limit(self) -> None:
        parser = CommandParser(max_line_length=10)
        parser.feed(b"a AUTHENTICATE PLAIN\r\n")
        parser.read_lines()
        self.assertEqual(
            parser.feed(b"x" * 20), [ParseError(None, "line too long", "TOOBIG")]
        )
        # The error ends the line like a Line would: the parser pauses, and
        # the session says whether what follows is one more line or a command.
        self.assertTrue(parser.paused)
        self.assertEqual(parser.feed(b"xx\r\nabc\r\n"), [])
        self.assertEqual(parser.read_lines(), [Line(b"abc")])
        self.assertEqual(parser.read_commands(), [])
        self.assertEqual(parser.feed(NOOP), [c.Noop("z")])

    def test_starttls_discards_injected_commands(self) -> None:
        parser = CommandParser()
        self.assertEqual(
            parser.feed(b"a STARTTLS\r\nb LOGIN evil x\r\n"), [c.StartTLS("a")]
        )
        self.assertEqual(parser.discard_buffered(), len(b"b LOGIN evil x\r\n"))
        self.assertEqual(parser.read_commands(), [])
        self.assertEqual(parser.feed(NOOP), [c.Noop("z")])

    def test_compress_keeps_what_follows_for_the_inflater(self) -> None:
        """After COMPRESS the parser stops even without pause_after_commands:
        what follows in the same read is compressed, and is taken out whole."""
        parser = CommandParser()
        compressed = b"\x2a\xc9\xcc\x00\x00\x00\xff\xff\r\nz NOOP\r\n"
        self.assertEqual(parser.feed(b"a COMPRESS DEFLATE\r\n" + compressed), [c.Compress("a", "DEFLATE")])
        self.assertTrue(parser.paused)
        self.assertEqual(parser.take_buffered(), compressed)
        self.assertEqual(parser.buffered, 0)
        self.assertEqual(parser.read_commands(), [])
        self.assertEqual(parser.feed(NOOP), [c.Noop("z")])


class ResynchronisationTests(TestCase):
    """After any error, the next command parses; fed whole or split anywhere."""

    BAD: ClassVar[list[bytes]] = [
        b"a FOO bar\r\n",
        b"a LOGIN {70000}\r\n",
        b"a LOGIN {70000+}\r\n" + b"x" * 70000 + b" y\r\n",
        b"a APPEND x {60000000}\r\n",
        b"a APPEND x {60000000+}\r\n" + b"m" * 1000,  # the rest is sent in test
        b"a SEARCH " + b"(" * 200 + b"\r\n",
        b"a FETCH 0 FLAGS\r\n",
        b"a LOGIN {3}\r\nabc\r\n",
        b"a LOGIN " + b"u" * 70000 + b" {3+}\r\nabc\r\n",
        b"a APPEND x {3+}\r\nabc JUNK\r\n",
    ]

    @settings(max_examples=60, deadline=None)
    @given(st.sampled_from(range(10)), st.lists(st.integers(0, 80000), max_size=5))
    def test_resynchronises(self, index: int, cuts: list[int]) -> None:
        bad = self.BAD[index]
        if index == 4:
            bad += b"m" * (60000000 - 1000) + b"\r\n"
        stream = bad + b"b NOOP\r\n"
        points = sorted({0, len(stream), *(cut % len(stream) for cut in cuts)})
        parser = CommandParser()
        events = []
        for start, end in itertools.pairwise(points):
            events += parser.feed(stream[start:end])
        events = [
            event for event in events if not isinstance(event, ContinuationNeeded)
        ]
        self.assertEqual(len(events), 2, events)
        self.assertIsInstance(events[0], ParseError)
        self.assertEqual(events[1], c.Noop("b"))


class ResponseTests(TestCase):
    def test_tagged(self) -> None:
        self.assertEqual(
            responses.tagged("a1", "OK", "done", "UIDNEXT 5"),
            b"a1 OK [UIDNEXT 5] done\r\n",
        )
        self.assertEqual(responses.tagged("a1", "NO", "nope"), b"a1 NO nope\r\n")

    def test_untagged(self) -> None:
        self.assertEqual(
            responses.status(None, "OK", "hi", "ALERT"), b"* OK [ALERT] hi\r\n"
        )
        self.assertEqual(responses.untagged(b"5 EXISTS"), b"* 5 EXISTS\r\n")

    def test_continuation(self) -> None:
        self.assertEqual(responses.continuation(), b"+ \r\n")
        self.assertEqual(responses.continuation("idling"), b"+ idling\r\n")

    def test_text_has_no_line_end(self) -> None:
        self.assertRaises(ValueError, responses.tagged, "a", "OK", "x\r\ny")
        self.assertRaises(ValueError, responses.tagged, "a", "MAYBE", "x")

    def test_parse_error(self) -> None:
        self.assertEqual(
            responses.parse_error(ParseError("a", "bad", None)), b"a BAD bad\r\n"
        )


class PauseAfterCommandsTests(TestCase):
    """``pause_after_commands``: one command out per feed or read_commands."""

    def test_one_command_at_a_time(self) -> None:
        parser = CommandParser(pause_after_commands=True)
        events = parser.feed(b"a NOOP\r\nb NOOP\r\nc NOOP\r\n")
        self.assertEqual([event.tag for event in events], ["a"])
        self.assertTrue(parser.paused)
        self.assertEqual([event.tag for event in parser.read_commands()], ["b"])
        self.assertEqual([event.tag for event in parser.read_commands()], ["c"])
        self.assertEqual(parser.read_commands(), [])
        self.assertFalse(parser.paused)
