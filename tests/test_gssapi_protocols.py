"""IMAP AUTHENTICATE GSSAPI, POP3 AUTH GSSAPI and submission AUTH GSSAPI, as conversations.

Each test has its own MIT KDC (tests/kerberos_support.py) and a server on a
Clock over StringTransports; the client's tokens are real ones, made by
python-gssapi from a ticket ``kinit`` got.  Failures (a replayed token, a
ticket for another service, a principal that is no user, garbage) are
answered NO / -ERR / 535 through the login throttle, and the next login
from that address waits its turn there: its answer comes only once the clock
has moved on by the delay a failed password would cause.
"""

from __future__ import annotations

import base64

from twisted.trial.unittest import TestCase

from cyrusmail.pop3.server import POP3Factory
from cyrusmail.smtp import codes
from tests import imap_support
from tests.helpers import add_user, make_context
from tests.kerberos_support import KDC, REALM, SECTIONS, SASLClient, need_kerberos
from tests.test_logging import LogCapture
from tests.test_pop3_support import Conversation as POP3Conversation
from tests.test_smtp_session_support import Conversation as SMTPConversation
from tests.test_smtp_session_support import expected, inbox_messages, submission_factory

REMOTE = "192.0.2.7"  # TEST-NET-1: a peer that is not loopback; nothing is sent anywhere


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


class GSSAPITestCase(TestCase):
    """A realm, alice's ticket, and a server whose keytab has the realm's service keys."""

    auth: dict[str, str] = {}  # noqa: RUF012 -- read only; more [auth] keys for one test class

    def setUp(self) -> None:
        need_kerberos()
        self.kdc = KDC(self)
        self.kdc.kinit("alice")
        self.clock = imap_support.Clock()
        self.context = make_context(self.mktemp(), reactor=self.clock, **SECTIONS,
                                    auth={"keytab": str(self.kdc.keytab), "gssapi_realms": REALM, **self.auth})
        self.addCleanup(self.context.store.close)
        self.addCleanup(self.context.users.close)
        self.context.portal.throttle.clock = self.clock
        add_user(self.context, "alice")

    def imap(self, peer=imap_support.LOOPBACK) -> imap_support.Client:
        client = imap_support.Client(self.context, self.clock, peer)
        self.addCleanup(lambda: None if client.transport.disconnecting else client.server.connectionLost(None))
        return client

    def pop3(self, peer: str = "127.0.0.1", tls: bool = False) -> POP3Conversation:
        conversation = POP3Conversation(self, POP3Factory(self.context, "pop3"), self.clock, peer, tls)
        self.addCleanup(conversation.close)
        return conversation

    def smtp(self, peer: str = "127.0.0.1") -> SMTPConversation:
        conversation = SMTPConversation(submission_factory(self.context, self.clock), peer)
        conversation.send("EHLO client.example\r\n")
        return conversation


