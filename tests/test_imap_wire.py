"""The IMAP command grammar: a table of wire bytes and the command each
becomes, checked whole, one byte at a time, and split where Hypothesis
likes."""

from __future__ import annotations

import datetime
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from cyrusmail.imap import commands as c
from cyrusmail.imap.sequence import SequenceSet
from cyrusmail.imap.wire import (
    CommandParser,
    ContinuationNeeded,
    Event,
    ParseError,
    SpooledLiteral,
)

S = SequenceSet.parse
UTC = datetime.UTC


def feed_pieces(parser: CommandParser, pieces: list[bytes]) -> list[Event]:
    events: list[Event] = []
    for piece in pieces:
        events.extend(parser.feed(piece))
    return events


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def commands_of(events: list[Event]) -> list[Event]:
    return [event for event in events if not isinstance(event, ContinuationNeeded)]


WHOLE = c.Section()


def body(
    section: c.Section = WHOLE,
    peek: bool = False,
    partial: tuple[int, int] | None = None,
) -> c.FetchBody:
    return c.FetchBody(section, peek, partial)


A = c.FetchAttribute
SEEN = c.SearchFlag("\\Seen")

# (wire bytes, expected command)
TABLE: list[tuple[bytes, c.Command]] = [
    (b"a CAPABILITY\r\n", c.Capability("a")),
    (b"a1 capability\r\n", c.Capability("a1")),
    (b"a NOOP\r\n", c.Noop("a")),
    (b"a LOGOUT\r\n", c.Logout("a")),
    (b"t]1 NOOP\r\n", c.Noop("t]1")),
    (b"a STARTTLS\r\n", c.StartTLS("a")),
    (b"a COMPRESS DEFLATE\r\n", c.Compress("a", "DEFLATE")),
    (b"a compress deflate\r\n", c.Compress("a", "DEFLATE")),
    (b"a COMPRESS X-FUTURE\r\n", c.Compress("a", "X-FUTURE")),
    (b"a AUTHENTICATE plain\r\n", c.Authenticate("a", "PLAIN")),
    (
        b"a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n",
        c.Authenticate("a", "PLAIN", b"AGFsaWNlAHNlY3JldA=="),
    ),
    (b"a AUTHENTICATE PLAIN =\r\n", c.Authenticate("a", "PLAIN", b"=")),
    (b"a LOGIN alice secret\r\n", c.Login("a", b"alice", b"secret")),
    (b"a unauthenticate\r\n", c.Unauthenticate("a")),
    (b'a LOGIN "al ice" "p\\"w\\\\d"\r\n', c.Login("a", b"al ice", b'p"w\\d')),
    (b"a LOGIN {5}\r\nalice {6}\r\nsecret\r\n", c.Login("a", b"alice", b"secret")),
    (b"a LOGIN {5+}\r\nalice {6+}\r\nsecret\r\n", c.Login("a", b"alice", b"secret")),
    (b'a LOGIN "" {0}\r\n\r\n', c.Login("a", b"", b"")),
    (b"a LOGIN pa]ul x]\r\n", c.Login("a", b"pa]ul", b"x]")),
    (b"a SELECT INBOX\r\n", c.Select("a", "INBOX")),
    (b"a SELECT inbox (CONDSTORE)\r\n", c.Select("a", "inbox", (("CONDSTORE", None),))),
    (
        b"a SELECT x (QRESYNC (67890007 20050715194045000 41,43:211))\r\n",
        c.Select("a", "x", (("QRESYNC", (67890007, 20050715194045000, "41,43:211")),),
                 c.QresyncParameters(67890007, 20050715194045000, SequenceSet.parse("41,43:211"))),
    ),
    (
        b"a EXAMINE x (QRESYNC (1 2 5 (1,3:4 2,7:8)) CONDSTORE)\r\n",
        c.Examine("a", "x", (("QRESYNC", (1, 2, 5, ("1,3:4", "2,7:8"))), ("CONDSTORE", None)),
                  c.QresyncParameters(1, 2, SequenceSet.parse("5"),
                                      (SequenceSet.parse("1,3:4"), SequenceSet.parse("2,7:8")))),
    ),
    (
        b"a SELECT x (QRESYNC (1 9223372036854775807 (3 7)))\r\n",
        c.Select("a", "x", (("QRESYNC", (1, 9223372036854775807, (3, 7))),),
                 c.QresyncParameters(1, 9223372036854775807, None, (SequenceSet.parse("3"), SequenceSet.parse("7")))),
    ),
    (b'a EXAMINE "Entw&APw-rfe"\r\n', c.Examine("a", "Entw&APw-rfe")),
    (b"a CREATE foo/bar\r\n", c.Create("a", "foo/bar")),
    (b"a CREATE Sent (USE (\\Sent))\r\n", c.Create("a", "Sent", ("\\Sent",))),
    (
        b"a CREATE x (USE (\\Sent \\Archive))\r\n",
        c.Create("a", "x", ("\\Sent", "\\Archive")),
    ),
    (b"a DELETE foo\r\n", c.Delete("a", "foo")),
    (b"a RENAME foo {3}\r\nbar\r\n", c.Rename("a", "foo", "bar")),
    (b"a SUBSCRIBE #news.x\r\n", c.Subscribe("a", "#news.x")),
    (b"a UNSUBSCRIBE foo\r\n", c.Unsubscribe("a", "foo")),
    (b'a LIST "" *\r\n', c.List("a", "", ("*",))),
    (b"a LIST ~/Mail/ %\r\n", c.List("a", "~/Mail/", ("%",))),
    (b'a LIST "" "INBOX/%"\r\n', c.List("a", "", ("INBOX/%",))),
    (b'a LIST "" foo]*\r\n', c.List("a", "", ("foo]*",))),
    (
        b'a LIST (SUBSCRIBED RECURSIVEMATCH) "" ("INBOX" %) RETURN (CHILDREN)\r\n',
        c.List(
            "a", "", ("INBOX", "%"), ("SUBSCRIBED", "RECURSIVEMATCH"), ("CHILDREN",)
        ),
    ),
    (b'a LIST () "" %\r\n', c.List("a", "", ("%",))),
    (
        b'a LIST (special-use) "" * RETURN (SPECIAL-USE SUBSCRIBED)\r\n',
        c.List("a", "", ("*",), ("SPECIAL-USE",), ("SPECIAL-USE", "SUBSCRIBED")),
    ),
    (
        b'a LIST "" % RETURN (STATUS (MESSAGES UNSEEN))\r\n',
        c.List("a", "", ("%",), (), ("STATUS",), ("MESSAGES", "UNSEEN")),
    ),
    (b'a LIST "" % RETURN ()\r\n', c.List("a", "", ("%",))),
    (b'a LSUB "" news.%\r\n', c.Lsub("a", "", "news.%")),
    (b"a NAMESPACE\r\n", c.Namespace("a")),
    (
        b"a STATUS blurdybloop (UIDNEXT MESSAGES highestmodseq SIZE)\r\n",
        c.Status("a", "blurdybloop", ("UIDNEXT", "MESSAGES", "HIGHESTMODSEQ", "SIZE")),
    ),
    (b"a CHECK\r\n", c.Check("a")),
    (b"a CLOSE\r\n", c.Close("a")),
    (b"a UNSELECT\r\n", c.Unselect("a")),
    (b"a EXPUNGE\r\n", c.Expunge("a")),
    (b"a UID EXPUNGE 3000:3002\r\n", c.Expunge("a", True, S("3000:3002"))),
    (b"a IDLE\r\n", c.Idle("a")),
    (
        b"a ENABLE CONDSTORE utf8=accept\r\n",
        c.Enable("a", ("CONDSTORE", "UTF8=ACCEPT")),
    ),
    (b"a ID NIL\r\n", c.Id("a", None)),
    (b"a ID ()\r\n", c.Id("a", None)),
    (
        b'a ID ("name" "sodr" "version" NIL)\r\n',
        c.Id("a", (("name", b"sodr"), ("version", None))),
    ),
    (b'a GETQUOTA ""\r\n', c.GetQuota("a", "")),
    (b"a GETQUOTAROOT INBOX\r\n", c.GetQuotaRoot("a", "INBOX")),
    (b'a SETQUOTA "" (STORAGE 512)\r\n', c.SetQuota("a", "", (("STORAGE", 512),))),
    (
        b"a SETQUOTA x (storage 1 MESSAGE 2)\r\n",
        c.SetQuota("a", "x", (("STORAGE", 1), ("MESSAGE", 2))),
    ),
    (b"a SETQUOTA x ()\r\n", c.SetQuota("a", "x", ())),
    (
        b"a SETACL INBOX/Drafts john lrswicda\r\n",
        c.SetAcl("a", "INBOX/Drafts", "john", "lrswicda"),
    ),
    (b'a SETACL x "fred" -w\r\n', c.SetAcl("a", "x", "fred", "-w")),
    (b"a SETACL x fred +w\r\n", c.SetAcl("a", "x", "fred", "+w")),
    (b"a DELETEACL INBOX smith\r\n", c.DeleteAcl("a", "INBOX", "smith")),
    (b"a GETACL INBOX\r\n", c.GetAcl("a", "INBOX")),
    (
        b"a LISTRIGHTS ~/Mail/saved smith\r\n",
        c.ListRights("a", "~/Mail/saved", "smith"),
    ),
    (b"a MYRIGHTS INBOX\r\n", c.MyRights("a", "INBOX")),
    # FETCH
    (b"a FETCH 1 FLAGS\r\n", c.Fetch("a", False, S("1"), (A("FLAGS"),))),
    (
        b"a FETCH 1:* ALL\r\n",
        c.Fetch(
            "a",
            False,
            S("1:*"),
            tuple(map(A, ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"))),
        ),
    ),
    (
        b"a FETCH 2,4 fast\r\n",
        c.Fetch(
            "a",
            False,
            S("2,4"),
            tuple(map(A, ("FLAGS", "INTERNALDATE", "RFC822.SIZE"))),
        ),
    ),
    (
        b"a FETCH * FULL\r\n",
        c.Fetch(
            "a",
            False,
            S("*"),
            tuple(map(A, ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"))),
        ),
    ),
    (
        b"a FETCH 1 (ENVELOPE FLAGS INTERNALDATE RFC822 RFC822.HEADER RFC822.SIZE RFC822.TEXT BODY BODYSTRUCTURE UID MODSEQ)\r\n",
        c.Fetch(
            "a",
            False,
            S("1"),
            tuple(
                map(
                    A,
                    [
                        "ENVELOPE",
                        "FLAGS",
                        "INTERNALDATE",
                        "RFC822",
                        "RFC822.HEADER",
                        "RFC822.SIZE",
                        "RFC822.TEXT",
                        "BODY",
                        "BODYSTRUCTURE",
                        "UID",
                        "MODSEQ",
                    ],
                )
            ),
        ),
    ),
    (b"a FETCH 1 BODY[]\r\n", c.Fetch("a", False, S("1"), (body(),))),
    (
        b"a FETCH 1 body.peek[]<0.1024>\r\n",
        c.Fetch("a", False, S("1"), (body(peek=True, partial=(0, 1024)),)),
    ),
    (
        b"a FETCH 1 BODY[HEADER]\r\n",
        c.Fetch("a", False, S("1"), (body(c.Section((), "HEADER")),)),
    ),
    (
        b"a FETCH 1 BODY[TEXT]\r\n",
        c.Fetch("a", False, S("1"), (body(c.Section((), "TEXT")),)),
    ),
    (b"a FETCH 1 BODY[1]\r\n", c.Fetch("a", False, S("1"), (body(c.Section((1,))),))),
    (
        b"a FETCH 1 BODY[4.2.2.1.MIME]\r\n",
        c.Fetch("a", False, S("1"), (body(c.Section((4, 2, 2, 1), "MIME")),)),
    ),
    (
        b"a FETCH 1 BODY[3.HEADER]\r\n",
        c.Fetch("a", False, S("1"), (body(c.Section((3,), "HEADER")),)),
    ),
    (
        b"a FETCH 1 BODY[3.text]\r\n",
        c.Fetch("a", False, S("1"), (body(c.Section((3,), "TEXT")),)),
    ),
    (
        b"a FETCH 1 (BODY.PEEK[HEADER.FIELDS (From To Message-ID)])\r\n",
        c.Fetch(
            "a",
            False,
            S("1"),
            (body(c.Section((), "HEADER.FIELDS", ("FROM", "TO", "MESSAGE-ID")), True),),
        ),
    ),
    (
        b'a FETCH 1 BODY[1.HEADER.FIELDS.NOT ("Received" {6}\r\nX-Spam)]\r\n',
        c.Fetch(
            "a",
            False,
            S("1"),
            (body(c.Section((1,), "HEADER.FIELDS.NOT", ("RECEIVED", "X-SPAM"))),),
        ),
    ),
    (
        b"a FETCH 1 (BINARY[1.2] BINARY.PEEK[]<5.10> BINARY.SIZE[3])\r\n",
        c.Fetch(
            "a",
            False,
            S("1"),
            (
                c.FetchBinary((1, 2)),
                c.FetchBinary((), True, (5, 10)),
                c.FetchBinarySize((3,)),
            ),
        ),
    ),
    (
        b"a FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)\r\n",
        c.Fetch("a", False, S("1:*"), (A("FLAGS"),), changedsince=12345),
    ),
    (
        b"a UID FETCH 300:500,1 (UID FLAGS) (CHANGEDSINCE 1 VANISHED)\r\n",
        c.Fetch("a", True, S("1,300:500"), (A("UID"), A("FLAGS")), 1, True),
    ),
    (
        b"a uid fetch 4294967295 UID\r\n",
        c.Fetch("a", True, S("4294967295"), (A("UID"),)),
    ),
    # STORE
    (
        b"a STORE 2:4 +FLAGS (\\Deleted)\r\n",
        c.Store("a", False, S("2:4"), "add", False, ("\\Deleted",)),
    ),
    (b"a STORE 1 FLAGS ()\r\n", c.Store("a", False, S("1"), "replace", False, ())),
    (
        b"a STORE 1 -flags.silent \\SEEN $Junk\r\n",
        c.Store("a", False, S("1"), "remove", True, ("\\Seen", "$Junk")),
    ),
    (
        b"a UID STORE 5 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted)\r\n",
        c.Store("a", True, S("5"), "add", True, ("\\Deleted",), 320162338),
    ),
    (
        b"a STORE 1 +FLAGS (\\Custom)\r\n",
        c.Store("a", False, S("1"), "add", False, ("\\Custom",)),
    ),
    # COPY / MOVE
    (b"a COPY 2:4 MEETING\r\n", c.Copy("a", False, S("2:4"), "MEETING")),
    (b'a UID COPY 1,3 "To do"\r\n', c.Copy("a", True, S("1,3"), "To do")),
    (b"a MOVE 1 Trash\r\n", c.Move("a", False, S("1"), "Trash")),
    (b"a UID MOVE 42:* Archive\r\n", c.Move("a", True, S("42:*"), "Archive")),
    # SEARCH
    (b"a SEARCH ALL\r\n", c.Search("a", False, c.SearchAll())),
    (
        b'a SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"\r\n',
        c.Search(
            "a",
            False,
            c.SearchAnd(
                (
                    c.SearchFlag("\\Flagged"),
                    c.SearchDate("since", datetime.date(1994, 2, 1)),
                    c.SearchNot(c.SearchAddress("FROM", b"Smith")),
                )
            ),
        ),
    ),
    (
        b"a SEARCH CHARSET utf-8 TEXT {5}\r\n\xc3\xa9t\xc3\xa9\r\n",
        c.Search("a", False, c.SearchText("\xe9t\xe9".encode()), "UTF-8"),
    ),
    (
        b"a UID SEARCH OR (SEEN 1:5) UNSEEN\r\n",
        c.Search(
            "a",
            True,
            c.SearchOr(
                c.SearchAnd((SEEN, c.SearchSequence(S("1:5")))), c.SearchNot(SEEN)
            ),
        ),
    ),
    (
        b'a SEARCH BEFORE "01-Jan-2000" ON 9-jan-2001 SENTBEFORE 1-Mar-2002 SENTON 2-Mar-2002 SENTSINCE 3-Mar-2002\r\n',
        c.Search(
            "a",
            False,
            c.SearchAnd(
                (
                    c.SearchDate("before", datetime.date(2000, 1, 1)),
                    c.SearchDate("on", datetime.date(2001, 1, 9)),
                    c.SearchDate("before", datetime.date(2002, 3, 1), True),
                    c.SearchDate("on", datetime.date(2002, 3, 2), True),
                    c.SearchDate("since", datetime.date(2002, 3, 3), True),
                )
            ),
        ),
    ),
    (
        b"a SEARCH ANSWERED DELETED DRAFT RECENT UNANSWERED UNDELETED UNDRAFT UNFLAGGED\r\n",
        c.Search(
            "a",
            False,
            c.SearchAnd(
                (
                    c.SearchFlag("\\Answered"),
                    c.SearchFlag("\\Deleted"),
                    c.SearchFlag("\\Draft"),
                    c.SearchFlag("\\Recent"),
                    c.SearchNot(c.SearchFlag("\\Answered")),
                    c.SearchNot(c.SearchFlag("\\Deleted")),
                    c.SearchNot(c.SearchFlag("\\Draft")),
                    c.SearchNot(c.SearchFlag("\\Flagged")),
                )
            ),
        ),
    ),
    (
        b"a SEARCH NEW OLD KEYWORD $Junk UNKEYWORD foo\r\n",
        c.Search(
            "a",
            False,
            c.SearchAnd(
                (
                    c.SearchAnd((c.SearchFlag("\\Recent"), c.SearchNot(SEEN))),
                    c.SearchNot(c.SearchFlag("\\Recent")),
                    c.SearchFlag("$Junk"),
                    c.SearchNot(c.SearchFlag("foo")),
                )
            ),
        ),
    ),
    (
        b'a SEARCH BCC b CC c TO t SUBJECT "s s" HEADER X-Foo "" BODY b2\r\n',
        c.Search(
            "a",
            False,
            c.SearchAnd(
                (
                    c.SearchAddress("BCC", b"b"),
                    c.SearchAddress("CC", b"c"),
                    c.SearchAddress("TO", b"t"),
                    c.SearchHeader("SUBJECT", b"s s"),
                    c.SearchHeader("X-FOO", b""),
                    c.SearchBody(b"b2"),
                )
            ),
        ),
    ),
    (
        b"a SEARCH LARGER 10 SMALLER 4294967295 UID 2:* *\r\n",
        c.Search(
            "a",
            False,
            c.SearchAnd(
                (
                    c.SearchSize("larger", 10),
                    c.SearchSize("smaller", 4294967295),
                    c.SearchSequence(S("2:*"), True),
                    c.SearchSequence(S("*")),
                )
            ),
        ),
    ),
    (
        b'a SEARCH MODSEQ "/flags/\\\\draft" all 620162338\r\n',
        c.Search("a", False, c.SearchModSeq(620162338, ("/flags/\\draft", "all"))),
    ),
    (b"a SEARCH MODSEQ 5\r\n", c.Search("a", False, c.SearchModSeq(5))),
    (
        b"a SEARCH HEADER FROM x FROM x\r\n",
        c.Search("a", False, c.SearchAnd((c.SearchHeader("FROM", b"x"), c.SearchAddress("FROM", b"x")))),
    ),
    (
        b"a SEARCH RETURN (MIN COUNT) UNSEEN\r\n",
        c.Search("a", False, c.SearchNot(SEEN), None, ("MIN", "COUNT")),
    ),
    (b"a SEARCH RETURN () ALL\r\n", c.Search("a", False, c.SearchAll(), None, ())),
    # RFC 4731 ESEARCH, 5182 SEARCHRES, 5267 CONTEXT=SEARCH, 9394 PARTIAL, 5032 WITHIN
    (
        b"a SEARCH RETURN (min MAX COUNT ALL SAVE MIN) CHARSET UTF-8 UNSEEN\r\n",
        c.Search("a", False, c.SearchNot(SEEN), "UTF-8", ("MIN", "MAX", "COUNT", "ALL", "SAVE")),
    ),
    (
        b"a UID SEARCH RETURN (PARTIAL 4:2 UPDATE CONTEXT) ALL\r\n",
        c.Search("a", True, c.SearchAll(), None, ("PARTIAL", "UPDATE", "CONTEXT"), (2, 4)),
    ),
    (
        b"a SEARCH RETURN (PARTIAL -1:-100) ALL\r\n",
        c.Search("a", False, c.SearchAll(), None, ("PARTIAL",), (-1, -100)),
    ),
    (
        b"a SEARCH RETURN (COUNT PARTIAL -100:-1) ALL\r\n",
        c.Search("a", False, c.SearchAll(), None, ("COUNT", "PARTIAL"), (-1, -100)),
    ),
    (
        b"a SEARCH $ UID $ OLDER 3600 YOUNGER 60\r\n",
        c.Search("a", False, c.SearchAnd((
            c.SearchSequence(S("$")), c.SearchSequence(S("$"), uid=True),
            c.SearchWithin("older", 3600), c.SearchWithin("younger", 60),
        ))),
    ),
    (b"a FETCH $ FLAGS\r\n", c.Fetch("a", False, S("$"), (c.FetchAttribute("FLAGS"),))),
    (b"a UID STORE $ +FLAGS (\\Seen)\r\n", c.Store("a", True, S("$"), "add", False, ("\\Seen",))),
    (b"a COPY $ Trash\r\n", c.Copy("a", False, S("$"), "Trash")),
    (b"a UID MOVE $ Trash\r\n", c.Move("a", True, S("$"), "Trash")),
    (b"a UID EXPUNGE $\r\n", c.Expunge("a", True, S("$"))),
    (b'a CANCELUPDATE "b1" "b2" "b1"\r\n', c.CancelUpdate("a", ("b1", "b2"))),
    (b"a SEARCH ((SEEN))\r\n", c.Search("a", False, SEEN)),
    (
        b"a SEARCH SAVEDBEFORE 1-Feb-2020 SAVEDON 2-Feb-2020 SAVEDSINCE 3-Feb-2020\r\n",
        c.Search("a", False, c.SearchAnd((
            c.SearchSaveDate("before", datetime.date(2020, 2, 1)),
            c.SearchSaveDate("on", datetime.date(2020, 2, 2)),
            c.SearchSaveDate("since", datetime.date(2020, 2, 3)),
        ))),
    ),
    (b"a SEARCH SAVEDATESUPPORTED\r\n", c.Search("a", False, c.SearchAll())),
    (
        b"a UID SEARCH EMAILID M6d99ac3275bb4e THREADID T64b478a75b7ea9\r\n",
        c.Search("a", True, c.SearchAnd((
            c.SearchObjectId("EMAILID", "M6d99ac3275bb4e"),
            c.SearchObjectId("THREADID", "T64b478a75b7ea9"),
        ))),
    ),
    (
        b"a FETCH 1 (SAVEDATE EMAILID threadid PREVIEW (LAZY))\r\n",
        c.Fetch("a", False, S("1"), tuple(c.FetchAttribute(name) for name in
                                          ("SAVEDATE", "EMAILID", "THREADID", "PREVIEW"))),
    ),
    (b"a FETCH 1 PREVIEW\r\n", c.Fetch("a", False, S("1"), (c.FetchAttribute("PREVIEW"),))),
    (
        b"a STATUS x (MAILBOXID SIZE)\r\n",
        c.Status("a", "x", ("MAILBOXID", "SIZE")),
    ),
]

ERRORS: list[tuple[bytes, str | None]] = [
    (b"a FOO\r\n", "a"),
    (b"a UID NOOP\r\n", "a"),
    (b"a NOOP \r\n", "a"),
    (b"a  NOOP\r\n", "a"),
    (b"a+ NOOP\r\n", None),
    (b"(a NOOP\r\n", None),
    (b"a\r\n", "a"),
    (b"a LOGIN alice\r\n", "a"),
    (b"a LOGIN alice  secret\r\n", "a"),
    (b'a LOGIN "al\\ice" x\r\n', "a"),
    (b'a LOGIN "alice x\r\n', "a"),
    (b"a LOGIN al(ice x\r\n", "a"),
    (b"a LOGIN al%ice x\r\n", "a"),
    (b"a COMPRESS\r\n", "a"),
    (b"a COMPRESS DEFLATE X\r\n", "a"),
    (b'a COMPRESS "DEFLATE"\r\n', "a"),
    (b"a SELECT\r\n", "a"),
    (b"a SELECT INBOX ()\r\n", "a"),
    (b"a SELECT INBOX (FOO)\r\n", "a"),
    (b"a SELECT INBOX (CONDSTORE 1)\r\n", "a"),
    (b"a SELECT INBOX (QRESYNC)\r\n", "a"),
    (b"a SELECT INBOX (QRESYNC (1))\r\n", "a"),
    (b"a SELECT INBOX (QRESYNC (0 1))\r\n", "a"),
    (b"a SELECT INBOX (QRESYNC (1 0))\r\n", "a"),
    (b"a SELECT INBOX (QRESYNC (1 9223372036854775808))\r\n", "a"),
    (b"a SELECT INBOX (QRESYNC (1 2 1:*))\r\n", "a"),
    (b"a SELECT INBOX (QRESYNC (1 2 1:5 (1:2 3)))\r\n", "a"),
    (b"a SELECT INBOX (QRESYNC (1 2 1:5 (1 3) 4))\r\n", "a"),
    (b"a EXAMINE INBOX (QRESYNC (1 2 x))\r\n", "a"),
    (b"a FETCH 0 FLAGS\r\n", "a"),
    (b"a FETCH 1:0 FLAGS\r\n", "a"),
    (b"a FETCH 4294967296 FLAGS\r\n", "a"),
    (b"a FETCH 1 FLAGZ\r\n", "a"),
    (b"a FETCH 1 BODY.PEEK\r\n", "a"),
    (b"a FETCH 1 BODY[MIME]\r\n", "a"),
    (b"a FETCH 1 BODY[0]\r\n", "a"),
    (b"a FETCH 1 BODY[1.]\r\n", "a"),
    (b"a FETCH 1 BODY[HEADER.FIELDS]\r\n", "a"),
    (b"a FETCH 1 BODY[]<0.0>\r\n", "a"),
    (b"a FETCH 1 BINARY[TEXT]\r\n", "a"),
    (b"a FETCH 1 (FLAGS\r\n", "a"),
    (b"a FETCH 1 FLAGS (VANISHED)\r\n", "a"),
    (b"a FETCH 1 ()\r\n", "a"),
    (b"a STORE 1 FLAGS\r\n", "a"),
    (b"a STORE 1 XFLAGS (\\Seen)\r\n", "a"),
    (b"a SEARCH\r\n", "a"),
    (b"a SEARCH FOO\r\n", "a"),
    (b"a SEARCH SINCE 30-Feb-2000\r\n", "a"),
    (b"a SEARCH SINCE 1-Foo-2000\r\n", "a"),
    (b"a SEARCH OR SEEN\r\n", "a"),
    (b"a SEARCH RETURN (BOGUS) ALL\r\n", "a"),
    (b"a SEARCH RETURN (PARTIAL 1) ALL\r\n", "a"),
    (b"a SEARCH RETURN (PARTIAL 1:*) ALL\r\n", "a"),
    (b"a SEARCH RETURN (PARTIAL *:1) ALL\r\n", "a"),
    (b"a SEARCH RETURN (PARTIAL 0:5) ALL\r\n", "a"),
    (b"a SEARCH RETURN (PARTIAL -1:5) ALL\r\n", "a"),
    (b"a SEARCH RETURN (PARTIAL 1:4294967296) ALL\r\n", "a"),
    (b"a SEARCH RETURN (PARTIAL 1:2 PARTIAL 3:4) ALL\r\n", "a"),
    (b"a SEARCH RETURN (ALL PARTIAL 1:2) ALL\r\n", "a"),
    (b"a SEARCH RETURN (UPDATE UPDATE) ALL\r\n", "a"),
    (b"a SEARCH RETURN ALL\r\n", "a"),
    (b"a FETCH 1,$ FLAGS\r\n", "a"),
    (b"a FETCH $:3 FLAGS\r\n", "a"),
    (b"a SEARCH $$\r\n", "a"),
    (b"a SEARCH OLDER 0\r\n", "a"),
    (b"a SEARCH YOUNGER soon\r\n", "a"),
    (b"a CANCELUPDATE\r\n", "a"),
    (b"a CANCELUPDATE b1\r\n", "a"),
    (b"a SEARCH UNRECENT\r\n", "a"),
    (b'a LIST (BOGUS) "" %\r\n', "a"),
    (b'a LIST (RECURSIVEMATCH) "" %\r\n', "a"),
    (b'a LIST (RECURSIVEMATCH REMOTE) "" ""\r\n', "a"),
    (b'a LIST (REMOTE RECURSIVEMATCH) "" %\r\n', "a"),
    (b'a LIST "" % RETURN (BOGUS)\r\n', "a"),
    (b"a STATUS x (MESSAGES BOGUS)\r\n", "a"),
    (b"a STATUS x ()\r\n", "a"),
    (b"a FETCH 1 (PREVIEW (EAGER))\r\n", "a"),
    (b"a FETCH 1 (PREVIEW ())\r\n", "a"),
    (b"a SEARCH EMAILID\r\n", "a"),
    (b"a SEARCH EMAILID M.1\r\n", "a"),
    (b"a SEARCH THREADID " + b"T" * 256 + b"\r\n", "a"),
    (b"a SEARCH SAVEDON 31-Feb-2020\r\n", "a"),
    (b"a CREATE x (FOO (\\Sent))\r\n", "a"),
    (b"a APPEND INBOX\r\n", "a"),
    (b'a APPEND INBOX "bad date" {1+}\r\nx\r\n', "a"),
    (b"a ENABLE\r\n", "a"),
    (b"a EXPUNGE 1\r\n", "a"),
    (b"a UID EXPUNGE\r\n", "a"),
    (b"a SELECT \xc3\r\n", "a"),
    (b"a AUTHENTICATE PLAIN !!\r\n", "a"),
]


def expected_events(command: c.Command) -> list[Event]:
    return [command]


class TableTests(TestCase):
    """Each row whole, then one byte at a time."""

    def check(self, pieces_of: object) -> None:
        for wire, expected in TABLE:
            parser = CommandParser()
            events = commands_of(feed_pieces(parser, pieces_of(wire)))  # type: ignore[operator]
            self.assertEqual(events, [expected], wire)

    def test_whole(self) -> None:
        self.check(lambda wire: [wire])

    def test_one_byte_at_a_time(self) -> None:
        self.check(lambda wire: [wire[i : i + 1] for i in range(len(wire))])

    def test_all_rows_pipelined(self) -> None:
        """Every row in one stream, resuming after the pausing commands."""
        parser = CommandParser()
        stream = b"".join(wire for wire, _ in TABLE)
        events = commands_of(parser.feed(stream))
        while parser.paused:
            events += commands_of(parser.read_commands())
        self.assertEqual(events, [expected for _, expected in TABLE])

    def test_bare_lf(self) -> None:
        """Bare LF is accepted as a line end (liberal; some scripts send it)."""
        parser = CommandParser()
        self.assertEqual(
            commands_of(parser.feed(b"a LOGIN {1}\nx y\nb NOOP\n")),
            [c.Login("a", b"x", b"y"), c.Noop("b")],
        )

    def test_empty_lines_ignored(self) -> None:
        self.assertEqual(CommandParser().feed(b"\r\n\r\na NOOP\r\n"), [c.Noop("a")])

    def test_errors(self) -> None:
        for wire, tag in ERRORS:
            for pieces in ([wire], [wire[i : i + 1] for i in range(len(wire))]):
                parser = CommandParser()
                events = commands_of(feed_pieces(parser, [*pieces, b"z NOOP\r\n"]))
                self.assertEqual(len(events), 2, (wire, events))
                self.assertIsInstance(events[0], ParseError, wire)
                self.assertEqual((events[0].tag, events[0].status), (tag, "BAD"), wire)  # type: ignore[union-attr]
                self.assertEqual(events[1], c.Noop("z"), wire)


class SplitTests(TestCase):
    @settings(max_examples=200, deadline=None)
    @given(st.data())
    def test_any_split(self, data: st.DataObject) -> None:
        wire, expected = data.draw(st.sampled_from(TABLE))
        cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=8))
        events = commands_of(feed_pieces(CommandParser(), split_at(wire, cuts)))
        self.assertEqual(events, [expected])

    @settings(max_examples=100, deadline=None)
    @given(
        st.lists(st.sampled_from(range(len(TABLE))), min_size=1, max_size=6),
        st.lists(st.integers(0, 2000), max_size=10),
    )
    def test_pipelined_any_split(self, rows: list[int], cuts: list[int]) -> None:
        stream = b"".join(TABLE[row][0] for row in rows)
        parser = CommandParser()
        events = []
        for piece in split_at(stream, cuts):
            events += commands_of(parser.feed(piece))
            while parser.paused:
                events += commands_of(parser.read_commands())
        self.assertEqual(events, [TABLE[row][1] for row in rows])


class ContinuationTests(TestCase):
    def test_sync_literal_asks_for_continuation(self) -> None:
        parser = CommandParser()
        self.assertEqual(parser.feed(b"a LOGIN {5}\r\n"), [ContinuationNeeded("a", 5)])
        self.assertEqual(parser.feed(b"alice {6}\r\n"), [ContinuationNeeded("a", 6)])
        self.assertEqual(
            parser.feed(b"secret\r\n"), [c.Login("a", b"alice", b"secret")]
        )

    def test_non_sync_literal_needs_none(self) -> None:
        parser = CommandParser()
        self.assertEqual(
            parser.feed(b"a LOGIN {5+}\r\nalice {6+}\r\nsecret\r\n"),
            [c.Login("a", b"alice", b"secret")],
        )

    def test_literal_may_hold_anything(self) -> None:
        parser = CommandParser()
        events = commands_of(parser.feed(b'a LOGIN {9+}\r\n\r\n"{3}\r\n) x\r\n'))
        self.assertEqual(events, [c.Login("a", b'\r\n"{3}\r\n)', b"x")])

    def test_literal_must_end_line(self) -> None:
        parser = CommandParser()
        (error, noop) = parser.feed(b"a LOGIN {5}x y\r\nb NOOP\r\n")
        self.assertIsInstance(error, ParseError)
        self.assertEqual(noop, c.Noop("b"))


class AppendTests(TestCase):
    def test_single(self) -> None:
        parser = CommandParser()
        wire = b'a APPEND saved-messages (\\Seen) "17-Jul-1996 02:44:25 -0700" {11}\r\nhello world\r\n'
        events = parser.feed(wire)
        self.assertEqual(events[0], ContinuationNeeded("a", 11))
        append = events[1]
        assert isinstance(append, c.Append)
        zone = datetime.timezone(-datetime.timedelta(hours=7))
        self.assertEqual(
            append,
            c.Append(
                "a",
                "saved-messages",
                (
                    c.AppendMessage(
                        ("\\Seen",),
                        datetime.datetime(1996, 7, 17, 2, 44, 25, tzinfo=zone),
                        11,
                        None,
                    ),
                ),  # type: ignore[arg-type]
            ),
        )
        self.assertEqual(append.messages[0].content.getvalue(), b"hello world")  # type: ignore[attr-defined]

    def test_date_day_fixed(self) -> None:
        for wire in (
            b'" 7-Jul-1996 02:44:25 +0000"',
            b'"07-Jul-1996 02:44:25 +0000"',
            b'"7-Jul-1996 02:44:25 +0000"',
        ):
            (append,) = CommandParser().feed(b"a APPEND x " + wire + b" {1+}\r\nm\r\n")
            self.assertEqual(
                append.messages[0].internal_date,
                datetime.datetime(1996, 7, 7, 2, 44, 25, tzinfo=UTC),
            )  # type: ignore[union-attr]

    def test_multiappend(self) -> None:
        """RFC 3502: several messages, each with optional flags and date."""
        parser = CommandParser()
        events = commands_of(
            feed_pieces(
                parser,
                [
                    b"a APPEND {4}\r\n",
                    b"Sent {3}\r\n",
                    b"one (\\Draft) {3+}\r\n",
                    b'two "01-Jan-2000 00:00:00 +0000" ~{3}\r\n',
                    b"t\x00o\r\n",
                ],
            )
        )
        (append,) = events
        assert isinstance(append, c.Append)
        self.assertEqual(append.mailbox, "Sent")
        self.assertEqual([m.flags for m in append.messages], [None, ("\\Draft",), None])
        self.assertEqual([m.binary for m in append.messages], [False, False, True])
        self.assertEqual(
            [m.content.getvalue() for m in append.messages], [b"one", b"two", b"t\x00o"]
        )  # type: ignore[attr-defined]

    def test_catenate(self) -> None:
        """RFC 4469: TEXT literals and URLs, in MULTIAPPEND too, whole or a byte at a time."""
        wire = (b'a APPEND Drafts (\\Seen) CATENATE (URL "/INBOX;UIDVALIDITY=9/;UID=3/;SECTION=HEADER" '
                b"TEXT {8}\r\n\r\nbody\r\n url /INBOX/;UID=4/;SECTION=1) CATENATE (text {2+}\r\nhi) {3+}\r\nraw\r\n")
        for pieces in ([wire], [wire[i:i + 1] for i in range(len(wire))]):
            (append,) = commands_of(feed_pieces(CommandParser(), pieces))
            assert isinstance(append, c.Append)
            first, second, third = append.messages
            self.assertEqual(first.flags, ("\\Seen",))
            self.assertIsNone(first.content)
            self.assertEqual([type(part) for part in first.parts], [c.CatenateUrl, c.CatenateText, c.CatenateUrl])
            self.assertEqual(first.parts[0], c.CatenateUrl("/INBOX;UIDVALIDITY=9/;UID=3/;SECTION=HEADER"))
            self.assertEqual(first.parts[1].size, 8)
            self.assertEqual(first.parts[1].content.getvalue(), b"\r\nbody\r\n")  # type: ignore[union-attr]
            self.assertEqual(first.parts[2], c.CatenateUrl("/INBOX/;UID=4/;SECTION=1"))
            self.assertEqual(second.parts[0].content.getvalue(), b"hi")  # type: ignore[union-attr]
            self.assertEqual(third.content.getvalue(), b"raw")  # type: ignore[union-attr]
            self.assertEqual(len(first.sinks() + second.sinks() + third.sinks()), 3)

    def test_bad_catenate_closes_its_sinks(self) -> None:
        made = []

        def factory(size: int, binary: bool = False) -> SpooledLiteral:
            made.append(SpooledLiteral(size))
            return made[-1]

        for wire in (
            b"a APPEND x CATENATE ()\r\n",
            b"a APPEND x CATENATE (TEXT {1+}\r\nm BOGUS x)\r\n",
            b"a APPEND x CATENATE (TEXT ~{1+}\r\nm)\r\n",
            b"a APPEND x CATENATE (URL {1+}\r\nm)\r\n",
            b"a APPEND x CATENATE (TEXT {1+}\r\nm\r\n",
            b"a APPEND x CATENATE (TEXT x)\r\n",
            b"a APPEND x CATENATE TEXT {1+}\r\nm\r\n",
        ):
            with self.subTest(wire=wire):
                (error,) = CommandParser(sink_factory=factory).feed(wire)
                self.assertIsInstance(error, ParseError)
        self.assertTrue(made and all(sink._file.closed for sink in made))

    def test_sink_factory_receives_chunks(self) -> None:
        """The message literal goes to the sink piece by piece; the mailbox
        literal stays in memory."""
        made: list[Recorder] = []

        class Recorder:
            def __init__(self, size: int) -> None:
                self.size = size
                self.chunks: list[bytes] = []
                self.closed = False
                made.append(self)

            def write(self, data: bytes) -> None:
                self.chunks.append(data)

            def close(self) -> None:
                self.closed = True

        parser = CommandParser(sink_factory=Recorder)
        events = feed_pieces(
            parser, [b"a APPEND {5}\r\nINBOX {10}\r\n", b"01234", b"567", b"89\r\n"]
        )
        self.assertEqual(made[0].chunks, [b"01234", b"567", b"89"])
        self.assertEqual(made[0].size, 10)
        self.assertEqual(events[-1].mailbox, "INBOX")  # type: ignore[union-attr]
        self.assertIs(events[-1].messages[0].content, made[0])  # type: ignore[union-attr]
        self.assertFalse(made[0].closed)

    def test_sink_closed_when_command_fails(self) -> None:
        made = []

        class Sink:
            closed = False

            def write(self, data: bytes) -> None:
                pass

            def close(self) -> None:
                self.closed = True

        def factory(size: int) -> Sink:
            sink = Sink()
            made.append(sink)
            return sink

        parser = CommandParser(sink_factory=factory)
        (error,) = parser.feed(b"a APPEND x {1+}\r\nm BOGUS\r\n")
        self.assertIsInstance(error, ParseError)
        self.assertTrue(made[0].closed)

    def test_big_message_is_spooled(self) -> None:
        """A 5 MiB message fed in 64 KiB chunks lands in a temporary file."""
        size = 5 * 1024 * 1024
        parser = CommandParser()
        events = parser.feed(b"a APPEND INBOX {%d}\r\n" % size)
        self.assertEqual(events, [ContinuationNeeded("a", size)])
        chunk = b"x" * 65536
        for _ in range(size // len(chunk)):
            self.assertEqual(parser.feed(chunk), [])
        (append,) = parser.feed(b"\r\n")
        stored = append.messages[0].content  # type: ignore[union-attr]
        self.assertTrue(stored._file._rolled)  # SpooledTemporaryFile went to disk
        handle = stored.open()
        self.assertEqual(len(handle.read()), size)
        stored.close()
