"""FETCH rendering over a real MaildirStore: the exact bytes of each item,
sections and partials, BINARY decoding, and streaming of a large message."""

from __future__ import annotations

import base64
import datetime
import quopri
import unittest

from twisted.trial.unittest import TestCase

from cyrusmail.imap import commands as c
from cyrusmail.imap.dates import date_time_wire
from cyrusmail.imap.fetch import (
    DECODE_CHUNK,
    INLINE_LIMIT,
    DecodedSlice,
    FetchError,
    FileSlice,
    MessageView,
    plan_fetch,
    render_fetch,
    stream_decoded,
)
from cyrusmail.imap.wire import CommandParser
from cyrusmail.store.maildir import MaildirStore
from cyrusmail.store.records import NO_FLAGS, Flag, FlagChange

try:
    import cyrusmail.mime  # noqa: F401
except ImportError:
    HAVE_MIME = False
else:
    HAVE_MIME = True

needs_mime = unittest.skipUnless(
    HAVE_MIME,
    "cyrusmail.mime (branch mime) is not merged here: ENVELOPE, BODYSTRUCTURE and sections need it",
)

WHEN = datetime.datetime(2024, 1, 2, 2, 4, 5, tzinfo=datetime.UTC).timestamp()

MULTI = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: parts\r\n"
    b"Date: Tue, 2 Jan 2024 03:04:05 +0100\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"caf=C3=A9 soft=\r\nbreak\r\n"
    b"--b1\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: BASE64\r\n"
    b"\r\n"
    b"AAECYmluYXJ5/w==\r\n"
    b"--b1\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"From: inner@example.org\r\n"
    b"Subject: inner\r\n"
    b"X-Long: a\r\n b\r\n"
    b"\r\n"
    b"inner body\r\n"
    b"--b1\r\n"
    b"Content-Type: application/x-thing\r\n"
    b"Content-Transfer-Encoding: x-uuencode\r\n"
    b"\r\n"
    b"begin 644 x\r\n"
    b"--b1--\r\n"
)
MULTI_HEADER = MULTI[: MULTI.index(b"\r\n\r\n") + 4]
MULTI_TEXT = MULTI[len(MULTI_HEADER) :]
INNER_HEADER = b"From: inner@example.org\r\nSubject: inner\r\nX-Long: a\r\n b\r\n\r\n"

SIMPLE = (
    b"From: bob@example.org\r\n"
    b"Subject: plain\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"aGVsbG8gd29ybGQ=\r\n"
)


def items(text: bytes) -> tuple[c.FetchItem, ...]:
    """The items of ``a FETCH 1 <text>`` as the wire layer parses them."""
    (command,) = CommandParser().feed(b"a FETCH 1 " + text + b"\r\n")
    assert isinstance(command, c.Fetch), command
    return command.items


def literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


class StoreCase(TestCase):
    """A real store with one user; ``self.counting`` records the reads."""

    def setUp(self) -> None:
        self.store = MaildirStore(self.mktemp())
        self.addCleanup(self.store.close)
        self.store.provision("alice", {})
        self.mailbox = self.store.mailboxes("alice").open("INBOX")
        self.counting = CountingMailbox(self.mailbox)

    def add(
        self,
        message: bytes,
        flags: Flag = NO_FLAGS,
        keywords=(),
        seq: int = 1,
        recent: bool = False,
    ) -> MessageView:
        uid = self.mailbox.append(message, flags, keywords, WHEN)
        return MessageView(seq, self.mailbox.record(uid), self.counting, recent)

    def render(
        self,
        text: bytes,
        view: MessageView,
        uid_command: bool = False,
        flags_changed: bool = False,
    ) -> list[bytes | FileSlice]:
        return render_fetch(plan_fetch(items(text), uid_command), view, flags_changed)

    def rendered(self, text: bytes, view: MessageView, **kwargs) -> bytes:
        pieces = self.render(text, view, **kwargs)
        self.assertTrue(all(isinstance(piece, bytes) for piece in pieces), pieces)
        return b"".join(pieces)  # type: ignore[arg-type]


