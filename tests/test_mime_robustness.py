"""cyrusmail.mime on broken and hostile mail: a defined answer, no exception, linear time.

Each test names the damage, checks the structure we report for it and, for
the large inputs, that parsing stays within a generous time bound (linear
work; a quadratic scan would blow it by orders of magnitude).
"""

from __future__ import annotations

import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_mime_sexp import read_sexp

from cyrusmail.mime import MessageInfo, parse
from cyrusmail.mime.structure import MAX_DEPTH


def structure(data: bytes) -> list:
    return read_sexp(parse(data).bodystructure_wire())


def child_count(body: list) -> int:
    """How many bodies a multipart BODYSTRUCTURE holds (the leading lists)."""
    count = 0
    while count < len(body) and isinstance(body[count], list):
        count += 1
    return count


def section(data: bytes, part: tuple[int, ...], text: str = "") -> bytes | None:
    found = parse(data).section_range(part, text)
    return None if found is None else data[found[0]:found[1]]


class BoundaryDamageTests(unittest.TestCase):

    def test_missing_boundary_parameter_gives_one_empty_part(self) -> None:
        data = b"Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\nhello\r\n--x--\r\n"
        body = structure(data)
        self.assertEqual(body[0][:7], [b"TEXT", b"PLAIN", [b"CHARSET", b"us-ascii"], None, None, b"7BIT", 0])
        self.assertEqual(section(data, (1,)), b"")

    def test_wrong_boundary_gives_one_empty_part(self) -> None:
        data = b"Content-Type: multipart/mixed; boundary=yy\r\n\r\n--x\r\n\r\nhello\r\n--x--\r\n"
        self.assertEqual(child_count(structure(data)), 1)

    def test_unterminated_multipart_runs_to_the_end(self) -> None:
        data = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
                b"--b\r\n\r\none\r\n--b\r\n\r\ntwo and no close")
        self.assertEqual(section(data, (1,)), b"one")
        self.assertEqual(section(data, (2,)), b"two and no close")
        self.assertIsNone(section(data, (3,)))

    def test_unterminated_inner_multipart_stops_at_outer_delimiter(self) -> None:
        data = (b"Content-Type: multipart/mixed; boundary=outer\r\n\r\n"
                b"--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n"
                b"--inner\r\n\r\ninner one\r\n"
                b"--outer\r\n\r\nouter two\r\n--outer--\r\n")
        self.assertEqual(section(data, (1, 1)), b"inner one")
        self.assertEqual(section(data, (2,)), b"outer two")

    def test_boundary_that_is_a_prefix_of_another(self) -> None:
        data = (b"Content-Type: multipart/mixed; boundary=ab\r\n\r\n"
                b"--ab\r\nContent-Type: multipart/mixed; boundary=abc\r\n\r\n"
                b"--abc\r\n\r\ndeep\r\n--abc--\r\n"
                b"--ab\r\n\r\nsecond\r\n--ab--\r\n")
        self.assertEqual(section(data, (1, 1)), b"deep")
        self.assertEqual(section(data, (2,)), b"second")
        self.assertIsNone(section(data, (3,)))

    def test_delimiter_with_trailing_junk_is_text(self) -> None:
        data = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
                b"--b\r\n\r\nkeep\r\n--b-\r\nstill\r\n--b--\r\n")
        self.assertEqual(section(data, (1,)), b"keep\r\n--b-\r\nstill")

    def test_transport_padding_after_delimiter_is_allowed(self) -> None:
        data = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b \t\r\n\r\nx\r\n--b-- \r\n"
        self.assertEqual(section(data, (1,)), b"x")


class HeaderDamageTests(unittest.TestCase):

    def test_header_line_without_colon_is_skipped(self) -> None:
        data = b"From: a@b.c\r\nsomething@bar.net>\r\nSubject: hi\r\n\r\nbody"
        envelope = read_sexp(parse(data).envelope_wire())
        self.assertEqual(envelope[1], b"hi")
        self.assertEqual(section(data, (), "TEXT"), b"body")

    def test_eight_bit_and_nul_bytes_in_header(self) -> None:
        data = b"Subject: caf\xc3\xa9 \x00 \xff\r\nFrom: \xe9 <a@b.c>\r\n\r\nbody"
        info = parse(data)
        envelope_wire = info.envelope_wire()
        self.assertIn(b"{", envelope_wire)  # 8-bit and NUL force literals
        self.assertEqual(read_sexp(envelope_wire)[1], b"caf\xc3\xa9 \x00 \xff")

    def test_duplicate_content_type_uses_the_first(self) -> None:
        data = b"Content-Type: text/html\r\nContent-Type: image/png\r\n\r\nx"
        self.assertEqual(structure(data)[:2], [b"TEXT", b"HTML"])

    def test_unusable_content_type_defaults_to_text_plain(self) -> None:
        for value in (b"garbage", b"", b"/", b"text/", b"(comment only)"):
            with self.subTest(value=value):
                data = b"Content-Type: " + value + b"\r\n\r\nx"
                self.assertEqual(structure(data)[:3], [b"TEXT", b"PLAIN", [b"CHARSET", b"us-ascii"]])

    def test_header_line_of_100_kib(self) -> None:
        long_subject = b"x" * (100 * 1024)
        data = b"Subject: " + long_subject + b"\r\nX-Long: " + b"y" * (100 * 1024) + b"\r\n\r\nbody"
        started = time.perf_counter()
        info = parse(data)
        self.assertLess(time.perf_counter() - started, 30.0)  # a hang, not a speed, check
        self.assertEqual(read_sexp(info.envelope_wire())[1], long_subject)
        self.assertEqual(info.header("x-long"), [b"y" * (100 * 1024)])

    def test_100_kib_line_without_colon(self) -> None:
        data = b"From: a@b.c\r\n" + b"z" * (100 * 1024) + b"\r\n\r\nbody"
        started = time.perf_counter()
        self.assertEqual(section(data, (), "TEXT"), b"body")
        self.assertLess(time.perf_counter() - started, 30.0)  # a hang, not a speed, check


