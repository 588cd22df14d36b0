"""ManageSieve (RFC 5804) transcripts over a StringTransport, and the wire parser's tables."""

from __future__ import annotations

import base64

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial import unittest

from cyrusmail.managesieve import wire
from cyrusmail.managesieve.server import ManageSieveFactory
from cyrusmail.sieve.scripts import scripts_of
from tests.helpers import add_user, make_context
from tests.test_sieve_delivery import damage_scripts
from tests.test_smtp_session_support import TLSCapableTransport

SCRIPT = b'require "fileinto";\r\nif header :contains "subject" "x" { fileinto "Junk"; }\r\n'


def plain(user: str = "alice", password: str = "secret") -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def literal(data: bytes) -> bytes:
    return b"{%d+}\r\n" % len(data) + data


class Client:
    """One session; ``send`` returns the lines it caused."""

    def __init__(self, factory: ManageSieveFactory, peer: str = "127.0.0.1") -> None:
        self.transport = TLSCapableTransport(peerAddress=IPv4Address("TCP", peer, 40000))
        self.session = factory.buildProtocol(None)
        self.session.makeConnection(self.transport)
        self.greeting = self.take()

    def take(self) -> list[bytes]:
        output = self.transport.value()
        self.transport.clear()
        return output.split(b"\r\n")[:-1]

    def send(self, data: bytes | str) -> list[bytes]:
        self.session.dataReceived(data.encode() if isinstance(data, str) else data)
        return self.take()

    def login(self) -> None:
        assert self.send(f'AUTHENTICATE "PLAIN" "{plain()}"\r\n') == [b'OK "Logged in"']


class ManageSieveTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.context = make_context(self.mktemp(), reactor=self.clock,
                                    sieve={"max_script_size": "1K", "max_scripts": "2"})
        for checker in self.context.portal.checkers.values():
            checker.hash_in_thread = False
        add_user(self.context, "alice")
        self.factory = ManageSieveFactory(self.context, "managesieve", clock=self.clock)

    def test_greeting_lists_capabilities_then_ok(self) -> None:
        client = Client(self.factory)
        lines = client.greeting
        self.assertEqual(lines[0], b'"IMPLEMENTATION" "cyrusmail"')
        sasl = next(line for line in lines if line.startswith(b'"SASL"'))
        # Only what its password logins can check: not SCRAM, GSSAPI or bearer tokens,
        # which the IMAP, POP3 and submission listeners offer (they were listed here).
        self.assertEqual(sasl, b'"SASL" "PLAIN LOGIN"')
        self.assertEqual(client.send('AUTHENTICATE "SCRAM-SHA-256"\r\n'),
                         [b'NO "Mechanism SCRAM-SHA-256 is not available on ManageSieve"'])
        sieve = next(line for line in lines if line.startswith(b'"SIEVE"'))
        for extension in (b"fileinto", b"vacation", b"imap4flags", b"editheader", b"include", b"ereject"):
            self.assertIn(extension, sieve)
        self.assertIn(b'"STARTTLS"', lines)
        self.assertIn(b'"VERSION" "1.0"', lines)
        self.assertEqual(lines[-1], b'OK "Ready"')

    def test_script_lifecycle(self) -> None:
        client = Client(self.factory)
        self.assertEqual(client.send("LISTSCRIPTS\r\n"), [b'NO "LISTSCRIPTS is allowed only after AUTHENTICATE"'])
        client.login()
        self.assertEqual(client.send("LISTSCRIPTS\r\n"), [b'OK "Listed"'])
        self.assertEqual(client.send(b'PUTSCRIPT "main" ' + literal(SCRIPT) + b"\r\n"), [b'OK "Stored"'])
        self.assertEqual(client.send(b'PUTSCRIPT "other" {5+}\r\nkeep;\r\n'), [b'OK "Stored"'])
        self.assertEqual(client.send("SETACTIVE \"main\"\r\n"), [b'OK "main is active"'])
        self.assertEqual(client.send("LISTSCRIPTS\r\n"), [b'"main" ACTIVE', b'"other"', b'OK "Listed"'])
        self.assertEqual(client.send('GETSCRIPT "main"\r\n'),
                         [b"{%d}" % len(SCRIPT), *SCRIPT.split(b"\r\n")[:-1], b"", b'OK "Got it"'])
        self.assertEqual(client.send('DELETESCRIPT "main"\r\n'),
                         [b'NO (ACTIVE) "The active script cannot be deleted; deactivate it first"'])
        self.assertEqual(client.send('RENAMESCRIPT "other" "main"\r\n'),
                         [b'NO (ALREADYEXISTS) "A script named main exists already"'])
        self.assertEqual(client.send('RENAMESCRIPT "other" "spare"\r\n'), [b'OK "Renamed"'])
        self.assertEqual(client.send('GETSCRIPT "other"\r\n'), [b'NO (NONEXISTENT) "There is no script named other"'])
        self.assertEqual(client.send('SETACTIVE ""\r\n'), [b'OK "No script is active"'])
        self.assertEqual(client.send('DELETESCRIPT "main"\r\n'), [b'OK "Deleted"'])
        self.assertEqual(client.send("LISTSCRIPTS\r\n"), [b'"spare"', b'OK "Listed"'])
        self.assertEqual(scripts_of(self.context).active("alice"), None)

    def test_a_damaged_script_database_gets_no_and_the_session_goes_on(self) -> None:
        client = Client(self.factory)
        client.login()
        damage_scripts(self.context)
        self.assertEqual(client.send("LISTSCRIPTS\r\n"), [b'NO (TRYLATER) "Internal error, try again later"'])
        self.assertEqual(client.send("NOOP\r\n"), [b'OK "Done"'])
        self.flushLoggedErrors()

    def test_putscript_reports_the_error_line_and_stores_nothing(self) -> None:
        client = Client(self.factory)
        client.login()
        bad = b'require "fileinto";\r\nkeep;\r\nfileinto "a" "b";\r\n'
        self.assertEqual(client.send(b'PUTSCRIPT "bad" ' + literal(bad) + b"\r\n"),
                         [b'NO "line 3: fileinto takes 1 positional arguments, not 2"'])
        self.assertEqual(client.send(b"CHECKSCRIPT " + literal(b"if true {") + b"\r\n"),
                         [b'NO "line 1: a block is not closed (a \'}\' is missing)"'])
        self.assertEqual(client.send(b"CHECKSCRIPT " + literal(SCRIPT) + b"\r\n"), [b'OK "Script is valid"'])
        self.assertEqual(client.send("LISTSCRIPTS\r\n"), [b'OK "Listed"'])

    def test_quotas_size_and_count(self) -> None:
        client = Client(self.factory)
        client.login()
        self.assertEqual(client.send('HAVESPACE "a" 2000\r\n'),
                         [b'NO (QUOTA/MAXSIZE) "A script may have at most 1024 octets"'])
        self.assertEqual(client.send('HAVESPACE "a" 100\r\n'), [b'OK "There is room"'])
        big = b"#" + b"x" * 2000 + b"\r\nkeep;\r\n"
        self.assertEqual(client.send(b'PUTSCRIPT "a" ' + literal(big) + b"\r\n"),
                         [b'NO (QUOTA/MAXSIZE) "A script may have at most 1024 octets"'])
        huge = b"x" * 100_000  # over the literal bound: read and thrown away, the session stays in step
        self.assertEqual(client.send(b'PUTSCRIPT "a" ' + literal(huge) + b"\r\nNOOP\r\n"),
                         [b'NO (QUOTA/MAXSIZE) "Literal too big (at most 65536 octets)"', b'OK "Done"'])
        for name in ("a", "b"):
            self.assertEqual(client.send(f'PUTSCRIPT "{name}" {{5+}}\r\nkeep;\r\n'), [b'OK "Stored"'])
        self.assertEqual(client.send('PUTSCRIPT "c" {5+}\r\nkeep;\r\n'),
                         [b'NO (QUOTA/MAXSCRIPTS) "At most 2 scripts per user"'])
        self.assertEqual(client.send('PUTSCRIPT "a" {8+}\r\ndiscard;\r\n'), [b'OK "Stored"'])  # replacing fits

    def test_byte_at_a_time_and_noop_tag(self) -> None:
        client = Client(self.factory)
        out = []
        for octet in f'AUTHENTICATE "PLAIN" {{{len(plain())}+}}\r\n{plain()}\r\nNOOP "t1"\r\n'.encode():
            out += client.send(bytes([octet]))
        self.assertEqual(out, [b'OK "Logged in"', b'OK (TAG "t1") "Done"'])

    def test_login_mechanism_with_challenges_and_cancel(self) -> None:
        client = Client(self.factory)
        self.assertEqual(client.send('AUTHENTICATE "LOGIN"\r\n'), [b'"VXNlcm5hbWU6"'])
        self.assertEqual(client.send('"*"\r\n'), [b'NO "Authentication cancelled"'])
        self.assertEqual(client.send('AUTHENTICATE "LOGIN"\r\n"YWxpY2U="\r\n"c2VjcmV0"\r\n'),
                         [b'"VXNlcm5hbWU6"', b'"UGFzc3dvcmQ6"', b'OK "Logged in"'])
        self.assertIn(b'"OWNER" "alice"', client.send("CAPABILITY\r\n"))
        self.assertEqual(client.send("UNAUTHENTICATE\r\n"), [b'OK "Logged out; authenticate again"'])
        self.assertEqual(client.send("LISTSCRIPTS\r\n"), [b'NO "LISTSCRIPTS is allowed only after AUTHENTICATE"'])

    def test_wrong_password_fails(self) -> None:
        client = Client(self.factory)
        self.assertEqual(client.send(f'AUTHENTICATE "PLAIN" "{plain(password="wrong")}"\r\n'),
                         [b'NO "Authentication failed"'])

    def test_plaintext_needs_tls_off_loopback(self) -> None:
        client = Client(self.factory, peer="192.0.2.7")
        self.assertIn(b'"SASL" ""', client.greeting)
        self.assertEqual(client.send(f'AUTHENTICATE "PLAIN" "{plain()}"\r\n'),
                         [b'NO (ENCRYPT-NEEDED) "Passwords are accepted only over TLS; use STARTTLS"'])
        lines = client.send("STARTTLS\r\nNOOP\r\n")  # the NOOP sent in the clear is dropped
        self.assertEqual(lines[0], b'OK "Begin TLS negotiation"')
        self.assertTrue(client.transport.tls_started)
        sasl = next(line for line in lines if line.startswith(b'"SASL"'))
        self.assertTrue({b"PLAIN", b"LOGIN"} <= set(sasl.split(b'"')[3].split()), sasl)
        self.assertNotIn(b'"STARTTLS"', lines)
        self.assertEqual(lines[-1], b'OK "Ready"')
        self.assertEqual(client.send(f'AUTHENTICATE "PLAIN" "{plain()}"\r\n'), [b'OK "Logged in"'])

    def test_bad_input_gets_no_and_the_session_goes_on(self) -> None:
        client = Client(self.factory)
        self.assertEqual(client.send("FROB\r\n"), [b'NO "Unknown command FROB"'])
        self.assertEqual(client.send('NOOP "unclosed\r\n'), [b'NO "Quoted string not closed"'])
        self.assertEqual(client.send(b"x" * 10_000 + b"\r\nNOOP\r\n"),
                         [b'NO "Line too long (at most 8192 octets)"', b'OK "Done"'])
        self.assertEqual(client.send("LOGOUT\r\n"), [b'OK "Logout"'])