class IMAPTests(GSSAPITestCase):
    def authenticate(self, client: imap_support.Client, sasl: SASLClient, initial: bool) -> list[str]:
        """Play AUTHENTICATE GSSAPI to its tagged answer; the lines the server sent."""
        seen = []
        if initial:
            client.send(f"a AUTHENTICATE GSSAPI {b64(sasl.first())}\r\n")
        else:
            client.send("a AUTHENTICATE GSSAPI\r\n")
            seen.append(client.lines())
            self.assertEqual(seen[-1], ["+ "])
            client.send(b64(sasl.first()) + "\r\n")
        while True:
            lines = client.lines()
            seen.append(lines)
            if not lines or not lines[-1].startswith("+ "):
                return lines
            client.send(b64(sasl.respond(unb64(lines[-1][2:]))) + "\r\n")

    def test_capability(self):
        self.assertIn("AUTH=GSSAPI", self.imap().command("c CAPABILITY")[0].split())
        remote = self.imap(imap_support.REMOTE).command("c CAPABILITY")[0].split()
        self.assertNotIn("AUTH=GSSAPI", remote)  # no security layer: only inside TLS (or on loopback)
        self.assertIn("LOGINDISABLED", remote)
        self.assertEqual(self.imap(imap_support.REMOTE).command("a AUTHENTICATE GSSAPI"),
                         ["a NO [CANNOT] Mechanism GSSAPI is not available on this connection"])

    def test_login_with_and_without_initial_response(self):
        capture = LogCapture(self)
        for initial in (True, False):
            client = self.imap()
            answer = self.authenticate(client, SASLClient("imap"), initial)
            self.assertRegex(answer[-1], r"^a OK \[CAPABILITY .*\] Logged in$")
            self.assertEqual(client.command("b SELECT INBOX")[-1], "b OK [READ-WRITE] SELECT completed")
        self.assertEqual(capture.text().count("imap: alice logged in from 127.0.0.1:40000 (GSSAPI)"), 2)

    def test_authorization_identity_other_than_the_user_is_refused(self):
        add_user(self.context, "bob")
        answer = self.authenticate(self.imap(), SASLClient("imap", authzid="bob"), initial=True)
        self.assertEqual(answer, ["a NO [AUTHENTICATIONFAILED] Authentication failed"])

    def test_replayed_token_fails_and_the_retry_is_throttled(self):
        capture = LogCapture(self)
        sasl = SASLClient("imap")
        token = sasl.first()
        first = self.imap()
        first.send(f"a AUTHENTICATE GSSAPI {b64(token)}\r\n")
        self.assertTrue(first.lines()[-1].startswith("+ "))  # the AP-REP: the token was accepted
        replay = self.imap()
        self.assertEqual(replay.command(f"a AUTHENTICATE GSSAPI {b64(token)}"),
                         ["a NO [AUTHENTICATIONFAILED] Authentication failed"])
        self.assertIn("gssapi: refused (no principal) from 127.0.0.1: Request is a replay", capture.text())
        self.assertIn("imap: failed login for '' from 127.0.0.1:40000 (GSSAPI)", capture.text())
        retry = self.imap()
        self.assertEqual(self.authenticate(retry, SASLClient("imap"), initial=True), [])  # waits its turn
        self.clock.advance(1)
        self.assertRegex(retry.lines()[-1], r"^a OK ")

    def test_failures_are_clean(self):
        self.kdc.kinit("bob")  # a principal of the realm that is no user here
        bob = SASLClient("imap").first()
        self.kdc.kinit("carol/admin")  # an instance is not the user carol
        carol = SASLClient("imap").first()
        self.kdc.kinit("alice")
        pop_ticket = SASLClient("pop").first()
        client = self.imap()
        cases = [
            (f"a AUTHENTICATE GSSAPI {b64(pop_ticket)}", "a NO [AUTHENTICATIONFAILED] Authentication failed"),
            (f"a AUTHENTICATE GSSAPI {b64(b'not a token')}", "a NO [AUTHENTICATIONFAILED] Authentication failed"),
            ("a AUTHENTICATE GSSAPI abc", "a BAD Invalid base64 in initial response"),
            ("a AUTHENTICATE GSSAPI !!", "a BAD Expected a base64 response"),
            (f"a AUTHENTICATE GSSAPI {b64(bob)}", None),
            (f"a AUTHENTICATE GSSAPI {b64(carol)}", None),
        ]
        for line, answer in cases:
            client.send(line + "\r\n")
            self.clock.advance(15)  # past any throttle delay
            lines = client.lines()
            if answer is None:  # a good ticket: the exchange runs to its end, then the refusal
                self.assertTrue(lines[-1].startswith("+ "), lines)
                client.send("\r\n")
                offer = client.lines()[-1]
                self.assertTrue(offer.startswith("+ "), offer)
                client.send(b64(b"\x01\x00\x00\x00") + "\r\n")  # not wrapped: refused too
                self.clock.advance(15)
                lines = client.lines()
                answer = "a NO [AUTHENTICATIONFAILED] Authentication failed"
            self.assertEqual(lines[-1].lower(), answer.lower(), line[:40])
        for cancel, answer in (("*", "a BAD Authentication cancelled"), ("%%%", "a BAD Invalid base64")):
            client.send("a AUTHENTICATE GSSAPI\r\n")
            self.assertEqual(client.lines(), ["+ "])
            self.assertEqual(client.command(cancel), [answer])
        self.clock.advance(15)
        self.assertRegex(self.authenticate(client, SASLClient("imap"), initial=True)[-1], r"^a OK ")  # still usable

    def test_a_principal_mapped_to_no_user_fails(self):
        self.kdc.kinit("bob")
        answer = self.authenticate(self.imap(), SASLClient("imap"), initial=True)
        self.assertEqual(answer, ["a NO [AUTHENTICATIONFAILED] Authentication failed"])


class OtherRealmTests(IMAPTests.__bases__[0]):
    """The realm rule names another realm: alice@CYRUSMAIL.TEST is no user here."""

    auth = {"gssapi_realms": "OTHER.TEST"}  # noqa: RUF012

    def test_refused(self):
        client = self.imap()
        sasl = SASLClient("imap")
        client.send(f"a AUTHENTICATE GSSAPI {b64(sasl.first())}\r\n")
        for _ in range(2):
            client.send(b64(sasl.respond(unb64(client.lines()[-1][2:]))) + "\r\n")
        self.assertEqual(client.lines(), ["a NO [AUTHENTICATIONFAILED] Authentication failed"])