class IndexItemTests(StoreCase):
    """Items answered from the index record alone: no MIME, no file."""

    def test_exact_bytes(self) -> None:
        view = self.add(
            SIMPLE, Flag.SEEN | Flag.FLAGGED, ["$Work", "Junk"], seq=7, recent=True
        )
        size = len(SIMPLE)
        modseq = view.record.modseq
        cases = [
            (b"FLAGS", b"* 7 FETCH (FLAGS (\\Seen \\Flagged \\Recent $Work Junk))\r\n"),
            (b"UID", b"* 7 FETCH (UID %d)\r\n" % view.record.uid),
            (b"RFC822.SIZE", b"* 7 FETCH (RFC822.SIZE %d)\r\n" % size),
            (
                b"INTERNALDATE",
                b'* 7 FETCH (INTERNALDATE " 2-Jan-2024 02:04:05 +0000")\r\n',
            ),
            (b"MODSEQ", b"* 7 FETCH (MODSEQ (%d))\r\n" % modseq),
            (
                b"FAST",
                b"* 7 FETCH (FLAGS (\\Seen \\Flagged \\Recent $Work Junk) "
                b'INTERNALDATE " 2-Jan-2024 02:04:05 +0000" RFC822.SIZE %d)\r\n' % size,
            ),
            (b"(RFC822.SIZE UID)", b"* 7 FETCH (RFC822.SIZE %d UID 1)\r\n" % size),
        ]
        for text, expected in cases:
            with self.subTest(items=text):
                self.assertEqual(self.rendered(text, view), expected)
        self.assertEqual(self.counting.calls, [])

    def test_no_flags(self) -> None:
        view = self.add(SIMPLE)
        self.assertEqual(self.rendered(b"FLAGS", view), b"* 1 FETCH (FLAGS ())\r\n")

    def test_uid_fetch_puts_uid_first(self) -> None:
        view = self.add(SIMPLE)
        self.assertEqual(
            self.rendered(b"FLAGS", view, uid_command=True),
            b"* 1 FETCH (UID 1 FLAGS ())\r\n",
        )
        self.assertEqual(
            self.rendered(b"(FLAGS UID)", view, uid_command=True),
            b"* 1 FETCH (FLAGS () UID 1)\r\n",
        )

    def test_flags_changed(self) -> None:
        view = self.add(SIMPLE, Flag.SEEN)
        self.assertEqual(
            self.rendered(b"RFC822.SIZE", view, flags_changed=True),
            b"* 1 FETCH (RFC822.SIZE %d FLAGS (\\Seen))\r\n" % len(SIMPLE),
        )
        self.assertEqual(
            self.rendered(b"(FLAGS UID)", view, flags_changed=True),
            b"* 1 FETCH (FLAGS (\\Seen) UID 1)\r\n",
        )

    def test_whole_message_needs_no_mime(self) -> None:
        view = self.add(SIMPLE)
        self.assertEqual(
            self.rendered(b"BODY.PEEK[]", view),
            b"* 1 FETCH (BODY[] " + literal(SIMPLE) + b")\r\n",
        )
        self.assertEqual(
            self.rendered(b"RFC822", view),
            b"* 1 FETCH (RFC822 " + literal(SIMPLE) + b")\r\n",
        )
        self.assertEqual(
            self.rendered(b"BINARY.PEEK[]<4.10>", view),
            b"* 1 FETCH (BINARY[]<4> " + literal(SIMPLE[4:14]) + b")\r\n",
        )
        self.assertEqual(
            self.rendered(b"BINARY.SIZE[]", view),
            b"* 1 FETCH (BINARY.SIZE[] %d)\r\n" % len(SIMPLE),
        )
        self.assertNotIn("mime_cache", {name for name, _ in self.counting.calls})

    def test_expunged_under_the_session(self) -> None:
        view = self.add(SIMPLE)
        self.mailbox.set_flags([view.record.uid], FlagChange.ADD, Flag.DELETED)
        self.mailbox.expunge()
        with self.assertRaises(FetchError) as caught:
            self.render(b"RFC822", view)
        self.assertEqual(caught.exception.code, "EXPUNGEISSUED")


