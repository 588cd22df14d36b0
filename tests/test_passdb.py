"""Where passwords are checked: a Dovecot-style passwd-file, and LDAP (a real slapd on loopback)."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import bcrypt
from argon2 import PasswordHasher
from passlib.hash import sha512_crypt
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SkipTest, TestCase

from cyrusmail import sasl
from cyrusmail.admin.main import main as admin_main
from cyrusmail.auth.passwdfile import PasswdFile
from cyrusmail.config import ConfigError
from cyrusmail.pop3.server import POP3Factory
from tests.helpers import make_config, make_context
from tests.test_pop3_support import Conversation


def ssha512(password: str, salt: bytes = b"saltsalt") -> str:
    return "{SSHA512}" + base64.b64encode(hashlib.sha512(password.encode() + salt).digest() + salt).decode()


class Logged:
    def __init__(self, testcase: TestCase) -> None:
        self.lines: list[str] = []
        globalLogPublisher.addObserver(self)
        testcase.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event) -> None:
        self.lines.append(formatEvent(event))

    def has(self, text: str) -> bool:
        return any(text in line for line in self.lines)


class PasswdFileSchemeTests(TestCase):
    def setUp(self) -> None:
        self.logged = Logged(self)
        self.path = Path(self.mktemp())
        self.path.write_text("\n".join([
            "# accounts",
            "blf:{BLF-CRYPT}" + bcrypt.hashpw(b"pw-blf", bcrypt.gensalt(rounds=4)).decode(),
            "bare@example.org:" + bcrypt.hashpw(b"pw-bare", bcrypt.gensalt(rounds=4)).decode() + "::::::",
            "argon:{ARGON2ID}" + PasswordHasher(time_cost=1, memory_cost=8192).hash("pw-argon"),
            "crypt:{SHA512-CRYPT}" + sha512_crypt.using(rounds=5000).hash("pw-crypt") + ":1000:1000::/home/crypt::",
            "ssha:" + ssha512("pw-ssha"),
            "plain:{PLAIN}pw-plain",
            "cram:{CRAM-MD5}e02d374fde0dc75a17a557039a3a5338c7743304777dccd376f332bee68d2cf6",
            "this line has no colon",
            "",
        ]))

    def check(self, passdb, login: str, password: str):
        return passdb.checker(login)(password)

    def test_each_scheme(self) -> None:
        passdb = PasswdFile(self.path, ["example.org"])
        for login, password in [("blf", "pw-blf"), ("bare", "pw-bare"), ("argon", "pw-argon"),
                                ("crypt@example.org", "pw-crypt"), ("SSHA", "pw-ssha")]:
            with self.subTest(login=login):
                self.assertEqual(self.check(passdb, login, password), login.split("@")[0].lower())
                self.assertIsNone(self.check(passdb, login, password + "x"))
        self.assertIsNone(self.check(passdb, "plain", "pw-plain"))  # not without allow_plain
        self.assertIsNone(self.check(passdb, "cram", "anything"))
        self.assertIsNone(self.check(passdb, "nobody", "pw-blf"))
        self.assertTrue(self.logged.has("skipped unreadable line(s) 9"), self.logged.lines)
        self.assertTrue(self.logged.has("2 account(s) with a scheme that is refused"), self.logged.lines)
        self.assertFalse(any("this line has no colon" in line for line in self.logged.lines))

    def test_plain_when_allowed(self) -> None:
        self.assertEqual(self.check(PasswdFile(self.path, ["example.org"], allow_plain=True), "plain", "pw-plain"),
                         "plain")

    def test_read_again_when_changed_and_kept_when_gone(self) -> None:
        passdb = PasswdFile(self.path, ["example.org"])
        self.path.write_text("ssha:" + ssha512("new-pw") + "\n")
        self.assertEqual(self.check(passdb, "ssha", "new-pw"), "ssha")
        self.assertIsNone(self.check(passdb, "ssha", "pw-ssha"))
        self.path.unlink()
        self.assertEqual(self.check(passdb, "ssha", "new-pw"), "ssha")
        self.assertTrue(self.logged.has("keeping what was read before"))

    def test_a_missing_file_stops_the_start(self) -> None:
        self.assertRaises(OSError, PasswdFile, Path(self.mktemp()), [])


class PasswdFileLoginTests(TestCase):
    """The whole path through POP3: passwd-file checks, the mail account is in users.sqlite."""

    def setUp(self) -> None:
        folder = Path(self.mktemp())
        folder.mkdir()
        self.passwd = folder / "passwd"
        self.passwd.write_text("alice:" + ssha512("alice-pw") + "\nbob@example.org:" + ssha512("bob-pw") + "\n")
        self.logged = Logged(self)

    def server(self, **auth: str):
        self.clock = Clock()
        context = make_context(self.mktemp(), reactor=self.clock, auth={"passdb": "passwd-file", **auth},
                               passwd_file={"path": str(self.passwd)},
                               pop3={"enabled": "yes", "listen": "tcp:0:interface=127.0.0.1"})
        self.addCleanup(context.users.close)
        self.addCleanup(context.store.close)
        checker = context.portal.checkers[UsernamePassword.__implemented__.declared[0]]
        checker.hash_in_thread = False
        self.context = context
        self.factory = POP3Factory(context, "pop3")

    def login(self, user: str, password: str) -> bytes:
        conversation = Conversation(self, self.factory, self.clock, "127.0.0.1", False)
        self.addCleanup(conversation.close)
        conversation.command(f"USER {user}")
        reply = conversation.command(f"PASS {password}")
        self.clock.advance(60)
        return reply + conversation.take()

    def test_made_at_first_login_when_allowed(self) -> None:
        self.server(create_on_login="yes")
        self.assertTrue(self.login("alice", "alice-pw").startswith(b"+OK alice has 0 messages"))
        self.assertEqual(self.context.users.resolve("alice", ["example.org"]), "alice")
        self.assertTrue(self.logged.has("mail account alice made at its first login (passwd-file passdb)"))
        self.assertEqual(self.login("bob", "wrong"), b"-ERR [AUTH] Authentication failed\r\n")
        self.assertIsNone(self.context.users.resolve("bob", ["example.org"]))

    def test_refused_without_a_mail_account(self) -> None:
        self.server()
        self.assertEqual(self.login("alice", "alice-pw"), b"-ERR [AUTH] Authentication failed\r\n")
        self.assertTrue(self.logged.has("alice passed the passwd-file passdb but has no mail account"))
        self.context.users.add("alice", None)
        self.assertTrue(self.login("alice", "alice-pw").startswith(b"+OK alice has"))

    def test_no_scram_and_no_builtin_password(self) -> None:
        self.server(create_on_login="yes")
        channel = sasl.Channel(plaintext=True, local=True, checks=dict(self.context.portal.checkers))
        self.assertEqual(sasl.offered(channel), ["PLAIN", "LOGIN"])
        self.assertEqual(self.context.users.password_hash(self.context.users.add("carol", None)), "")
        self.assertEqual(self.login("carol", "anything"), b"-ERR [AUTH] Authentication failed\r\n")

    def test_config(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            make_config(self.mktemp(), auth={"passdb": "passwd-file"})
        self.assertIn("[passwd_file] path: is required", str(caught.exception))
        with self.assertRaises(ConfigError):
            make_config(self.mktemp(), auth={"passdb": "shadow"})


class AdminNoPasswordTests(TestCase):
    def test_user_add_no_password(self) -> None:
        folder = Path(self.mktemp())
        folder.mkdir()
        config = folder / "cyrusmail.conf"
        config.write_text(f"[server]\ndata = {folder / 'data'}\nhostname = mail.example.org\ndomains = example.org\n")
        self.assertEqual(admin_main(["-c", str(config), "user", "add", "dave", "--no-password"]), 0)
        self.assertNotEqual(admin_main(["-c", str(config), "user", "add", "erin", "--no-password",
                                        "--password", "x"]), 0)


# -- LDAP against a real slapd --------------------------------------------------------------------------

SLAPD = "/usr/sbin/slapd"
BASE = "dc=example,dc=org"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Slapd:
    """A throw-away OpenLDAP server on loopback, in a temporary folder, with a few posixAccounts."""

    def __init__(self, testcase: TestCase) -> None:
        if not os.path.exists(SLAPD) or shutil.which("slappasswd") is None:
            raise SkipTest("slapd is not installed (apt-get install slapd ldap-utils)")
        from cyrusmail import tls

        folder = Path(testcase.mktemp()).absolute()
        (folder / "db").mkdir(parents=True)
        schema = "/etc/ldap/schema"
        self.certificate, key = folder / "cert.pem", folder / "key.pem"
        tls.make_self_signed("localhost", self.certificate, key)  # names 127.0.0.1 too
        (folder / "slapd.conf").write_text(f"""
