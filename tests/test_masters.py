"""Master users ([auth] master_users): support staff logging in as another user with their own password."""

from __future__ import annotations

import base64
import imaplib

from scramp import ScramClient
from twisted.internet import reactor, threads
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from cyrusmail.auth.checkers import PasswordChecker
from cyrusmail.auth.masters import Authorizer
from cyrusmail.config import ConfigError
from cyrusmail.pop3.server import POP3Factory
from tests.helpers import add_user, make_config, make_context
from tests.test_pop3_support import Conversation


def b64(data: str) -> str:
    return base64.b64encode(data.encode()).decode()


class MasterTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.context = make_context(self.mktemp(), reactor=self.clock, auth={"master_users": "admin"},
                                    pop3={"enabled": "yes", "listen": "tcp:0:interface=127.0.0.1"})
        self.addCleanup(self.context.users.close)
        self.addCleanup(self.context.store.close)
        for name in ("alice", "bob", "admin"):
            add_user(self.context, name, f"{name}-pw")
        users, domains = self.context.users, self.context.config.domains
        self.context.portal.registerChecker(PasswordChecker(  # as make_portal has it, without a thread
            users, domains, hash_in_thread=False, authorizer=Authorizer(users, domains, ["admin"])))
        self.factory = POP3Factory(self.context, "pop3")
        self.logged: list[str] = []

        def observe(event) -> None:
            self.logged.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def connect(self) -> Conversation:
        conversation = Conversation(self, self.factory, self.clock, "127.0.0.1", False)
        self.addCleanup(conversation.close)
        return conversation

    def attempt(self, *lines: str) -> bytes:
        """Send lines on a new connection; the last reply, after any throttle wait."""
        conversation = self.connect()
        for line in lines:
            reply = conversation.command(line)
        self.clock.advance(60)
        reply += conversation.take()
        conversation.command("QUIT")  # let go of the maildrop
        return reply

    def test_user_star_master_with_the_masters_password(self) -> None:
        reply = self.attempt("USER alice*admin", "PASS admin-pw")
        self.assertTrue(reply.startswith(b"+OK alice has"), reply)
        self.assertIn("auth: master admin logged in as alice from 127.0.0.1", self.logged)

    def test_plain_authzid_and_scram_authzid(self) -> None:
        reply = self.attempt("AUTH PLAIN " + b64("alice\0admin\0admin-pw"))
        self.assertTrue(reply.startswith(b"+OK alice has"), reply)
        conversation = self.connect()
        client = ScramClient(["SCRAM-SHA-256"], "alice*admin", "admin-pw")
        challenge = conversation.command("AUTH SCRAM-SHA-256 " + b64(client.get_client_first()))
        client.set_server_first(base64.b64decode(challenge[2:]).decode())
        challenge = conversation.command(base64.b64encode(client.get_client_final().encode()).decode())
        client.set_server_final(base64.b64decode(challenge[2:]).decode())
        self.assertTrue(conversation.command("").startswith(b"+OK alice has"))
        self.assertEqual(self.logged.count("auth: master admin logged in as alice from 127.0.0.1"), 2)

    def test_refusals(self) -> None:
        table = [
            ("USER alice*bob", "PASS bob-pw"),  # bob is no master
            ("AUTH PLAIN " + b64("alice\0bob\0bob-pw"),),
            ("USER alice*admin", "PASS alice-pw"),  # the master's password, not the user's
            ("USER nobody*admin", "PASS admin-pw"),  # no such user
            ("AUTH PLAIN " + b64("nobody\0admin\0admin-pw"),),
        ]
        for lines in table:
            with self.subTest(lines=lines):
                self.assertEqual(self.attempt(*lines).splitlines()[-1], b"-ERR [AUTH] Authentication failed")
        self.assertTrue(any("bob asked to log in as 'alice'" in line and "not a master user" in line
                            for line in self.logged), self.logged)
        self.assertFalse(any("logged in as" in line and "master" in line for line in self.logged))

    def test_a_name_with_the_separator_that_is_an_account_is_never_split(self) -> None:
        add_user(self.context, "x*admin", "x-pw")
        reply = self.attempt("USER x*admin", "PASS x-pw")
        self.assertTrue(reply.startswith(b"+OK x*admin has"), reply)

    def test_separator_config(self) -> None:
        for bad in ("ab", "a", "@", "."):
            with self.subTest(bad=bad), self.assertRaises(ConfigError):
                make_config(self.mktemp(), auth={"master_separator": bad})
        self.assertEqual(make_config(self.mktemp(), auth={"master_separator": "%"})["auth"]["master_separator"], "%")