class InternalDateTests(TestCase):
    def test_date_time(self) -> None:
        cases = [
            (0, b'" 1-Jan-1970 00:00:00 +0000"'),
            (
                datetime.datetime(1996, 7, 17, 9, 44, 25, tzinfo=datetime.UTC),
                b'"17-Jul-1996 09:44:25 +0000"',
            ),
            (
                datetime.datetime(2024, 12, 31, 23, 59, 59, tzinfo=datetime.UTC),
                b'"31-Dec-2024 23:59:59 +0000"',
            ),
            (
                datetime.datetime(2024, 2, 9, 1, 2, 3, 900000, tzinfo=datetime.UTC),
                b'" 9-Feb-2024 01:02:03 +0000"',
            ),
        ]
        for when, expected in cases:
            stamp = when if isinstance(when, int) else when.timestamp()
            with self.subTest(when=when):
                self.assertEqual(date_time_wire(stamp), expected)


class PlanTests(TestCase):
    def test_sets_seen(self) -> None:
        cases = [
            (b"BODY[]", True),
            (b"BODY[1.MIME]", True),
            (b"BODY.PEEK[]", False),
            (b"RFC822", True),
            (b"RFC822.TEXT", True),
            (b"RFC822.HEADER", False),
            (b"BINARY[1]", True),
            (b"BINARY.PEEK[1]", False),
            (b"BINARY.SIZE[1]", False),
            (b"(FLAGS ENVELOPE BODYSTRUCTURE BODY UID MODSEQ)", False),
            (b"(FLAGS BODY.PEEK[HEADER] BODY[TEXT]<0.5>)", True),
        ]
        for text, expected in cases:
            with self.subTest(items=text):
                self.assertEqual(plan_fetch(items(text), False).sets_seen, expected)

    def test_needs(self) -> None:
        cases = [
            (b"FAST", False, False),
            (b"ALL", True, False),
            (b"BODY.PEEK[]", False, True),
            (b"BODY.PEEK[HEADER.FIELDS (FROM)]", True, False),
            (b"RFC822.HEADER", True, False),
            (b"BODY.PEEK[1.HEADER]", True, True),
            (b"BINARY.SIZE[1]", True, True),
            (b"RFC822.TEXT", True, True),
        ]
        for text, needs_mime, needs_file in cases:
            with self.subTest(items=text):
                plan = plan_fetch(items(text), False)
                self.assertEqual(
                    (plan.needs_mime, plan.needs_file), (needs_mime, needs_file)
                )

    def test_uid_added_once(self) -> None:
        uid = c.FetchAttribute("UID")
        self.assertEqual(
            plan_fetch(items(b"FLAGS"), True).items, (uid, c.FetchAttribute("FLAGS"))
        )
        self.assertEqual(
            plan_fetch(items(b"(FLAGS UID)"), True).items,
            (c.FetchAttribute("FLAGS"), uid),
        )
        self.assertEqual(
            plan_fetch(items(b"FLAGS"), False).items, (c.FetchAttribute("FLAGS"),)
        )


