"""Shared fixtures of the POP3 tests: a server over a real store, talked to in memory.

``Pop3Server(testcase)`` opens a real store in ``testcase.mktemp()`` with
a user ``alice`` (password ``secret``), a :class:`~twisted.internet.task.Clock`
as the reactor, and password checks done without a thread so that a login
answers at once. ``server.connect()`` gives a :class:`Conversation` over a
``StringTransport``; ``conversation.check(table)`` plays a table of
(client line, expected reply prefix).
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import directlyProvides

from cyrusmail.auth.checkers import PasswordChecker
from cyrusmail.pop3.server import POP3Factory
from tests.helpers import add_user, make_context

LOOPBACK = "127.0.0.1"
REMOTE = "192.0.2.7"  # TEST-NET-1: a peer that is not loopback; nothing is sent anywhere


class TLSStringTransport(StringTransport):
    """A StringTransport that can start TLS (records it and becomes an ISSLTransport)."""

    tls_started_with = None

    def startTLS(self, context) -> None:
        self.tls_started_with = context
        directlyProvides(self, ISSLTransport)


class Conversation:
    """One in-memory connection: send a line, read what the server wrote."""

    def __init__(self, testcase, factory: POP3Factory, clock: Clock, peer: str, tls: bool):
        self.testcase = testcase
        self.clock = clock
        self.transport = TLSStringTransport(peerAddress=IPv4Address("TCP", peer, 40110))
        if tls:
            directlyProvides(self.transport, ISSLTransport)
        self.protocol = factory.buildProtocol(self.transport.getPeer())
        self.protocol.makeConnection(self.transport)
        self.greeting = self.take()

    def take(self) -> bytes:
        value = self.transport.value()
        self.transport.clear()
        return value

    def send(self, data: bytes) -> bytes:
        """Send raw bytes; what the server answered."""
        self.protocol.dataReceived(data)
        return self.take()

    def command(self, line: str | bytes) -> bytes:
        raw = line.encode() if isinstance(line, str) else line
        return self.send(raw + b"\r\n")

    def check(self, table) -> None:
        """Play (client line, expected reply prefix) pairs in order."""
        for line, expected in table:
            reply = self.command(line)
            expected = expected.encode() if isinstance(expected, str) else expected
            self.testcase.assertTrue(reply.startswith(expected),
                                     f"C: {line[:80]!r}\nexpected S: {expected!r}...\ngot S: {reply[:300]!r}")

    def login(self, user: str = "alice", password: str = "secret") -> bytes:
        self.command(f"USER {user}")
        reply = self.command(f"PASS {password}")
        self.testcase.assertTrue(reply.startswith(b"+OK"), reply)
        return reply

    def close(self) -> None:
        if not self.transport.disconnecting:
            self.protocol.connectionLost(None)


class Pop3Server:
    """A POP3 factory over a real store in a temporary folder, with a Clock."""

    def __init__(self, testcase, allow_loopback: bool = True, real_reactor: bool = False):
        self.testcase = testcase
        self.clock = Clock()
        sections = {"pop3": {"enabled": "yes", "listen": "tcp:0:interface=127.0.0.1"}}
        if not allow_loopback:
            sections["server"] = {"allow_plaintext_on_loopback": "no"}
        reactor = None if real_reactor else self.clock
        self.context = make_context(testcase.mktemp(), reactor=reactor, **sections)
        testcase.addCleanup(self.context.users.close)
        testcase.addCleanup(self.context.store.close)
        if not real_reactor:
            self.context.portal.registerChecker(
                PasswordChecker(self.context.users, self.context.config.domains, hash_in_thread=False))
        add_user(self.context, "alice", "secret")
        self.factory = POP3Factory(self.context, "pop3")
        self.conversations: list[Conversation] = []
        testcase.addCleanup(self._close_all)

    def inbox(self, user: str = "alice"):
        return self.context.store.mailboxes(user).open("INBOX")

    def deliver(self, *messages: bytes, user: str = "alice") -> list[int]:
        return self.inbox(user).append_many([(message, None, (), None) for message in messages])

    def connect(self, peer: str = LOOPBACK, tls: bool = False) -> Conversation:
        conversation = Conversation(self.testcase, self.factory, self.clock, peer, tls)
        self.conversations.append(conversation)
        return conversation

    def _close_all(self) -> None:
        for conversation in self.conversations:
            conversation.close()


def message(number: int, body_lines: int = 2) -> bytes:
    """A small CRLF message."""
    body = "".join(f"line {line} of message {number}\r\n" for line in range(1, body_lines + 1))
    return (f"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: message {number}\r\n\r\n"
            + body).encode()


def unstuff(reply: bytes) -> bytes:
    """The content of a multi-line reply, as a client un-stuffs it (status line dropped)."""
    _, _, rest = reply.partition(b"\r\n")
    assert rest.endswith(b"\r\n.\r\n") or rest == b".\r\n", rest[-20:]
    body = rest[:-3]
    lines = body.split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)
