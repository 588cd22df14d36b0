"""The cyrusmail.mime API that FETCH and SEARCH are built on.

Section numbering follows the RFC 3501 section 6.4.5 example message; the
other tests cover HEADER.FIELDS filtering, header access, decoded search
text and the cache blob.
"""

from __future__ import annotations

import datetime
import unittest

from cyrusmail.mime import MessageInfo, body_text, header_fields, parse

# Shaped like the RFC 3501 6.4.5 example: 1 text, 2 octet-stream, 3 message/rfc822
# holding a multipart (3.1 text, 3.2 octet-stream), 4 multipart with 4.1 image
# and 4.2 message/rfc822 whose single-part body is 4.2.1.
RFC3501_EXAMPLE = (
    b"Subject: top\r\nContent-Type: multipart/mixed; boundary=o\r\n\r\n"
    b"--o\r\nContent-Type: text/plain\r\n\r\npart one\r\n"
    b"--o\r\nContent-Type: application/octet-stream\r\n\r\npart two\r\n"
    b"--o\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Subject: inner\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n"
    b"--i\r\nContent-Type: text/plain\r\n\r\npart 3.1\r\n"
    b"--i\r\nContent-Type: application/octet-stream\r\n\r\npart 3.2\r\n--i--\r\n"
    b"--o\r\nContent-Type: multipart/mixed; boundary=m\r\n\r\n"
    b"--m\r\nContent-Type: image/gif\r\n\r\npart 4.1\r\n"
    b"--m\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Subject: deeper\r\n\r\npart 4.2.1\r\n--m--\r\n"
    b"--o--\r\n"
)


def fetch(data: bytes, part: tuple[int, ...], text: str = "") -> bytes | None:
    found = parse(data).section_range(part, text)
    return None if found is None else data[found[0]:found[1]]


class SectionRangeTests(unittest.TestCase):
    """RFC 3501 6.4.5, one assertion per rule."""

    def test_whole_message_header_and_text(self) -> None:
        self.assertEqual(fetch(RFC3501_EXAMPLE, ()), RFC3501_EXAMPLE)
        header = b"Subject: top\r\nContent-Type: multipart/mixed; boundary=o\r\n\r\n"
        self.assertEqual(fetch(RFC3501_EXAMPLE, (), "HEADER"), header)
        self.assertEqual(fetch(RFC3501_EXAMPLE, (), "TEXT"), RFC3501_EXAMPLE[len(header):])
        self.assertIsNone(fetch(RFC3501_EXAMPLE, (), "MIME"))

    def test_leaf_parts_and_their_mime_headers(self) -> None:
        self.assertEqual(fetch(RFC3501_EXAMPLE, (1,)), b"part one")
        self.assertEqual(fetch(RFC3501_EXAMPLE, (1,), "MIME"), b"Content-Type: text/plain\r\n\r\n")
        self.assertEqual(fetch(RFC3501_EXAMPLE, (2,)), b"part two")
        self.assertEqual(fetch(RFC3501_EXAMPLE, (4, 1)), b"part 4.1")

    def test_message_rfc822_part(self) -> None:
        whole = fetch(RFC3501_EXAMPLE, (3,))
        self.assertTrue(whole.startswith(b"Subject: inner\r\n") and whole.endswith(b"--i--"))
        self.assertEqual(fetch(RFC3501_EXAMPLE, (3,), "HEADER"),
                         b"Subject: inner\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n")
        self.assertTrue(fetch(RFC3501_EXAMPLE, (3,), "TEXT").startswith(b"--i\r\n"))
        self.assertEqual(fetch(RFC3501_EXAMPLE, (3, 1)), b"part 3.1")
        self.assertEqual(fetch(RFC3501_EXAMPLE, (3, 2)), b"part 3.2")

    def test_single_part_message_inside_rfc822_is_part_1(self) -> None:
        self.assertEqual(fetch(RFC3501_EXAMPLE, (4, 2, 1)), b"part 4.2.1")
        self.assertEqual(fetch(RFC3501_EXAMPLE, (4, 2, 1), "MIME"), b"Subject: deeper\r\n\r\n")
        self.assertEqual(fetch(RFC3501_EXAMPLE, (4, 2), "TEXT"), b"part 4.2.1")
        self.assertIsNone(fetch(RFC3501_EXAMPLE, (4, 2, 2)))

    def test_header_and_text_only_for_message_rfc822(self) -> None:
        self.assertIsNone(fetch(RFC3501_EXAMPLE, (1,), "HEADER"))
        self.assertIsNone(fetch(RFC3501_EXAMPLE, (4,), "TEXT"))
        self.assertIsNone(fetch(RFC3501_EXAMPLE, (1,), "HEADER.FIELDS"))

    def test_missing_parts(self) -> None:
        for part in [(5,), (0,), (1, 1), (3, 3), (4, 3), (4, 1, 1)]:
            with self.subTest(part=part):
                self.assertIsNone(fetch(RFC3501_EXAMPLE, part))

    def test_single_part_message(self) -> None:
        data = b"Subject: s\r\n\r\nbody\r\n"
        self.assertEqual(fetch(data, (1,)), b"body\r\n")
        self.assertEqual(fetch(data, (1,), "MIME"), b"Subject: s\r\n\r\n")
        self.assertIsNone(fetch(data, (2,)))
        self.assertIsNone(fetch(data, (1, 1)))

    def test_message_whose_top_level_is_message_rfc822(self) -> None:
        data = b"Content-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\ninside"
        self.assertEqual(fetch(data, (1,)), b"Subject: in\r\n\r\ninside")
        self.assertEqual(fetch(data, (1,), "HEADER"), b"Subject: in\r\n\r\n")
        self.assertEqual(fetch(data, (1, 1)), b"inside")

    def test_text_is_case_insensitive(self) -> None:
        info = parse(RFC3501_EXAMPLE)
        self.assertEqual(info.section_range((3,), "header"), info.section_range((3,), "HEADER"))