@needs_mime
class SectionTests(StoreCase):
    """Body sections, partials and BINARY of a multipart message."""

    def setUp(self) -> None:
        super().setUp()
        self.view = self.add(MULTI)

    def check(self, cases: list[tuple[bytes, bytes]]) -> None:
        for text, expected in cases:
            with self.subTest(items=text):
                self.assertEqual(
                    self.rendered(text, self.view), b"* 1 FETCH (" + expected + b")\r\n"
                )

    def test_sections(self) -> None:
        self.check(
            [
                (b"BODY[]", b"BODY[] " + literal(MULTI)),
                (b"BODY[HEADER]", b"BODY[HEADER] " + literal(MULTI_HEADER)),
                (b"BODY.PEEK[TEXT]", b"BODY[TEXT] " + literal(MULTI_TEXT)),
                (b"RFC822.HEADER", b"RFC822.HEADER " + literal(MULTI_HEADER)),
                (b"RFC822.TEXT", b"RFC822.TEXT " + literal(MULTI_TEXT)),
                (b"BODY[1]", b"BODY[1] " + literal(b"caf=C3=A9 soft=\r\nbreak")),
                (
                    b"BODY[1.MIME]",
                    b"BODY[1.MIME] "
                    + literal(
                        b"Content-Type: text/plain; charset=utf-8\r\n"
                        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
                    ),
                ),
                (b"BODY[2]", b"BODY[2] " + literal(b"AAECYmluYXJ5/w==")),
                (b"BODY[3.HEADER]", b"BODY[3.HEADER] " + literal(INNER_HEADER)),
                (b"BODY[3.TEXT]", b"BODY[3.TEXT] " + literal(b"inner body")),
                (b"BODY[3.1]", b"BODY[3.1] " + literal(b"inner body")),
                (
                    b"BODY[3.MIME]",
                    b"BODY[3.MIME] " + literal(b"Content-Type: message/rfc822\r\n\r\n"),
                ),
                (b"BODY[3]", b"BODY[3] " + literal(INNER_HEADER + b"inner body")),
            ]
        )

    def test_missing_sections_are_empty(self) -> None:
        self.check(
            [
                (b"BODY[5]", b'BODY[5] ""'),
                (b"BODY[1.2]", b'BODY[1.2] ""'),
                (b"BODY[1.HEADER]", b'BODY[1.HEADER] ""'),  # not a message/rfc822 part
                (b"BODY[9.TEXT]", b'BODY[9.TEXT] ""'),
                (b"BODY[9.HEADER.FIELDS (FROM)]", b'BODY[9.HEADER.FIELDS (FROM)] ""'),
                (b"BINARY[7]", b'BINARY[7] ""'),
                (b"BINARY.SIZE[7]", b"BINARY.SIZE[7] 0"),
            ]
        )

    def test_header_fields(self) -> None:
        self.check(
            [
                (
                    b"BODY[HEADER.FIELDS (subject from)]",
                    b"BODY[HEADER.FIELDS (SUBJECT FROM)] "
                    + literal(
                        b"From: Alice <alice@example.org>\r\nSubject: parts\r\n\r\n"
                    ),
                ),
                (
                    b'BODY.PEEK[HEADER.FIELDS ("Date" X-None)]',
                    b"BODY[HEADER.FIELDS (DATE X-NONE)] "
                    + literal(b"Date: Tue, 2 Jan 2024 03:04:05 +0100\r\n\r\n"),
                ),
                (
                    b"BODY[HEADER.FIELDS (X-NONE)]",
                    b"BODY[HEADER.FIELDS (X-NONE)] " + literal(b"\r\n"),
                ),
                (
                    b"BODY[HEADER.FIELDS.NOT (TO DATE MIME-VERSION CONTENT-TYPE)]",
                    b"BODY[HEADER.FIELDS.NOT (TO DATE MIME-VERSION CONTENT-TYPE)] "
                    + literal(
                        b"From: Alice <alice@example.org>\r\nSubject: parts\r\n\r\n"
                    ),
                ),
                (
                    b"BODY[3.HEADER.FIELDS.NOT (SUBJECT FROM)]",
                    b"BODY[3.HEADER.FIELDS.NOT (SUBJECT FROM)] "
                    + literal(b"X-Long: a\r\n b\r\n\r\n"),
                ),
                (
                    b"BODY[3.HEADER.FIELDS (X-LONG)]<3.6>",
                    b"BODY[3.HEADER.FIELDS (X-LONG)]<3> " + literal(b"ong: a"),
                ),
            ]
        )

    def test_top_header_fields_read_no_file(self) -> None:
        self.rendered(
            b"(BODY.PEEK[HEADER.FIELDS (FROM)] BODY[HEADER] RFC822.HEADER ENVELOPE)",
            self.view,
        )
        self.assertEqual({name for name, _ in self.counting.calls}, {"mime_cache"})

    def test_partials(self) -> None:
        self.check(
            [
                (b"BODY[]<0.4>", b"BODY[]<0> " + literal(b"From")),
                (b"BODY[TEXT]<2.5>", b"BODY[TEXT]<2> " + literal(MULTI_TEXT[2:7])),
                (b"BODY[1]<4.1000>", b"BODY[1]<4> " + literal(b"C3=A9 soft=\r\nbreak")),
                (b"BODY[1]<22.1>", b'BODY[1]<22> ""'),
                (b"BODY[1]<100000.1>", b'BODY[1]<100000> ""'),
                (b"BODY[HEADER]<10000.10>", b'BODY[HEADER]<10000> ""'),
                (b"BINARY[1]<3.3>", b"BINARY[1]<3> " + literal(b"\xc3\xa9 ")),
                (b"BINARY[2]<0.3>", b"BINARY[2]<0> ~" + literal(b"\x00\x01\x02")),
                (b"BINARY[2]<3.100>", b"BINARY[2]<3> " + literal(b"binary\xff")),
            ]
        )

    def test_binary(self) -> None:
        self.check(
            [
                (b"BINARY[1]", b"BINARY[1] " + literal("café softbreak".encode())),
                (
                    b"BINARY.PEEK[2]",
                    b"BINARY[2] ~" + literal(b"\x00\x01\x02binary\xff"),
                ),
                (b"BINARY[3]", b"BINARY[3] " + literal(INNER_HEADER + b"inner body")),
                (b"BINARY.SIZE[1]", b"BINARY.SIZE[1] 15"),
                (b"BINARY.SIZE[2]", b"BINARY.SIZE[2] 10"),
                (
                    b"BINARY.SIZE[3]",
                    b"BINARY.SIZE[3] %d" % len(INNER_HEADER + b"inner body"),
                ),
                (b"BINARY.SIZE[3.1]", b"BINARY.SIZE[3.1] 10"),
                (
                    b"(BINARY.SIZE[2] BINARY[2])",
                    b"BINARY.SIZE[2] 10 BINARY[2] ~"
                    + literal(b"\x00\x01\x02binary\xff"),
                ),
            ]
        )

    def test_binary_single_part(self) -> None:
        view = self.add(SIMPLE, seq=2)
        self.assertEqual(
            self.rendered(b"(BINARY.SIZE[1] BINARY[1])", view),
            b"* 2 FETCH (BINARY.SIZE[1] 11 BINARY[1] "
            + literal(b"hello world")
            + b")\r\n",
        )

    def test_binary_unknown_encoding(self) -> None:
        for text in (b"BINARY[4]", b"BINARY.SIZE[4]", b"BINARY.PEEK[4]<0.1>"):
            with self.subTest(items=text), self.assertRaises(FetchError) as caught:
                self.render(text, self.view)
            self.assertEqual(caught.exception.code, "UNKNOWN-CTE")
        self.assertEqual(
            self.rendered(b"BODY[4]", self.view),
            b"* 1 FETCH (BODY[4] " + literal(b"begin 644 x") + b")\r\n",
        )

    def test_structures(self) -> None:
        envelope = (
            b'("Tue, 2 Jan 2024 03:04:05 +0100" "parts" (("Alice" NIL "alice" "example.org")) '
            b'(("Alice" NIL "alice" "example.org")) (("Alice" NIL "alice" "example.org")) '
            b'((NIL NIL "bob" "example.org")) NIL NIL NIL NIL)'
        )
        response = self.rendered(b"(UID ENVELOPE BODY BODYSTRUCTURE)", self.view)
        self.assertTrue(
            response.startswith(
                b"* 1 FETCH (UID 1 ENVELOPE " + envelope + b' BODY (("TEXT"'
            )
        )
        self.assertIn(
            b' "MIXED") BODYSTRUCTURE (("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 22 1 NIL',
            response,
        )
        self.assertTrue(
            response.endswith(b' "MIXED" ("BOUNDARY" "b1") NIL NIL NIL))\r\n')
        )

    def test_without_mime_cache(self) -> None:
        """An index from before the MIME layer: the file is parsed, same answers."""
        cached = self.rendered(
            b"(ENVELOPE BODYSTRUCTURE BODY[3.HEADER] BINARY[1])", self.view
        )
        self.counting.no_cache = True
        self.counting.calls.clear()
        self.assertEqual(
            self.rendered(
                b"(ENVELOPE BODYSTRUCTURE BODY[3.HEADER] BINARY[1])", self.view
            ),
            cached,
        )
        self.assertEqual(
            [name for name, _ in self.counting.calls].count("open_file"), 1
        )

    def test_damaged_mime_cache(self) -> None:
        cached = self.rendered(b"(ENVELOPE BODY[3.TEXT])", self.view)
        self.counting.cache_override = b"garbage that is not a blob........"
        self.assertEqual(self.rendered(b"(ENVELOPE BODY[3.TEXT])", self.view), cached)


