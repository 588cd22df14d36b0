"""SORT and THREAD (RFC 5256, RFC 5957) on the wire: the grammar, the keys the
store keeps for them, and sessions asking for them."""

from __future__ import annotations

import datetime

from twisted.trial.unittest import TestCase

from cyrusmail.imap import commands as c
from cyrusmail.imap.sequence import SequenceSet
from cyrusmail.imap.wire import CommandParser, ParseError
from tests.imap_support import Client, session_context
from tests.test_imap_search_slices import TurnClock
from tests.test_imap_wire import commands_of, feed_pieces

SEEN = c.SearchFlag("\\Seen")
ALL = c.SearchAll()
K = c.SortCriterion

# (wire bytes, expected command)
TABLE: list[tuple[bytes, c.Command]] = [
    (b"a SORT (SUBJECT) UTF-8 ALL\r\n", c.Sort("a", False, (K("SUBJECT"),), "UTF-8", ALL)),
    (b"a sort (subject reverse size) us-ascii all\r\n",
     c.Sort("a", False, (K("SUBJECT"), K("SIZE", True)), "US-ASCII", ALL)),
    (b"a UID SORT (REVERSE DATE ARRIVAL CC FROM TO DISPLAYFROM DISPLAYTO) utf-8 SEEN 1:3\r\n",
     c.Sort("a", True, (K("DATE", True), K("ARRIVAL"), K("CC"), K("FROM"), K("TO"), K("DISPLAYFROM"),
                        K("DISPLAYTO")), "UTF-8",
            c.SearchAnd((SEEN, c.SearchSequence(SequenceSet.parse("1:3")))))),
    (b'a SORT (FROM) "UTF-8" SUBJECT {3+}\r\nfoo\r\n',
     c.Sort("a", False, (K("FROM"),), "UTF-8", c.SearchHeader("SUBJECT", b"foo"))),
    (b"a SORT (ARRIVAL) KOI8-R OR SEEN DELETED\r\n",
     c.Sort("a", False, (K("ARRIVAL"),), "KOI8-R", c.SearchOr(SEEN, c.SearchFlag("\\Deleted")))),
    # RFC 5267 ESORT
    (b"a SORT RETURN (MIN MAX) (DATE) UTF-8 ALL\r\n",
     c.Sort("a", False, (K("DATE"),), "UTF-8", ALL, ("MIN", "MAX"))),
    (b"a UID SORT RETURN (PARTIAL -1:-10 SAVE) (REVERSE SIZE) US-ASCII SEEN\r\n",
     c.Sort("a", True, (K("SIZE", True),), "US-ASCII", SEEN, ("PARTIAL", "SAVE"), (-1, -10))),
    (b"a SORT RETURN () (ARRIVAL) UTF-8 $\r\n",
     c.Sort("a", False, (K("ARRIVAL"),), "UTF-8", c.SearchSequence(SequenceSet.parse("$")), ())),
    (b"a THREAD REFERENCES UTF-8 ALL\r\n", c.Thread("a", False, "REFERENCES", "UTF-8", ALL)),
    (b"a uid thread orderedsubject us-ascii (seen)\r\n",
     c.Thread("a", True, "ORDEREDSUBJECT", "US-ASCII", SEEN)),
]

ERRORS = [
    b"a SORT\r\n",
    b"a SORT () UTF-8 ALL\r\n",
    b"a SORT (SUBJECT) UTF-8\r\n",
    b"a SORT (SUBJECT)\r\n",
    b"a SORT SUBJECT UTF-8 ALL\r\n",
    b"a SORT (BOGUS) UTF-8 ALL\r\n",
    b"a SORT (REVERSE) UTF-8 ALL\r\n",
    b"a SORT (REVERSE REVERSE DATE) UTF-8 ALL\r\n",
    b"a SORT (DATE  SIZE) UTF-8 ALL\r\n",
    b"a SORT (DATE) UTF-8 FOO\r\n",
    b"a SORT (DATE) \xc3\xa9 ALL\r\n",
    b"a SORT RETURN (MIN) UTF-8 ALL\r\n",
    b"a SORT RETURN (PARTIAL 1:2 ALL) (DATE) UTF-8 ALL\r\n",
    b"a SORT (DATE) RETURN (MIN) UTF-8 ALL\r\n",
    b"a THREAD\r\n",
    b"a THREAD REFERENCES\r\n",
    b"a THREAD REFERENCES UTF-8\r\n",
    b"a THREAD REFS UTF-8 ALL\r\n",
    b"a THREAD (REFERENCES) UTF-8 ALL\r\n",
]


