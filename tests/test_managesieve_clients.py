"""ManageSieve on a loopback port driven by real clients: sieve-connect (Debian) and sievelib's client (PyPI).

Each uploads, checks, lists, activates, downloads and deletes scripts over
STARTTLS; then messages delivered through LMTP (Python's smtplib client)
are filed by the script sieve-connect activated.  A client that is not
installed skips with a reason (CI installs both).  Blocking clients run in
threads, so the reactor keeps serving.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import sys
import textwrap

from twisted.internet import defer, reactor, task, threads
from twisted.trial import unittest

from cyrusmail.managesieve.server import make_factory
from cyrusmail.sieve.scripts import scripts_of
from cyrusmail.smtp.server import make_lmtp_factory
from tests.helpers import add_user, make_context
from tests.test_queue import async_test

SCRIPT = 'require ["fileinto", "mailbox"];\r\nif header :contains "subject" "report" {\r\n' \
         '  fileinto :create "Reports";\r\n}\r\n'


class ListeningServer:
    def __init__(self, test: unittest.TestCase, data: str) -> None:
        self.context = make_context(data, reactor)
        add_user(self.context, "alice")
        port = reactor.listenTCP(0, make_factory(self.context, "managesieve"), interface="127.0.0.1")
        test.addCleanup(port.stopListening)
        lmtp = reactor.listenTCP(0, make_lmtp_factory(self.context, "lmtp"), interface="127.0.0.1")
        test.addCleanup(lmtp.stopListening)
        test.addCleanup(self.context.store.close)
        test.addCleanup(lambda: defer.Deferred.fromCoroutine(self.sessions_closed()))
        self.port = port.getHost().port
        self.lmtp_port = lmtp.getHost().port
        self.scripts = scripts_of(self.context)

    async def sessions_closed(self) -> None:
        """Wait (30 s at most) until the server has seen every client go, so no session's timer outlives the test."""
        for _ in range(600):
            if not len(self.context.sessions):
                return
            await task.deferLater(reactor, 0.05, lambda: None)

    def deliver(self, subject: str) -> dict:
        """One message to alice through LMTP (Python's smtplib client); the per-recipient refusals."""
        message = f"From: someone@remote.example\r\nTo: alice@example.org\r\nSubject: {subject}\r\n\r\nHi.\r\n"
        with smtplib.LMTP("127.0.0.1", self.lmtp_port) as client:
            return client.sendmail("someone@remote.example", ["alice@example.org"], message)

    def count(self, folder: str) -> int:
        mailboxes = self.context.realm.account("alice").mailboxes
        return len(mailboxes.open(folder).messages()) if mailboxes.exists(folder) else 0


def run(argv: list[str], stdin: bytes = b"", env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=60, check=False, env=env)


