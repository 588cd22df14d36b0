"""SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (RFC 5802, 7677): stored keys, the exchange, channel binding.

The client side is scramp (a separate implementation) wherever it can do
the job; tls-exporter, which scramp refuses, is checked with a few lines of
RFC 5802 arithmetic below.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import imaplib
import sqlite3
import ssl

from OpenSSL import SSL
from scramp import ScramClient
from twisted.internet import reactor, threads
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase
from zope.interface import directlyProvides

from cyrusmail import sasl, tls
from cyrusmail.auth import policy
from cyrusmail.auth.checkers import PasswordChecker
from cyrusmail.auth.scram import IScramCredentials, ScramChecker, ScramKeys, saslprep
from cyrusmail.auth.userdb import UserDatabase
from cyrusmail.imap.server import make_factory
from tests.test_pop3_support import Pop3Server
from tests.test_tls import handshake


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def unb64(reply: bytes) -> str:
    """The challenge of a ``+ BASE64`` POP3 line."""
    assert reply.startswith(b"+ "), reply
    return base64.b64decode(reply[2:].strip()).decode()


class StoredKeysTests(TestCase):
    def setUp(self) -> None:
        self.users = UserDatabase(self.mktemp(), scram_iterations=4096)
        self.addCleanup(self.users.close)

    def test_keys_are_made_with_the_password_and_hold_no_password_equivalent(self) -> None:
        self.users.add("alice", "pencil")
        keys = self.users.scram_keys("alice")
        salted = hashlib.pbkdf2_hmac("sha256", b"pencil", keys.salt, 4096)
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        self.assertEqual(keys.iterations, 4096)
        self.assertEqual(keys.stored_key, hashlib.sha256(client_key).digest())
        self.assertNotIn(client_key, (keys.stored_key, keys.server_key))  # the ClientKey itself is never kept
        self.assertEqual(ScramKeys.decode(keys.encode()), keys)
        row = sqlite3.connect(self.users.path).execute("SELECT scram FROM users").fetchone()[0]
        self.assertTrue(row.startswith("SCRAM-SHA-256$4096:"))
        self.assertNotIn("pencil", row)

    def test_a_new_password_makes_new_keys(self) -> None:
        self.users.add("alice", "pencil")
        before = self.users.scram_keys("alice")
        self.users.set_password("alice", "crayon")
        self.assertNotEqual(self.users.scram_keys("alice").salt, before.salt)

    def test_damaged_values_are_no_keys(self) -> None:
        for text in ("", "garbage", "SCRAM-SHA-256$100:c2FsdA==$" + b64(b"k" * 32) + ":" + b64(b"k" * 32),
                     "SCRAM-SHA-1$4096:c2FsdA==$" + b64(b"k" * 32) + ":" + b64(b"k" * 32),
                     "SCRAM-SHA-256$4096:c2FsdA==$" + b64(b"k" * 31) + ":" + b64(b"k" * 32)):
            with self.subTest(text=text):
                self.assertIsNone(ScramKeys.decode(text))

    def test_saslprep(self) -> None:
        self.assertEqual(saslprep("I\u00adX"), "IX")  # RFC 4013 section 3's examples
        self.assertEqual(saslprep("\u00aa"), "a")
        self.assertEqual(saslprep("\u2168"), "IX")
        self.assertRaises(ValueError, saslprep, "\u0007")
        self.assertRaises(ValueError, saslprep, "\u0627\u0031")


def scram_login(conversation, user: str = "alice", password: str = "secret") -> tuple[ScramClient, bytes]:
    """A whole SCRAM-SHA-256 AUTH with scramp; the client and the server's last reply."""
    client = ScramClient(["SCRAM-SHA-256"], user, password)
    server_first = unb64(conversation.command("AUTH SCRAM-SHA-256 " + b64(client.get_client_first())))
    client.set_server_first(server_first)
    reply = conversation.command(b64(client.get_client_final()))
    if not reply.startswith(b"+ "):
        return client, reply
    client.set_server_final(unb64(reply))  # raises if the server's signature is wrong
    return client, conversation.command("")


