"""ESEARCH, SEARCHRES, WITHIN and CONTEXT=SEARCH beyond the transcripts
(``tests/imap_transcripts/esearch.txt``, ``searchres.txt``, ``search_context.txt``):
the response rules as a table, OLDER/YOUNGER against a set clock, updates
during IDLE, the limit on contexts, and context updates that read message
bodies running in slices while other sessions are served."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from cyrusmail.imap.contexts import MAX_CONTEXTS
from cyrusmail.imap.esearch import Returns, esearch_line, saved_positions
from tests.imap_support import Client, message, selected, session_context
from tests.test_imap_search_slices import SlicedSessions

NOW = 1_700_000_000.0

# (return options, PARTIAL range, numbers found) -> the ESEARCH data items
RESPONSES: list[tuple[tuple[str, ...], tuple[int, int] | None, list[int], str]] = [
    ((), None, [1, 2, 3, 7], " ALL 1:3,7"),
    (("CONTEXT",), None, [4], " ALL 4"),
    (("MIN", "MAX"), None, [2, 9, 10], " MIN 2 MAX 10"),
    (("MAX", "COUNT", "MIN"), None, [], " COUNT 0"),
    (("ALL", "MIN"), None, [], ""),
    (("UPDATE",), None, [1, 2], ""),
    (("SAVE", "COUNT"), None, [1, 2], " COUNT 2"),
    (("PARTIAL",), (1, 2), [5, 6, 9], " PARTIAL (1:2 5:6)"),
    (("PARTIAL",), (3, 9), [5, 6, 9], " PARTIAL (3:9 9)"),
    (("PARTIAL",), (4, 9), [5, 6, 9], " PARTIAL (4:9 NIL)"),
    (("PARTIAL",), (-1, -2), [5, 6, 9], " PARTIAL (-1:-2 6,9)"),
    (("PARTIAL",), (-3, -5), [5, 6, 9], " PARTIAL (-3:-5 5)"),
    (("PARTIAL",), (-4, -5), [5, 6, 9], " PARTIAL (-4:-5 NIL)"),
    (("PARTIAL", "COUNT"), (1, 1), [], " PARTIAL (1:1 NIL) COUNT 0"),
]

# (return options, PARTIAL range, count) -> positions $ keeps (RFC 5182 2.4, RFC 9394 3.2)
SAVED: list[tuple[tuple[str, ...], tuple[int, int] | None, int, list[int]]] = [
    (("SAVE",), None, 4, [0, 1, 2, 3]),
    (("SAVE", "MIN"), None, 4, [0]),
    (("SAVE", "MAX"), None, 4, [3]),
    (("SAVE", "MIN", "MAX"), None, 4, [0, 3]),
    (("SAVE", "MIN", "COUNT"), None, 4, [0, 1, 2, 3]),
    (("SAVE", "MAX", "ALL"), None, 4, [0, 1, 2, 3]),
    (("SAVE", "PARTIAL"), (2, 3), 4, [1, 2]),
    (("SAVE", "PARTIAL", "MIN"), (-1, -1), 4, [0, 3]),
    (("SAVE", "PARTIAL", "COUNT"), (2, 3), 4, [0, 1, 2, 3]),
    (("SAVE", "MIN"), None, 0, []),
]


class ResponseRuleTests(TestCase):
    def test_data_items(self) -> None:
        for options, partial, numbers, items in RESPONSES:
            with self.subTest(options=options, partial=partial, numbers=numbers):
                line = esearch_line("t", False, Returns.of(options, partial), numbers)
                self.assertEqual(line, f'* ESEARCH (TAG "t"){items}\r\n'.encode())

    def test_save_alone_says_nothing(self) -> None:
        for options in (("SAVE",), ("SAVE", "CONTEXT")):
            self.assertIsNone(esearch_line("t", True, Returns.of(options), [1]))

    def test_saved_positions(self) -> None:
        for options, partial, count, positions in SAVED:
            with self.subTest(options=options, partial=partial):
                self.assertEqual(sorted(saved_positions(Returns.of(options, partial), count)), positions)

    def test_modseq_of_what_is_reported(self) -> None:
        returns = Returns.of(("MIN", "MAX"))
        self.assertEqual(esearch_line("t", True, returns, [3, 4, 5], [7, 90, 8]),
                         b'* ESEARCH (TAG "t") UID MIN 3 MAX 5 MODSEQ 8\r\n')
        self.assertEqual(esearch_line("t", True, Returns.of(("COUNT",)), [3, 4, 5], [7, 90, 8]),
                         b'* ESEARCH (TAG "t") UID COUNT 3 MODSEQ 90\r\n')
        self.assertEqual(esearch_line("t", True, returns, [], []), b'* ESEARCH (TAG "t") UID\r\n')


class PositionedUpdateTests(TestCase):
    """CONTEXT=SORT updates: pairs applied in order, consecutive positions sharing one."""

    def test_lines(self) -> None:
        from cyrusmail.imap.esearch import positioned_line

        self.assertIsNone(positioned_line("t", False, [], []))
        self.assertEqual(positioned_line("t", True, [(6, 2), (2, 4)], []),
                         b'* ESEARCH (TAG "t") UID REMOVEFROM (6 2 2 4)\r\n')
        # removals come last position first: 5, then the run 3, 2
        self.assertEqual(positioned_line("t", False, [(5, 9), (3, 8), (2, 7)], [(1, 4), (2, 3), (5, 1)]),
                         b'* ESEARCH (TAG "t") REMOVEFROM (5 9 2 7:8) ADDTO (1 4,3 5 1)\r\n')


class SessionTests(TestCase):
    def setUp(self) -> None:
        self.context = session_context(self)
        self.inbox = self.context.store.mailboxes("alice").open("INBOX")
        self.clock = Clock()
        self.clock.advance(NOW)

    def session(self) -> Client:
        return selected(self, self.context, self.clock)

    def test_older_and_younger_count_back_from_now(self) -> None:
        """RFC 5032: seconds before the time of the search, on the internal date."""
        for age in (7200, 1000, 60):
            self.inbox.append(message(f"{age} seconds old"), internal_date=NOW - age)
        alice = self.session()
        self.assertEqual(alice.command("a1 SEARCH OLDER 1000"), ["* SEARCH 1 2", "a1 OK SEARCH completed"])
        self.assertEqual(alice.command("a2 SEARCH YOUNGER 1200"), ["* SEARCH 2 3", "a2 OK SEARCH completed"])
        self.assertEqual(alice.command("a3 UID SEARCH YOUNGER 59"), ["* SEARCH", "a3 OK UID SEARCH completed"])
        self.clock.advance(1000)
        self.assertEqual(alice.command("a4 SEARCH YOUNGER 1200"), ["* SEARCH 3", "a4 OK SEARCH completed"])
        self.assertEqual(alice.command("a5 SEARCH OLDER 1000 NOT OLDER 7200"),
                         ["* SEARCH 2 3", "a5 OK SEARCH completed"])
        self.assertEqual(alice.command("a6 SEARCH YOUNGER 0"), ["a6 BAD zero is not allowed here"])

    def test_updates_during_idle(self) -> None:
        """ADDTO and REMOVEFROM reach an idling client as soon as the change is made."""
        for subject in ("One", "Two", "Three"):
            self.inbox.append(message(subject))
        alice, bob = self.session(), self.session()
        alice.command("a1 UID SEARCH RETURN (UPDATE) FLAGGED")
        alice.send("a2 IDLE\r\n")
        self.assertEqual(alice.lines(), ["+ idling"])
        bob.command("b1 STORE 2:3 +FLAGS (\\Flagged)")
        self.assertEqual(alice.lines(), ["* 2 FETCH (FLAGS (\\Flagged \\Recent))",
                                         "* 3 FETCH (FLAGS (\\Flagged \\Recent))",
                                         '* ESEARCH (TAG "a1") UID ADDTO (0 2:3)'])
        bob.command("b2 STORE 2 +FLAGS.SILENT (\\Deleted)")
        bob.command("b3 EXPUNGE")
        self.assertEqual(alice.lines(), ["* 2 FETCH (FLAGS (\\Flagged \\Deleted \\Recent))",
                                         '* ESEARCH (TAG "a1") UID REMOVEFROM (0 2)', "* 2 EXPUNGE"])
        self.assertEqual(alice.command("DONE"), ["a2 OK IDLE terminated"])

    def test_contexts_are_limited(self) -> None:
        """Past MAX_CONTEXTS a search is answered, with NO [NOUPDATE], and not kept."""
        self.inbox.append(message("One"))
        alice = self.session()
        for n in range(MAX_CONTEXTS):
            self.assertEqual(alice.command(f"k{n} SEARCH RETURN (UPDATE) SEEN"),
                             [f'* ESEARCH (TAG "k{n}")', f"k{n} OK SEARCH completed"])
        self.assertEqual(alice.command("x1 SEARCH RETURN (UPDATE COUNT) SEEN"),
                         ['* ESEARCH (TAG "x1") COUNT 0', '* NO [NOUPDATE "x1"] Too many search contexts',
                          "x1 OK SEARCH completed"])
        self.assertEqual(alice.command("x2 STORE 1 +FLAGS.SILENT (\\Seen)"),
                         [f'* ESEARCH (TAG "k{n}") ADDTO (0 1)' for n in range(MAX_CONTEXTS)]
                         + ["x2 OK STORE completed"])
        self.assertEqual(alice.command('x3 CANCELUPDATE "x1"'),
                         ["x3 NO [CLIENTBUG] No search context has the tag x1"])
        alice.command('x4 CANCELUPDATE "k0"')
        self.assertEqual(alice.command("x5 SEARCH RETURN (UPDATE) SEEN"),
                         ['* ESEARCH (TAG "x5")', "x5 OK SEARCH completed"])

    def test_cancelupdate_needs_a_selected_mailbox(self) -> None:
        alice = Client(self.context, self.clock)
        alice.login()
        self.assertEqual(alice.command('c1 CANCELUPDATE "a1"'),
                         ["c1 BAD CANCELUPDATE is not allowed in the authenticated state"])


class SlicedUpdateTests(SlicedSessions, TestCase):
    """A context with BODY keys tests each changed message again by reading its
    file: after a STORE on thirty 60 KB messages that takes several turns, and
    other sessions are served meanwhile, while the STORE's tagged reply waits."""

    MESSAGES = 30
    MARKERS = 3

    def test_other_sessions_are_served_meanwhile(self) -> None:
        absent = " ".join(f"NOT BODY absent{n}" for n in range(8))
        self.assertEqual(self.alice.command(f"a1 SEARCH RETURN (UPDATE) SEEN {absent} BODY marker1"),
                         ['* ESEARCH (TAG "a1")', "a1 OK SEARCH completed"])
        self.alice.server.dataReceived(b"a2 STORE 1:* +FLAGS.SILENT (\\Seen)\r\na3 NOOP\r\n")

        def meanwhile(turn: int) -> None:
            self.assertNotIn(b"a2 OK", self.alice.transport.value())
            self.other.server.dataReceived(b"n%d NOOP\r\n" % turn)
            self.assertIn(b"n%d OK NOOP completed\r\n" % turn, self.other.transport.value())
            self.other.transport.clear()

        self.assertGreaterEqual(self.finish(meanwhile), 3)
        matching = ",".join(str(n) for n in range(1, self.MESSAGES + 1) if n % 3 == 1)
        self.assertEqual(self.alice.lines(), [f'* ESEARCH (TAG "a1") ADDTO (0 {matching})',
                                              "a2 OK STORE completed", "a3 OK NOOP completed"])

    def test_connection_lost_stops_the_update(self) -> None:
        self.alice.command("a1 SEARCH RETURN (UPDATE) SEEN BODY marker1")
        self.alice.server.dataReceived(b"a2 STORE 1:* +FLAGS.SILENT (\\Seen)\r\n")
        self.assertTrue(self.clock.due())
        self.alice.server.connectionLost(None)
        self.assertEqual(self.clock.due(), [])
