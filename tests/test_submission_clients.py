"""Submission, submissions and LMTP listening on loopback, driven by real clients.

Python's smtplib (STARTTLS + AUTH, implicit TLS, LMTP), swaks and msmtp (each
skipped with a reason when not installed; CI installs them), a raw socket
for the STARTTLS injection attempt, and our own queue relaying through a
second cyrusmail instance as its smarthost (STARTTLS required, AUTH PLAIN).
Blocking clients run in threads so the reactor keeps serving.
"""

from __future__ import annotations

import shutil
import smtplib
import socket
import ssl
import subprocess

from twisted.internet import reactor, task, threads
from twisted.internet.ssl import CertificateOptions
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial import unittest

from cyrusmail.delivery.queue import Queue, QueueRunner
from cyrusmail.smtp.server import make_lmtp_factory, make_submission_factory
from tests.helpers import add_user, make_context
from tests.test_queue import async_test

MESSAGE = b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: real client\r\n\r\nHello from a real client.\r\n"


def unverified_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test server's certificate is self-signed
    return context


class ListeningServer:
    """A context with submission, submissions and LMTP listening on loopback ports."""

    def __init__(self, test: unittest.TestCase, data: str) -> None:
        self.context = make_context(data, reactor)
        add_user(self.context, "alice")
        add_user(self.context, "bob")
        self.ports = {}
        for service in ("submission", "submissions", "lmtp"):
            factory = (make_lmtp_factory if service == "lmtp" else make_submission_factory)(self.context, service)
            if service == "submissions":
                factory = TLSMemoryBIOFactory(self.context.tls, False, factory)
            port = reactor.listenTCP(0, factory, interface="127.0.0.1")
            test.addCleanup(port.stopListening)
            self.ports[service] = port.getHost().port
        test.addCleanup(self.context.store.close)

    def inbox(self, user: str) -> list[bytes]:
        mailbox = self.context.realm.account(user).mailboxes.open("INBOX")
        return [mailbox.read(record.uid) for record in mailbox.messages()]


class RealClientTests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.server = ListeningServer(self, self.mktemp())

    def smtplib_starttls(self) -> dict:
        with smtplib.SMTP("127.0.0.1", self.server.ports["submission"], timeout=20) as client:
            client.ehlo("client.example")
            client.starttls(context=unverified_tls())
            client.ehlo("client.example")
            client.login("alice", "secret")
            return client.sendmail("alice@example.org", ["bob@example.org"], MESSAGE)

    @async_test
    async def test_smtplib_starttls_and_auth(self) -> None:
        refused = await threads.deferToThread(self.smtplib_starttls)
        self.assertEqual(refused, {})
        [stored] = self.server.inbox("bob")
        self.assertTrue(stored.endswith(MESSAGE))
        self.assertIn(b"with ESMTPSA", stored)
        self.assertRegex(stored.decode(), r"\(TLSv1\.[23] with cipher [A-Z0-9_-]+\)")

    def smtplib_implicit_tls(self) -> dict:
        with smtplib.SMTP_SSL("127.0.0.1", self.server.ports["submissions"], context=unverified_tls(),
                              timeout=20) as client:
            client.login("alice", "secret")
            return client.sendmail("alice@example.org", ["bob@example.org"], MESSAGE)

    @async_test
    async def test_smtplib_implicit_tls(self) -> None:
        self.assertEqual(await threads.deferToThread(self.smtplib_implicit_tls), {})
        [stored] = self.server.inbox("bob")
        self.assertIn(b"with ESMTPSA", stored)

    def smtplib_wrong_password(self) -> int:
        with smtplib.SMTP("127.0.0.1", self.server.ports["submission"], timeout=20) as client:
            try:
                client.login("alice", "wrong")
            except smtplib.SMTPAuthenticationError as error:
                return error.smtp_code
            return 0

    @async_test
    async def test_smtplib_wrong_password(self) -> None:
        self.assertEqual(await threads.deferToThread(self.smtplib_wrong_password), 535)

    def lmtp_transcript(self) -> bytes:
        with socket.create_connection(("127.0.0.1", self.server.ports["lmtp"]), timeout=20) as sock:
            sock.sendall(b"LHLO mx.example.org\r\nMAIL FROM:<x@remote.example>\r\n"
                         b"RCPT TO:<alice@example.org>\r\nRCPT TO:<nobody@example.org>\r\n"
                         b"RCPT TO:<bob@example.org>\r\nDATA\r\n" + MESSAGE + b".\r\nQUIT\r\n")
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
            return received

    @async_test
    async def test_lmtp_over_tcp_one_reply_per_recipient(self) -> None:
        transcript = (await threads.deferToThread(self.lmtp_transcript)).decode()
        finals = [line[:3] for line in transcript.split("\r\n") if line[3:4] == " "]
        # greeting, LHLO, MAIL, 3 RCPT, DATA, 2 per-recipient replies, QUIT
        self.assertEqual(finals, ["220", "250", "250", "250", "550", "250", "354", "250", "250", "221"])
        self.assertEqual(len(self.server.inbox("alice")), 1)
        self.assertEqual(len(self.server.inbox("bob")), 1)

    def starttls_injection(self) -> tuple[bytes, bytes]:
        with socket.create_connection(("127.0.0.1", self.server.ports["submission"]), timeout=20) as sock:
            reader = sock.makefile("rb")
            reader.readline()  # greeting
            sock.sendall(b"EHLO x\r\nSTARTTLS\r\nMAIL FROM:<alice@example.org>\r\n")
            while not reader.readline().startswith(b"250 "):
                pass
            tls_reply = reader.readline()
            secure = unverified_tls().wrap_socket(sock, server_hostname="mail.example.org")
            secure.sendall(b"RCPT TO:<bob@example.org>\r\n")
            after = secure.recv(4096)
            secure.sendall(b"QUIT\r\n")
            return tls_reply, after

    @async_test
    async def test_starttls_injection_over_tcp(self) -> None:
        tls_reply, after = await threads.deferToThread(self.starttls_injection)
        self.assertTrue(tls_reply.startswith(b"220 "))
        self.assertTrue(after.startswith(b"503 "), after)  # the plaintext MAIL never ran

    def run_tool(self, argv: list[str], message: bytes) -> subprocess.CompletedProcess:
        return subprocess.run(argv, input=message, capture_output=True, timeout=30, check=False)

    @async_test
    async def test_swaks(self) -> None:
        if shutil.which("swaks") is None:
            raise unittest.SkipTest("swaks is not installed (apt-get install swaks)")
        argv = ["swaks", "--server", "127.0.0.1", "--port", str(self.server.ports["submission"]), "--tls",
                "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "secret",
                "--from", "alice@example.org", "--to", "bob@example.org", "--helo", "swaks.example",
                "--data", "-"]
        result = await threads.deferToThread(self.run_tool, argv, MESSAGE)
        self.assertEqual(result.returncode, 0, result.stdout.decode(errors="replace")[-2000:])
        [stored] = self.server.inbox("bob")
        self.assertIn(b"Subject: real client", stored)
        self.assertIn(b"from swaks.example", stored)

    @async_test
    async def test_swaks_bdat_pipelining(self) -> None:
        if shutil.which("swaks") is None:
            raise unittest.SkipTest("swaks is not installed (apt-get install swaks)")
        argv = ["swaks", "--server", "127.0.0.1", "--port", str(self.server.ports["submission"]),
                "--auth", "LOGIN", "--auth-user", "alice", "--auth-password", "secret", "--pipeline",
                "--from", "alice@example.org", "--to", "bob@example.org,alice@example.org", "--data", "-"]
        result = await threads.deferToThread(self.run_tool, argv, MESSAGE)
        self.assertEqual(result.returncode, 0, result.stdout.decode(errors="replace")[-2000:])
        self.assertEqual(len(self.server.inbox("bob")), 1)
        self.assertEqual(len(self.server.inbox("alice")), 1)

    @async_test
    async def test_msmtp(self) -> None:
        if shutil.which("msmtp") is None:
            raise unittest.SkipTest("msmtp is not installed (apt-get install msmtp)")
        argv = ["msmtp", "--host=127.0.0.1", f"--port={self.server.ports['submission']}", "--tls=on",
                "--tls-starttls=on", "--tls-certcheck=off", "--auth=plain", "--user=alice",
                "--passwordeval=echo secret", "--from=alice@example.org", "--domain=msmtp.example",
                "bob@example.org"]
        result = await threads.deferToThread(self.run_tool, argv, MESSAGE)
        self.assertEqual(result.returncode, 0, result.stderr.decode(errors="replace"))
        [stored] = self.server.inbox("bob")
        self.assertTrue(stored.endswith(MESSAGE))


