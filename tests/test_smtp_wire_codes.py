"""Tests for cyrusmail.smtp.codes: the reply table and reply formatting."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from cyrusmail.smtp import codes
from cyrusmail.smtp.codes import Reply

TABLE = {name: value for name, value in vars(codes).items() if isinstance(value, Reply)}

# The codes the rest of the project relies on (RFC 5321, 3463, 4954, 6531).
EXPECTED = {
    "READY": (220, None),
    "TLS_READY": (220, "2.0.0"),
    "BYE": (221, "2.0.0"),
    "AUTH_OK": (235, "2.7.0"),
    "OK": (250, "2.0.0"),
    "START_DATA": (354, None),
    "AUTH_CONTINUE": (334, None),
    "TEMP_FAIL": (451, "4.3.0"),
    "MAILBOX_FULL": (452, "4.2.2"),
    "TLS_UNAVAILABLE": (454, "4.7.0"),
    "SYNTAX_ERROR": (500, "5.5.2"),
    "LINE_TOO_LONG": (500, "5.5.6"),
    "PARAM_SYNTAX": (501, "5.5.4"),
    "NOT_IMPLEMENTED": (502, "5.5.1"),
    "BAD_SEQUENCE": (503, "5.5.1"),
    "PARAM_UNRECOGNIZED": (555, "5.5.4"),
    "AUTH_REQUIRED": (530, "5.7.0"),
    "AUTH_FAILED": (535, "5.7.8"),
    "ENCRYPTION_REQUIRED": (538, "5.7.11"),
    "NO_SUCH_USER": (550, "5.1.1"),
    "QUOTA_EXCEEDED_PERM": (552, "5.2.2"),
    "TOO_BIG": (552, "5.3.4"),
    "SENDER_NOT_OWNED": (553, "5.7.1"),
    "UTF8_NOT_ALLOWED": (553, "5.6.7"),
    "NUL_IN_MESSAGE": (554, "5.6.0"),
    "HEADER_FROM_NOT_OWNED": (550, "5.7.1"),
    "HEADER_FROM_UNREADABLE": (550, "5.7.1"),
}


class TableTests(TestCase):
    def test_expected_codes(self) -> None:
        for name, (code, enhanced) in EXPECTED.items():
            with self.subTest(name=name):
                self.assertEqual(
                    (TABLE[name].code, TABLE[name].enhanced), (code, enhanced)
                )

    def test_every_entry_has_text_and_a_consistent_class(self) -> None:
        for name, reply in TABLE.items():
            with self.subTest(name=name):
                if reply.code != 334:
                    self.assertTrue(reply.text)
                if reply.enhanced is not None:
                    self.assertEqual(reply.enhanced[0], str(reply.code)[0])

    def test_enhanced_codes_left_out_where_rfc_2034_says(self) -> None:
        for reply in (codes.READY, codes.START_DATA, codes.AUTH_CONTINUE, codes.HELLO):
            self.assertIsNone(reply.enhanced)

    def test_classes(self) -> None:
        self.assertTrue(codes.OK.is_positive and codes.START_DATA.is_positive)
        self.assertTrue(codes.MAILBOX_FULL.is_transient)
        self.assertTrue(codes.TOO_BIG.is_permanent)
        self.assertFalse(codes.TOO_BIG.is_transient)


class FormatTests(TestCase):
    def test_single_line(self) -> None:
        self.assertEqual(codes.OK.to_bytes(), b"250 2.0.0 OK\r\n")
        self.assertEqual(codes.OK.to_bytes(enhanced=False), b"250 OK\r\n")
        self.assertEqual(
            codes.BYE.with_text("See you").to_bytes(), b"221 2.0.0 See you\r\n"
        )

    def test_sasl_challenge(self) -> None:
        """RFC 4954: "334" SP [base64]."""
        self.assertEqual(codes.AUTH_CONTINUE.to_bytes(), b"334 \r\n")
        self.assertEqual(
            codes.AUTH_CONTINUE.with_text("VXNlcm5hbWU6").to_bytes(),
            b"334 VXNlcm5hbWU6\r\n",
        )

    def test_multi_line(self) -> None:
        reply = codes.ehlo_reply("mx.example", ["PIPELINING", "SIZE 1000", "8BITMIME"])
        self.assertEqual(
            reply.to_bytes(),
            b"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n",
        )
        rejected = codes.NO_SUCH_USER.with_text("No such user here", "Try another")
        self.assertEqual(
            rejected.to_bytes(),
            b"550-5.1.1 No such user here\r\n550 5.1.1 Try another\r\n",
        )

    def test_reply_injection_is_impossible(self) -> None:
        for text in ("OK\r\n250 fake", "a\nb", "tab\there"):
            with self.subTest(text=text):
                self.assertRaises(ValueError, codes.OK.with_text, text)

    def test_malformed_replies(self) -> None:
        self.assertRaises(ValueError, Reply, 199, None, "x")
        self.assertRaises(ValueError, Reply, 600, None, "x")
        self.assertRaises(ValueError, Reply, 550, "4.1.1", "x")
        self.assertRaises(ValueError, Reply, 250, "2.1", "x")
        self.assertRaises(ValueError, Reply, 354, "3.0.0", "x")