class POP3Tests(GSSAPITestCase):
    def authenticate(self, conversation: POP3Conversation, sasl: SASLClient, initial: bool = True) -> bytes:
        if initial:
            reply = conversation.command(f"AUTH GSSAPI {b64(sasl.first())}")
        else:
            self.assertEqual(conversation.command("AUTH GSSAPI"), b"+ \r\n")
            reply = conversation.command(b64(sasl.first()))
        while reply.startswith(b"+ "):
            reply = conversation.command(b64(sasl.respond(unb64(reply[2:].strip().decode()))))
        return reply

    def test_capa_and_auth_list(self):
        conversation = self.pop3()
        self.assertIn(b"SASL SCRAM-SHA-256 GSSAPI PLAIN LOGIN\r\n", conversation.command("CAPA"))
        self.assertEqual(conversation.command("AUTH"), b"+OK SASL mechanisms follow\r\nSCRAM-SHA-256\r\nGSSAPI\r\nPLAIN\r\nLOGIN\r\n.\r\n")
        remote = self.pop3(REMOTE)
        self.assertNotIn(b"SASL", remote.command("CAPA"))
        self.assertEqual(remote.command("AUTH GSSAPI"), b"-ERR [AUTH] Mechanism GSSAPI is not available on this connection\r\n")
        self.assertIn(b"SASL SCRAM-SHA-256 GSSAPI PLAIN LOGIN\r\n", self.pop3(REMOTE, tls=True).command("CAPA"))

    def test_login(self):
        for initial in (True, False):
            conversation = self.pop3()
            self.assertEqual(self.authenticate(conversation, SASLClient("pop"), initial),
                             b"+OK alice has 0 messages (0 octets)\r\n")
            self.assertEqual(conversation.command("QUIT"), b"+OK Bye (0 messages left)\r\n")

    def test_failures_are_clean_and_the_retry_is_throttled(self):
        sasl = SASLClient("pop")
        token = sasl.first()
        done = self.pop3()
        self.assertEqual(self.authenticate(done, SASLClient("pop", mutual=False)).split()[0], b"+OK")
        self.assertEqual(done.command("QUIT"), b"+OK Bye (0 messages left)\r\n")
        first = self.pop3()
        self.assertTrue(first.command(f"AUTH GSSAPI {b64(token)}").startswith(b"+ "))
        conversation = self.pop3()
        self.assertEqual(conversation.command(f"AUTH GSSAPI {b64(token)}"), b"-ERR [AUTH] Authentication failed\r\n")
        self.assertEqual(self.authenticate(conversation, SASLClient("pop")), b"")  # waits its turn
        self.clock.advance(1)
        self.assertEqual(conversation.take().split()[0], b"+OK")
        self.assertEqual(conversation.command("QUIT"), b"+OK Bye (0 messages left)\r\n")
        conversation = self.pop3()
        self.assertTrue(conversation.command(f"AUTH GSSAPI {b64(SASLClient('pop').first())}").startswith(b"+ "))
        self.assertEqual(conversation.command("*"), b"-ERR Authentication cancelled\r\n")
        self.assertEqual(conversation.command("AUTH GSSAPI"), b"+ \r\n")
        self.assertEqual(conversation.command("%%%"), b"-ERR [AUTH] response is not base64: Only base64 data is"
                                                      b" allowed\r\n")
        imap_ticket = b64(SASLClient("imap").first())
        self.assertEqual(conversation.command(f"AUTH GSSAPI {imap_ticket}"), b"-ERR [AUTH] Authentication failed\r\n")
        self.assertEqual(self.authenticate(conversation, SASLClient("pop")), b"")  # two failures: waits longer
        self.clock.advance(1)
        self.assertEqual(conversation.take(), b"")
        self.clock.advance(1)
        self.assertEqual(conversation.take().split()[0], b"+OK")