class HeaderFieldsTests(unittest.TestCase):
    header = (b"From: a@b.c\r\nTo: x@y.z,\r\n  w@y.z\r\nSubject: hi\r\n"
              b"X-Other: 1\r\nsubject: again\r\n\r\n")

    def test_selected_fields_keep_folding_and_order(self) -> None:
        self.assertEqual(header_fields(self.header, [b"subject", b"TO"], exclude=False),
                         b"To: x@y.z,\r\n  w@y.z\r\nSubject: hi\r\nsubject: again\r\n\r\n")

    def test_not(self) -> None:
        self.assertEqual(header_fields(self.header, [b"To", b"Subject"], exclude=True),
                         b"From: a@b.c\r\nX-Other: 1\r\n\r\n")

    def test_nothing_found_is_just_the_blank_line(self) -> None:
        self.assertEqual(header_fields(self.header, [b"Cc"], exclude=False), b"\r\n")

    def test_header_from_the_blob(self) -> None:
        info = MessageInfo.from_bytes(parse(self.header + b"body").to_bytes())
        self.assertEqual(info.header_bytes(), self.header)


class SearchSupportTests(unittest.TestCase):
    message = (
        b"From: =?iso-8859-1?Q?J=F8rn?= <jorn@example.no>\r\n"
        b"To: a@example.com\r\nSubject: =?utf-8?B?w6l0w6k=?= =?utf-8?Q?_d=C3=A9j=C3=A0?=\r\n"
        b"Date: Fri, 30 Oct 2009 20:07:42 +0100\r\nReceived: one\r\nReceived: two\r\n\tfolded\r\n"
        b"Content-Type: multipart/alternative; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=FC=DFe\r\n"
        b"--b\r\nContent-Type: text/html; charset=x-unknown\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"PGI+6TwvYj4=\r\n"
        b"--b\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0K\r\n--b--\r\n"
    )

    def test_header_values_unfolded(self) -> None:
        info = parse(self.message)
        self.assertEqual(info.header("received"), [b"one", b"two\tfolded"])
        self.assertEqual(info.header("Cc"), [])

    def test_search_headers_are_decoded(self) -> None:
        fields = parse(self.message).search_headers()
        self.assertEqual(fields["from"], "J\u00f8rn <jorn@example.no>")
        self.assertEqual(fields["subject"], "\u00e9t\u00e9 d\u00e9j\u00e0")
        self.assertEqual(fields["to"], "a@example.com")

    def test_body_text_decodes_transfer_and_charset(self) -> None:
        text = body_text(self.message, parse(self.message))
        self.assertIn("Gr\u00fc\u00dfe", text)
        self.assertIn("<b>\u00e9</b>", text)  # unknown charset read as latin-1
        self.assertNotIn("iVBOR", text)  # not a text part

    def test_sent_date(self) -> None:
        self.assertEqual(parse(self.message).sent_date(), datetime.date(2009, 10, 30))
        self.assertIsNone(parse(b"Date: not a date\r\n\r\n").sent_date())
        self.assertIsNone(parse(b"Subject: none\r\n\r\n").sent_date())


