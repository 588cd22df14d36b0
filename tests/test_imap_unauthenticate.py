"""UNAUTHENTICATE (RFC 8437) beyond the transcript: TLS, timers, logs and the throttle."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.imap_support import REMOTE, Client, session_context


class UnauthenticateTests(TestCase):
    def setUp(self) -> None:
        self.context = session_context(self)
        self.clock = Clock()

    def test_tls_stays_and_a_login_needs_no_new_starttls(self) -> None:
        client = Client(self.context, self.clock, peer=REMOTE)
        self.context.tls = object()  # offered, as with a certificate
        self.assertEqual(client.command("t STARTTLS")[-1], "t OK Begin TLS negotiation now")
        self.assertTrue(client.transport.tls_started)
        client.login()
        answer = client.command("u UNAUTHENTICATE")
        self.assertRegex(answer[-1], r"^u OK \[CAPABILITY .*AUTH=PLAIN.*\] UNAUTHENTICATE completed$")
        self.assertNotIn("STARTTLS", answer[-1])
        self.assertTrue(client.transport.tls_started)
        self.assertFalse(client.transport.disconnecting)
        client.login()  # a password is still allowed: the connection is still TLS

    def test_the_unauthenticated_timeout_applies_again(self) -> None:
        client = Client(self.context, self.clock)
        client.login()
        client.command("u UNAUTHENTICATE")
        self.clock.advance(client.server.PREAUTH_TIMEOUT)
        self.assertEqual(client.lines(), ["* BYE Autologout; idle for too long"])

    def test_logged_and_the_next_login_is_throttled_as_any(self) -> None:
        lines: list[str] = []

        def observe(event) -> None:
            lines.append(formatEvent(event) or "")

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        client = Client(self.context, self.clock)
        client.login()
        client.command("u UNAUTHENTICATE")
        self.assertIn("imap: alice logged out from 127.0.0.1:40000 (UNAUTHENTICATE)", lines)
        self.assertEqual(client.command("l LOGIN alice wrong")[-1], "l NO [AUTHENTICATIONFAILED] Authentication failed")
        client.send(b"m LOGIN alice secret\r\n")
        self.assertEqual(client.lines(), [])  # waits its turn after a failure, as on any connection
        self.clock.advance(2)
        self.assertTrue(client.lines()[-1].startswith("m OK"))
