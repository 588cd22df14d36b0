"""OAUTHBEARER (RFC 7628) and XOAUTH2: bearer tokens checked against the configured issuer.

Tokens are real JWTs signed with keys made here (PyJWT on the issuing
side too); introspection (RFC 7662) is asked of a small twisted.web issuer
on loopback; curl is the real client.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import reactor, threads
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web import resource, server

from cyrusmail.config import ConfigError
from cyrusmail.pop3.server import POP3Factory
from tests.helpers import add_user, make_config, make_context
from tests.test_pop3_support import Conversation

ISSUER = "https://id.example.org"


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def write_public(key, path: Path) -> Path:
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def token(key, lifetime: float = 600, headers: dict | None = None, **claims) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": "mail", "email": "alice@example.org", "iat": now, "exp": now + lifetime,
               **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm="ES256", headers=headers)


def oauthbearer(value: str, authzid: str = "alice@example.org") -> str:
    return b64(f"n,a={authzid},\x01host=mail.example.org\x01port=110\x01auth=Bearer {value}\x01\x01")


def xoauth2(value: str, user: str = "alice@example.org") -> str:
    return b64(f"user={user}\x01auth=Bearer {value}\x01\x01")


class TokenServer:
    """A POP3 server (in memory, Clock) whose [oauth] checks JWTs with one key."""

    def __init__(self, testcase: TestCase, **oauth: str) -> None:
        folder = Path(testcase.mktemp())
        folder.mkdir()
        self.key = new_key()
        settings = {"issuer": ISSUER, "audience": "mail", "jwt_key": str(write_public(self.key, folder / "k.pem"))}
        settings.update(oauth)
        self.clock = Clock()
        self.context = make_context(folder / "data", reactor=self.clock, oauth=settings,
                                    pop3={"enabled": "yes", "listen": "tcp:0:interface=127.0.0.1"})
        testcase.addCleanup(self.context.users.close)
        testcase.addCleanup(self.context.store.close)
        add_user(self.context, "alice")
        add_user(self.context, "bob")
        self.factory = POP3Factory(self.context, "pop3")
        self.testcase = testcase

    def connect(self, peer: str = "127.0.0.1") -> Conversation:
        conversation = Conversation(self.testcase, self.factory, self.clock, peer, False)
        self.testcase.addCleanup(conversation.close)
        return conversation


class BearerTests(TestCase):
    def setUp(self) -> None:
        self.server = TokenServer(self)

    def refused(self, conversation: Conversation, line: str, mechanism: str = "OAUTHBEARER") -> dict:
        """Send AUTH; expect the JSON error challenge, answer it, expect -ERR; the JSON."""
        reply = conversation.command(f"AUTH {mechanism} {line}")
        if not reply:  # a second failure waits its turn in the throttle
            self.server.clock.advance(60)
            reply = conversation.take()
        self.assertTrue(reply.startswith(b"+ "), reply)
        status = json.loads(base64.b64decode(reply[2:]))
        self.assertEqual(conversation.command(b64("\x01")), b"-ERR [AUTH] Authentication failed\r\n")
        return status

    def test_offered_on_loopback_and_in_tls_only(self) -> None:
        self.assertIn(b"OAUTHBEARER\r\nXOAUTH2\r\n", self.server.connect().command("AUTH"))
        conversation = self.server.connect(peer="192.0.2.7")
        self.assertEqual(conversation.command("AUTH"), b"+OK SASL mechanisms follow\r\n.\r\n")
        self.assertEqual(conversation.command("AUTH XOAUTH2 " + xoauth2(token(self.server.key))),
                         b"-ERR [AUTH] Mechanism XOAUTH2 is not available on this connection\r\n")

    def test_oauthbearer_logs_in(self) -> None:
        reply = self.server.connect().command("AUTH OAUTHBEARER " + oauthbearer(token(self.server.key)))
        self.assertTrue(reply.startswith(b"+OK alice has"), reply)

    def test_oauthbearer_without_initial_response_and_without_authzid(self) -> None:
        conversation = self.server.connect()
        self.assertEqual(conversation.command("AUTH OAUTHBEARER"), b"+ \r\n")
        reply = conversation.command(b64(f"n,,\x01auth=Bearer {token(self.server.key)}\x01\x01"))
        self.assertTrue(reply.startswith(b"+OK alice has"), reply)

    def test_xoauth2_logs_in(self) -> None:
        reply = self.server.connect().command("AUTH XOAUTH2 " + xoauth2(token(self.server.key)))
        self.assertTrue(reply.startswith(b"+OK alice has"), reply)

    def test_bad_tokens_get_the_json_status_then_a_clean_failure(self) -> None:
        other = new_key()
        table = [
            ("expired", token(self.server.key, lifetime=-120)),
            ("signed by another key", token(other)),
            ("from another issuer", token(self.server.key, iss="https://evil.example")),
            ("for another audience", token(self.server.key, aud="other")),
            ("without exp", token(self.server.key, exp=None)),
            ("for no user", token(self.server.key, email="nobody@example.org")),
            ("not a JWT", "opaque-token-value"),
            ("alg none", jwt.encode({"iss": ISSUER, "aud": "mail", "email": "alice@example.org",
                                     "exp": int(time.time()) + 600}, None, algorithm="none")),
        ]
        conversation = self.server.connect()
        for what, value in table:
            with self.subTest(what):
                status = self.refused(conversation, oauthbearer(value))
                self.assertEqual(status, {"status": "invalid_token", "schemes": "bearer",
                                          "openid-configuration": ISSUER + "/.well-known/openid-configuration"})
        self.assertEqual(self.refused(conversation, xoauth2("garbage"), "XOAUTH2"),
                         {"status": "401", "schemes": "Bearer"})

    def test_a_token_for_alice_does_not_log_in_bob(self) -> None:
        conversation = self.server.connect()
        self.refused(conversation, oauthbearer(token(self.server.key), authzid="bob"))
        self.refused(conversation, xoauth2(token(self.server.key), user="bob"), "XOAUTH2")
        self.refused(conversation, oauthbearer(token(self.server.key, email="bob*alice"), authzid="bob"))

    def test_malformed_messages_get_a_clean_error(self) -> None:
        value = token(self.server.key)
        table = [
            ("OAUTHBEARER", f"n,,\x01auth=Bearer {value}\x01", "OAUTHBEARER message does not end with two ^A"),
            ("OAUTHBEARER", f"n,,\x01auth=Basic {value}\x01\x01", "OAUTHBEARER message has no Bearer token"),
            ("OAUTHBEARER", f"p=tls-unique,,\x01auth=Bearer {value}\x01\x01",
             "OAUTHBEARER GS2 header is malformed (channel binding is not offered)"),
            ("OAUTHBEARER", f"n,b=x,\x01auth=Bearer {value}\x01\x01", "OAUTHBEARER GS2 header is malformed"),
            ("OAUTHBEARER", f"n,,auth=Bearer {value}\x01\x01", "OAUTHBEARER message has no ^A after the GS2 header"),
            ("OAUTHBEARER", "n,,\x01noequals\x01\x01", "OAUTHBEARER message has a malformed key=value pair"),
            ("XOAUTH2", f"auth=Bearer {value}\x01\x01", "XOAUTH2 message has no user"),
            ("XOAUTH2", "user=alice\x01auth=Bearer \x01\x01", "XOAUTH2 message has no Bearer token"),
        ]
        conversation = self.server.connect()
        for mechanism, message, error in [*table, ("XOAUTH2", b"\xff\x01\x01", "XOAUTH2 message is not UTF-8")]:
            with self.subTest(message=message):
                reply = conversation.command(f"AUTH {mechanism} {b64(message)}")
                self.server.clock.advance(60)  # each counts as a failure in the throttle
                self.assertEqual(reply + conversation.take(), f"-ERR [AUTH] {error}\r\n".encode())

    def test_a_key_file_gone_since_the_start_is_a_clean_failure(self) -> None:
        Path(self.server.context.config["oauth"]["jwt_key"]).unlink()
        self.refused(self.server.connect(), oauthbearer(token(self.server.key)))

    def test_failures_are_throttled(self) -> None:
        conversation = self.server.connect()
        self.refused(conversation, oauthbearer("bad"))
        self.assertEqual(conversation.command("AUTH OAUTHBEARER " + oauthbearer("bad")), b"")  # waits
        self.server.clock.advance(60)
        self.assertTrue(conversation.take().startswith(b"+ "))


class SingleUseTests(TestCase):
    def test_a_replayed_token_is_refused(self) -> None:
        server = TokenServer(self, single_use="yes")
        value = token(server.key, jti="token-1")
        first = server.connect()
        self.assertTrue(first.command("AUTH OAUTHBEARER " + oauthbearer(value)).startswith(b"+OK alice has"))
        first.command("QUIT")
        again = server.connect()
        reply = again.command("AUTH OAUTHBEARER " + oauthbearer(value))
        self.assertTrue(reply.startswith(b"+ "), reply)
        self.assertEqual(again.command(b64("\x01")), b"-ERR [AUTH] Authentication failed\r\n")
        server.clock.advance(60)
        fresh = server.connect()
        reply = fresh.command("AUTH OAUTHBEARER " + oauthbearer(token(server.key, jti="token-2")))
        self.assertTrue(reply.startswith(b"+OK alice has"), reply)

    def test_by_default_a_client_may_log_in_again_with_its_token(self) -> None:
        server = TokenServer(self)
        value = token(server.key, jti="token-1")
        for _ in range(2):
            conversation = server.connect()
            reply = conversation.command("AUTH XOAUTH2 " + xoauth2(value))
            self.assertTrue(reply.startswith(b"+OK alice has"), reply)
            conversation.command("QUIT")


class JWKSTests(TestCase):
    def test_keys_chosen_by_kid_and_read_again_when_they_rotate(self) -> None:
        folder = Path(self.mktemp())
        folder.mkdir()
        old, new = new_key(), new_key()

        def jwks(*pairs) -> str:
            keys = [dict(json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key())), kid=kid, alg="ES256")
                    for kid, key in pairs]
            return json.dumps({"keys": keys})

        path = folder / "jwks.json"
        path.write_text(jwks(("old", old)))
        server = TokenServer(self, jwt_key="", jwks=str(path))
        first = server.connect()
        ok = first.command("AUTH XOAUTH2 " + xoauth2(token(old, headers={"kid": "old"})))
        self.assertTrue(ok.startswith(b"+OK alice has"), ok)
        first.command("QUIT")
        self.assertTrue(server.connect().command(
            "AUTH XOAUTH2 " + xoauth2(token(new, headers={"kid": "new"}))).startswith(b"+ "))
        path.write_text(jwks(("old", old), ("new", new)) + " ")  # another size: read again
        server.clock.advance(60)
        ok = server.connect().command("AUTH XOAUTH2 " + xoauth2(token(new, headers={"kid": "new"})))
        self.assertTrue(ok.startswith(b"+OK alice has"), ok)


class ConfigTests(TestCase):
    def test_one_way_to_check_and_an_issuer(self) -> None:
        table = [
            ({"issuer": ISSUER}, "name how tokens are checked"),
            ({"jwt_key": "/k.pem"}, "is required to accept bearer tokens"),
            ({"issuer": ISSUER, "jwt_key": "/k.pem", "jwks": "/j.json"}, "name one of jwt_key"),
            ({"issuer": ISSUER, "introspection_url": "https://id.example.org/introspect"}, "is required with"),
            ({"issuer": ISSUER, "introspection_url": "ftp://x"}, "expected a URL"),
        ]
        for oauth, message in table:
            with self.subTest(oauth=oauth):
                with self.assertRaises(ConfigError) as caught:
                    make_config(self.mktemp(), oauth=oauth)
                self.assertIn(message, str(caught.exception))

    def test_a_missing_key_file_stops_the_start(self) -> None:
        with self.assertRaises(OSError):
            make_context(self.mktemp(), oauth={"issuer": ISSUER, "jwt_key": "/nonexistent/k.pem"})


class Introspection(resource.Resource):
    """An RFC 7662 endpoint: knows one active token; counts the questions."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.asked = 0
        self.broken = False

    def render_POST(self, request) -> bytes:
        self.asked += 1
        if self.broken:
            request.setResponseCode(500)
            return b"oops"
        if request.getHeader(b"authorization") != b"Basic " + base64.b64encode(b"mail:s3cret"):
            request.setResponseCode(401)
            return b"{}"
        value = request.args.get(b"token", [b""])[0]
        if value == b"good-token":
            answer = {"active": True, "iss": ISSUER, "aud": "mail", "username": "alice",
                      "exp": int(time.time()) + 600}
        else:
            answer = {"active": False}
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(answer).encode()


