"""IMAP4rev2 (RFC 9051) beside IMAP4rev1: what ``ENABLE IMAP4rev2`` changes.

The grammar first (a table of wire bytes, parsed whole and one byte at a
time, by a parser in IMAP4rev2 mode and, for contrast, by one in IMAP4rev1
mode), then sessions: the transcripts in ``imap_transcripts/imap4rev2*.txt``
run with every other transcript; the tests here check what a transcript
cannot say well.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from cyrusmail.imap import commands as c
from cyrusmail.imap.sequence import SequenceSet
from cyrusmail.imap.wire import CommandParser, ContinuationNeeded, ParseError
from tests.imap_support import Client, deliver, session_context

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


class SessionTests(TestCase):
    def setUp(self) -> None:
        self.context = session_context(self)
        self.clock = Clock()
        for subject in ("First", "Second"):
            deliver(self.context, "alice", "INBOX", subject)

    def connect(self, rev2: bool) -> Client:
        client = Client(self.context, self.clock)
        client.login()
        self.addCleanup(lambda: None if client.transport.disconnecting else client.server.connectionLost(None))
        if rev2:
            self.assertEqual(client.command("e ENABLE IMAP4rev2"), ["* ENABLED IMAP4rev2", "e OK ENABLE completed"])
        return client

    def test_a_rev1_session_is_unchanged(self) -> None:
        """Without ENABLE IMAP4rev2 the session answers as RFC 3501 says, though
        IMAP4rev2 is advertised (RFC 9051 7.2.2)."""
        client = self.connect(rev2=False)
        answer = client.command("s SELECT INBOX")
        self.assertIn("* 2 RECENT", answer)
        self.assertIn("* OK [UNSEEN 1] First unseen", answer)
        self.assertFalse([line for line in answer if line.startswith("* LIST")])
        self.assertEqual(client.command("f SEARCH RECENT"), ["* SEARCH 1 2", "f OK SEARCH completed"])
        self.assertEqual(client.command("f UID SEARCH NEW"), ["* SEARCH 1 2", "f OK UID SEARCH completed"])
        self.assertEqual(client.command("f SEARCH OLD"), ["* SEARCH", "f OK SEARCH completed"])
        self.assertEqual(client.command("f FETCH 1 FLAGS"), ["* 1 FETCH (FLAGS (\\Recent))", "f OK FETCH completed"])
        self.assertEqual(client.command("t STATUS Trash (RECENT)"), ['* STATUS "Trash" (RECENT 0)',
                                                                     "t OK STATUS completed"])
        self.assertTrue(client.command("l SEARCH LARGER 5000000000")[-1].startswith("l BAD"))
        self.assertTrue(client.command('c CREATE "Café"')[-1].startswith("c NO [CANNOT]"))  # names are mUTF-7

    def test_no_recent_claimed(self) -> None:
        """A rev2 session takes no message's \\Recent: an IMAP4rev1 session
        opening the mailbox afterwards still has them all."""
        rev2 = self.connect(rev2=True)
        self.assertNotIn("* 2 RECENT", rev2.command("s SELECT INBOX"))
        deliver(self.context, "alice", "INBOX", "Third")
        self.assertEqual(rev2.command("n NOOP"), ["* 3 EXISTS", "n OK NOOP completed"])
        rev1 = self.connect(rev2=False)
        self.assertIn("* 3 RECENT", rev1.command("s SELECT INBOX"))

    def test_idle_pushes_fetch_with_uid(self) -> None:
        """Unsolicited FETCH responses carry UID (RFC 9051 7.5.2), during IDLE too."""
        rev2 = self.connect(rev2=True)
        rev2.command("s SELECT INBOX")
        self.assertEqual(rev2.command("i IDLE"), ["+ idling"])
        other = self.connect(rev2=False)
        other.command("s SELECT INBOX")
        other.command("t STORE 2 +FLAGS.SILENT (\\Answered)")
        self.clock.advance(rev2.server.IDLE_POLL)
        self.assertEqual(rev2.lines(), ["* 2 FETCH (UID 2 FLAGS (\\Answered))"])
        self.assertEqual(rev2.command("DONE"), ["i OK IDLE terminated"])

    def test_condstore_adds_modseq_to_the_uid(self) -> None:
        rev2 = self.connect(rev2=True)
        rev2.command("c ENABLE CONDSTORE")
        rev2.command("s SELECT INBOX")
        other = self.connect(rev2=False)
        other.command("s SELECT INBOX")
        other.command("t STORE 1 +FLAGS.SILENT (\\Seen)")
        self.assertEqual(rev2.command("n NOOP"), ["* 1 FETCH (UID 1 FLAGS (\\Seen) MODSEQ (4))", "n OK NOOP completed"])

    def test_search_variants_answer_esearch(self) -> None:
        """RFC 9051 6.4.4: every SEARCH answers ESEARCH; SAVE alone still answers nothing; SORT keeps SORT."""
        client = self.connect(rev2=True)
        client.command("s SELECT INBOX")
        self.assertEqual(client.command("a SEARCH RETURN (SAVE) ALL"), ["a OK SEARCH completed"])
        self.assertEqual(client.command("b SEARCH $"), ['* ESEARCH (TAG "b") ALL 1:2', "b OK SEARCH completed"])
        self.assertEqual(client.command("c SEARCH RETURN () 2"), ['* ESEARCH (TAG "c") ALL 2', "c OK SEARCH completed"])
        self.assertEqual(client.command("d SORT (SUBJECT) UTF-8 ALL"), ["* SORT 1 2", "d OK SORT completed"])
        self.assertEqual(client.command("e UID SEARCH MODSEQ 1"),
                         ["* OK [HIGHESTMODSEQ 3] Highest",  # a CONDSTORE enabling command (RFC 7162 3.1)
                          '* ESEARCH (TAG "e") UID ALL 1:2 MODSEQ 3', "e OK UID SEARCH completed"])
        self.assertTrue(client.command("f SORT (DATE) UTF-8 RECENT")[-1].startswith("f BAD"))

    def test_list_status_has_no_recent(self) -> None:
        client = self.connect(rev2=True)
        self.assertEqual(client.command('l LIST "" INBOX RETURN (STATUS (RECENT))'),
                         ["l BAD RECENT is not an IMAP4rev2 status item (RFC 9051 removed \\Recent)"])
        self.assertEqual(client.command('l LIST "" INBOX RETURN (STATUS (MESSAGES DELETED))'),
                         ['* LIST (\\HasNoChildren) "/" "INBOX"', '* STATUS "INBOX" (MESSAGES 2 DELETED 0)',
                          "l OK LIST completed"])

    def test_unauthenticate_returns_to_rev1(self) -> None:
        client = self.connect(rev2=True)
        self.assertTrue(client.command("u UNAUTHENTICATE")[-1].startswith("u OK"))
        client.login()
        client.command("s SELECT INBOX")
        self.assertEqual(client.command("f SEARCH RECENT"), ["* SEARCH 1 2", "f OK SEARCH completed"])

    def test_utf8_accept_keeps_its_own_rules(self) -> None:
        """UTF8=ACCEPT refuses SEARCH CHARSET (RFC 6855 3); IMAP4rev2 alone allows it
        (RFC 9051 6.4.4); APPEND's UTF8 data needs UTF8=ACCEPT, not IMAP4rev2."""
        client = self.connect(rev2=True)
        client.command("s SELECT INBOX")
        self.assertEqual(client.command("a SEARCH CHARSET US-ASCII ALL"),
                         ['* ESEARCH (TAG "a") ALL 1:2', "a OK SEARCH completed"])
        self.assertTrue(client.command("b APPEND INBOX UTF8 (~{2+}\r\nhi)")[-1].startswith("b BAD"))
        both = self.connect(rev2=True)
        both.command("e ENABLE UTF8=ACCEPT")
        both.command("s SELECT INBOX")
        self.assertTrue(both.command("a SEARCH CHARSET UTF-8 ALL")[-1].startswith("a BAD"))

    def test_utf8_names_must_be_net_unicode(self) -> None:
        """RFC 9051 5.1 / RFC 6855 3: NFC, and no C1 control or separator, when sent in UTF-8."""
        client = self.connect(rev2=True)
        for name in ("Cafe\u0301", "a\u0085b", "a\u2028b"):
            with self.subTest(name=name):
                self.assertTrue(client.command(f'c CREATE "{name}"')[-1].startswith("c NO [CANNOT]"))
        self.assertTrue(client.command('c CREATE "Caf\u00e9"')[-1].startswith("c OK"))
        # the same denormalized name in modified UTF-7 from an IMAP4rev1 session is kept as it was sent
        rev1 = self.connect(rev2=False)
        self.assertTrue(rev1.command("c CREATE Cafe&AwE-")[-1].startswith("c OK"))
        self.assertIn('* LIST (\\HasNoChildren) "/" "Cafe\u0301"', client.command('l LIST "" Cafe*'))
        self.assertIn("* 0 EXISTS", client.command('s SELECT "Cafe\u0301"'))