class SmarthostRelayTests(unittest.TestCase):
    """Our queue relays through a second cyrusmail (STARTTLS required, AUTH PLAIN) as smarthost."""

    timeout = 60

    def submit_remote(self, port: int) -> dict:
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
            client.login("alice@example.org", "secret")
            return client.sendmail("alice@example.org", ["bob@example.org"], MESSAGE)

    @async_test
    async def test_relay_through_smarthost_with_starttls_and_auth(self) -> None:
        smarthost = ListeningServer(self, self.mktemp())
        queue_settings = {"smarthost": f"127.0.0.1:{smarthost.ports['submission']}", "smarthost_tls": "starttls",
                          "smarthost_user": "alice", "smarthost_password": "secret", "retry_initial": "1s"}
        # The sending server: example.net is its local domain, so example.org is remote.
        sending = make_context(self.mktemp(), reactor, queue=queue_settings,
                               server={"domains": "example.net", "hostname": "out.example.net"})
        add_user(sending, "alice@example.org")
        self.addCleanup(sending.store.close)
        queue = Queue(sending, clock=reactor, client_tls=lambda host: CertificateOptions())
        sending.extras["queue"] = queue
        runner = QueueRunner(queue, poll_interval=0.5)
        runner.startService()
        self.addCleanup(runner.stopService)
        port = reactor.listenTCP(0, make_submission_factory(sending, "submission"), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        refused = await threads.deferToThread(self.submit_remote, port.getHost().port)
        self.assertEqual(refused, {})
        for _ in range(100):  # the queue removes its copy only after the smarthost's 250 and QUIT's 221
            if smarthost.inbox("bob") and not list(queue.spool.iterdir()):
                break
            await task.deferLater(reactor, 0.1, lambda: None)
        [stored] = smarthost.inbox("bob")
        self.assertTrue(stored.endswith(MESSAGE))
        self.assertEqual(stored.count(b"Received: from "), 2)
        self.assertIn(b"with ESMTPSA", stored.split(b"Received: from ")[1])  # the relay hop: TLS + AUTH
        self.assertEqual(list(queue.spool.iterdir()), [])