class Pop3ScramTests(TestCase):
    """SCRAM through POP3 AUTH (RFC 5034), in memory with a Clock."""

    def setUp(self) -> None:
        self.server = Pop3Server(self)

    def test_offered_with_the_password_mechanisms(self) -> None:
        reply = self.server.connect().command("AUTH")
        self.assertEqual(reply, b"+OK SASL mechanisms follow\r\nSCRAM-SHA-256\r\nPLAIN\r\nLOGIN\r\n.\r\n")

    def test_login_and_the_server_proves_itself(self) -> None:
        _, reply = scram_login(self.server.connect())
        self.assertTrue(reply.startswith(b"+OK alice has 0 messages"), reply)

    def test_login_without_initial_response(self) -> None:
        conversation = self.server.connect()
        client = ScramClient(["SCRAM-SHA-256"], "alice", "secret")
        self.assertEqual(conversation.command("AUTH SCRAM-SHA-256"), b"+ \r\n")
        client.set_server_first(unb64(conversation.command(b64(client.get_client_first()))))
        client.set_server_final(unb64(conversation.command(b64(client.get_client_final()))))
        self.assertTrue(conversation.command("").startswith(b"+OK alice has"))

    def test_wrong_password_fails_and_is_throttled(self) -> None:
        conversation = self.server.connect()
        _, reply = scram_login(conversation, password="wrong")
        self.assertEqual(reply, b"-ERR [AUTH] Authentication failed\r\n")
        client = ScramClient(["SCRAM-SHA-256"], "alice", "secret")
        server_first = unb64(conversation.command("AUTH SCRAM-SHA-256 " + b64(client.get_client_first())))
        client.set_server_first(server_first)
        self.assertEqual(conversation.command(b64(client.get_client_final())), b"")  # waits its turn
        self.server.clock.advance(1)
        client.set_server_final(unb64(conversation.take()))
        self.assertTrue(conversation.command("").startswith(b"+OK alice has"))

    def test_unknown_user_looks_like_a_known_one_until_the_proof(self) -> None:
        salts = []
        for _ in range(2):
            conversation = self.server.connect()
            client = ScramClient(["SCRAM-SHA-256"], "nobody", "secret")
            server_first = unb64(conversation.command("AUTH SCRAM-SHA-256 " + b64(client.get_client_first())))
            attributes = dict(part.split("=", 1) for part in server_first.split(","))
            self.assertEqual(attributes["i"], "65536")
            self.assertEqual(len(base64.b64decode(attributes["s"])), 16)
            salts.append(attributes["s"])
            client.set_server_first(server_first)
            reply = conversation.command(b64(client.get_client_final()))  # the second waits a second
            self.server.clock.advance(1)
            self.assertEqual(reply + conversation.take(), b"-ERR [AUTH] Authentication failed\r\n")
        self.assertEqual(salts[0], salts[1])  # asking twice tells nothing either

    def test_a_replayed_client_final_message_is_refused(self) -> None:
        conversation = self.server.connect()
        client = ScramClient(["SCRAM-SHA-256"], "alice", "secret", c_nonce="fixednonce")
        first = b64(client.get_client_first())
        client.set_server_first(unb64(conversation.command("AUTH SCRAM-SHA-256 " + first)))
        final = b64(client.get_client_final())
        conversation.command(final)
        conversation.command("")  # logged in; a listener replays both messages on a new connection
        replay = self.server.connect()
        self.assertTrue(replay.command("AUTH SCRAM-SHA-256 " + first).startswith(b"+ "))
        self.assertEqual(replay.command(final), b"-ERR [AUTH] SCRAM nonce does not match this exchange\r\n")

    def test_malformed_exchanges_get_a_clean_error(self) -> None:
        table = [
            ("", "SCRAM client-first message is empty"),
            ("hello", "SCRAM client-first message has no GS2 header"),
            ("x,,n=alice,r=abc", "SCRAM GS2 channel binding flag is malformed"),
            ("p=tls-unique,,n=alice,r=abc", "SCRAM channel binding needs SCRAM-SHA-256-PLUS"),
            ("n,b=x,n=alice,r=abc", "SCRAM GS2 header is malformed"),
            ("n,,m=ext,n=alice,r=abc", "SCRAM mandatory extension is not supported"),
            ("n,,r=abc,n=alice", "SCRAM client-first message lacks n= and r="),
            ("n,,n=al=41ice,r=abc", "SCRAM user name has a bad escape"),
            ("n,,n=alice,r=a,bc", "SCRAM client-first message is malformed"),
            ("n,,n=alice,r=" + "a" * 300, "SCRAM client nonce is malformed"),
            ("n,,n=\u0007,r=abc", "SCRAM user name: character U+0007 is not allowed"),
        ]
        conversation = self.server.connect()
        for message, error in table + [(b"n,,n=\xff,r=abc", "SCRAM message is not UTF-8")]:
            with self.subTest(message=message):
                reply = conversation.command("AUTH SCRAM-SHA-256 " + (b64(message) if message else "="))
                self.server.clock.advance(60)  # each counts as a failure: the next waits its turn
                self.assertEqual(reply + conversation.take(), f"-ERR [AUTH] {error}\r\n".encode())

    def test_a_malformed_exchange_delays_the_next_attempt(self) -> None:
        conversation = self.server.connect()
        self.assertEqual(conversation.command("AUTH SCRAM-SHA-256 " + b64("hello")),
                         b"-ERR [AUTH] SCRAM client-first message has no GS2 header\r\n")
        client = ScramClient(["SCRAM-SHA-256"], "alice", "secret")
        client.set_server_first(unb64(conversation.command("AUTH SCRAM-SHA-256 " + b64(client.get_client_first()))))
        self.assertEqual(conversation.command(b64(client.get_client_final())), b"")  # a second, as after a failure
        self.server.clock.advance(1)
        client.set_server_final(unb64(conversation.take()))
        self.assertTrue(conversation.command("").startswith(b"+OK alice has"))

    def test_malformed_final_messages_get_a_clean_error(self) -> None:
        good = None
        table = [
            ("c=biws,r={nonce}", "SCRAM client-final message has no proof"),
            ("c=biws,r={nonce},p=!!!", "SCRAM proof is not base64"),
            ("c=biws,r={nonce},p=" + b64(b"short"), "SCRAM proof has the wrong length"),
            ("c=eSws,r={nonce},p=" + b64(b"p" * 32), "SCRAM channel binding does not match"),
            ("r={nonce},c=biws,p=" + b64(b"p" * 32), "SCRAM client-final message lacks c= and r="),
            ("c=biws,r=other,p=" + b64(b"p" * 32), "SCRAM nonce does not match this exchange"),
        ]
        for final, error in table:
            with self.subTest(final=final):
                conversation = self.server.connect()
                server_first = unb64(conversation.command("AUTH SCRAM-SHA-256 " + b64("n,,n=alice,r=abcdef")))
                nonce = server_first.split(",")[0][2:]
                reply = conversation.command(b64(final.format(nonce=nonce)))
                self.server.clock.advance(60)
                self.assertEqual(reply + conversation.take(), f"-ERR [AUTH] {error}\r\n".encode())
                good = conversation
        self.assertEqual(good.command("NOOP"), b"-ERR NOOP is not allowed in the AUTHORIZATION state\r\n")  # back at the start

    def test_cancel_and_a_non_empty_answer_to_the_signature(self) -> None:
        conversation = self.server.connect()
        self.assertTrue(conversation.command("AUTH SCRAM-SHA-256 " + b64("n,,n=alice,r=abcdef")).startswith(b"+ "))
        self.assertEqual(conversation.command("*"), b"-ERR Authentication cancelled\r\n")
        client = ScramClient(["SCRAM-SHA-256"], "alice", "secret")
        client.set_server_first(unb64(conversation.command("AUTH SCRAM-SHA-256 " + b64(client.get_client_first()))))
        self.assertTrue(conversation.command(b64(client.get_client_final())).startswith(b"+ "))
        self.assertEqual(conversation.command(b64("more")),
                         b"-ERR [AUTH] non-empty response to additional data with success\r\n")

    def test_a_user_from_before_scram_gets_keys_at_a_password_login(self) -> None:
        users = self.server.context.users
        users.db.execute("UPDATE users SET scram = NULL WHERE name = 'alice'")
        self.server.context.portal.registerChecker(  # as make_portal has it, without a thread
            PasswordChecker(users, ["example.org"], hash_in_thread=False, scram_iterations=4096))
        _, reply = scram_login(self.server.connect())
        self.assertEqual(reply, b"-ERR [AUTH] Authentication failed\r\n")  # no keys: the stand-in ones fail
        self.server.clock.advance(1)
        password_login = self.server.connect()
        password_login.login()
        password_login.command("QUIT")
        self.assertIsNotNone(users.scram_keys("alice"))
        self.server.clock.advance(1)
        _, reply = scram_login(self.server.connect())
        self.assertTrue(reply.startswith(b"+OK alice has"), reply)

    def test_not_offered_in_the_clear_from_afar(self) -> None:
        conversation = self.server.connect(peer="192.0.2.7")
        self.assertEqual(conversation.command("AUTH"), b"+OK SASL mechanisms follow\r\n.\r\n")
        self.assertEqual(conversation.command("AUTH SCRAM-SHA-256 " + b64("n,,n=alice,r=abcdef")),
                         b"-ERR [AUTH] Mechanism SCRAM-SHA-256 is not available on this connection\r\n")


