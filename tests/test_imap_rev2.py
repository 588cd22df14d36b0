"""IMAP4rev2 (RFC 9051) beside IMAP4rev1: what ``ENABLE IMAP4rev2`` changes.

The grammar first (a table of wire bytes, parsed whole and one byte at a
time, by a parser in IMAP4rev2 mode and, for contrast, by one in IMAP4rev1
mode), then sessions: the transcripts in ``imap_transcripts/imap4rev2*.txt``
run with every other transcript; the tests here check what a transcript
cannot say well.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from cyrusmail.imap import commands as c
from cyrusmail.imap.sequence import SequenceSet
from cyrusmail.imap.wire import CommandParser, ContinuationNeeded, ParseError

BIG = 5_000_000_000  # over RFC 3501's 32-bit number, within RFC 9051's number64
SEEN = c.SearchFlag("\\Seen")

#: (wire, what an IMAP4rev2 parser makes of it, what an IMAP4rev1 parser makes of it);
#: a ParseError class means BAD with that tag.
TABLE: list[tuple[bytes, object, object]] = [
    # names are UTF-8 (RFC 9051 5.1), handed on in modified UTF-7 as under UTF8=ACCEPT
    ('a SELECT "Café"\r\n'.encode(), c.Select("a", "Caf&AOk-"), c.Select("a", "Café")),
    (b"a SELECT a&b\r\n", c.Select("a", "a&-b"), c.Select("a", "a&b")),
    ('a LIST "" "Ünter/%"\r\n'.encode(), c.List("a", "", ("&ANw-nter/%",)), c.List("a", "", ("Ünter/%",))),
    ('a STATUS "Thé" (MESSAGES DELETED SIZE)\r\n'.encode(),
     c.Status("a", "Th&AOk-", ("MESSAGES", "DELETED", "SIZE")),
     c.Status("a", "Thé", ("MESSAGES", "DELETED", "SIZE"))),
    # \Recent is gone from the grammar: RECENT, NEW and OLD, STATUS RECENT (RFC 9051 9)
    (b"a SEARCH RECENT\r\n", ParseError, c.Search("a", False, c.SearchFlag("\\Recent"))),
    (b"a SEARCH NEW\r\n", ParseError,
     c.Search("a", False, c.SearchAnd((c.SearchFlag("\\Recent"), c.SearchNot(SEEN))))),
    (b"a UID SEARCH OLD\r\n", ParseError, c.Search("a", True, c.SearchNot(c.SearchFlag("\\Recent")))),
    (b"a SEARCH NOT (SEEN OR RECENT DRAFT)\r\n", ParseError,
     c.Search("a", False, c.SearchNot(c.SearchAnd((SEEN, c.SearchOr(c.SearchFlag("\\Recent"),
                                                                    c.SearchFlag("\\Draft"))))))),
    (b"a SORT (DATE) UTF-8 NEW\r\n", ParseError,
     c.Sort("a", False, (c.SortCriterion("DATE"),), "UTF-8",
            c.SearchAnd((c.SearchFlag("\\Recent"), c.SearchNot(SEEN))))),
    (b"a STATUS INBOX (MESSAGES RECENT)\r\n", ParseError, c.Status("a", "INBOX", ("MESSAGES", "RECENT"))),
    (b'a LIST "" % RETURN (STATUS (RECENT))\r\n', ParseError,
     c.List("a", "", ("%",), (), ("STATUS",), ("RECENT",))),
    # what stays
    (b"a SEARCH UNSEEN SEEN\r\n", c.Search("a", False, c.SearchAnd((c.SearchNot(SEEN), SEEN))),
     c.Search("a", False, c.SearchAnd((c.SearchNot(SEEN), SEEN)))),
    (b"a SEARCH KEYWORD $Junk\r\n", c.Search("a", False, c.SearchFlag("$Junk")),
     c.Search("a", False, c.SearchFlag("$Junk"))),
    # number64 (RFC 9051 9: LARGER, SMALLER, partial)
    (b"a SEARCH LARGER %d\r\n" % BIG, c.Search("a", False, c.SearchSize("larger", BIG)), ParseError),
    (b"a SEARCH SMALLER 9223372036854775807\r\n",
     c.Search("a", False, c.SearchSize("smaller", 9223372036854775807)), ParseError),
    (b"a SEARCH SMALLER 9223372036854775808\r\n", ParseError, ParseError),
    (b"a FETCH 1 BODY.PEEK[]<%d.%d>\r\n" % (BIG, BIG),
     c.Fetch("a", False, SequenceSet.parse("1"), (c.FetchBody(c.Section(), True, (BIG, BIG)),)), ParseError),
    (b"a FETCH 1 BINARY.PEEK[1]<0.%d>\r\n" % BIG,
     c.Fetch("a", False, SequenceSet.parse("1"), (c.FetchBinary((1,), True, (0, BIG)),)), ParseError),
    (b"a SEARCH LARGER 4294967295\r\n", c.Search("a", False, c.SearchSize("larger", 4294967295)),
     c.Search("a", False, c.SearchSize("larger", 4294967295))),
    # APPEND's UTF8 data stays UTF8=ACCEPT's (RFC 6855), not IMAP4rev2's
    (b"a APPEND INBOX UTF8 (~{2+}\r\nhi)\r\n", ParseError, ParseError),
]


def parse(wire: bytes, rev2: bool, one_byte_at_a_time: bool = False) -> list:
    parser = CommandParser()
    parser.rev2 = rev2
    pieces = [wire[i:i + 1] for i in range(len(wire))] if one_byte_at_a_time else [wire]
    events = []
    for piece in pieces:
        events += parser.feed(piece)
    return [event for event in events if not isinstance(event, ContinuationNeeded)]


class ParserTests(TestCase):
    def check(self, one_byte_at_a_time: bool) -> None:
        for wire, rev2, rev1 in TABLE:
            for mode, expected in ((True, rev2), (False, rev1)):
                with self.subTest(wire=wire, rev2=mode):
                    events = parse(wire + b"z NOOP\r\n", mode, one_byte_at_a_time)
                    self.assertEqual(len(events), 2, events)
                    if expected is ParseError:
                        self.assertIsInstance(events[0], ParseError)
                        self.assertEqual((events[0].tag, events[0].status), ("a", "BAD"))
                    else:
                        self.assertEqual(events[0], expected)
                    self.assertEqual(events[1], c.Noop("z"))  # and the parser is in step after it

    def test_whole(self) -> None:
        self.check(one_byte_at_a_time=False)

    def test_one_byte_at_a_time(self) -> None:
        self.check(one_byte_at_a_time=True)

    def test_errors_say_why(self) -> None:
        (error,) = parse(b"a SEARCH NEW\r\n", rev2=True)
        self.assertIn("NEW is not an IMAP4rev2 search key", error.message)
        (error,) = parse(b"a STATUS INBOX (RECENT)\r\n", rev2=True)
        self.assertIn("RECENT is not an IMAP4rev2 status item", error.message)

