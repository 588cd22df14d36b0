"""Content-Transfer-Encoding decoders (cyrusmail.mime.transfer): whole, in chunks, byte by byte."""

from __future__ import annotations

import base64
import os

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from cyrusmail.mime import transfer

# The quoted-printable part of Dovecot's imaptest fetch-binary-mime-qp, and what it decodes to.
QP = (b"hello  \r\nbar=\r\n\r\nfoo\t=\r\nbar\r\nfoo\t \t= \r\n=62\r\nfoo =  \t\r\nbar\r\n"
      b"foo =\r\n=62\r\nfoo   \r\nbar=\r\n\r\nfoo_bar\r\n")
QP_DECODED = (b"hello\r\nbar\r\nfoo\tbar\r\nfoo\t \tb\r\nfoo bar\r\nfoo b\r\nfoo\r\nbar\r\n"
              b"foo_bar\r\n")


def in_chunks(encoding: bytes, data: bytes, size: int) -> bytes:
    decoder = transfer.decoder_for(encoding)
    assert decoder is not None
    out = b"".join(decoder.feed(data[start:start + size]) for start in range(0, len(data), size))
    return out + decoder.finish()


class DecoderTests(TestCase):
    def assertDecodes(self, encoding: bytes, data: bytes, expected: bytes) -> None:
        self.assertEqual(transfer.decode(data, encoding), expected)
        for size in (1, 2, 3, 5, 7, 64):
            self.assertEqual(in_chunks(encoding, data, size), expected, f"chunks of {size}")

    def test_quoted_printable(self) -> None:
        """Trailing blanks go, ``=`` ends a soft break even before blanks, hard breaks are CRLF."""
        self.assertDecodes(b"quoted-printable", QP, QP_DECODED)
        self.assertEqual(len(QP_DECODED), 65)  # imaptest's BINARY.SIZE[1]

    def test_quoted_printable_edges(self) -> None:
        cases = [
            (b"a=3Db=3dc", b"a=b=c"),  # hex digits of either case
            (b"a=zzb=4", b"a=zzb=4"),  # a bad escape is kept
            (b"line\nnext", b"line\r\nnext"),  # a bare LF is a line break too
            (b"end   ", b"end"),  # the last line loses its trailing blanks
            (b"soft=", b"soft"),
            (b"", b""),
        ]
        for data, expected in cases:
            with self.subTest(data=data):
                self.assertDecodes(b"quoted-printable", data, expected)

    def test_quoted_printable_long_line_is_decoded_in_parts(self) -> None:
        """A line without end does not pile up: all but its last few octets are decoded."""
        decoder = transfer.QuotedPrintableDecoder()
        line = b"=41bc" * 100_000
        out = b"".join(decoder.feed(line[start:start + 4096]) for start in range(0, len(line), 4096))
        self.assertGreater(len(out), 250_000)
        self.assertEqual(out + decoder.finish(), b"Abc" * 100_000)

    def test_base64(self) -> None:
        self.assertDecodes(b"base64", b"  aGVs    \r\n bG8g  \r\n   d29y  \t \r\n    bGQ= \r\n", b"hello world")
        self.assertDecodes(b"BASE64", b"YWJjZGVmZw1oaWprbA0KbW5vCnBxcnN0dXZxeHl6",
                           b"abcdefg\rhijkl\r\nmno\npqrstuvqxyz")
        self.assertDecodes(b"base64", b"YQ", b"a")  # no padding
        self.assertDecodes(b"base64", b"YWI", b"ab")
        self.assertDecodes(b"base64", b"YWJjZ", b"abc")  # a lone last character is nothing

    def test_identity_and_unknown(self) -> None:
        for encoding in (b"7bit", b"8BIT", b"binary", b""):
            self.assertDecodes(encoding, b"as \x00 is\r\n", b"as \x00 is\r\n")
        self.assertIsNone(transfer.decoder_for(b"x-uuencode"))
        self.assertEqual(transfer.decode(b"kept", b"x-uuencode"), b"kept")

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=2000), st.integers(1, 300))
    def test_base64_round_trip(self, payload: bytes, size: int) -> None:
        encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
        self.assertEqual(in_chunks(b"base64", encoded, size), payload)

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=2000), st.integers(1, 300))
    def test_quoted_printable_chunks_agree(self, data: bytes, size: int) -> None:
        self.assertEqual(in_chunks(b"quoted-printable", data, size),
                         transfer.decode(data, b"quoted-printable"))

    def test_random_quoted_printable_round_trip(self) -> None:
        import quopri

        for _ in range(20):
            lines = [os.urandom(40).hex().encode() + b" \t=x" for _ in range(30)]
            text = b"\r\n".join(lines) + b"\r\n"
            encoded = quopri.encodestring(text.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")
            self.assertEqual(in_chunks(b"quoted-printable", encoded, 17), text)