class ImaplibMasterTests(TestCase):
    """Python's imaplib logging in as ``alice*admin`` against a listening server (the real portal, with its thread)."""

    timeout = 120

    def setUp(self):
        self.context = make_context(self.mktemp(), auth={"master_users": "admin"},
                                    imap={"enabled": "yes", "listen": "tcp:0:interface=127.0.0.1"})
        self.addCleanup(self.context.store.close)
        self.addCleanup(self.context.users.close)
        add_user(self.context, "alice", "alice-pw")
        add_user(self.context, "admin", "admin-pw")
        from cyrusmail.imap.server import make_factory

        d = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(make_factory(self.context, "imap"))
        return d.addCallback(self._listening)

    def _listening(self, port) -> None:
        self.port = port.getHost().port
        self.addCleanup(port.stopListening)

    def test_login_as_alice(self):
        def talk():
            client = imaplib.IMAP4("127.0.0.1", self.port, timeout=30)
            try:
                client.login("\"alice*admin\"", "admin-pw")  # * is no atom character: quoted
                return client.namespace()
            finally:
                client.logout()

        def check(result):
            typ, _ = result
            self.assertEqual(typ, "OK")

        return threads.deferToThread(talk).addCallback(check)


class SwaksMasterTests(TestCase):
    """swaks submitting as alice with AUTH PLAIN as ``alice*admin`` (and refused as ``alice*bob``)."""

    timeout = 120

    def setUp(self) -> None:
        import shutil

        from twisted.trial.unittest import SkipTest

        if shutil.which("swaks") is None:
            raise SkipTest("swaks is not installed (apt-get install swaks)")
        from cyrusmail.smtp.server import make_submission_factory

        self.context = make_context(self.mktemp(), reactor, auth={"master_users": "admin"})
        self.addCleanup(self.context.store.close)
        self.addCleanup(self.context.users.close)
        for name in ("alice", "bob", "admin"):
            add_user(self.context, name, f"{name}-pw")
        port = reactor.listenTCP(0, make_submission_factory(self.context, "submission"), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port

    def swaks(self, user: str, password: str):
        import subprocess

        argv = ["swaks", "--server", "127.0.0.1", "--port", str(self.port), "--tls", "--auth", "PLAIN",
                "--auth-user", user, "--auth-password", password, "--from", "alice@example.org",
                "--to", "bob@example.org", "--data", "-"]
        message = b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: by a master\r\n\r\nHi.\r\n"
        return threads.deferToThread(subprocess.run, argv, input=message, capture_output=True, timeout=60)

    def test_submits_as_alice(self):
        def sent(result):
            self.assertEqual(result.returncode, 0, result.stdout.decode(errors="replace")[-2000:])
            inbox = self.context.realm.account("bob").mailboxes.open("INBOX")
            [record] = list(inbox.messages())
            self.assertIn(b"Subject: by a master", inbox.read(record.uid))
            return self.swaks("alice*bob", "bob-pw")

        def refused(result):
            self.assertNotEqual(result.returncode, 0)
            self.assertIn(b"535", result.stdout)

        return self.swaks("alice*admin", "admin-pw").addCallback(sent).addCallback(refused)
