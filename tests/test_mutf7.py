"""Modified UTF-7 (RFC 3501 section 5.1.3)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from cyrusmail.imap.mutf7 import MUTF7Error, decode, encode

PAIRS = [
    ("INBOX", "INBOX"),
    ("", ""),
    ("&", "&-"),
    ("a&b&&", "a&-b&-&-"),
    ("Entwürfe", "Entw&APw-rfe"),
    (
        "~peter/mail/台北/日本語",
        "~peter/mail/&U,BTFw-/&ZeVnLIqe-",
    ),  # RFC 3501's example
    ("Ελληνικά", "&A5UDuwO7A7cDvQO5A7oDrA-"),
    ("😀", "&2D3eAA-"),
    ("a\x01b", "a&AAE-b"),
    ("tab\there", "tab&AAk-here"),
    ("\x7f", "&AH8-"),
    ("é&é", "&AOk-&-&AOk-"),
]

INVALID = [
    "&",  # unterminated
    "&AOk",  # unterminated
    "a&-&",  # unterminated after a good escape
    "&Jjo!",  # ! is not modified base64
    "&AOk=-",  # padding is not allowed
    "&AE/-",  # '/' is ',' in modified base64
    "&AGE-",  # encodes printable ASCII 'a'
    "&ACY-",  # encodes '&' itself
    "&AOk-&AOk-",  # two runs back to back must be one
    "&AOl-",  # non-zero padding bits
    "&A-",  # too short for a UTF-16 unit
    "&AOkA-",  # odd number of bytes
    "&2D0-",  # lone high surrogate
    "&3gA-",  # lone low surrogate
    "é",  # 8-bit must be encoded
    "a\tb",  # control characters must be encoded
    "a\x00b",
]


class Mutf7Tests(TestCase):
    def test_encode(self) -> None:
        for name, wire in PAIRS:
            self.assertEqual(encode(name), wire, name)

    def test_decode(self) -> None:
        for name, wire in PAIRS:
            self.assertEqual(decode(wire), name, wire)
            self.assertEqual(decode(wire.encode("ascii")), name, wire)

    def test_invalid(self) -> None:
        for wire in INVALID:
            self.assertRaises(MUTF7Error, decode, wire)

    def test_invalid_bytes(self) -> None:
        self.assertRaises(MUTF7Error, decode, "Entwürfe".encode())

    def test_error_is_value_error(self) -> None:
        self.assertTrue(issubclass(MUTF7Error, ValueError))

    @given(st.text())
    def test_round_trip(self, name: str) -> None:
        wire = encode(name)
        wire.encode("ascii")
        self.assertEqual(decode(wire), name)

    @given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E)))
    def test_decode_is_strict(self, wire: str) -> None:
        """Whatever decode accepts, encode gives back unchanged."""
        try:
            name = decode(wire)
        except MUTF7Error:
            return
        self.assertEqual(encode(name), wire)