class SubmissionTests(GSSAPITestCase):
    def authenticate(self, conversation: SMTPConversation, sasl: SASLClient) -> list:
        replies = conversation.send(f"AUTH GSSAPI {b64(sasl.first())}\r\n")
        while replies and replies[-1][0] == 334:
            replies = conversation.send(b64(sasl.respond(unb64(replies[-1][2][0]))) + "\r\n")
        return replies

    def test_ehlo(self):
        conversation = SMTPConversation(submission_factory(self.context, self.clock))
        [(_, _, lines)] = conversation.send("EHLO client.example\r\n")
        self.assertIn("AUTH SCRAM-SHA-256 GSSAPI PLAIN LOGIN", lines)
        remote = SMTPConversation(submission_factory(self.context, self.clock), REMOTE)
        [(_, _, lines)] = remote.send("EHLO client.example\r\n")
        self.assertFalse([line for line in lines if line.startswith("AUTH")])
        self.assertEqual(remote.codes("AUTH GSSAPI\r\n"), expected(codes.ENCRYPTION_REQUIRED))

    def test_received_header_names_the_principal(self):
        capture = LogCapture(self)
        conversation = self.smtp()
        self.assertEqual([reply[0] for reply in self.authenticate(conversation, SASLClient("smtp"))], [235])
        message = b"From: alice@example.org\r\nTo: alice@example.org\r\nSubject: kerberos\r\n\r\nHi.\r\n"
        conversation.send("MAIL FROM:<alice@example.org>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
        self.assertEqual([reply[0] for reply in conversation.send(message + b".\r\n")], [250])
        [stored] = inbox_messages(self.context, "alice")
        received = stored.split(b"\r\n\r\n", 1)[0].decode()
        self.assertIn(f"(authenticated user alice by GSSAPI as alice@{REALM})", received)
        self.assertIn("with ESMTPA", received)
        self.assertIn("submission: alice logged in from 127.0.0.1:40000 (GSSAPI)", capture.text())

    def test_failures_are_clean_and_the_retry_is_throttled(self):
        token = SASLClient("smtp").first()
        self.assertEqual(self.smtp().codes(f"AUTH GSSAPI {b64(token)}\r\n")[0][0], 334)
        conversation = self.smtp()
        self.assertEqual(conversation.codes(f"AUTH GSSAPI {b64(token)}\r\n"), expected(codes.AUTH_FAILED))
        self.assertEqual(self.authenticate(conversation, SASLClient("smtp")), [])  # waits its turn
        self.clock.advance(1)
        self.assertEqual([reply[0] for reply in conversation.take()], [235])
        conversation = self.smtp()
        self.assertEqual(conversation.codes(f"AUTH GSSAPI {b64(SASLClient('smtp').first())}\r\n")[0][0], 334)
        self.assertEqual(conversation.codes("*\r\n"), expected(codes.AUTH_CANCELLED))
        self.assertEqual(conversation.codes("AUTH GSSAPI\r\n"), [(334, None)])
        self.assertEqual(conversation.codes("%%%\r\n"), expected(codes.AUTH_BAD_BASE64))
        self.assertEqual(conversation.codes(f"AUTH GSSAPI {b64(b'garbage')}\r\n"), expected(codes.AUTH_FAILED))
        self.assertEqual(self.authenticate(conversation, SASLClient("smtp")), [])  # two failures: waits longer
        self.clock.advance(1)
        self.assertEqual(conversation.take(), [])
        self.clock.advance(1)
        self.assertEqual([reply[0] for reply in conversation.take()], [235])


class LineLimitTests(GSSAPITestCase):
    """A ticket with a large authorization-data field (an Active Directory PAC) fits an AUTH line (RFC 4954: 12288)."""

    def test_large_tokens_reach_the_mechanism(self):
        token = b64(b"\x60" * 9_000)  # 12,000 octets of base64: not a ticket, but one line
        self.assertEqual(self.imap().command(f"a AUTHENTICATE GSSAPI {token}"),
                         ["a NO [AUTHENTICATIONFAILED] Authentication failed"])
        self.clock.advance(15)  # refused tokens count under one name: past its delay
        self.assertEqual(self.pop3(peer="127.0.0.2").command(f"AUTH GSSAPI {token}"),
                         b"-ERR [AUTH] Authentication failed\r\n")
        self.clock.advance(15)
        smtp = self.smtp(peer="127.0.0.3")
        self.assertEqual(smtp.codes(f"AUTH GSSAPI {token}\r\n"), expected(codes.AUTH_FAILED))


class UnconfiguredTests(TestCase):
    """Without a keytab, nothing says GSSAPI, and asking for it is refused as for any mechanism not offered."""

    def test_not_offered(self):
        clock = imap_support.Clock()
        context = make_context(self.mktemp(), reactor=clock, **SECTIONS)
        self.addCleanup(context.store.close)
        self.addCleanup(context.users.close)
        client = imap_support.Client(context, clock)
        self.assertNotIn("AUTH=GSSAPI", client.command("c CAPABILITY")[0])
        self.assertEqual(client.command("a AUTHENTICATE GSSAPI"), ["a NO [CANNOT] Mechanism GSSAPI is not available on this connection"])
        client.server.connectionLost(None)
        pop3 = POP3Conversation(self, POP3Factory(context, "pop3"), clock, "127.0.0.1", False)
        self.assertEqual(pop3.command("AUTH GSSAPI"), b"-ERR [AUTH] Mechanism GSSAPI is not available on this connection\r\n")
        pop3.close()
        smtp = SMTPConversation(submission_factory(context, clock))
        [(_, _, lines)] = smtp.send("EHLO client.example\r\n")
        self.assertIn("AUTH SCRAM-SHA-256 PLAIN LOGIN", lines)
        # Not offered here; on a connection without TLS submission answers that TLS is required (sasl.Exchange's rule).
        self.assertEqual(smtp.codes("AUTH GSSAPI\r\n"), expected(codes.ENCRYPTION_REQUIRED))