class WireTests(unittest.TestCase):
    def test_lines(self) -> None:
        table = [
            (b'PUTSCRIPT "a b" {3+}\r\nabc\r\n', [wire.Line((wire.Atom("PUTSCRIPT"), b"a b", b"abc"))]),
            (b'HAVESPACE "x\\"y" 12\r\n', [wire.Line((wire.Atom("HAVESPACE"), b'x"y', 12))]),
            (b"AUTHENTICATE PLAIN dGVzdA==\r\n", [wire.Line((wire.Atom("AUTHENTICATE"), wire.Atom("PLAIN"),
                                                             wire.Atom("dGVzdA==")))]),
            (b"CHECKSCRIPT {0}\r\n\r\n", [wire.Line((wire.Atom("CHECKSCRIPT"), b""))]),
            (b'NOOP "\\n"\r\n', [wire.BadLine("Only \\\" and \\\\ may be escaped in a quoted string")]),
        ]
        for data, expected_lines in table:
            self.assertEqual(wire.LineParser(1024).feed(data), expected_lines, data)
            parser = wire.LineParser(1024)
            fed = []
            for octet in data:
                fed += parser.feed(bytes([octet]))
            self.assertEqual(fed, expected_lines, data)

    def test_strings_out(self) -> None:
        self.assertEqual(wire.string('a"b\\'), b'"a\\"b\\\\"')
        self.assertEqual(wire.string("two\r\nlines"), b"{10}\r\ntwo\r\nlines")
        self.assertEqual(wire.response("NO", "gone", "NONEXISTENT"), b'NO (NONEXISTENT) "gone"\r\n')
