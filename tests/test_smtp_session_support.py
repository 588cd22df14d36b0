"""Support for the SMTP and LMTP tests (no tests here): transcripts over a StringTransport."""

from __future__ import annotations

import base64

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ISSLTransport, ITLSTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import alsoProvides, implementer

from cyrusmail.delivery.local import LocalDelivery
from cyrusmail.smtp.codes import Reply
from cyrusmail.smtp.server import LMTPCallbacks, SMTPFactory, SubmissionCallbacks
from tests.helpers import add_user, make_context


@implementer(ITLSTransport)
class TLSCapableTransport(StringTransport):
    """A StringTransport that can "start TLS": it records the call and turns secure."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tls_started = False

    def startTLS(self, context) -> None:
        self.tls_started = True
        alsoProvides(self, ISSLTransport)


def parse_replies(output: bytes) -> list[tuple[int, str | None, list[str]]]:
    """Group reply lines: [(code, enhanced code or None, text lines)]."""
    replies, lines = [], []
    for raw in output.decode("utf-8").split("\r\n"):
        if not raw:
            continue
        lines.append(raw[4:])
        if raw[3] == " ":
            code = int(raw[:3])
            first = lines[0].split(" ", 1)[0]
            enhanced = first if first.count(".") == 2 and first[0] == raw[0] else None
            replies.append((code, enhanced, lines))
            lines = []
    return replies


def plain(user: str, password: str = "secret") -> bytes:
    return base64.b64encode(f"\0{user}\0{password}".encode())


class Conversation:
    """One session over a StringTransport; ``send`` returns the replies it caused."""

    def __init__(self, factory: SMTPFactory, peer: str = "127.0.0.1") -> None:
        self.transport = TLSCapableTransport(peerAddress=IPv4Address("TCP", peer, 40000))
        self.session = factory.buildProtocol(None)
        self.session.makeConnection(self.transport)
        self.greeting = self.take()

    def take(self) -> list[tuple[int, str | None, list[str]]]:
        output = self.transport.value()
        self.transport.clear()
        return parse_replies(output)

    def send(self, data: bytes | str) -> list[tuple[int, str | None, list[str]]]:
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.session.dataReceived(data)
        return self.take()

    def codes(self, data: bytes | str) -> list[tuple[int, str | None]]:
        return [(code, enhanced) for code, enhanced, _ in self.send(data)]


def expected(*replies: Reply) -> list[tuple[int, str | None]]:
    return [(reply.code, reply.enhanced) for reply in replies]


def make_server(tmp, **sections):
    """A context with users alice and bob, and a Clock."""
    context = make_context(tmp, **sections)
    for checker in context.portal.checkers.values():
        checker.hash_in_thread = False  # transcripts stay synchronous
    add_user(context, "alice")
    add_user(context, "bob")
    clock = Clock()
    context.portal.throttle.clock = clock  # logins wait their turn on the test's clock
    return context, clock


def submission_factory(context, clock, service: str = "submission") -> SMTPFactory:
    return SMTPFactory(context, SubmissionCallbacks(context, service, LocalDelivery(context)),
                       implicit_tls=service == "submissions", clock=clock)


def lmtp_factory(context, clock) -> SMTPFactory:
    return SMTPFactory(context, LMTPCallbacks(context, "lmtp", LocalDelivery(context)), clock=clock)


def inbox_messages(context, user: str, folder: str = "INBOX") -> list[bytes]:
    mailbox = context.realm.account(user).mailboxes.open(folder)
    return [mailbox.read(record.uid) for record in mailbox.messages()]