def client_proof(password: str, keys_salt: bytes, iterations: int, auth_message: bytes) -> bytes:
    """RFC 5802 section 3, the client's side: ClientKey XOR ClientSignature."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), keys_salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    signature = hmac.new(hashlib.sha256(client_key).digest(), auth_message, hashlib.sha256).digest()
    return bytes(a ^ b for a, b in zip(client_key, signature, strict=True))


class ChannelBindingTests(TestCase):
    """SCRAM-SHA-256-PLUS over a channel with bindings, through the driver and a real checker."""

    def setUp(self) -> None:
        self.users = UserDatabase(self.mktemp(), scram_iterations=4096)
        self.addCleanup(self.users.close)
        self.users.add("alice", "secret")
        self.checker = ScramChecker(self.users, ["example.org"], 4096, lambda account, authzid, client: account)
        self.bindings = {"tls-exporter": b"E" * 32, "tls-server-end-point": b"S" * 32}
        self.channel = sasl.Channel(secure=True, plaintext=True, checks={IScramCredentials: self.checker},
                                    bindings=self.bindings.get)

    def exchange(self, mechanism: str, gs2: str, binding: bytes, password: str = "secret"):
        """Run one exchange by hand; the outcome after the client-final message."""

        def login(credentials):
            from twisted.internet import defer

            return defer.maybeDeferred(self.checker.requestAvatarId, credentials).addCallback(
                lambda account: (None, account, None))

        exchange = sasl.Exchange(sasl.start(mechanism, self.channel), self.channel, login)
        bare = "n=alice,r=clientnonce"
        first = self.successResultOf(exchange.respond((gs2 + bare).encode()))
        if not isinstance(first, sasl.Challenge):
            return first
        server_first = first.data.decode()
        attributes = dict(part.split("=", 1) for part in server_first.split(","))
        without_proof = f"c={b64(gs2.encode() + binding)},r={attributes['r']}"
        auth_message = f"{bare},{server_first},{without_proof}".encode()
        proof = client_proof(password, base64.b64decode(attributes["s"]), int(attributes["i"]), auth_message)
        return self.successResultOf(exchange.respond(f"{without_proof},p={b64(proof)}".encode()))

    def test_plus_is_offered_only_with_a_binding(self) -> None:
        self.assertEqual(sasl.offered(self.channel)[:2], ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"])
        bare = sasl.Channel(secure=True, plaintext=True, checks={IScramCredentials: self.checker})
        self.assertNotIn("SCRAM-SHA-256-PLUS", sasl.offered(bare))

    def test_both_bindings_log_in(self) -> None:
        for kind in ("tls-exporter", "tls-server-end-point"):
            with self.subTest(kind=kind):
                outcome = self.exchange("SCRAM-SHA-256-PLUS", f"p={kind},,", self.bindings[kind])
                self.assertIsInstance(outcome, sasl.Challenge)
                self.assertTrue(outcome.data.startswith(b"v="))

    def test_a_binding_of_another_connection_is_refused(self) -> None:
        outcome = self.exchange("SCRAM-SHA-256-PLUS", "p=tls-exporter,,", b"X" * 32)
        self.assertEqual(outcome, sasl.Failed("alice", "SCRAM channel binding does not match", True))

    def test_wrong_password_with_binding_fails(self) -> None:
        outcome = self.exchange("SCRAM-SHA-256-PLUS", "p=tls-exporter,,", b"E" * 32, password="wrong")
        self.assertEqual(outcome, sasl.Failed("alice", "Invalid credentials"))

    def test_downgrades_and_unknown_bindings_are_refused(self) -> None:
        table = [
            ("SCRAM-SHA-256", "y,,", "SCRAM client did not use the channel binding offered (downgrade)"),
            ("SCRAM-SHA-256-PLUS", "n,,", "SCRAM-SHA-256-PLUS needs channel binding"),
            ("SCRAM-SHA-256-PLUS", "y,,", "SCRAM client did not use the channel binding offered (downgrade)"),
            ("SCRAM-SHA-256-PLUS", "p=tls-unique,,", "SCRAM channel binding 'tls-unique' is not available here"),
        ]
        for mechanism, gs2, reason in table:
            with self.subTest(gs2=gs2, mechanism=mechanism):
                self.assertEqual(self.exchange(mechanism, gs2, b""), sasl.Failed("", reason, True))

    def test_y_is_accepted_where_plus_is_not_offered(self) -> None:
        self.channel = sasl.Channel(secure=True, plaintext=True, checks={IScramCredentials: self.checker})
        self.assertTrue(self.exchange("SCRAM-SHA-256", "y,,", b"").data.startswith(b"v="))


class TLSBindingTests(TestCase):
    """What the bindings are on a real TLS connection (in memory, pyOpenSSL on both sides)."""

    def setUp(self) -> None:
        folder = self.mktemp()
        import os

        os.makedirs(folder)
        from pathlib import Path

        self.cert, key = tls.self_signed_paths(Path(folder))
        tls.make_self_signed("mail.example.org", self.cert, key)
        self.server_context = tls.context_factory(self.cert, key).getContext()

    def transport_for(self, connection):
        transport = StringTransport()
        directlyProvides(transport, ISSLTransport)
        transport.getHandle = lambda: connection
        return transport

    def test_tls_1_3_gives_both(self) -> None:
        server, client = handshake(self.server_context, SSL.Context(SSL.TLS_METHOD))
        binding = policy.channel_bindings(self.transport_for(server))
        self.assertEqual(binding("tls-exporter"), client.export_keying_material(b"EXPORTER-Channel-Binding", 32))
        der = ssl.PEM_cert_to_DER_cert(self.cert.read_text())
        self.assertEqual(binding("tls-server-end-point"), hashlib.sha256(der).digest())
        self.assertIsNone(binding("tls-unique"))

    def test_tls_1_2_gives_only_the_certificate_hash(self) -> None:
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_max_proto_version(SSL.TLS1_2_VERSION)
        server, _ = handshake(self.server_context, context)
        binding = policy.channel_bindings(self.transport_for(server))
        self.assertIsNone(binding("tls-exporter"))
        self.assertEqual(len(binding("tls-server-end-point")), 32)

    def test_no_tls_no_bindings(self) -> None:
        self.assertIsNone(policy.channel_bindings(StringTransport())("tls-server-end-point"))


class ImaplibPlusTests(TestCase):
    """Python's imaplib over implicit TLS, scramp doing SCRAM-SHA-256-PLUS with tls-server-end-point."""

    timeout = 120

    def setUp(self):
        from tests.helpers import add_user, make_context

        self.context = make_context(self.mktemp(), imaps={"enabled": "yes", "listen": "tcp:0:interface=127.0.0.1"})
        self.addCleanup(self.context.store.close)
        self.addCleanup(self.context.users.close)
        add_user(self.context, "alice", "secret")
        d = SSL4ServerEndpoint(reactor, 0, self.context.tls, interface="127.0.0.1").listen(
            make_factory(self.context, "imaps"))
        return d.addCallback(self._listening)

    def _listening(self, port):
        self.port = port.getHost().port
        self.addCleanup(port.stopListening)

    def login(self, mechanism: str, password: str):
        def talk():
            client = imaplib.IMAP4_SSL("127.0.0.1", self.port, ssl_context=ssl._create_unverified_context(), timeout=20)
            try:
                caps = client.capabilities
                der = client.sock.getpeercert(binary_form=True)
                binding = ("tls-server-end-point", hashlib.sha256(der).digest()) if mechanism.endswith("PLUS") else None
                scram = ScramClient([mechanism], "alice", password, channel_binding=binding)
                steps = iter([lambda _: scram.get_client_first(),
                              lambda data: (scram.set_server_first(data.decode()), scram.get_client_final())[1],
                              lambda data: (scram.set_server_final(data.decode()), "")[1]])
                try:
                    typ, _ = client.authenticate(mechanism, lambda data: next(steps)(data).encode())
                except imaplib.IMAP4.error as problem:
                    return caps, str(problem)
                return caps, typ
            finally:
                try:
                    client.logout()
                except (imaplib.IMAP4.error, OSError):
                    pass

        return threads.deferToThread(talk)

    def test_plus_with_the_certificate_hash(self):
        def check(result):
            caps, typ = result
            self.assertIn("AUTH=SCRAM-SHA-256-PLUS", caps)
            self.assertEqual(typ, "OK")

        return self.login("SCRAM-SHA-256-PLUS", "secret").addCallback(check)

    def test_plus_with_tls_exporter_from_a_pyopenssl_client(self):
        """tls-exporter end to end (scramp and Python's ssl cannot): RFC 5802 arithmetic over pyOpenSSL."""
        import select
        import socket

        def talk():
            raw = socket.create_connection(("127.0.0.1", self.port), timeout=20)
            raw.setblocking(False)  # waits below are select()s of at most 20 s: a hang cannot hold the test
            connection = SSL.Connection(SSL.Context(SSL.TLS_METHOD), raw)
            connection.set_connect_state()

            def retry(operation):
                while True:
                    try:
                        return operation()
                    except SSL.WantReadError:
                        if not select.select([raw], [], [], 20)[0]:
                            raise TimeoutError("no answer in 20 s") from None

            retry(connection.do_handshake)
            buffer = bytearray()

            def line() -> bytes:
                while b"\r\n" not in buffer:
                    buffer.extend(retry(lambda: connection.recv(4096)))
                end = buffer.index(b"\r\n") + 2
                text = bytes(buffer[:end])
                del buffer[:end]
                return text

            try:
                line()  # greeting
                gs2, bare = "p=tls-exporter,,", "n=alice,r=pyopensslnonce"
                connection.sendall(f"a1 AUTHENTICATE SCRAM-SHA-256-PLUS {b64(gs2 + bare)}\r\n".encode())
                server_first = base64.b64decode(line()[2:]).decode()
                attributes = dict(part.split("=", 1) for part in server_first.split(","))
                binding = connection.export_keying_material(b"EXPORTER-Channel-Binding", 32)
                without_proof = f"c={b64(gs2.encode() + binding)},r={attributes['r']}"
                auth_message = f"{bare},{server_first},{without_proof}".encode()
                proof = client_proof("secret", base64.b64decode(attributes["s"]), int(attributes["i"]), auth_message)
                connection.sendall(b64(f"{without_proof},p={b64(proof)}").encode() + b"\r\n")
                signature = base64.b64decode(line()[2:])
                connection.sendall(b"\r\n")
                return connection.get_protocol_version_name(), signature, line()
            finally:
                connection.shutdown()
                raw.close()

        def check(result):
            version, signature, tagged = result
            self.assertEqual(version, "TLSv1.3")
            self.assertTrue(signature.startswith(b"v="), signature)
            self.assertTrue(tagged.startswith(b"a1 OK"), tagged)

        return threads.deferToThread(talk).addCallback(check)

    def test_wrong_password_is_a_clean_no(self):
        def check(result):
            _, message = result
            self.assertIn("AUTHENTICATIONFAILED", message)

        return self.login("SCRAM-SHA-256", "wrong").addCallback(check)



