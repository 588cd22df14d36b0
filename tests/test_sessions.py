"""The live-session registry: goodbyes, kicks, connection caps and the control socket's protocol.

Every protocol's factory is wrapped as the service builder wraps it
(:class:`~cyrusmail.sessions.AdmissionFactory`), over a real store, with a
Clock as the reactor and StringTransports as connections.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest
from zope.interface import directlyProvides

from cyrusmail.config import ConfigError
from cyrusmail.control import ControlProtocol, ControlService, ask
from cyrusmail.imap.server import IMAPFactory
from cyrusmail.pop3.server import POP3Factory
from cyrusmail.sessions import (
    GOODBYE_GRACE,
    REFUSAL_LOG_INTERVAL,
    AdmissionFactory,
    Limits,
    SessionRegistry,
)
from cyrusmail.smtp.server import make_lmtp_factory, make_submission_factory
from tests.helpers import add_user, make_config, make_context

SERVICES = ("imap", "pop3", "submission", "lmtp")
LOGIN = {
    "imap": ["a LOGIN {user} secret"],
    "pop3": ["USER {user}", "PASS secret"],
    "submission": ["EHLO client.example.org", "AUTH PLAIN {plain}"],
}


def address(host: str, port: int = 40000):
    if host.startswith("/"):
        return UNIXAddress(host)
    return IPv6Address("TCP", host, port) if ":" in host else IPv4Address("TCP", host, port)


class Connection:
    """One client connection through the admission check, over a StringTransport."""

    def __init__(self, factory, host: str) -> None:
        self.transport = StringTransport(peerAddress=address(host))
        directlyProvides(self.transport, ISSLTransport)  # as if in TLS: passwords may be sent from anywhere
        self.protocol = factory.buildProtocol(self.transport.getPeer())
        self.protocol.makeConnection(self.transport)
        self.greeting = self.take()
        self.gone = False

    def take(self) -> str:
        data = self.transport.value().decode("utf-8", "replace")
        self.transport.clear()
        return data

    def send(self, line: str) -> str:
        self.protocol.dataReceived(line.encode("utf-8") + b"\r\n")
        return self.take()

    @property
    def closing(self) -> bool:
        return self.transport.disconnecting

    def hang_up(self) -> None:
        """What the reactor does once the transport has closed."""
        if not self.gone:
            self.gone = True
            self.protocol.connectionLost(None)


class Server:
    """Every protocol of one context, wrapped in the admission check."""

    def __init__(self, test: unittest.TestCase, **server: str) -> None:
        self.test = test
        self.clock = Clock()
        self.context = make_context(
            test.mktemp(), reactor=self.clock, server=server,
            **{name: {"enabled": "yes", "listen": f"tcp:{port}:interface=127.0.0.1"}
               for port, name in enumerate(SERVICES, 1)})
        test.addCleanup(self.context.store.close)
        test.addCleanup(self.context.users.close)
        for checker in self.context.portal.checkers.values():
            checker.hash_in_thread = False
        for user in ("alice", "bob"):
            add_user(self.context, user)
        self.registry = self.context.sessions
        builders = {
            "imap": lambda: IMAPFactory(self.context, "imap", self.clock),
            "pop3": lambda: POP3Factory(self.context, "pop3"),
            "submission": lambda: make_submission_factory(self.context, "submission"),
            "lmtp": lambda: make_lmtp_factory(self.context, "lmtp"),
        }
        self.factories = {name: AdmissionFactory(build(), self.registry, name) for name, build in builders.items()}
        self.connections: list[Connection] = []
        test.addCleanup(self.hang_up_all)

    def connect(self, service: str, host: str = "127.0.0.1") -> Connection:
        connection = Connection(self.factories[service], host)
        self.connections.append(connection)
        return connection

    def logged_in(self, service: str, user: str = "alice", host: str = "127.0.0.1") -> Connection:
        import base64

        connection = self.connect(service, host)
        plain = base64.b64encode(f"\0{user}\0secret".encode()).decode()
        for line in LOGIN[service]:
            answer = connection.send(line.format(user=user, plain=plain))
        self.test.assertRegex(answer, r"^(a OK|\+OK|235 )", answer)
        return connection

    def hang_up_all(self) -> None:
        for connection in self.connections:
            connection.hang_up()
        self.clock.advance(GOODBYE_GRACE + 2)


class LogCapture:
    def __init__(self, test: unittest.TestCase) -> None:
        self.lines: list[str] = []
        globalLogPublisher.addObserver(self.observe)
        test.addCleanup(globalLogPublisher.removeObserver, self.observe)

    def observe(self, event) -> None:
        self.lines.append(formatEvent(event) or "")

    def matching(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]


class RegistryTests(unittest.TestCase):
    def test_every_protocol_registers_with_its_user_and_leaves(self):
        server = Server(self)
        imap = server.logged_in("imap")
        pop3 = server.logged_in("pop3", "bob")
        submission = server.logged_in("submission")
        lmtp = server.connect("lmtp")
        rows = [(e.service, e.peer, e.user) for e in server.registry.live()]
        self.assertEqual(rows, [("imap", "127.0.0.1:40000", "alice"), ("pop3", "127.0.0.1:40000", "bob"),
                                ("submission", "127.0.0.1:40000", "alice"), ("lmtp", "127.0.0.1:40000", None)])
        self.assertEqual(server.registry.waiting_for_login, 0)  # LMTP never waits for a login
        for connection in (imap, pop3, submission, lmtp):
            connection.hang_up()
        self.assertEqual(server.registry.live(), [])

    def test_goodbye_of_each_protocol(self):
        server = Server(self)
        server.context.store.mailboxes("alice").open("INBOX").append(b"Subject: keep me\r\n\r\nHi\r\n", None)
        imap = server.logged_in("imap")
        pop3 = server.logged_in("pop3")
        self.assertTrue(pop3.send("DELE 1").startswith("+OK"))
        submission = server.logged_in("submission")
        submission.send("MAIL FROM:<alice@example.org>")
        lmtp = server.connect("lmtp")
        lmtp.send("LHLO mta.example.org")
        ended = server.registry.end_all("Server shutting down")
        self.assertEqual(imap.take(), "* BYE Server shutting down\r\n")
        self.assertEqual(pop3.take(), "-ERR [SYS/TEMP] Server shutting down\r\n")
        self.assertEqual(submission.take(), "421 4.3.2 mail.example.org Server shutting down\r\n")
        self.assertEqual(lmtp.take(), "421 4.3.2 mail.example.org Server shutting down\r\n")
        for connection in (imap, pop3, submission, lmtp):
            self.assertTrue(connection.closing)
            self.assertEqual(connection.send("NOOP"), "")  # nothing more is answered
        self.assertFalse(ended.called)
        for connection in (imap, pop3, submission, lmtp):
            connection.hang_up()
        self.assertTrue(ended.called)
        # POP3 left without UPDATE: the DELE'd message is still there.
        self.assertEqual(len(server.context.store.mailboxes("alice").open("INBOX").messages()), 1)

    def test_a_client_that_does_not_go_is_cut_off_after_the_grace(self):
        server = Server(self)
        imap = server.logged_in("imap")
        ended = server.registry.end_all("Server shutting down")
        self.assertIn("* BYE", imap.take())
        server.clock.advance(GOODBYE_GRACE - 0.1)
        self.assertFalse(imap.transport.disconnected)  # StringTransport's mark of abortConnection
        server.clock.advance(0.1)
        self.assertTrue(imap.transport.disconnected)
        imap.hang_up()
        self.assertTrue(ended.called)

    def test_end_all_fires_even_if_a_session_never_reports_its_end(self):
        server = Server(self)
        server.logged_in("imap")
        ended = server.registry.end_all("Server shutting down")
        server.clock.advance(GOODBYE_GRACE + 1)
        self.assertTrue(ended.called)

    def test_no_sessions_no_wait(self):
        server = Server(self)
        self.assertTrue(server.registry.end_all("Server shutting down").called)

    def test_kick_ends_every_session_of_one_user_only(self):
        server = Server(self)
        alice = [server.logged_in(name) for name in ("imap", "pop3", "submission")]
        bob = server.logged_in("imap", "bob")
        waiting = server.connect("imap")
        self.assertEqual(server.registry.kick("ALICE", "Account removed"), 3)
        self.assertEqual([c.take() for c in alice], [
            "* BYE Account removed\r\n", "-ERR [SYS/TEMP] Account removed\r\n",
            "421 4.3.2 mail.example.org Account removed\r\n"])
        self.assertEqual((bob.take(), bob.closing), ("", False))
        self.assertEqual((waiting.take(), waiting.closing), ("", False))
        self.assertRegex(bob.send("b NOOP"), r"b OK")

    def test_a_login_completing_after_the_kick_is_ended_unless_the_user_is_back(self):
        server = Server(self)
        server.context.users.delete("alice")  # as cyrusmail-admin does, before it asks for the kick
        server.registry.kick("alice")
        connection = server.connect("imap")
        # The password was checked before the deletion; the login completes now.
        server.registry.logged_in(connection.protocol, "alice")
        self.assertEqual(connection.take(), "* BYE Account removed\r\n")
        add_user(server.context, "alice")
        self.assertRegex(server.logged_in("imap").send("b NOOP"), r"b OK")


class LimitTests(unittest.TestCase):
    def test_global_cap_refuses_in_each_protocols_words(self):
        server = Server(self, max_connections="2")
        server.connect("imap")
        server.connect("lmtp")
        refused = {name: server.connect(name, "192.0.2.7") for name in SERVICES}
        self.assertEqual(refused["imap"].greeting,
                         "* BYE [UNAVAILABLE] Too many connections, try again later\r\n")
        self.assertEqual(refused["pop3"].greeting, "-ERR [SYS/TEMP] Too many connections, try again later\r\n")
        for name in ("submission", "lmtp"):
            self.assertEqual(refused[name].greeting,
                             "421 4.7.0 mail.example.org Too many connections, try again later\r\n")
        for connection in refused.values():
            self.assertTrue(connection.closing)
            self.assertEqual(connection.send("a LOGIN alice secret"), "")
        self.assertEqual(len(server.registry), 2)

    def test_a_closed_session_frees_its_place(self):
        server = Server(self, max_connections="1")
        first = server.connect("imap")
        self.assertIn("BYE", server.connect("imap").greeting)
        first.hang_up()
        self.assertIn("* OK", server.connect("imap").greeting)

    def test_per_address_cap(self):
        server = Server(self, max_connections_per_address="2", limit_exempt="")
        for _ in range(2):
            self.assertIn("* OK", server.connect("imap", "192.0.2.7").greeting)
        self.assertEqual(server.connect("pop3", "192.0.2.7").greeting,
                         "-ERR [SYS/TEMP] Too many connections from your address\r\n")
        self.assertIn("+OK", server.connect("pop3", "192.0.2.8").greeting)

    def test_ipv6_peers_count_per_64(self):
        server = Server(self, max_connections_per_address="1", limit_exempt="")
        self.assertIn("* OK", server.connect("imap", "2001:db8:1:2::1").greeting)
        self.assertIn("Too many connections from your address", server.connect("imap", "2001:db8:1:2::99").greeting)
        self.assertIn("* OK", server.connect("imap", "2001:db8:1:3::1").greeting)
        # An IPv4-mapped peer counts as its IPv4 address.
        self.assertIn("* OK", server.connect("imap", "::ffff:192.0.2.7").greeting)
        self.assertIn("Too many connections from your address", server.connect("imap", "192.0.2.7").greeting)

    def test_exempt_networks_and_unix_sockets_have_no_per_address_cap(self):
        server = Server(self, max_connections_per_address="1", max_unauthenticated_per_address="1",
                        limit_exempt="127.0.0.0/8 192.0.2.0/28")
        for host in ("127.0.0.1", "127.0.0.1", "192.0.2.7", "192.0.2.7", "/run/lmtp.sock", "/run/lmtp.sock"):
            self.assertNotIn("Too many", server.connect("lmtp" if host.startswith("/") else "imap", host).greeting)
        self.assertIn("Too many", server.connect("imap", "192.0.2.100").greeting
                      + server.connect("imap", "192.0.2.100").greeting)

    def test_lower_cap_before_login(self):
        server = Server(self, max_unauthenticated_per_address="2", limit_exempt="")
        first = server.connect("imap", "192.0.2.7")
        server.connect("submission", "192.0.2.7")
        self.assertEqual(server.connect("imap", "192.0.2.7").greeting,
                         "* BYE [UNAVAILABLE] Too many connections from your address waiting to log in\r\n")
        self.assertRegex(first.send("a LOGIN alice secret"), "a OK")
        self.assertIn("* OK", server.connect("imap", "192.0.2.7").greeting)

    def test_global_cap_before_login_leaves_lmtp_alone(self):
        server = Server(self, max_unauthenticated="1")
        server.connect("imap")
        self.assertEqual(server.connect("pop3", "192.0.2.7").greeting,
                         "-ERR [SYS/TEMP] Too many connections waiting to log in, try again later\r\n")
        self.assertIn("220 ", server.connect("lmtp").greeting)
        self.assertEqual(server.registry.waiting_for_login, 1)

    def test_refusals_are_logged_once_a_minute_per_address(self):
        server = Server(self, max_connections="1")
        server.connect("imap")
        capture = LogCapture(self)
        for _ in range(5):
            server.connect("imap", "192.0.2.7")
        server.connect("imap", "192.0.2.8")
        self.assertEqual(len(capture.matching("refused a connection from 192.0.2.7")), 1)
        self.assertEqual(len(capture.matching("refused a connection from 192.0.2.8")), 1)
        server.clock.advance(REFUSAL_LOG_INTERVAL)
        server.connect("imap", "192.0.2.7")
        lines = capture.matching("refused a connection from 192.0.2.7")
        self.assertEqual(len(lines), 2)
        self.assertIn("imap: refused a connection from 192.0.2.7: Too many connections, try again later"
                      " (4 more refused since the last report)", lines[1])

    def test_no_new_session_while_shutting_down(self):
        server = Server(self)
        server.registry.end_all("Server shutting down")
        self.assertEqual(server.connect("imap").greeting, "* BYE [UNAVAILABLE] Server shutting down\r\n")

    def test_a_refused_client_that_does_not_go_is_cut_off(self):
        server = Server(self, max_connections="1")
        server.connect("imap")
        refused = server.connect("imap", "192.0.2.7")
        self.assertTrue(refused.closing)
        self.assertFalse(refused.transport.disconnected)
        server.clock.advance(GOODBYE_GRACE)
        self.assertTrue(refused.transport.disconnected)


class ListenerTests(unittest.TestCase):
    def listened(self, **server: str):
        from cyrusmail.service import ServerService
        from cyrusmail.startup import bind_all

        folder = self.mktemp()
        config = make_config(
            folder, server=server,
            imap={"enabled": "yes", "listen": "tcp:0:interface=127.0.0.1\ntcp6:0:interface=\\:\\:1"},
            imaps={"enabled": "yes", "listen": "tcp:0:interface=127.0.0.1:backlog=7"},
            lmtp={"enabled": "yes", "listen": f"unix:{folder}/lmtp.sock"})
        reactor = MemoryReactorClock()
        top = ServerService(config, reactor, bind_all(reactor, config), None)
        top.startService()
        self.addCleanup(top.stopService)
        return reactor

    def test_every_listener_gets_the_backlog(self):
        reactor = self.listened()
        self.assertEqual(sorted((interface, backlog) for _port, _factory, backlog, interface in reactor.tcpServers),
                         [("127.0.0.1", 7), ("127.0.0.1", 511), ("::1", 511)])
        lmtp = [server for server in reactor.unixServers if server[0].endswith("lmtp.sock")]
        self.assertEqual([backlog for _path, _factory, backlog, _mode, _pid in lmtp], [511])

    def test_the_backlog_is_configurable(self):
        reactor = self.listened(listen_backlog="1024")
        self.assertEqual(sorted(backlog for _port, _factory, backlog, _interface in reactor.tcpServers),
                         [7, 1024, 1024])

    def test_listeners_are_wrapped_in_the_admission_check(self):
        reactor = self.listened(max_connections="1")
        factory = reactor.tcpServers[0][1]
        first = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        first.makeConnection(StringTransport())
        second = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 2))
        transport = StringTransport()
        second.makeConnection(transport)
        self.assertIn(b"Too many connections", transport.value())
        first.connectionLost(None)


class UnixStringTransport(StringTransport):
    """A StringTransport whose handle is a real unix socket of this process (for SO_PEERCRED)."""

    def __init__(self) -> None:
        super().__init__()
        self.handle, self.other_end = socket.socketpair(socket.AF_UNIX)

    def getHandle(self):
        return self.handle

    def close(self) -> None:
        self.handle.close()
        self.other_end.close()


class ControlProtocolTests(unittest.TestCase):
    def control(self, server: Server):
        protocol = ControlProtocol(server.registry)
        transport = UnixStringTransport()
        self.addCleanup(transport.close)
        protocol.makeConnection(transport)

        def ask(line: str) -> list[str]:
            protocol.dataReceived(line.encode() + b"\n")
            answer = transport.value().decode().splitlines()
            transport.clear()
            return answer

        return ask

    def test_kick_who_and_errors(self):
        server = Server(self)
        imap = server.logged_in("imap")
        server.connect("pop3", "192.0.2.7")
        ask = self.control(server)
        who = ask("who")
        self.assertEqual(len(who), 3)
        self.assertRegex(who[0], rf"^\* 1 imap 127\.0\.0\.1:40000 alice \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ {os.getpid()}$")
        self.assertRegex(who[1], r"^\* 2 pop3 192\.0\.2\.7:40000 - ")
        self.assertEqual(who[2], "ok 2")
        self.assertEqual(ask("kick alice"), ["ok 1"])
        self.assertEqual(imap.take(), "* BYE Account removed\r\n")
        self.assertEqual(ask("kick nobody"), ["ok 0"])
        self.assertEqual(ask("kick"), ["error usage: kick USER"])
        self.assertEqual(ask("reboot now"), ["error unknown command 'reboot' (known: kick, who, workers)"])
        self.assertRegex("\n".join(ask("workers")), rf"^\* 0 {os.getpid()} \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ 0\nok 1$")


class FileLimitTests(unittest.TestCase):
    def run_with_limits(self, soft: int, hard: int, wanted: int) -> str:
        code = ("import resource; from cyrusmail.service import raise_file_limit; "
                f"resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard})); "
                f"print(*raise_file_limit({wanted}), *resource.getrlimit(resource.RLIMIT_NOFILE))")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
        return result.stdout.strip()

    def test_the_soft_limit_is_raised_to_what_the_caps_need(self):
        self.assertEqual(self.run_with_limits(256, 8192, 4256), "256 4256 4256 8192")

    def test_never_past_the_hard_limit(self):
        self.assertEqual(self.run_with_limits(256, 1024, 4256), "256 1024 1024 1024")

    def test_a_higher_limit_is_left_alone(self):
        self.assertEqual(self.run_with_limits(5000, 8192, 4256), "5000 5000 5000 8192")


class LimitConfigTests(unittest.TestCase):
    def test_defaults_and_values(self):
        config = make_config(self.mktemp(), server={"max_connections": "7", "limit_exempt": "10.1.2.3 2001:db8::/48"})
        limits = Limits.from_config(config)
        self.assertEqual((limits.max_connections, limits.max_connections_per_address), (7, 100))
        self.assertEqual([str(network) for network in limits.exempt], ["10.1.2.3/32", "2001:db8::/48"])
        self.assertEqual(config["server"]["listen_backlog"], 511)
        self.assertEqual(Limits.defaults().max_unauthenticated, 500)

    def test_bad_values_name_the_key(self):
        for key, value, problem in (
            ("limit_exempt", "127.0.0.0/8 localhost",
             "expected addresses or networks such as 127.0.0.0/8 or ::1, got 'localhost'"),
            ("max_connections", "0", "expected a number above 0, got 0"),
            ("listen_backlog", "lots", "expected a whole number, got 'lots'"),
        ):
            with self.assertRaises(ConfigError) as caught:
                make_config(self.mktemp(), server={key: value})
            self.assertEqual(str(caught.exception), f"test.conf: [server] {key}: {problem}")


class ControlServiceTests(unittest.TestCase):
    def setUp(self):
        self.data = Path(tempfile.mkdtemp(prefix="cm-", dir="/tmp"))  # a unix socket path is short
        self.addCleanup(shutil.rmtree, self.data, True)
        self.path = self.data / "control.sock"

    def leave_socket(self, listen: bool) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(self.path))
        if listen:
            sock.listen(1)
            self.addCleanup(sock.close)
        else:
            sock.close()  # the file stays, nobody answers: what a killed server leaves
        return sock

    def test_listens_private_and_replaces_a_stale_socket(self):
        self.leave_socket(listen=False)
        reactor = MemoryReactorClock()
        ControlService(self.data, SessionRegistry(), reactor).startService()
        self.assertFalse(self.path.exists())
        self.assertEqual([(path, mode) for path, _factory, _backlog, mode, _pid in reactor.unixServers],
                         [(str(self.path), 0o600)])

    def test_refuses_to_take_the_socket_of_a_running_server(self):
        self.leave_socket(listen=True)
        with self.assertRaises(RuntimeError):
            ControlService(self.data, SessionRegistry(), MemoryReactorClock()).startService()

    def test_ask_without_a_server(self):
        self.assertIsNone(ask(self.data, "who"))
        self.leave_socket(listen=False)
        self.assertIsNone(ask(self.data, "who"))
