"""Tests for cyrusmail.sasl: PLAIN and LOGIN, shared by SMTP, IMAP and POP3.

(Named test_smtp_wire_sasl for now; it belongs in tests/test_sasl.py.)
"""

from __future__ import annotations

import base64

from twisted.trial.unittest import TestCase

from cyrusmail import sasl
from cyrusmail.sasl import Challenge, Credentials, SASLCancelled, SASLError


class DecodeResponseTests(TestCase):
    def test_table(self) -> None:
        table = [
            (b"AGFsaWNlAHNlY3JldA==", b"\x00alice\x00secret"),
            (b"", b""),
            (b"=", b""),
            (b"dXNlcg==", b"user"),
        ]
        for line, octets in table:
            with self.subTest(line=line):
                self.assertEqual(sasl.decode_response(line), octets)

    def test_cancel(self) -> None:
        self.assertRaises(SASLCancelled, sasl.decode_response, b"*")

    def test_bad_base64(self) -> None:
        for line in (b"!!!!", b"dXNlcg", b"dXN lcg==", b"dXNlcg==\x00", b"d=Nlcg=="):
            with self.subTest(line=line):
                error = self.assertRaises(SASLError, sasl.decode_response, line)
                self.assertNotIsInstance(error, SASLCancelled)

    def test_encode_challenge(self) -> None:
        self.assertEqual(sasl.encode_challenge(b"Username:"), b"VXNlcm5hbWU6")


class PlainTests(TestCase):
    def test_good(self) -> None:
        table = [
            (b"\x00alice\x00secret", Credentials("alice", "secret")),
            (b"alice\x00alice\x00secret", Credentials("alice", "secret")),
            ("\x00jösé\x00pässwörd".encode(), Credentials("jösé", "pässwörd")),
            (
                b"\x00alice\x00pass word with spaces",
                Credentials("alice", "pass word with spaces"),
            ),
            # another authorization identity is passed on: the checker lets only master users use it
            (b"bob\x00alice\x00secret", Credentials("alice", "secret", authzid="bob")),
        ]
        for message, credentials in table:
            with self.subTest(message=message):
                self.assertEqual(sasl.decode_plain(message), credentials)

    def test_bad(self) -> None:
        table = [
            b"",
            b"alice",
            b"\x00alice",
            b"\x00alice\x00",
            b"\x00\x00secret",
            b"\x00alice\x00secret\x00extra",
            b"\x00al\xffice\x00secret",
            b"\x00alice\x00se\ncret",
            b"\x00" + b"a" * 256 + b"\x00secret",
        ]
        for message in table:
            with self.subTest(message=message[:30]):
                self.assertRaises(SASLError, sasl.decode_plain, message)

    def test_exchange_without_initial_response(self) -> None:
        mechanism = sasl.start("plain")
        self.assertEqual(mechanism.step(None), Challenge(b""))
        self.assertEqual(
            mechanism.step(b"\x00alice\x00secret"), Credentials("alice", "secret")
        )

    def test_exchange_with_initial_response(self) -> None:
        mechanism = sasl.start("PLAIN")
        self.assertEqual(
            mechanism.step(b"\x00alice\x00secret"), Credentials("alice", "secret")
        )

    def test_only_one_empty_challenge(self) -> None:
        mechanism = sasl.start("PLAIN")
        mechanism.step(None)
        self.assertRaises(SASLError, mechanism.step, None)


class LoginTests(TestCase):
    def test_exchange(self) -> None:
        mechanism = sasl.start("LOGIN")
        self.assertEqual(mechanism.step(None), Challenge(b"Username:"))
        self.assertEqual(mechanism.step(b"alice"), Challenge(b"Password:"))
        self.assertEqual(mechanism.step(b"secret"), Credentials("alice", "secret"))
        self.assertRaises(SASLError, mechanism.step, b"more")

    def test_initial_response_is_the_user_name(self) -> None:
        mechanism = sasl.start("LOGIN")
        self.assertEqual(mechanism.step(b"alice"), Challenge(b"Password:"))
        self.assertEqual(mechanism.step(b"secret"), Credentials("alice", "secret"))

    def test_bad_steps(self) -> None:
        table = [
            [b""],
            [b"alice", b""],
            [b"al\xffice"],
            [b"alice", b"sec\x00ret"],
        ]
        for responses in table:
            with self.subTest(responses=responses):
                mechanism = sasl.start("LOGIN")
                mechanism.step(None)
                for response in responses[:-1]:
                    mechanism.step(response)
                self.assertRaises(SASLError, mechanism.step, responses[-1])

    def test_over_the_wire_decoding(self) -> None:
        """What an SMTP/IMAP/POP3 session does with each line."""
        mechanism = sasl.start("LOGIN")
        mechanism.step(None)
        line = base64.b64encode(b"alice")
        self.assertEqual(
            mechanism.step(sasl.decode_response(line)), Challenge(b"Password:")
        )

    def test_unknown_mechanism(self) -> None:
        self.assertRaises(KeyError, sasl.start, "CRAM-MD5")
        self.assertEqual(list(sasl.MECHANISMS), ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "GSSAPI", "OAUTHBEARER",
                                                 "XOAUTH2", "PLAIN", "LOGIN"])