class ChannelServiceTests(TestCase):
    def test_the_channel_names_the_listener(self) -> None:
        server = Pop3Server(self)
        conversation = server.connect()
        self.assertEqual(conversation.protocol._sasl_channel().service, "pop3")


class SmtplibPlusTests(TestCase):
    """Python's smtplib over submissions (implicit TLS): AUTH SCRAM-SHA-256-PLUS, scramp as the client."""

    timeout = 120

    def setUp(self):
        from twisted.protocols.tls import TLSMemoryBIOFactory

        from cyrusmail.smtp.server import make_submission_factory
        from tests.helpers import add_user, make_context

        self.context = make_context(self.mktemp(), reactor)
        self.addCleanup(self.context.store.close)
        self.addCleanup(self.context.users.close)
        add_user(self.context, "alice", "secret")
        factory = TLSMemoryBIOFactory(self.context.tls, False, make_submission_factory(self.context, "submissions"))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port

    def auth(self, password: str):
        import smtplib

        def talk():
            with smtplib.SMTP_SSL("127.0.0.1", self.port, timeout=20,
                                  context=ssl._create_unverified_context()) as client:
                client.ehlo("client.example")
                offered = client.esmtp_features["auth"].split()
                der = client.sock.getpeercert(binary_form=True)
                scram = ScramClient(["SCRAM-SHA-256-PLUS"], "alice", password,
                                    channel_binding=("tls-server-end-point", hashlib.sha256(der).digest()))
                steps = iter([lambda: scram.get_client_first(),
                              lambda data: (scram.set_server_first(data.decode()), scram.get_client_final())[1],
                              lambda data: (scram.set_server_final(data.decode()), "")[1]])
                try:
                    code, _ = client.auth("SCRAM-SHA-256-PLUS", lambda *data: next(steps)(*data))
                except smtplib.SMTPAuthenticationError as problem:
                    code = problem.smtp_code
                return offered, code

        return threads.deferToThread(talk)

    def test_plus_logs_in_and_a_wrong_password_gets_535(self):
        def first(result):
            offered, code = result
            self.assertEqual(offered[:2], ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"])
            self.assertEqual(code, 235)
            return self.auth("wrong")

        return self.auth("secret").addCallback(first).addCallback(lambda result: self.assertEqual(result[1], 535))
