"""Real POP3 clients against a real listening server: poplib, fetchmail, getmail6.

The server listens on 127.0.0.1 port 0 in this process, on the trial
reactor; each blocking client runs in a thread (poplib) or a subprocess
(fetchmail, getmail) so the reactor keeps serving. Tests needing a client
binary skip, saying which package to install, when it is absent; CI
installs them (``apt-get install -y fetchmail getmail6``).
"""

from __future__ import annotations

import base64
import os
import poplib
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

from twisted.internet import reactor, threads
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import TestCase

from cyrusmail.store.records import Flag
from tests.test_pop3_support import Pop3Server, message

CLIENT_TIMEOUT = 60


def unverified_tls() -> ssl.SSLContext:
    """The self-signed test certificate is not checked."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class ListeningServer:
    """A Pop3Server on a real loopback port (plain, or implicit TLS for POP3S)."""

    def __init__(self, testcase: TestCase, implicit_tls: bool = False):
        self.server = Pop3Server(testcase, real_reactor=True)
        factory = self.server.factory
        if implicit_tls:
            factory = TLSMemoryBIOFactory(self.server.context.tls, False, factory)
        self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        testcase.addCleanup(self.port.stopListening)
        self.number = self.port.getHost().port


class PoplibTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.listening = ListeningServer(self)
        self.server = self.listening.server
        self.messages = [message(1), b"Subject: dots\r\n\r\n.\r\n..\r\n.end\r\n", message(3, body_lines=50)]
        self.server.deliver(*self.messages)

    def client(self) -> poplib.POP3:
        return poplib.POP3("127.0.0.1", self.listening.number, timeout=CLIENT_TIMEOUT)

    def test_session_with_poplib(self):
        def converse() -> dict:
            pop = self.client()
            seen = {"welcome": pop.getwelcome(), "capa": pop.capa()}
            pop.user("alice")
            pop.pass_("secret")
            seen["stat"] = pop.stat()
            seen["list"] = pop.list()[1]
            seen["uidl"] = pop.uidl()[1]
            seen["retr"] = [pop.retr(number)[1] for number in (1, 2, 3)]
            seen["top"] = pop.top(3, 2)[1]
            pop.dele(1)
            try:
                pop.retr(1)
            except poplib.error_proto as error:
                seen["retr_deleted"] = error.args[0]
            seen["quit"] = pop.quit()
            return seen

        def check(seen: dict) -> None:
            records = self.server.inbox().messages()
            self.assertTrue(seen["welcome"].startswith(b"+OK"))
            self.assertIn("UIDL", seen["capa"])
            self.assertIn("STLS", seen["capa"])
            self.assertEqual(seen["capa"]["SASL"], ["SCRAM-SHA-256", "PLAIN", "LOGIN"])
            self.assertEqual(seen["stat"], (3, sum(len(m) for m in self.messages)))
            self.assertEqual(seen["list"], [b"%d %d" % (n, len(m)) for n, m in enumerate(self.messages, 1)])
            self.assertEqual([line.split()[1] for line in seen["uidl"]][1:],
                             [record.guid.encode() for record in records])
            for lines, stored in zip(seen["retr"], self.messages):
                self.assertEqual(b"\r\n".join(lines) + b"\r\n", stored)
            self.assertEqual(seen["top"], self.messages[2].split(b"\r\n")[:6])
            self.assertTrue(seen["retr_deleted"].startswith(b"-ERR"))
            self.assertTrue(seen["quit"].startswith(b"+OK"))
            self.assertEqual(len(records), 2)
            self.assertTrue(all(record.flags & Flag.SEEN for record in records))

        return threads.deferToThread(converse).addCallback(check)

    def test_auth_plain_and_login_over_a_socket(self):
        """poplib has no AUTH: the exchange is typed by hand, as RFC 5034 shows it."""
        plain = base64.b64encode(b"\0alice\0secret")
        exchanges = [
            [b"AUTH PLAIN " + plain, b"STAT", b"QUIT"],
            [b"AUTH LOGIN", base64.b64encode(b"alice"), base64.b64encode(b"secret"), b"STAT", b"QUIT"],
        ]

        def converse(lines: list[bytes]) -> list[bytes]:
            with socket.create_connection(("127.0.0.1", self.listening.number), timeout=CLIENT_TIMEOUT) as raw:
                reader = raw.makefile("rb")
                replies = [reader.readline()]
                for line in lines:
                    raw.sendall(line + b"\r\n")
                    replies.append(reader.readline())
                return replies

        def check(replies: list[bytes]) -> None:
            self.assertEqual([reply[:4] for reply in replies], [b"+OK ", b"+OK ", b"+OK ", b"+OK "])
            self.assertEqual(replies[2], b"+OK 3 %d\r\n" % sum(len(m) for m in self.messages))

        def check_login(replies: list[bytes]) -> None:
            self.assertEqual(replies[1:3], [b"+ VXNlcm5hbWU6\r\n", b"+ UGFzc3dvcmQ6\r\n"])
            self.assertTrue(replies[3].startswith(b"+OK alice has 3 messages"))
            self.assertTrue(replies[4].startswith(b"+OK 3 "))

        work = threads.deferToThread(converse, exchanges[0]).addCallback(check)
        work.addCallback(lambda _: threads.deferToThread(converse, exchanges[1]))
        return work.addCallback(check_login)

    def test_wrong_password_is_delayed_and_refused(self):
        def converse() -> bytes:
            pop = self.client()
            pop.user("alice")
            try:
                pop.pass_("wrong")
            except poplib.error_proto as error:
                return error.args[0]
            finally:
                pop.close()
            return b"logged in?"

        return threads.deferToThread(converse).addCallback(
            lambda reply: self.assertEqual(reply, b"-ERR [AUTH] Authentication failed"))

    def test_second_session_in_use(self):
        def converse() -> bytes:
            first = self.client()
            first.user("alice")
            first.pass_("secret")
            second = self.client()
            second.user("alice")
            try:
                second.pass_("secret")
            except poplib.error_proto as error:
                reply = error.args[0]
            first.quit()
            second.user("alice")
            second.pass_("secret")
            second.quit()
            return reply

        return threads.deferToThread(converse).addCallback(
            lambda reply: self.assertTrue(reply.startswith(b"-ERR [IN-USE]"), reply))

    def test_stls_with_poplib(self):
        def converse() -> tuple:
            pop = self.client()
            pop.stls(unverified_tls())
            capa = pop.capa()
            pop.user("alice")
            pop.pass_("secret")
            data = pop.retr(2)[1]
            pop.quit()
            return capa, data

        def check(result: tuple) -> None:
            capa, data = result
            self.assertNotIn("STLS", capa)
            self.assertEqual(b"\r\n".join(data) + b"\r\n", self.messages[1])

        return threads.deferToThread(converse).addCallback(check)

    def test_pipelined_plaintext_after_stls_is_discarded(self):
        """RFC 2595 section 4: the server must not act on what came before the handshake."""

        def converse() -> tuple:
            raw = socket.create_connection(("127.0.0.1", self.listening.number), timeout=CLIENT_TIMEOUT)
            reader = raw.makefile("rb")
            greeting = reader.readline()
            raw.sendall(b"STLS\r\nUSER alice\r\nPASS secret\r\n")
            stls_reply = reader.readline()
            secure = unverified_tls().wrap_socket(raw, server_hostname="localhost")
            secure_reader = secure.makefile("rb")
            secure.sendall(b"STAT\r\n")
            stat_reply = secure_reader.readline()
            secure.sendall(b"QUIT\r\n")
            quit_reply = secure_reader.readline()
            secure.close()
            return greeting, stls_reply, stat_reply, quit_reply

        def check(replies: tuple) -> None:
            greeting, stls_reply, stat_reply, quit_reply = replies
            self.assertTrue(greeting.startswith(b"+OK"))
            self.assertEqual(stls_reply, b"+OK Begin TLS negotiation now\r\n")
            self.assertEqual(stat_reply, b"-ERR STAT is not allowed in the AUTHORIZATION state\r\n")
            self.assertTrue(quit_reply.startswith(b"+OK"))

        return threads.deferToThread(converse).addCallback(check)


class POP3STests(TestCase):
    timeout = 120

    def test_pop3s_with_poplib(self):
        listening = ListeningServer(self, implicit_tls=True)
        stored = b"Subject: over TLS\r\n\r\n" + b"0123456789.\r\n.\r\n" * 20_000  # 280 kB
        listening.server.deliver(stored)

        def converse() -> tuple:
            pop = poplib.POP3_SSL("127.0.0.1", listening.number, context=unverified_tls(), timeout=CLIENT_TIMEOUT)
            capa = pop.capa()
            pop.user("alice")
            pop.pass_("secret")
            data = pop.retr(1)[1]
            pop.quit()
            return capa, data

        def check(result: tuple) -> None:
            capa, data = result
            self.assertNotIn("STLS", capa)
            self.assertIn("USER", capa)
            self.assertEqual(b"\r\n".join(data) + b"\r\n", stored)

        return threads.deferToThread(converse).addCallback(check)


def need(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise_skip = f"{binary} is not installed (apt-get install -y {package})"
        from twisted.trial.unittest import SkipTest

        raise SkipTest(raise_skip)
    return path


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, env={**os.environ, **env}, capture_output=True, timeout=CLIENT_TIMEOUT,
                          stdin=subprocess.DEVNULL, check=False)


class FetchmailTests(TestCase):
    """fetchmail 6 over plaintext on loopback (``sslproto ''``: no STLS attempt)."""

    timeout = 180

    def setUp(self) -> None:
        self.fetchmail = need("fetchmail", "fetchmail")
        self.listening = ListeningServer(self)
        self.server = self.listening.server
        self.home = Path(self.mktemp()).resolve()
        self.home.mkdir(mode=0o700)
        self.mbox = self.home / "mbox"
        self.mbox.touch()
        self.stored = [message(n) for n in range(1, 4)]
        self.server.deliver(*self.stored)

    def fetch(self, keep: bool):
        rcfile = self.home / "fetchmailrc"
        rcfile.write_text(
            f'set idfile "{self.home / "fetchids"}"\n'
            f"poll 127.0.0.1 proto pop3 port {self.listening.number} timeout 30 {'uidl' if keep else ''}\n"
            f'  user "alice" password "secret" is "alice" here\n'
            f"  sslproto '' {'keep' if keep else 'nokeep fetchall'}\n"
            f'  mda "cat >> {self.mbox}"\n'
        )
        rcfile.chmod(0o600)
        command = [self.fetchmail, "--nodetach", "--nosyslog", "-f", str(rcfile),
                   "--pidfile", str(self.home / "pid")]
        return threads.deferToThread(run, command, {"FETCHMAILHOME": str(self.home), "HOME": str(self.home)})

    def test_keep_with_uidl_fetches_nothing_the_second_time(self):
        def first(result: subprocess.CompletedProcess):
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(self.mbox.read_bytes().count(b"Subject: message"), 3)
            self.assertEqual(len(self.server.inbox().messages()), 3)
            return self.fetch(keep=True)

        def second(result: subprocess.CompletedProcess) -> None:
            self.assertEqual(result.returncode, 1, result.stderr)  # 1: no mail
            self.assertEqual(self.mbox.read_bytes().count(b"Subject: message"), 3)
            self.assertEqual(len(self.server.inbox().messages()), 3)

        return self.fetch(keep=True).addCallback(first).addCallback(second)

    def test_fetch_and_delete(self):
        def check(result: subprocess.CompletedProcess) -> None:
            self.assertEqual(result.returncode, 0, result.stderr)
            received = self.mbox.read_bytes().replace(b"\r\n", b"\n")
            for stored in self.stored:
                self.assertIn(stored.replace(b"\r\n", b"\n").split(b"\n\n", 1)[1], received)
            self.assertEqual(self.server.inbox().messages(), [])

        return self.fetch(keep=False).addCallback(check)


class GetmailTests(TestCase):
    """getmail6's SimplePOP3Retriever, with its UIDL ``oldmail`` file in keep mode."""

    timeout = 180

    def setUp(self) -> None:
        self.getmail = need("getmail", "getmail6")
        self.listening = ListeningServer(self)
        self.server = self.listening.server
        self.home = Path(self.mktemp()).resolve()
        self.home.mkdir(mode=0o700)
        self.mbox = self.home / "mbox"
        self.mbox.touch()
        self.stored = [message(n) for n in range(1, 4)] + [b"Subject: dot\r\n\r\n.\r\n"]
        self.server.deliver(*self.stored)

    def fetch(self, delete: bool):
        rcfile = self.home / "getmailrc"
        rcfile.write_text(
            "[retriever]\ntype = SimplePOP3Retriever\nserver = 127.0.0.1\n"
            f"port = {self.listening.number}\nusername = alice\npassword = secret\n\n"
            # getmail's mbox and maildir destinations refuse to run as root (CI is root): an MDA it may run.
            "[destination]\ntype = MDA_external\npath = /bin/sh\nunixfrom = true\n"
            f"arguments = (\"-c\", \"cat >> {self.mbox}\")\nallow_root_commands = true\n\n"
            f"[options]\nverbose = 0\ndelete = {str(delete).lower()}\nread_all = {str(delete).lower()}\n"
        )
        command = [self.getmail, f"--getmaildir={self.home}", f"--rcfile={rcfile}"]
        return threads.deferToThread(run, command, {"HOME": str(self.home)})

    def count(self) -> int:
        return self.mbox.read_bytes().count(b"Subject: ")

    def test_keep_with_uidl_fetches_nothing_the_second_time(self):
        def first(result: subprocess.CompletedProcess):
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(self.count(), 4)
            self.assertEqual(len(self.server.inbox().messages()), 4)
            return self.fetch(delete=False)

        def second(result: subprocess.CompletedProcess) -> None:
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(self.count(), 4)
            self.assertEqual(len(self.server.inbox().messages()), 4)

        return self.fetch(delete=False).addCallback(first).addCallback(second)

    def test_fetch_and_delete(self):
        def check(result: subprocess.CompletedProcess) -> None:
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(self.count(), 4)
            self.assertIn(b"Subject: dot\n\n.\n", self.mbox.read_bytes().replace(b"\r\n", b"\n"))
            self.assertEqual(self.server.inbox().messages(), [])

        return self.fetch(delete=True).addCallback(check)