class BlobTests(unittest.TestCase):

    def test_round_trip_keeps_every_answer(self) -> None:
        info = parse(RFC3501_EXAMPLE)
        again = MessageInfo.from_bytes(info.to_bytes())
        self.assertEqual(again.size, len(RFC3501_EXAMPLE))
        self.assertEqual(again.envelope_wire(), info.envelope_wire())
        self.assertEqual(again.bodystructure_wire(), info.bodystructure_wire())
        self.assertEqual(again.body_wire(), info.body_wire())
        for part in [(1,), (3,), (3, 2), (4, 2, 1)]:
            self.assertEqual(again.section_range(part, "MIME"), info.section_range(part, "MIME"))

    def test_deterministic(self) -> None:
        self.assertEqual(parse(RFC3501_EXAMPLE).to_bytes(), parse(bytes(RFC3501_EXAMPLE)).to_bytes())

    def test_rejects_foreign_blob(self) -> None:
        with self.assertRaises(ValueError):
            MessageInfo.from_bytes(b"XXXX" + bytes(40))

    def test_wire_forms(self) -> None:
        data = (b"Date: d\r\nSubject: a \"quoted\" \\ one\r\nFrom: Ann <a@b.c>\r\n"
                b"Content-Type: text/plain; charset=utf-8\r\nContent-Language: en, fr\r\n"
                b"Content-MD5: Q2hlY2s=\r\nContent-Location: http://x/y\r\n\r\nhi\r\n")
        info = parse(data)
        self.assertEqual(info.envelope_wire(),
                         b'("d" "a \\"quoted\\" \\\\ one" (("Ann" NIL "a" "b.c")) (("Ann" NIL "a" "b.c")) '
                         b'(("Ann" NIL "a" "b.c")) NIL NIL NIL NIL NIL)')
        self.assertEqual(info.bodystructure_wire(),
                         b'("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 4 1 "Q2hlY2s=" NIL '
                         b'("en" "fr") "http://x/y")')
        self.assertEqual(info.body_wire(), b'("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 4 1)')


class CommentNameTests(unittest.TestCase):
    """Which comment names an address in ENVELOPE: each row is what Dovecot 2.3
    and Cyrus 3.6 both answer (checked against both)."""

    ROWS = (
        (b"user@domain (Real Name)", [(b"Real Name", None, b"user", b"domain")]),
        (b"p@q (a) (b)", [(b"b", None, b"p", b"q")]),
        (b"a (x) @b (y)", [(b"y", None, b"a", b"b")]),
        (b"u@d (nested (deep) c)", [(b"nested (deep) c", None, b"u", b"d")]),
        (b"(lead) x@y", [(None, None, b"x", b"y")]),
        (b"(c) <z@w>", [(None, None, b"z", b"w")]),
        (b"<e@f> (z)", [(None, None, b"e", b"f")]),
        (b'"" <e@f>', [(None, None, b"e", b"f")]),
        (b'"" <e@f> (z)', [(None, None, b"e", b"f")]),
        (b'"Q" (c2) <q@r>', [(b"Q", None, b"q", b"r")]),
        (b"(x) Name <a@b>", [(b"Name", None, b"a", b"b")]),
        (b"Name <a@b> (x)", [(b"Name", None, b"a", b"b")]),
        (b"g: a@b (x), (y) c@d;", [(None, None, b"g", None), (b"x", None, b"a", b"b"),
                                   (None, None, b"c", b"d"), (None, None, None, None)]),
    )

    def test_rows(self) -> None:
        from cyrusmail.mime.addresses import parse_address_list

        for value, expected in self.ROWS:
            with self.subTest(value=value):
                self.assertEqual(parse_address_list(value), expected)


class PreviewTextTests(unittest.TestCase):
    def test_a_character_cut_at_the_read_limit_does_not_garble_the_rest(self) -> None:
        from cyrusmail.mime.preview import PREVIEW_LENGTH, RAW_LIMIT, preview

        body = "a" + "\u00e9" * RAW_LIMIT  # the read limit falls inside an é
        data = b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + body.encode("utf-8")
        self.assertEqual(preview(data, parse(data)), body[:PREVIEW_LENGTH])

    def test_base64_cut_mid_quantum_and_attachments_skipped(self) -> None:
        from cyrusmail.mime.preview import preview

        data = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n"
                b"Content-Disposition: attachment\r\n\r\nnot me\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\nY2Fmw6kgbmHDr3Zl\r\n--b--\r\n")
        self.assertEqual(preview(data, parse(data)), "caf\u00e9 na\u00efve")
