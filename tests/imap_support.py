"""Driving IMAP sessions in tests: StringTransport clients and transcripts.

A transcript is the conversation itself, as data (``tests/imap_transcripts``)::

    # what this checks
    @session a              switch to (or open) the session named a
    C: a1 LOGIN alice secret
    S~ a1 OK \\[CAPABILITY .*\\] Logged in     (regular expression)
    S: * 1 EXISTS                           (exact)
    @append INBOX \\Seen Subject line         (put a message in, as delivery would)
    @advance 5                              (move the clock)

A named group in an ``S~`` line keeps what it matched for later ``C:``
lines, which say ``${name}`` for it (a UIDVALIDITY, a MODSEQ)::

    S~ \\* OK \\[UIDVALIDITY (?P<uidvalidity>\\d+)\\] UIDs valid
    C: a9 SELECT INBOX (QRESYNC (${uidvalidity} 4))

After each run of ``C:`` lines the server's output so far must be exactly
the ``S:``/``S~`` lines that follow, in order.
"""

from __future__ import annotations

import re
from pathlib import Path

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import directlyProvides

from cyrusmail.imap.server import IMAPServer
from cyrusmail.store.records import Flag
from tests.helpers import add_user, make_context

TRANSCRIPTS = Path(__file__).parent / "imap_transcripts"
LOOPBACK = IPv4Address("TCP", "127.0.0.1", 40000)
REMOTE = IPv4Address("TCP", "192.0.2.7", 40000)


class TLSStringTransport(StringTransport):
    """A StringTransport that can pretend to start TLS."""

    tls_started = False

    def startTLS(self, context) -> None:
        self.tls_started = True
        directlyProvides(self, ISSLTransport)


def session_context(test, server: dict[str, str] | None = None, **imap):
    """A real store in the test's temporary folder, users alice and bob."""
    sections = {"server": server} if server else {}
    context = make_context(test.mktemp(), imap={"enabled": "yes", "listen": "tcp:0:interface=127.0.0.1", **imap},
                           **sections)
    from twisted.cred.credentials import IUsernamePassword

    context.portal.checkers[IUsernamePassword].hash_in_thread = False
    add_user(context, "alice", "secret")
    add_user(context, "bob", "secret")
    test.addCleanup(context.store.close)
    test.addCleanup(context.users.close)
    return context


def message(subject: str = "Hello", body: str = "Hi there.\r\n", sender: str = "carol@example.org") -> bytes:
    return (
        f"From: {sender}\r\nTo: alice@example.org\r\nSubject: {subject}\r\n"
        f"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\nMessage-ID: <{subject.replace(' ', '.')}@example.org>\r\n\r\n{body}"
    ).encode()


def deliver(context, user: str, mailbox: str, subject: str = "Hello", flags: Flag | None = None) -> int:
    box = context.store.mailboxes(user).open(mailbox)
    return box.append(message(subject), flags)


class Client:
    """One server session over a StringTransport, driven line by line."""

    def __init__(self, context, clock: Clock, peer=LOOPBACK) -> None:
        self.clock = clock
        context.portal.throttle.clock = clock  # logins wait their turn on the test's clock too
        self.transport = TLSStringTransport(peerAddress=peer)
        self.server = IMAPServer(context, "imap", reactor=clock)
        self.server.makeConnection(self.transport)
        self.greeting = self.take()

    def settle(self) -> None:
        for _ in range(10000):
            if not self.clock.getDelayedCalls() or all(
                call.getTime() > self.clock.seconds() for call in self.clock.getDelayedCalls()
            ):
                return
            self.clock.advance(0)

    def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.server.dataReceived(data)
        self.settle()

    def take(self) -> bytes:
        self.settle()
        data = self.transport.value()
        self.transport.clear()
        return data

    def lines(self) -> list[str]:
        return [line for line in self.take().decode("utf-8", "replace").split("\r\n") if line]

    def command(self, line: str) -> list[str]:
        self.send(line + "\r\n")
        return self.lines()

    def login(self, user: str = "alice", password: str = "secret") -> None:
        self.take()
        answer = self.command(f"L LOGIN {user} {password}")
        assert answer[-1].startswith("L OK"), answer


def selected(test, context, clock: Clock, mailbox: str = "INBOX") -> Client:
    """A session of alice's with ``mailbox`` selected, hung up when ``test`` ends."""
    client = Client(context, clock)
    test.addCleanup(lambda: None if client.transport.disconnecting else client.server.connectionLost(None))
    client.login()
    client.command(f"s SELECT {mailbox}")
    return client


def run_transcript(test, text: str, context=None) -> None:
    """Play a transcript against fresh sessions on one store."""
    context = context or session_context(test)
    clock = Clock()
    clients: dict[str, Client] = {}
    current = [None]

    def client() -> Client:
        if current[0] is None:
            current[0] = "a"
            clients["a"] = Client(context, clock)
        return clients[current[0]]

    pending_c: list[str] = []
    expected: list[tuple[str, str, int]] = []
    captured: dict[str, str] = {}

    def check() -> None:
        if not pending_c and not expected:
            return
        session = client()
        for line in pending_c:
            line = re.sub(r"\$\{(\w+)\}", lambda found: captured[found[1]], line)
            session.send(line.encode("utf-8") + b"\r\n" if not line.endswith("\\") else line[:-1].encode())
        got = session.lines()
        want = [(kind, body) for kind, body, _ in expected]
        where = expected[0][2] if expected else 0
        matches = [(body == line) if kind == "S:" else re.fullmatch(body, line)
                   for (kind, body), line in zip(want, got)]
        ok = len(got) == len(want) and all(matches)
        if ok:
            for found in matches:
                if isinstance(found, re.Match):
                    captured.update(found.groupdict())
        if not ok:
            test.fail(
                f"transcript line {where}: after {pending_c!r}\nexpected:\n  "
                + "\n  ".join(f"{kind} {body}" for kind, body in want)
                + "\ngot:\n  " + "\n  ".join(got)
            )
        pending_c.clear()
        expected.clear()

    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\n")
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("C: "):
            if expected:
                check()
            pending_c.append(line[3:])
        elif line.startswith(("S: ", "S~ ")):
            expected.append((line[:2], line[3:], number))
        elif line.startswith("@"):
            check()
            verb, _, rest = line[1:].partition(" ")
            if verb == "session":
                name, _, peer = rest.partition(" ")
                if name not in clients:
                    clients[name] = Client(context, clock, REMOTE if peer == "remote" else LOOPBACK)
                current[0] = name
            elif verb == "append":
                mailbox, _, rest = rest.partition(" ")
                flags = Flag(0)
                words = rest.split()
                while words and words[0].startswith("\\"):
                    flags |= getattr(Flag, words.pop(0)[1:].upper())
                deliver(context, "alice", mailbox, " ".join(words) or "Hello", flags)
            elif verb == "advance":
                clock.advance(float(rest))
                for session in clients.values():
                    session.settle()
            else:
                raise ValueError(f"line {number}: unknown directive {line}")
        else:
            raise ValueError(f"line {number}: not a transcript line: {line!r}")
    check()
    for session in clients.values():
        if session.server.transport is not None and not session.transport.disconnecting:
            session.server.connectionLost(None)
