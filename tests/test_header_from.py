"""Submission's header From: check: the From: and Sender: addresses must be the logged-in user's.

Transcripts over a StringTransport for submission and submissions, DATA and
BDAT; the config switch; LMTP untouched; the parser's table; and smtplib
against a listening server.
"""

from __future__ import annotations

import shutil
import smtplib
import subprocess

from twisted.internet import threads
from twisted.trial import unittest

from cyrusmail.smtp import codes
from cyrusmail.smtp.authorship import MAX_FIELD, UnreadableAddress, address_list
from cyrusmail.smtp.session import MAX_HEADER_SCAN
from tests.test_queue import async_test
from tests.test_smtp_session_support import (
    Conversation,
    expected,
    inbox_messages,
    lmtp_factory,
    make_server,
    plain,
    submission_factory,
)
from tests.test_submission_clients import ListeningServer, unverified_tls

BODY = b"To: bob@example.org\r\nSubject: who wrote this\r\n\r\nHello.\r\n"


def with_from(from_field: bytes) -> bytes:
    return from_field + b"\r\n" + BODY


class HeaderFromTests(unittest.TestCase):
    def setUp(self) -> None:
        self.context, self.clock = make_server(self.mktemp())
        self.factories = {service: submission_factory(self.context, self.clock, service)
                          for service in ("submission", "submissions")}

    def login(self, service: str = "submission", user: str = "alice") -> Conversation:
        talk = Conversation(self.factories[service])
        talk.send("EHLO client.example\r\n")
        self.assertEqual(talk.codes(b"AUTH PLAIN " + plain(user) + b"\r\n"), expected(codes.AUTH_OK))
        return talk

    def submit(self, message: bytes | list[bytes], service: str = "submission", bdat: bool = False,
               user: str = "alice"):
        """The reply to the message (sent to bob and to a remote address), as (code, enhanced, text).

        A list is sent over DATA one piece per read.
        """
        talk = self.login(service, user)
        sender = b"alice@example.org" if user == "alice" else user.encode()
        replies = talk.codes(b"MAIL FROM:<" + sender + b">\r\nRCPT TO:<bob@example.org>\r\n"
                             b"RCPT TO:<carol@remote.example>\r\n")
        self.assertEqual(replies, expected(codes.SENDER_OK, codes.RECIPIENT_OK, codes.RECIPIENT_OK))
        if bdat:
            [(code, enhanced, lines)] = talk.send(b"BDAT %d LAST\r\n%s" % (len(message), message))
        else:
            self.assertEqual(talk.codes("DATA\r\n"), expected(codes.START_DATA))
            pieces = message if isinstance(message, list) else [message]
            for piece in pieces[:-1]:
                self.assertEqual(talk.send(piece), [])
            [(code, enhanced, lines)] = talk.send(pieces[-1] + b".\r\n")
        self.assertEqual(talk.codes("NOOP\r\n"), expected(codes.OK))  # the session goes on
        return code, enhanced, lines[0]

    def assert_refused(self, message: bytes | list[bytes], reply=codes.HEADER_FROM_NOT_OWNED, **options) -> str:
        delivered, queued = len(inbox_messages(self.context, "bob")), len(self.queued())
        code, enhanced, text = self.submit(message, **options)
        self.assertEqual((code, enhanced), (reply.code, reply.enhanced), text)
        self.assertEqual(len(inbox_messages(self.context, "bob")), delivered)
        self.assertEqual(len(self.queued()), queued)
        self.assertEqual(list(self.context.store.tmp_dir.iterdir()), [])
        return text

    def assert_accepted(self, message: bytes, **options) -> bytes:
        code, enhanced, text = self.submit(message, **options)
        self.assertEqual((code, enhanced), (250, "2.0.0"), text)
        return inbox_messages(self.context, "bob")[-1]

    def queued(self) -> list:
        queue = self.context.extras.get("queue")
        return [] if queue is None else list(queue.entries.values())

    # -- refused -----------------------------------------------------------------

    def test_someone_elses_from_is_refused_on_both_services_with_data_and_bdat(self) -> None:
        for service in ("submission", "submissions"):
            for bdat in (False, True):
                with self.subTest(service=service, bdat=bdat):
                    text = self.assert_refused(with_from(b"From: Bob <bob@example.org>"), service=service, bdat=bdat)
                    self.assertEqual(text, "5.7.1 From: header address <bob@example.org> not owned by the "
                                           "authenticated user")

    def test_every_address_and_every_field_counts(self) -> None:
        for field in (b"From: alice@example.org, bob@example.org",
                      b"From: Team: alice@example.org, bob@example.org;",
                      b"From: alice@example.org\r\nFrom: bob@example.org",
                      b"From: Alice\r\n <bob@example.org>",  # folded
                      b"FROM : bob@EXAMPLE.org",
                      b'From: "alice@example.org" <bob@example.org>',
                      b"From: =?utf-8?q?alice=40example=2Eorg?= <bob@example.org>",
                      b"From: Alice <@relay.example:bob@example.org>",
                      b"From: alice@example.org\r\nSender: bob@example.org",
                      b"From: alice@evil.example",
                      b'From: "alice@example.org"@evil.example'):
            with self.subTest(field=field):
                self.assert_refused(with_from(field))

    def test_an_unreadable_field_is_refused(self) -> None:
        for field in (b"From: alice@example.org mallory@evil.example",
                      b"From: Alice <alice@example.org> mallory@evil.example",
                      b"From: Alice <alice@example.org",
                      b"From: alice",
                      b"From:",
                      b"From: undisclosed-recipients:;",
                      b"From: (alice@example.org",
                      b"From: alice@example.org\r\nSender: alice@example.org, alice@example.org",
                      b"From: <>"):
            with self.subTest(field=field):
                text = self.assert_refused(with_from(field), codes.HEADER_FROM_UNREADABLE)
                self.assertIn("cannot check its sender", text)

    def test_a_header_too_long_to_check_is_refused(self) -> None:
        """Over MAX_HEADER_SCAN octets before the empty line: the From: may be past what was kept."""
        pad = b"".join(b"X-Pad-%d: %s\r\n" % (n, b"x" * 900) for n in range(MAX_HEADER_SCAN // 900 + 2))
        for from_field in (b"From: bob@example.org", b"From: alice@example.org"):
            text = self.assert_refused([pad, with_from(from_field)], codes.HEADER_FROM_UNREADABLE)
            self.assertIn("Header block over", text)
        # The same header in one read is all in memory at once, so it is checked.
        self.assert_refused(pad + with_from(b"From: bob@example.org"))
        self.assert_accepted(pad + with_from(b"From: alice@example.org"))
        long_list = b"From: " + b",\r\n ".join([b"alice@example.org"] * (MAX_FIELD // 19 + 1))
        self.assertIn("longer than", self.assert_refused(with_from(long_list), codes.HEADER_FROM_UNREADABLE))

    # -- accepted ----------------------------------------------------------------

    def test_own_addresses_in_any_form_are_accepted(self) -> None:
        fields = [b"From: alice@example.org",
                  b"From: Alice Example <ALICE@Example.ORG>",
                  b"From: Alice\r\n\t<alice@example.org> (at work)",
                  b'From: "Bob <bob@example.org>" <alice@example.org>',
                  b"From: =?utf-8?b?PGJvYkBleGFtcGxlLm9yZz4=?= <alice@example.org>",
                  b"From: Me: alice@example.org;",
                  b"From: Joe Q. Public <alice@example.org>",
                  b'From: "alice"@example.org',
                  b"From: alice@example.org,",
                  b"From: J\xc3\xb6rg <alice@example.org>\r\nSender: Alice <alice@example.org>"]
        for number, field in enumerate(fields, 1):
            with self.subTest(field=field):
                stored = self.assert_accepted(with_from(field))
                self.assertTrue(stored.endswith(with_from(field)))
                self.assertEqual(len(inbox_messages(self.context, "bob")), number)

    def test_a_message_without_from_gets_the_envelope_sender(self) -> None:
        stored = self.assert_accepted(BODY)
        self.assertIn(b"\r\nFrom: <alice@example.org>\r\n", stored)
        self.assertTrue(stored.endswith(BODY))
        stored = self.assert_accepted(with_from(b"From: Alice <alice@example.org>"))
        self.assertEqual(stored.count(b"From:"), 1)

    def test_a_user_with_a_domain_in_its_name_owns_only_that_address(self) -> None:
        from tests.helpers import add_user

        add_user(self.context, "dave@other.example")
        self.assert_accepted(with_from(b"From: dave@other.example"), user="dave@other.example")
        self.assert_refused(with_from(b"From: dave@example.org"), user="dave@other.example")

    def test_the_check_can_be_turned_off(self) -> None:
        context, clock = make_server(self.mktemp(), server={"check_header_from": "no"})
        self.context, self.factories = context, {"submission": submission_factory(context, clock)}
        self.assert_accepted(with_from(b"From: bob@example.org"))

    def test_lmtp_is_not_checked(self) -> None:
        talk = Conversation(lmtp_factory(self.context, self.clock))
        talk.send("LHLO mx.example.org\r\nMAIL FROM:<x@remote.example>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n")
        self.assertEqual(talk.codes(with_from(b"From: alice@example.org mallory@x") + b".\r\n"),
                         expected(codes.MESSAGE_ACCEPTED))


class AddressListTests(unittest.TestCase):
    """The strict RFC 5322 reading of an address list."""

    def test_table(self) -> None:
        table = [
            ("alice@example.org", ["alice@example.org"]),
            ("Alice <alice@example.org>", ["alice@example.org"]),
            ('"Smith, John" <js@example.org>, b@example.org', ["js@example.org", "b@example.org"]),
            ("G: a@x.example, (c) b@y.example;, c@z.example", ["a@x.example", "b@y.example", "c@z.example"]),
            ("undisclosed-recipients:;", []),
            ('"a b"@example.org', ['"a b"@example.org']),
            ('"a.b"@example.org', ["a.b@example.org"]),
            ("a@[192.0.2.1]", ["a@[192.0.2.1]"]),
            ("<@r1,@r2:a@example.org>", ["a@example.org"]),
            ("a . b @ example . org", ["a.b@example.org"]),
            ("(" * 5000 + ")" * 5000 + "a@example.org", ["a@example.org"]),  # no recursion
        ]
        for value, addresses in table:
            with self.subTest(value=value[:40]):
                self.assertEqual(address_list(value), addresses)

    def test_refusals(self) -> None:
        for value in ("a@b c@d", "a", "a@", "@b", "a.@b", "a..b@c", "a@b.", "a@b..c", "<a@b", "a@b>",
                      "G: a@b", "G: H: a@b;;", ". <a@b>", "a@b;", "(", '"a', "a@[b", "a)b@c", "x\x00y <a@b>",
                      "a\\b@c", "<>", "Name <>"):
            with self.subTest(value=value), self.assertRaises(UnreadableAddress):
                address_list(value)


class RealClientTests(unittest.TestCase):
    """smtplib over STARTTLS and implicit TLS: the refusal reaches the client as SMTPDataError."""

    timeout = 60

    def setUp(self) -> None:
        self.server = ListeningServer(self, self.mktemp())

    def send(self, service: str, message: bytes):
        def run():
            if service == "submissions":
                client = smtplib.SMTP_SSL("127.0.0.1", self.server.ports[service], context=unverified_tls(),
                                          timeout=20)
            else:
                client = smtplib.SMTP("127.0.0.1", self.server.ports[service], timeout=20)
                client.starttls(context=unverified_tls())
            with client:
                client.login("alice", "secret")
                try:
                    return client.sendmail("alice@example.org", ["bob@example.org"], message)
                except smtplib.SMTPDataError as error:
                    return error.smtp_code, error.smtp_error.decode()

        return threads.deferToThread(run)

    @async_test
    async def test_smtplib_spoofed_from_is_refused_own_is_accepted(self) -> None:
        for delivered, service in enumerate(("submission", "submissions")):
            code, text = await self.send(service, with_from(b"From: The Boss <bob@example.org>"))
            self.assertEqual(code, 550)
            self.assertIn("5.7.1 From: header address <bob@example.org> not owned", text)
            self.assertEqual(len(self.server.inbox("bob")), delivered)
            self.assertEqual(await self.send(service, with_from(b"From: Alice <alice@example.org>")), {})
        self.assertEqual(len(self.server.inbox("bob")), 2)

    def swaks(self, from_field: bytes):
        argv = ["swaks", "--server", "127.0.0.1", "--port", str(self.server.ports["submission"]), "--tls",
                "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "secret",
                "--from", "alice@example.org", "--to", "bob@example.org", "--data", "-"]
        return threads.deferToThread(subprocess.run, argv, input=with_from(from_field), capture_output=True,
                                     timeout=30, check=False)

    @async_test
    async def test_swaks_spoofed_from_is_refused(self) -> None:
        if shutil.which("swaks") is None:
            raise unittest.SkipTest("swaks is not installed (apt-get install swaks)")
        result = await self.swaks(b"From: bob@example.org")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"550 5.7.1 From: header address <bob@example.org> not owned", result.stdout)
        self.assertEqual(self.server.inbox("bob"), [])
        result = await self.swaks(b"From: Alice <alice@example.org>")
        self.assertEqual(result.returncode, 0, result.stdout.decode(errors="replace")[-2000:])
        self.assertEqual(len(self.server.inbox("bob")), 1)