include {schema}/core.schema
include {schema}/cosine.schema
include {schema}/nis.schema
include {schema}/inetorgperson.schema
pidfile {folder}/slapd.pid
TLSCertificateFile {self.certificate}
TLSCertificateKeyFile {key}
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 10485760
directory {folder}/db
suffix "{BASE}"
rootdn "cn=admin,{BASE}"
rootpw admin-secret
access to attrs=userPassword by anonymous auth by * none
access to * by * read
""")
        self.port, self.tls_port = free_port(), free_port()
        self.uri = f"ldap://127.0.0.1:{self.port}"
        self.tls_uri = f"ldaps://127.0.0.1:{self.tls_port}"
        self.process = subprocess.Popen([SLAPD, "-f", str(folder / "slapd.conf"), "-h",
                                         f"{self.uri}/ {self.tls_uri}/", "-d", "0"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        testcase.addCleanup(self.stop)
        deadline = time.monotonic() + 30
        for port in (self.port, self.tls_port):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"slapd did not start: {self.process.stderr.read()[-500:]!r}") from None
                    time.sleep(0.1)
        self.add_entries()

    def add_entries(self) -> None:
        import ldap3

        connection = ldap3.Connection(ldap3.Server(self.uri), f"cn=admin,{BASE}", "admin-secret", auto_bind=True)
        connection.add(BASE, ["dcObject", "organization"], {"o": "Example", "dc": "example"})
        connection.add(f"ou=people,{BASE}", ["organizationalUnit"], {"ou": "people"})
        for uid, number, password in [("alice", 1000, "alice-ldap"), ("bob", 1001, "bob-ldap"),
                                      ("twin", 1002, "twin-1"), ("twin", 1003, "twin-2"),
                                      ("star*", 1004, "star-pw")]:
            hashed = subprocess.run(["slappasswd", "-s", password], capture_output=True, text=True,
                                    check=True).stdout.strip()
            connection.add(f"cn={uid.strip('*')}{number},ou=people,{BASE}", ["posixAccount", "inetOrgPerson"],
                           {"uid": uid, "cn": uid, "sn": uid, "uidNumber": number, "gidNumber": number,
                            "homeDirectory": f"/home/{uid}", "userPassword": hashed})
        connection.unbind()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stderr.close()


class LDAPTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.slapd = Slapd(self)
        self.logged = Logged(self)
        self.context = make_context(self.mktemp(), auth={"passdb": "ldap", "create_on_login": "yes"},
                                    ldap={"uri": self.slapd.uri, "base": BASE, "timeout": "5s"})
        self.addCleanup(self.context.users.close)
        self.addCleanup(self.context.store.close)
        self.passdb = self.context.portal.checkers[UsernamePassword.__implemented__.declared[0]].passdb

    def test_bind_as_the_user(self) -> None:
        check = self.passdb.checker
        self.assertEqual(check("alice")("alice-ldap"), "alice")
        self.assertEqual(check("Alice@Example.org")("alice-ldap"), "alice")
        self.assertIsNone(check("alice")("bob-ldap"))
        self.assertIsNone(check("nobody")("alice-ldap"))
        self.assertIsNone(check("twin")("twin-1"))  # two entries match: refused
        self.assertTrue(self.logged.has("ldap: 2 entries match twin; refused"))

    def test_an_empty_password_is_no_anonymous_bind(self) -> None:
        self.assertIsNone(self.passdb.checker("alice")(""))

    def test_filter_injection_is_escaped(self) -> None:
        self.assertIsNone(self.passdb.checker("*")("alice-ldap"))
        self.assertEqual(self.passdb.search_filter("a*)(uid=*"), "(&(objectClass=posixAccount)(uid=a\\2a\\29\\28uid=\\2a))")

    def test_through_the_portal_with_a_service_bind(self) -> None:
        from cyrusmail.account import IAccount
        from cyrusmail.auth.throttle import UsernamePasswordFrom

        context = make_context(self.mktemp(), auth={"passdb": "ldap", "create_on_login": "yes"},
                               ldap={"uri": self.slapd.uri, "base": BASE, "bind_dn": f"cn=admin,{BASE}",
                                     "bind_password": "admin-secret", "filter": "(uid=%n)"})
        self.addCleanup(context.users.close)
        self.addCleanup(context.store.close)
        login = context.portal.login(UsernamePasswordFrom("bob", "bob-ldap", "127.0.0.1"), None, IAccount)

        def logged_in(result):
            self.assertEqual(result[1].user, "bob")
            return self.assertFailure(context.portal.login(UsernamePasswordFrom("bob", "x", "127.0.0.1"), None,
                                                           IAccount), UnauthorizedLogin)

        return login.addCallback(logged_in)

    def test_ldaps_and_starttls_check_the_servers_certificate(self) -> None:
        from cyrusmail.auth.ldap import LDAPPasswords

        table = [
            (self.slapd.tls_uri, False, self.slapd.certificate, "alice"),
            (self.slapd.uri, True, self.slapd.certificate, "alice"),
            (self.slapd.tls_uri, False, None, None),  # self-signed, not among the system's CAs: refused
            (self.slapd.uri, True, None, None),
        ]
        for uri, starttls, ca_file, expected in table:
            with self.subTest(uri=uri, starttls=starttls, ca_file=ca_file):
                passdb = LDAPPasswords(uri, BASE, "(uid=%u)", ["example.org"], starttls=starttls, ca_file=ca_file,
                                       timeout=5)
                self.assertEqual(passdb.checker("alice")("alice-ldap"), expected)
        self.assertTrue(self.logged.has("ldap: cannot check alice at ldaps://127.0.0.1"), self.logged.lines)

    def test_a_server_that_went_away_is_a_clean_failure(self) -> None:
        self.slapd.stop()
        self.assertIsNone(self.passdb.checker("alice")("alice-ldap"))
        self.assertTrue(self.logged.has("ldap: cannot check alice at ldap://127.0.0.1"), self.logged.lines)

    def test_config(self) -> None:
        for ldap, message in [({"base": BASE}, "[ldap] uri: is required"),
                              ({"uri": "ldap://h"}, "[ldap] base: is required"),
                              ({"uri": "ldap://h", "base": BASE, "filter": "(uid=x)"}, "must hold %u"),
                              ({"uri": "ldaps://h", "base": BASE, "starttls": "yes"}, "TLS already")]:
            with self.subTest(ldap=ldap), self.assertRaises(ConfigError) as caught:
                make_config(self.mktemp(), auth={"passdb": "ldap"}, ldap=ldap)
            self.assertIn(message, str(caught.exception))