class GrammarTests(TestCase):
    def test_table_whole_and_byte_by_byte(self) -> None:
        for wire, expected in TABLE:
            for pieces in ([wire], [wire[i:i + 1] for i in range(len(wire))]):
                self.assertEqual(commands_of(feed_pieces(CommandParser(), pieces)), [expected], wire)

    def test_errors_are_bad_and_the_next_command_runs(self) -> None:
        for wire in ERRORS:
            for pieces in ([wire], [wire[i:i + 1] for i in range(len(wire))]):
                events = commands_of(feed_pieces(CommandParser(), [*pieces, b"z NOOP\r\n"]))
                self.assertEqual(len(events), 2, (wire, events))
                self.assertIsInstance(events[0], ParseError, wire)
                self.assertEqual((events[0].tag, events[0].status), ("a", "BAD"), wire)
                self.assertEqual(events[1], c.Noop("z"), wire)


def header_message(header: str, body: str = "body") -> bytes:
    return (header.strip("\n").replace("\n", "\r\n") + "\r\n\r\n" + body + "\r\n").encode()


def when(text: str) -> float:
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M %z").timestamp()


# Messages for the session tests: (header, internal date).
MESSAGES = [
    ("Subject: b\nFrom: Zed <z@x>\nTo: c@x\nDate: Fri, 22 Feb 2008 00:00:00 +0200\nMessage-ID: <1@x>",
     "2008-02-22 09:00 +0000"),
    (("Subject: Re: a\nFrom: yan@x\nTo: b@x\nDate: Fri, 22 Feb 2008 01:00:00 +0000\nMessage-ID: <2@x>\n"
      "References: <3@x>"), "2008-02-22 08:00 +0000"),
    ("Subject: a\nFrom: Amy <x@x>\nTo: a@x\nMessage-ID: <3@x>", "2008-02-21 23:30 +0000"),
    (("Subject: [list] B\nFrom: =?utf-8?q?=C3=81da?= <w@x>\nDate: Thu, 21 Feb 2008 20:30:00 -0500\n"
      "In-Reply-To: <1@x>"), "2008-02-22 07:00 +0000"),
]