class IntrospectionTests(TestCase):
    timeout = 60

    def setUp(self):
        self.issuer = Introspection()
        d = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server.Site(self.issuer))
        return d.addCallback(self._listening)

    def _listening(self, port) -> None:
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}/introspect"
        self.context = make_context(self.mktemp(), oauth={
            "issuer": ISSUER, "audience": "mail", "introspection_url": url, "client_id": "mail",
            "client_secret": "s3cret", "user_claim": "username", "timeout": "5s"})
        self.addCleanup(self.context.users.close)
        self.addCleanup(self.context.store.close)
        add_user(self.context, "alice")
        from cyrusmail.auth.oauth import BearerToken

        self.credentials = lambda value: BearerToken(value, "", "127.0.0.1", "username")
        self.checker = self.context.portal.checkers[next(i for i in self.context.portal.checkers
                                                         if i.__name__ == "IBearerToken")]

    def test_active_inactive_and_broken(self):
        from twisted.cred.error import UnauthorizedLogin

        def first(account):
            self.assertEqual(account, "alice")
            return self.checker.requestAvatarId(self.credentials("good-token"))

        def cached(account):
            self.assertEqual((account, self.issuer.asked), ("alice", 1))  # the answer was kept
            return self.assertFailure(self.checker.requestAvatarId(self.credentials("bad-token")), UnauthorizedLogin)

        def broken(_):
            self.issuer.broken = True
            return self.assertFailure(self.checker.requestAvatarId(self.credentials("other")), UnauthorizedLogin)

        d = self.checker.requestAvatarId(self.credentials("good-token"))
        return d.addCallback(first).addCallback(cached).addCallback(broken).addCallback(
            lambda _: self.assertEqual(self.issuer.asked, 3))