class SieveConnectTests(unittest.TestCase):
    timeout = 120

    def setUp(self) -> None:
        if shutil.which("sieve-connect") is None:
            raise unittest.SkipTest("sieve-connect is not installed (apt-get install sieve-connect)")
        self.server = ListeningServer(self, self.mktemp())
        self.folder = self.mktemp()
        os.makedirs(self.folder)

    def sieve_connect(self, *action: str) -> subprocess.CompletedProcess:
        argv = ["sieve-connect", "--server", "127.0.0.1", "--port", str(self.server.port), "--user", "alice",
                "--passwordfd", "0", "--notlsverify", "--authmech", "PLAIN", *action]
        result = run(argv, b"secret\n")
        self.assertEqual(result.returncode, 0, (result.stdout + result.stderr).decode(errors="replace")[-2000:])
        return result

    @async_test
    async def test_upload_activate_list_download_delete(self) -> None:
        local = os.path.join(self.folder, "filter.sieve")

        def session() -> dict:
            with open(local, "w", encoding="utf-8", newline="") as out:
                out.write(SCRIPT)
            seen = {}
            self.sieve_connect("--checkscript", "--localsieve", local)
            self.sieve_connect("--upload", "--localsieve", local, "--remotesieve", "filter")
            self.sieve_connect("--activate", "--remotesieve", "filter")
            seen["active"] = self.server.scripts.active("alice")
            seen["list"] = self.sieve_connect("--list").stdout.decode()
            # the activated script files a report delivered through LMTP, and keeps the rest
            seen["refused"] = [self.server.deliver("Weekly report"), self.server.deliver("Lunch?")]
            copy = os.path.join(self.folder, "copy.sieve")
            self.sieve_connect("--download", "--remotesieve", "filter", "--localsieve", copy)
            with open(copy, encoding="utf-8", newline="") as source:
                seen["download"] = source.read()
            self.sieve_connect("--deactivate")
            self.sieve_connect("--delete", "--remotesieve", "filter")
            seen["after"] = self.server.scripts.list("alice")
            return seen

        seen = await threads.deferToThread(session)
        self.assertEqual(seen["active"], ("filter", SCRIPT))
        self.assertIn("filter", seen["list"])
        self.assertEqual(seen["refused"], [{}, {}])
        self.assertEqual((self.server.count("Reports"), self.server.count("INBOX")), (1, 1))
        self.assertEqual(seen["download"].replace("\r\n", "\n"), SCRIPT.replace("\r\n", "\n"))
        self.assertEqual(seen["after"], [])

    @async_test
    async def test_a_bad_script_is_refused_with_its_line(self) -> None:
        local = os.path.join(self.folder, "bad.sieve")
        argv = ["sieve-connect", "--server", "127.0.0.1", "--port", str(self.server.port), "--user", "alice",
                "--passwordfd", "0", "--notlsverify", "--upload", "--localsieve", local, "--remotesieve", "bad"]

        def upload() -> subprocess.CompletedProcess:
            with open(local, "w", encoding="utf-8") as out:
                out.write('require "fileinto";\nkeep;\nfileinto;\n')
            return run(argv, b"secret\n")

        result = await threads.deferToThread(upload)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"line 3", result.stdout + result.stderr)
        self.assertEqual(self.server.scripts.list("alice"), [])


SIEVELIB_CLIENT = textwrap.dedent("""
    import json, sys
    from sievelib.managesieve import Client
    port, script = int(sys.argv[1]), sys.argv[2]
    client = Client("localhost", port)
    seen = {"connect": client.connect("alice", "secret", starttls=True, authmech="PLAIN")}
    seen["tls"] = client.sock.version()
    seen["check"] = client.checkscript(script)
    seen["bad"] = client.checkscript("if true {")
    seen["put"] = client.putscript("main", script)
    seen["put_other"] = client.putscript("other", "keep;\\r\\n")
    seen["active"] = client.setactive("main")
    seen["list"] = client.listscripts()
    seen["get"] = client.getscript("main")
    seen["havespace"] = client.havespace("big", 10 ** 9)
    seen["rename"] = client.renamescript("other", "spare")
    seen["delete"] = client.deletescript("spare")
    seen["list_after"] = client.listscripts()
    client.logout()
    print(json.dumps(seen))
""")


class SievelibTests(unittest.TestCase):
    timeout = 120

    def setUp(self) -> None:
        try:
            import sievelib.managesieve  # noqa: F401
        except ImportError:
            raise unittest.SkipTest("sievelib is not installed (pip install sievelib)") from None
        self.server = ListeningServer(self, self.mktemp())

    @async_test
    async def test_sievelib_client_over_starttls(self) -> None:
        import json

        from cyrusmail import tls

        cert, _ = tls.self_signed_paths(self.server.context.config.data)
        # sievelib verifies the certificate: trust the test server's self-signed one (it names localhost)
        env = {**os.environ, "SSL_CERT_FILE": str(cert)}
        argv = [sys.executable, "-c", SIEVELIB_CLIENT, str(self.server.port), SCRIPT]
        result = await threads.deferToThread(run, argv, b"", env)
        self.assertEqual(result.returncode, 0, result.stderr.decode(errors="replace")[-3000:])
        seen = json.loads(result.stdout)
        self.assertTrue(seen["connect"])
        self.assertTrue(seen["tls"].startswith("TLS"))
        self.assertTrue(seen["check"])
        self.assertFalse(seen["bad"])
        self.assertTrue(seen["put"] and seen["put_other"] and seen["active"])
        self.assertEqual(seen["list"], ["main", ["other"]])
        self.assertEqual(seen["get"].replace("\r\n", "\n").strip(), SCRIPT.replace("\r\n", "\n").strip())
        self.assertFalse(seen["havespace"])
        self.assertTrue(seen["rename"] and seen["delete"])
        self.assertEqual(seen["list_after"], ["main", []])
        self.assertEqual(self.server.scripts.active("alice"), ("main", SCRIPT))