class ShapeDamageTests(unittest.TestCase):

    def test_empty_message(self) -> None:
        info = parse(b"")
        self.assertEqual(info.size, 0)
        self.assertEqual(read_sexp(info.bodystructure_wire())[:7],
                         [b"TEXT", b"PLAIN", [b"CHARSET", b"us-ascii"], None, None, b"7BIT", 0])
        self.assertEqual(info.section_range((), ""), (0, 0))
        self.assertEqual(info.section_range((1,), ""), (0, 0))

    def test_header_only_no_body(self) -> None:
        data = b"Subject: x\r\n"
        self.assertEqual(section(data, (), "HEADER"), data)
        self.assertEqual(section(data, (), "TEXT"), b"")

    def test_empty_body_parts(self) -> None:
        data = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n--b\r\n\r\n--b--"
        self.assertEqual(section(data, (1,)), b"")
        self.assertEqual(section(data, (2,)), b"")

    def test_missing_final_crlf(self) -> None:
        data = b"Subject: x\r\n\r\nline one\r\nline two"
        body = structure(data)
        self.assertEqual(body[6:8], [len(b"line one\r\nline two"), 1])

    def test_bare_lf_message(self) -> None:
        data = (b"Subject: lf\nContent-Type: multipart/mixed; boundary=b\n\n"
                b"--b\nContent-Type: text/plain\n\nhello\n--b\n\nworld\n--b--\n")
        info = parse(data)
        self.assertEqual(read_sexp(info.envelope_wire())[1], b"lf")
        self.assertEqual(section(data, (1,)), b"hello")
        self.assertEqual(section(data, (1,), "MIME"), b"Content-Type: text/plain\n\n")
        self.assertEqual(section(data, (2,)), b"world")

    def test_bare_lf_header_fields(self) -> None:
        from cyrusmail.mime import header_fields
        header = b"From: a\nTo: b\n\n"
        self.assertEqual(header_fields(header, [b"to"], exclude=False), b"To: b\n\n")


class SizeAndDepthTests(unittest.TestCase):

    def test_nesting_10000_multiparts_deep_is_capped(self) -> None:
        depth = 10_000
        opening = b"".join(b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1)
                           for i in range(depth))
        data = b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n" + opening + b"leaf\r\n"
        started = time.perf_counter()
        info = parse(data)
        self.assertLess(time.perf_counter() - started, 60.0)  # a hang, not a speed, check
        wire = info.bodystructure_wire()
        self.assertEqual(wire.count(b'"MIXED"'), MAX_DEPTH)
        self.assertIn(b'"APPLICATION" "OCTET-STREAM"', wire)
        read_sexp(wire)
        opaque = info.section_range((1,) * MAX_DEPTH, "")
        self.assertIsNotNone(opaque)
        self.assertTrue(data[opaque[0]:opaque[1]].endswith(b"leaf\r\n"))

    def test_nesting_10000_messages_deep_is_capped(self) -> None:
        data = b"Content-Type: message/rfc822\r\n\r\n" * 10_000 + b"Subject: bottom\r\n\r\nleaf"
        info = parse(data)
        wire = info.bodystructure_wire()
        self.assertEqual(wire.count(b'"RFC822"'), MAX_DEPTH)
        read_sexp(wire)
        self.assertIsNotNone(MessageInfo.from_bytes(info.to_bytes()).section_range((1,) * MAX_DEPTH))

    def test_50_mib_attachment_is_linear(self) -> None:
        attachment = (b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2\r\n"
                      * (50 * 1024 * 1024 // 66))
        data = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nhi\r\n"
                b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                + attachment + b"\r\n--b--\r\n")
        started = time.perf_counter()
        info = parse(data)
        self.assertLess(time.perf_counter() - started, 60.0)  # a hang, not a speed, check
        self.assertEqual(info.section_range((2,), ""), (data.index(attachment), data.index(attachment) + len(attachment)))

    def test_many_near_miss_boundaries_stay_linear(self) -> None:
        data = (b"Content-Type: multipart/mixed; boundary=bound\r\n\r\n--bound\r\n\r\n"
                + b"--boun--bound-x\r\n" * 200_000 + b"--bound--\r\n")
        started = time.perf_counter()
        self.assertEqual(child_count(structure(data)), 1)
        self.assertLess(time.perf_counter() - started, 60.0)  # a hang, not a speed, check

    def test_memoryview_and_mmap_inputs(self) -> None:
        import mmap
        import tempfile
        data = b"Subject: mapped\r\n\r\nbody\r\n"
        expected = parse(data).to_bytes()
        self.assertEqual(parse(memoryview(data)).to_bytes(), expected)
        with tempfile.TemporaryFile() as handle:
            handle.write(data)
            handle.flush()
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                self.assertEqual(parse(mapped).to_bytes(), expected)