class CurlTests(TestCase):
    """curl's IMAP client with --oauth2-bearer (OAUTHBEARER or XOAUTH2, by --login-options)."""

    timeout = 120

    def setUp(self):
        if shutil.which("curl") is None:
            raise SkipTest("curl is not installed (apt-get install curl)")
        folder = Path(self.mktemp())
        folder.mkdir()
        self.key = new_key()
        self.context = make_context(folder / "data", imap={"enabled": "yes", "listen": "tcp:0:interface=127.0.0.1"},
                                    oauth={"issuer": ISSUER, "jwt_key": str(write_public(self.key, folder / "k.pem"))})
        self.addCleanup(self.context.store.close)
        self.addCleanup(self.context.users.close)
        add_user(self.context, "alice")
        from cyrusmail.imap.server import make_factory

        d = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(make_factory(self.context, "imap"))
        return d.addCallback(self._listening)

    def _listening(self, port) -> None:
        self.port = port.getHost().port
        self.addCleanup(port.stopListening)

    def curl(self, mechanism: str, value: str):
        command = ["curl", "-sS", "--max-time", "30", f"imap://127.0.0.1:{self.port}/", "-u", "alice@example.org:",
                   "--login-options", f"AUTH={mechanism}", "--oauth2-bearer", value]
        return threads.deferToThread(subprocess.run, command, capture_output=True, text=True, timeout=60)

    def test_both_mechanisms_list_folders(self):
        def check(result, mechanism):
            self.assertEqual(result.returncode, 0, f"{mechanism}: {result.stderr}")
            self.assertIn("INBOX", result.stdout)

        d = self.curl("OAUTHBEARER", token(self.key, aud=None))
        d.addCallback(check, "OAUTHBEARER")
        d.addCallback(lambda _: self.curl("XOAUTH2", token(self.key, aud=None)))
        return d.addCallback(check, "XOAUTH2")

    def test_a_bad_token_is_refused_cleanly(self):
        def check(result):
            self.assertNotEqual(result.returncode, 0)
            self.assertIn("Login denied", result.stderr)

        return self.curl("OAUTHBEARER", "not-a-token").addCallback(check)