class SessionTests(TestCase):
    def setUp(self) -> None:
        self.context = session_context(self)
        self.inbox = self.context.store.mailboxes("alice").open("INBOX")
        for header, date in MESSAGES:
            self.inbox.append(header_message(header), internal_date=when(date))
        self.client = Client(self.context, TurnClock())
        self.addCleanup(lambda: None if self.client.transport.disconnecting
                        else self.client.server.connectionLost(None))
        self.client.login()
        self.client.command("s SELECT INBOX")

    def test_capabilities(self) -> None:
        (line, _) = self.client.command("c CAPABILITY")
        for capability in ("SORT", "SORT=DISPLAY", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES", "ESORT"):
            self.assertIn(f" {capability} ", line + " ")

    def test_sorts(self) -> None:
        """Sent dates with zones: 1 is 22:00Z the day before, 3 has none (internal 23:30Z), 2 is 01:00Z,
        4 is 01:30Z."""
        cases = [
            ("SORT (ARRIVAL) UTF-8 ALL", "* SORT 3 4 2 1"),
            ("SORT (DATE) UTF-8 ALL", "* SORT 1 3 2 4"),
            ("SORT (REVERSE DATE) UTF-8 ALL", "* SORT 4 2 3 1"),
            ("SORT (SUBJECT) UTF-8 ALL", "* SORT 2 3 1 4"),
            ("SORT (SUBJECT REVERSE ARRIVAL) UTF-8 ALL", "* SORT 2 3 1 4"),
            ("SORT (SUBJECT ARRIVAL) UTF-8 ALL", "* SORT 3 2 4 1"),
            ("SORT (FROM) UTF-8 ALL", "* SORT 4 3 2 1"),
            ("SORT (DISPLAYFROM) UTF-8 ALL", "* SORT 3 4 2 1"),  # AMY, A+U+0301 DA (NFKD), YAN@X, ZED
            ("SORT (TO) UTF-8 ALL", "* SORT 4 3 2 1"),
            ("SORT (DISPLAYTO REVERSE SIZE) US-ASCII ALL", "* SORT 4 3 2 1"),
            ("SORT (CC) UTF-8 ALL", "* SORT 1 2 3 4"),
            ("SORT (SIZE) UTF-8 ALL", "* SORT " + " ".join(str(n) for _, n in sorted(
                (len(header_message(header)), n) for n, (header, _) in enumerate(MESSAGES, 1)))),
            ("SORT (SUBJECT) UTF-8 NOT FROM amy", "* SORT 2 1 4"),
            ("SORT (SUBJECT) UTF-8 2:3", "* SORT 2 3"),
            ("UID SORT (DATE) UTF-8 ALL", "* SORT 1 3 2 4"),
        ]
        for number, (command, answer) in enumerate(cases):
            self.assertEqual(self.client.command(f"t{number} {command}"),
                             [answer, f"t{number} OK {command.split(' (')[0]} completed"], command)

    def test_esort(self) -> None:
        """RFC 5267 ESORT: MIN and MAX are the first and last in the order asked; ALL and PARTIAL keep it."""
        cases = [
            ("SORT RETURN (MIN MAX COUNT ALL) (ARRIVAL) UTF-8 ALL",
             '* ESEARCH (TAG "t0") MIN 3 MAX 1 ALL 3:4,2,1 COUNT 4'),
            ("SORT RETURN () (REVERSE ARRIVAL) UTF-8 ALL", '* ESEARCH (TAG "t1") ALL 1:2,4,3'),
            ("SORT RETURN (PARTIAL 2:3) (ARRIVAL) UTF-8 ALL", '* ESEARCH (TAG "t2") PARTIAL (2:3 4,2)'),
            ("SORT RETURN (PARTIAL -1:-2) (ARRIVAL) UTF-8 ALL", '* ESEARCH (TAG "t3") PARTIAL (-1:-2 2,1)'),
            ("SORT RETURN (PARTIAL 5:9 COUNT) (ARRIVAL) UTF-8 ALL",
             '* ESEARCH (TAG "t4") PARTIAL (5:9 NIL) COUNT 4'),
            ("SORT RETURN (COUNT MIN) (ARRIVAL) UTF-8 KEYWORD none", '* ESEARCH (TAG "t5") COUNT 0'),
            ("UID SORT RETURN (MAX) (SUBJECT) UTF-8 ALL", '* ESEARCH (TAG "t6") UID MAX 4'),
        ]
        for number, (command, answer) in enumerate(cases):
            name = command.split(" RETURN")[0]
            self.assertEqual(self.client.command(f"t{number} {command}"),
                             [answer, f"t{number} OK {name} completed"], command)

    def test_esort_save(self) -> None:
        """SAVE keeps the messages for $ (RFC 5182), only the MIN one when MIN alone is asked."""
        self.assertEqual(self.client.command("s1 SORT RETURN (SAVE MIN) (ARRIVAL) UTF-8 ALL"),
                         ['* ESEARCH (TAG "s1") MIN 3', "s1 OK SORT completed"])
        self.assertEqual(self.client.command("s2 FETCH $ (UID)"), ["* 3 FETCH (UID 3)", "s2 OK FETCH completed"])
        self.assertEqual(self.client.command("s3 SORT RETURN (SAVE) (REVERSE ARRIVAL) UTF-8 NOT 2"),
                         ["s3 OK SORT completed"])
        self.assertEqual(self.client.command("s4 SORT (ARRIVAL) UTF-8 $"), ["* SORT 3 4 1", "s4 OK SORT completed"])
        self.assertEqual(self.client.command("s5 SORT RETURN (SAVE) (ARRIVAL) KOI8-R ALL"),
                         ["s5 NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset"])
        self.assertEqual(self.client.command("s6 SEARCH $"), ["* SEARCH", "s6 OK SEARCH completed"])

    def test_uid_sort_answers_uids(self) -> None:
        self.client.command("d STORE 1 +FLAGS (\\Deleted)")
        self.client.command("e EXPUNGE")
        self.assertEqual(self.client.command("u UID SORT (REVERSE ARRIVAL) UTF-8 ALL"),
                         ["* SORT 2 4 3", "u OK UID SORT completed"])
        self.assertEqual(self.client.command("u SORT (REVERSE ARRIVAL) UTF-8 ALL"),
                         ["* SORT 1 3 2", "u OK SORT completed"])

    def test_threads(self) -> None:
        self.assertEqual(self.client.command("t THREAD REFERENCES UTF-8 ALL"),
                         ["* THREAD (1 4)(3 2)", "t OK THREAD completed"])
        self.assertEqual(self.client.command("t THREAD ORDEREDSUBJECT UTF-8 ALL"),
                         ["* THREAD (1 4)(3 2)", "t OK THREAD completed"])
        self.assertEqual(self.client.command("t UID THREAD REFERENCES UTF-8 NOT 2"),
                         ["* THREAD (1 4)(3)", "t OK UID THREAD completed"])

    def test_nothing_found(self) -> None:
        self.assertEqual(self.client.command("t SORT (DATE) UTF-8 KEYWORD none"),
                         ["* SORT", "t OK SORT completed"])
        self.assertEqual(self.client.command("t THREAD REFERENCES UTF-8 KEYWORD none"),
                         ["* THREAD", "t OK THREAD completed"])

    def test_bad_charset(self) -> None:
        for command in ("SORT (DATE) KOI8-R ALL", "THREAD REFERENCES ISO-8859-1 ALL"):
            self.assertEqual(self.client.command(f"t {command}"),
                             ["t NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset"])

    def test_bad_arguments(self) -> None:
        (answer,) = self.client.command("t SORT (NAME) UTF-8 ALL")
        self.assertTrue(answer.startswith("t BAD "), answer)
        (answer,) = self.client.command("t THREAD REFS UTF-8 ALL")
        self.assertTrue(answer.startswith("t BAD "), answer)

    def test_needs_a_selected_mailbox(self) -> None:
        self.client.command("u UNSELECT")
        (answer,) = self.client.command("t SORT (DATE) UTF-8 ALL")
        self.assertTrue(answer.startswith("t BAD "), answer)

    def test_no_expunge_reported_during_sort(self) -> None:
        """Another session's expunge is not told during SORT or THREAD (they answer
        message numbers), and the expunged message is left out of the answer."""
        other = Client(self.context, self.client.clock)
        self.addCleanup(lambda: None if other.transport.disconnecting else other.server.connectionLost(None))
        other.login()
        other.command("s SELECT INBOX")
        other.command("d STORE 2 +FLAGS.SILENT (\\Deleted)")
        other.command("e EXPUNGE")
        self.assertEqual(self.client.command("t SORT (ARRIVAL) UTF-8 ALL"),
                         ["* SORT 3 4 1", "t OK SORT completed"])
        self.assertEqual(self.client.command("t THREAD REFERENCES UTF-8 ALL"),
                         ["* THREAD (1 4)(3)", "t OK THREAD completed"])
        self.assertEqual(self.client.command("n NOOP")[0], "* 2 EXPUNGE")


class SlicedSortTests(TestCase):
    """A SORT or THREAD of many messages is work in slices: other sessions are served between."""

    MESSAGES = 300

    def setUp(self) -> None:
        self.context = session_context(self)
        inbox = self.context.store.mailboxes("alice").open("INBOX")
        inbox.append_many([
            (header_message(f"Subject: topic {n % 7}\nMessage-ID: <{n}@x>\nReferences: <{n // 2}@x>"),
             None, (), float(1_000_000 - n))
            for n in range(1, self.MESSAGES + 1)
        ])
        self.clock = TurnClock()
        self.alice = Client(self.context, self.clock)
        self.other = Client(self.context, self.clock)
        for client in (self.alice, self.other):
            self.addCleanup(lambda client=client: None if client.transport.disconnecting
                            else client.server.connectionLost(None))
            client.login()
            client.command("s SELECT INBOX")

    def check_sliced(self, command: bytes, first_line: bytes) -> None:
        self.alice.server.WORK_SLICE = 20_000
        self.alice.server.dataReceived(command)
        self.assertEqual(self.alice.transport.value(), b"")
        turns = 0
        while self.clock.due():
            self.other.server.dataReceived(b"n NOOP\r\n")
            self.assertEqual(self.other.transport.value(), b"n OK NOOP completed\r\n")
            self.other.transport.clear()
            self.clock.turn()
            turns += 1
            self.assertLess(turns, 100_000)
        self.assertGreater(turns, 5)
        answer = self.alice.take()
        self.assertTrue(answer.startswith(first_line), answer[:80])
        self.assertTrue(answer.endswith(b" completed\r\n"), answer[-80:])

    def test_sort(self) -> None:
        self.check_sliced(b"a SORT (ARRIVAL) UTF-8 UNDELETED\r\n", b"* SORT 300 299 298 ")

    def test_thread(self) -> None:
        self.check_sliced(b"a THREAD REFERENCES UTF-8 ALL\r\n", b"* THREAD (")