@needs_mime
class StreamingTests(StoreCase):
    """A 20 MB message is never read whole: its sections become FileSlices."""

    SIZE = 20 * 1024 * 1024

    def setUp(self) -> None:
        super().setUp()
        line = b"x" * 76 + b"\r\n"
        self.header = b"From: big@example.org\r\nSubject: big\r\n\r\n"
        self.body = line * (self.SIZE // len(line))
        self.view = self.add(self.header + self.body)

    def streamed(self, pieces: list[bytes | FileSlice]) -> bytes:
        """The response as the session would write it."""
        out = []
        for index, piece in enumerate(pieces):
            if isinstance(piece, FileSlice):
                self.assertTrue(pieces[index - 1].endswith(b"{%d}\r\n" % piece.size))  # type: ignore[union-attr]
                out.append(self.mailbox.read(piece.uid, piece.start, piece.end))
            else:
                out.append(piece)
        return b"".join(out)

    def test_sections_stream(self) -> None:
        pieces = self.render(
            b"(UID RFC822.SIZE BODY[] BODY.PEEK[TEXT] BODY[1]<10.100000> BODY[HEADER] BODY[]<5.10>)",
            self.view,
        )
        total = len(self.header) + len(self.body)
        start = len(self.header)
        self.assertEqual(
            [piece for piece in pieces if isinstance(piece, FileSlice)],
            [
                FileSlice(1, 0, total),
                FileSlice(1, start, total),
                FileSlice(1, start + 10, start + 10 + 100000),
            ],
        )
        self.assertEqual(
            pieces[0],
            b"* 1 FETCH (UID 1 RFC822.SIZE %d BODY[] {%d}\r\n" % (total, total),
        )
        self.assertEqual(
            pieces[-1],
            b" BODY[HEADER] "
            + literal(self.header)
            + b" BODY[]<5> "
            + literal(self.header[5:15])
            + b")\r\n",
        )
        self.assertLess(sum(self.counting.read_sizes), INLINE_LIMIT)
        self.assertNotIn("open_file", {name for name, _ in self.counting.calls})
        expected = (
            b"* 1 FETCH (UID 1 RFC822.SIZE %d BODY[] " % total
            + literal(self.header + self.body)
            + b" BODY[TEXT] "
            + literal(self.body)
            + b" BODY[1]<10> "
            + literal(self.body[10:100010])
            + b" BODY[HEADER] "
            + literal(self.header)
            + b" BODY[]<5> "
            + literal(self.header[5:15])
            + b")\r\n"
        )
        self.assertEqual(self.streamed(pieces), expected)

    def test_binary_of_unencoded_part_streams(self) -> None:
        pieces = self.render(b"(BINARY.PEEK[1] BINARY.SIZE[1])", self.view)
        start = len(self.header)
        total = start + len(self.body)
        self.assertEqual(
            pieces,
            [
                b"* 1 FETCH (BINARY[1] {%d}\r\n" % len(self.body),  # no NUL: an ordinary literal
                FileSlice(1, start, total),
                b" BINARY.SIZE[1] %d)\r\n" % len(self.body),
            ],
        )
        self.assertLess(sum(self.counting.read_sizes), INLINE_LIMIT)

    def test_big_unencoded_part_with_nul_is_a_literal8(self) -> None:
        body = self.body[:-10] + b"\x00" + self.body[-9:]
        view = self.add(self.header + body, seq=2)
        pieces = self.render(b"BINARY.PEEK[1]<5.3000000>", view)
        start = len(self.header)
        self.assertEqual(pieces[:2], [b"* 2 FETCH (BINARY[1]<5> ~{3000000}\r\n",
                                      FileSlice(2, start + 5, start + 3000005, binary=True)])


@needs_mime
class StreamedDecodingTests(StoreCase):
    """BINARY of a big encoded part: measured by decoding in chunks, then decoded as it is sent."""

    def setUp(self) -> None:
        super().setUp()
        self.payload = bytes(range(256)) * (3 * 1024 * 1024 // 256)  # 3 MiB, NULs included
        text = b"caf\xc3\xa9 = long line " * 200 + b"\r\n"
        self.text = text * 200
        qp = quopri.encodestring(self.text.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")
        message = (
            b"From: big@example.org\r\nSubject: big\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(self.payload).replace(b"\n", b"\r\n")
            + b"\r\n--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
            + qp + b"\r\n--b--\r\n"
        )
        self.view = self.add(message)

    def sent(self, pieces: list) -> bytes:
        """The response as the session writes it, decoding as it goes."""
        out = b""
        with self.mailbox.open_file(1) as source:
            for piece in pieces:
                if isinstance(piece, DecodedSlice):
                    chunks = list(stream_decoded(source, piece))
                    self.assertLessEqual(max(len(chunk) for chunk in chunks), 2 * DECODE_CHUNK)
                    out += b"".join(chunks)
                else:
                    self.assertIsInstance(piece, bytes)
                    out += piece
        return out

    def test_base64_part(self) -> None:
        size = len(self.payload)
        pieces = self.render(b"(BINARY.SIZE[1] BINARY.PEEK[1] BINARY.PEEK[1]<1000000.70000>)", self.view)
        self.assertTrue(any(isinstance(piece, DecodedSlice) for piece in pieces))
        self.assertEqual(self.sent(pieces),
                         b"* 1 FETCH (BINARY.SIZE[1] %d BINARY[1] ~{%d}\r\n%s BINARY[1]<1000000> ~{70000}\r\n%s)\r\n"
                         % (size, size, self.payload, self.payload[1000000:1070000]))
        self.assertLess(sum(self.counting.read_sizes), 1000)  # the part's MIME header, never its body

    def test_quoted_printable_part(self) -> None:
        size = len(self.text)
        pieces = self.render(b"(BINARY.PEEK[2] BINARY.SIZE[2] BINARY.PEEK[2]<7.10>)", self.view)
        self.assertEqual(self.sent(pieces),
                         b"* 1 FETCH (BINARY[2] {%d}\r\n%s BINARY.SIZE[2] %d BINARY[2]<7> {10}\r\n%s)\r\n"
                         % (size, self.text, size, self.text[7:17]))

    def test_measured_once(self) -> None:
        """BINARY.SIZE then BINARY in later commands decode the part once to measure it."""
        for _ in range(3):
            self.render(b"BINARY.SIZE[1]", self.view)
        self.assertEqual([name for name, _ in self.counting.calls].count("open_file"), 1)


class CountingMailbox:
    """An IMailbox that records what FETCH reads, and can hide the MIME cache."""

    def __init__(self, mailbox) -> None:
        self.mailbox = mailbox
        self.calls: list[tuple[str, int]] = []
        self.read_sizes: list[int] = []
        self.no_cache = False
        self.cache_override: bytes | None = None

    def read(self, uid: int, start: int = 0, end: int | None = None) -> bytes:
        self.calls.append(("read", uid))
        data = self.mailbox.read(uid, start, end)
        self.read_sizes.append(len(data))
        return data

    def open_file(self, uid: int):
        self.calls.append(("open_file", uid))
        return self.mailbox.open_file(uid)

    def mime_cache(self, uid: int) -> bytes | None:
        self.calls.append(("mime_cache", uid))
        if self.no_cache:
            return None
        return self.cache_override or self.mailbox.mime_cache(uid)
