"""Real clients log in with Kerberos: curl (IMAP, POP3, SMTP), msmtp (submission) and fetchmail (IMAP, POP3);
and the real twistd with two workers shares its replay cache.

A throwaway realm (tests/kerberos_support.py), ``kinit alice`` as a person
would, and IMAP, POP3 and submission listening on 127.0.0.1 in this process
on the trial reactor, with the realm's keytab; each client runs as a
subprocess with the realm's ``KRB5_CONFIG`` and credential cache and no
password at all, so only GSSAPI can log it in. The clients connect to
``localhost``, the host name the service keys are for. A client that is not
installed skips the test, saying which package to install; CI installs them.
"""

from __future__ import annotations

import base64
import os
import shutil

from twisted.internet import reactor, utils
from twisted.trial.unittest import SkipTest, TestCase

from cyrusmail.imap.server import IMAPFactory
from cyrusmail.pop3.server import POP3Factory
from tests.helpers import add_user, make_context
from tests.kerberos_support import KDC, REALM, SECTIONS, SASLClient, need_kerberos
from tests.test_smtp_session_support import inbox_messages, submission_factory
from tests.test_workers import Client, MultiWorkerTests

MESSAGE = b"From: alice@example.org\r\nTo: alice@example.org\r\nSubject: kerberos\r\n\r\nSent with a ticket.\r\n"


def need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise SkipTest(f"{tool} is not installed (apt-get install -y {package})")
    return path


class ClientTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        need_kerberos()
        self.kdc = KDC(self)
        self.kdc.kinit("alice")
        self.context = make_context(self.mktemp(), reactor, **SECTIONS,
                                    auth={"keytab": str(self.kdc.keytab), "gssapi_realms": REALM})
        self.addCleanup(self.context.store.close)
        self.addCleanup(self.context.users.close)
        add_user(self.context, "alice")
        self.context.realm.account("alice").mailboxes.open("INBOX").append(MESSAGE)
        self.ports = {}
        for name, factory in (("imap", IMAPFactory(self.context, "imap", reactor)),
                              ("pop3", POP3Factory(self.context, "pop3")),
                              ("submission", submission_factory(self.context, reactor))):
            port = reactor.listenTCP(0, factory, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            self.ports[name] = port.getHost().port

    def run_client(self, *command: str, stdin: bytes | None = None):
        """The client's (output, errors, exit code), once it has ended; its environment points at the realm."""
        env = {**os.environ, "HOME": self.kdc.folder.as_posix()}
        if stdin is None:
            return utils.getProcessOutputAndValue(command[0], command[1:], env=env)
        return _with_input(command, env, stdin)

    def ok(self, result, what: str) -> str:
        out, err, code = result
        self.assertEqual(code, 0, f"{what}: {out.decode(errors='replace')}{err.decode(errors='replace')}")
        return out.decode("utf-8", "replace")

    def test_curl_imap(self):
        curl = need("curl", "curl")
        url = f"imap://localhost:{self.ports['imap']}/INBOX;UID=1"
        done = self.run_client(curl, "-4", "-sS", "--max-time", "60", "-u", ":", "--login-options", "AUTH=GSSAPI", url)
        return done.addCallback(lambda result: self.assertIn("Sent with a ticket.", self.ok(result, "curl imap")))

    def test_curl_pop3(self):
        curl = need("curl", "curl")
        url = f"pop3://localhost:{self.ports['pop3']}/1"
        done = self.run_client(curl, "-4", "-sS", "--max-time", "60", "-u", ":", "--login-options", "AUTH=GSSAPI", url)
        return done.addCallback(lambda result: self.assertIn("Sent with a ticket.", self.ok(result, "curl pop3")))

    def test_curl_smtp_names_the_principal(self):
        curl = need("curl", "curl")
        url = f"smtp://localhost:{self.ports['submission']}"
        done = self.run_client(curl, "-4", "-sS", "--max-time", "60", "-u", ":", "--login-options", "AUTH=GSSAPI",
                               "--mail-from", "alice@example.org", "--mail-rcpt", "alice@example.org", "-T", "-",
                               url, stdin=MESSAGE)
        return done.addCallback(self.check_submitted, "curl smtp")

    def test_msmtp(self):
        msmtp = need("msmtp", "msmtp")
        done = self.run_client(msmtp, "--host=localhost", f"--port={self.ports['submission']}", "--tls=off",
                               "--auth=gssapi", "--user=alice", "--from=alice@example.org", "alice@example.org",
                               stdin=MESSAGE)
        return done.addCallback(self.check_submitted, "msmtp")

    def check_submitted(self, result, what: str) -> None:
        self.ok(result, what)
        stored = inbox_messages(self.context, "alice")
        self.assertEqual(len(stored), 2)
        header = stored[-1].split(b"\r\n\r\n", 1)[0].decode()
        self.assertIn(f"(authenticated user alice by GSSAPI as alice@{REALM})", header)

    def fetchmail(self, protocol: str):
        fetchmail = need("fetchmail", "fetchmail")
        mda = self.kdc.folder / "delivered"
        done = self.run_client(fetchmail, "--nosyslog", "-f", "/dev/null", "--pidfile", str(self.kdc.folder / "pid"),
                               "-p", protocol, "-P", str(self.ports[protocol.lower()]),
                               "--auth", "gssapi", "-u", "alice", "--sslproto", "", "--keep", "--all",
                               "--mda", f"sh -c 'cat >> {mda}'", "localhost")

        def check(result) -> None:
            self.ok(result, f"fetchmail {protocol}")
            self.assertIn(b"Sent with a ticket.", mda.read_bytes())

        return done.addCallback(check)

    def test_fetchmail_imap(self):
        return self.fetchmail("IMAP")

    def test_fetchmail_pop3(self):
        return self.fetchmail("POP3")


def _with_input(command, env, stdin: bytes):
    """getProcessOutputAndValue with ``stdin`` written to the process."""
    from twisted.internet import defer, protocol

    class Collect(protocol.ProcessProtocol):
        def __init__(self) -> None:
            self.out, self.err = [], []
            self.done = defer.Deferred()

        def connectionMade(self) -> None:
            self.transport.write(stdin)
            self.transport.closeStdin()

        def outReceived(self, data: bytes) -> None:
            self.out.append(data)

        def errReceived(self, data: bytes) -> None:
            self.err.append(data)

        def processEnded(self, reason) -> None:
            self.done.callback((b"".join(self.out), b"".join(self.err), reason.value.exitCode))

    collect = Collect()
    reactor.spawnProcess(collect, command[0], list(command), env=env)
    return collect.done


class WorkerTests(MultiWorkerTests):
    """The real twistd with two workers: the replay cache in the data folder is one for both."""

    SERVICES = ("imap",)

    def setUp(self) -> None:
        need_kerberos()
        super().setUp()
        self.kdc = KDC(self)  # the server inherits KRB5_CONFIG; it needs only the keytab
        self.kdc.kinit("alice")
        self.write_config(queue=f"[auth]\nkeytab = {self.kdc.keytab}\ngssapi_realms = {REALM}\n")

    def authenticate(self, client: Client, tag: str, token: bytes, sasl: SASLClient) -> str:
        """AUTHENTICATE GSSAPI with ``token`` first, ``sasl`` answering the challenges; the tagged line."""
        client.write(f"{tag} AUTHENTICATE GSSAPI {base64.b64encode(token).decode()}")
        while True:
            line = client.read()
            if not line.startswith("+ "):
                return line
            client.write(base64.b64encode(sasl.respond(base64.b64decode(line[2:]))).decode())

    def test_a_token_used_on_one_worker_is_a_replay_on_the_other(self):
        self.start()
        first, second = self.on_each_worker(lambda: Client(self.ports["imap"]))
        sasl = SASLClient("imap")
        token = sasl.first()
        self.assertRegex(self.authenticate(first, "a", token, sasl), r"^a OK .*Logged in\r\n$")
        second.write(f"b AUTHENTICATE GSSAPI {base64.b64encode(token).decode()}")
        self.assertEqual(second.read(), "b NO [AUTHENTICATIONFAILED] Authentication failed\r\n")
        fresh = SASLClient("imap")  # after the throttle's delay (the supervisor's, one for both)
        self.assertRegex(self.authenticate(second, "c", fresh.first(), fresh), r"^c OK .*Logged in\r\n$")
        self.assertIn("Request is a replay", self.stop())
