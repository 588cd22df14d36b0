"""The outbound SMTP client: one connection, one message, every recipient's reply.

A small client of our own on a Twisted protocol (not ``twisted.mail.smtp``):
:class:`SMTPClientProtocol` reads replies (multi-line ones too) and sends
command lines, each wait bounded by a timeout that aborts the connection;
:func:`send_message` runs one transaction over it: greeting, EHLO (HELO if
EHLO is refused), optional STARTTLS (and EHLO again), optional AUTH PLAIN or
LOGIN, MAIL, one RCPT per recipient, DATA with the message file dot-stuffed
and sent in pieces, QUIT.

What :func:`send_message` returns is a :class:`DeliveryResult`: one
:class:`ClientReply` per recipient (the RCPT reply if it refused, else the
reply to the end of data).  A failure that concerns the whole transaction
(greeting, MAIL or DATA refused) is given to every recipient.  A failure to
talk at all (refused connection, timeout, lost connection) raises
:class:`ConnectionFailed`, so the caller can try the next MX host.

Timeouts follow RFC 5321 section 4.5.3.2: 5 minutes for the greeting, MAIL,
RCPT and each data block, 2 for DATA's 354, 10 for the reply after the end
of data.
"""

from __future__ import annotations

import base64
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from twisted.internet import defer, endpoints
from twisted.internet import error as net_error
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")
MAX_REPLY_LINE = 2048
MAX_REPLY_LINES = 100
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for each kind of reply (RFC 5321 section 4.5.3.2)."""

    connect: float = 30.0
    greeting: float = 300.0
    command: float = 300.0
    data_start: float = 120.0
    data_end: float = 600.0


@dataclass(frozen=True)
class ClientReply:
    """A reply from the server: its code and its text lines."""

    code: int
    lines: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    @property
    def enhanced(self) -> str | None:
        """The RFC 3463 status code the server gave, if any."""
        match = _ENHANCED.match(self.lines[0]) if self.lines else None
        return match.group(0).strip() if match else None

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def status(self) -> str:
        """The enhanced status to report: the server's, else one made from the code."""
        return self.enhanced or f"{self.code // 100}.0.0"

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


class ConnectionFailed(Exception):
    """No usable SMTP conversation with this host: try another, or later."""


@dataclass
class DeliveryResult:
    """Per-recipient replies of one transaction, and who answered."""

    host: str
    replies: dict[str, ClientReply] = field(default_factory=dict)
    dsn: bool = False  # the server advertised DSN: it was given NOTIFY, ORCPT, RET, ENVID


class SMTPClientProtocol(Protocol):
    """Reads SMTP replies and writes command lines; nothing more."""

    def __init__(self, clock) -> None:
        self.clock = clock
        self._buffer = b""
        self._lines: list[str] = []
        self._replies: deque[ClientReply] = deque()
        self._waiting: deque[defer.Deferred] = deque()
        self._lost: Failure | None = None
        self.connected_deferred: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        set_nodelay = getattr(self.transport, "setTcpNoDelay", None)
        if set_nodelay is not None:
            try:
                set_nodelay(True)
            except OSError:
                pass

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\n" in self._buffer:
            line, _, self._buffer = self._buffer.partition(b"\n")
            self._line(line.rstrip(b"\r").decode("utf-8", "replace"))
        if len(self._buffer) > MAX_REPLY_LINE:
            self._protocol_error("reply line too long")

    def _line(self, line: str) -> None:
        if len(line) < 3 or not line[:3].isdigit() or (len(line) > 3 and line[3] not in " -"):
            self._protocol_error(f"malformed reply line {line[:40]!r}")
            return
        self._lines.append(line[4:])
        if len(self._lines) > MAX_REPLY_LINES:
            self._protocol_error("reply has too many lines")
            return
        if len(line) == 3 or line[3] == " ":
            code = int(line[:3])
            reply = ClientReply(code, tuple(self._lines))
            self._lines = []
            if not 200 <= code <= 599:
                self._protocol_error(f"reply code {code} out of range")
                return
            if self._waiting:
                self._waiting.popleft().callback(reply)
            else:
                self._replies.append(reply)

    def _protocol_error(self, why: str) -> None:
        self._lost = Failure(ConnectionFailed(why))
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = None) -> None:
        if self._lost is None:
            self._lost = Failure(ConnectionFailed(f"connection lost: {reason.getErrorMessage() if reason else ''}"))
        while self._waiting:
            self._waiting.popleft().errback(self._lost)

    def read_reply(self, timeout: float) -> defer.Deferred:
        """The next reply, or ConnectionFailed after ``timeout`` seconds."""
        if self._replies:
            return defer.succeed(self._replies.popleft())
        if self._lost is not None:
            return defer.fail(self._lost)
        waiting: defer.Deferred = defer.Deferred()
        self._waiting.append(waiting)
        timer = self.clock.callLater(timeout, self._timed_out, timeout)

        def stop_timer(result):
            if timer.active():
                timer.cancel()
            return result

        return waiting.addBoth(stop_timer)

    def _timed_out(self, timeout: float) -> None:
        self._lost = Failure(ConnectionFailed(f"no reply within {timeout:g} seconds"))
        self.transport.abortConnection()

    def send_line(self, line: str) -> None:
        self.transport.write(line.encode("utf-8") + b"\r\n")

    def command(self, line: str, timeout: float) -> defer.Deferred:
        self.send_line(line)
        return self.read_reply(timeout)


def dot_stuff(data: bytes, at_line_start: bool) -> tuple[bytes, bool]:
    """Double every dot that starts a line (RFC 5321 section 4.5.2)."""
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    if at_line_start and stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    # A piece ending in CR LF leaves the next piece at a line start; one
    # ending in CR leaves a CR LF "." split across pieces, handled here too.
    return stuffed, data.endswith(b"\r\n")


def _split_cr(data: bytes, carry: bytes) -> tuple[bytes, bytes]:
    """Keep a trailing CR (or CR LF) back so that CR LF "." is never split."""
    data = carry + data
    keep = 0
    if data.endswith(b"\r\n"):
        keep = 2
    elif data.endswith(b"\r"):
        keep = 1
    if keep and len(data) > keep:
        return data[:-keep], data[-keep:]
    return data, b""


def ehlo_keywords(reply: ClientReply) -> dict[str, str]:
    """EHLO's keywords (upper case) with their parameters."""
    keywords = {}
    for line in reply.lines[1:]:
        word, _, params = line.partition(" ")
        keywords[word.upper()] = params
    return keywords


@dataclass(frozen=True)
class Envelope:
    """What one transaction sends: sender (None for <>), recipients, parameters."""

    sender: str | None
    recipients: tuple[str, ...]
    body: str | None = None  # 8BITMIME
    smtputf8: bool = False
    size: int | None = None
    ret: str | None = None
    envid: str | None = None
    notify: dict[str, str] = field(default_factory=dict)  # address -> "FAILURE,DELAY"
    orcpt: dict[str, str] = field(default_factory=dict)  # address -> "rfc822;addr"


def _xtext(text: str) -> str:
    return "".join(c if 0x21 <= ord(c) <= 0x7E and c not in "+=" else "".join(
        f"+{b:02X}" for b in c.encode("utf-8")) for c in text)


def connect_tcp(reactor, host: str, port: int, clock, timeout: float,
                tls_creator=None) -> defer.Deferred:
    """Connect an :class:`SMTPClientProtocol`; implicit TLS if ``tls_creator``."""
    endpoint = endpoints.HostnameEndpoint(reactor, host, port, timeout=timeout)
    if tls_creator is not None:
        endpoint = endpoints.wrapClientTLS(tls_creator, endpoint)
    return endpoints.connectProtocol(endpoint, SMTPClientProtocol(clock))


async def send_message(
    connect: Callable[[], defer.Deferred],
    *,
    host: str,
    helo: str,
    envelope: Envelope,
    message: Path,
    starttls: str = "opportunistic",  # "never", "opportunistic" or "required"
    tls_creator=None,
    username: str = "",
    password: str = "",
    timeouts: Timeouts = Timeouts(),
) -> DeliveryResult:
    """Deliver ``message`` (a CRLF file) to ``envelope.recipients`` over one connection."""
    try:
        client: SMTPClientProtocol = await connect()
    except (net_error.ConnectError, net_error.DNSLookupError, OSError, ConnectionFailed) as error:
        raise ConnectionFailed(f"cannot connect to {host}: {error}") from None
    result = DeliveryResult(host)

    def everyone(reply: ClientReply) -> DeliveryResult:
        for address in envelope.recipients:
            result.replies.setdefault(address, reply)
        return result

    try:
        greeting = await client.read_reply(timeouts.greeting)
        if not greeting.is_positive:
            if greeting.code == 554 or greeting.is_transient:
                raise ConnectionFailed(f"{host} greeted with {greeting}")
            return everyone(greeting)
        keywords = await _hello(client, helo, timeouts)
        if keywords is None:
            raise ConnectionFailed(f"{host} refused EHLO and HELO")
        if "STARTTLS" in keywords and starttls != "never" and tls_creator is not None:
            reply = await client.command("STARTTLS", timeouts.command)
            if reply.code == 220:
                client.transport.startTLS(tls_creator)
                keywords = await _hello(client, helo, timeouts)
                if keywords is None:
                    raise ConnectionFailed(f"{host} refused EHLO after STARTTLS")
            elif starttls == "required":
                return everyone(reply)
        elif starttls == "required":
            return everyone(ClientReply(451, ("4.7.5 server does not offer STARTTLS",)))
        result.dsn = "DSN" in keywords
        if username:
            reply = await _authenticate(client, keywords, username, password, timeouts)
            if not reply.is_positive:
                return everyone(reply)
        reply = await client.command(_mail_line(envelope, keywords), timeouts.command)
        if not reply.is_positive:
            return everyone(reply)
        accepted = []
        for address in envelope.recipients:
            reply = await client.command(_rcpt_line(envelope, address, keywords), timeouts.command)
            if reply.is_positive:
                accepted.append(address)
            else:
                result.replies[address] = reply
        if not accepted:
            await _quit(client, timeouts)
            return result
        reply = await client.command("DATA", timeouts.data_start)
        if reply.code != 354:
            return everyone(reply)
        await _send_data(client, message)
        reply = await client.read_reply(timeouts.data_end)
        for address in accepted:
            result.replies[address] = reply
        await _quit(client, timeouts)
        return result
    except ConnectionFailed:
        if result.replies and all(a in result.replies for a in envelope.recipients):
            return result  # everything was answered before the connection went
        raise
    finally:
        if client.transport is not None and client.transport.connected:
            client.transport.loseConnection()


async def _hello(client: SMTPClientProtocol, helo: str, timeouts: Timeouts) -> dict[str, str] | None:
    reply = await client.command(f"EHLO {helo}", timeouts.command)
    if reply.is_positive:
        return ehlo_keywords(reply)
    reply = await client.command(f"HELO {helo}", timeouts.command)
    return {} if reply.is_positive else None


async def _authenticate(client, keywords: dict[str, str], username: str, password: str,
                        timeouts: Timeouts) -> ClientReply:
    mechanisms = keywords.get("AUTH", "").upper().split()
    if "PLAIN" in mechanisms or "LOGIN" not in mechanisms:
        token = base64.b64encode(f"\0{username}\0{password}".encode()).decode("ascii")
        return await client.command(f"AUTH PLAIN {token}", timeouts.command)
    reply = await client.command("AUTH LOGIN", timeouts.command)
    for secret in (username, password):
        if reply.code != 334:
            return reply
        reply = await client.command(base64.b64encode(secret.encode()).decode("ascii"), timeouts.command)
    return reply


def _mail_line(envelope: Envelope, keywords: dict[str, str]) -> str:
    line = f"MAIL FROM:<{envelope.sender or ''}>"
    if envelope.size is not None and "SIZE" in keywords:
        line += f" SIZE={envelope.size}"
    if envelope.body and "8BITMIME" in keywords:
        line += f" BODY={envelope.body}"
    if envelope.smtputf8 and "SMTPUTF8" in keywords:
        line += " SMTPUTF8"
    if "DSN" in keywords:
        if envelope.ret:
            line += f" RET={envelope.ret}"
        if envelope.envid:
            line += f" ENVID={_xtext(envelope.envid)}"
    return line


def _rcpt_line(envelope: Envelope, address: str, keywords: dict[str, str]) -> str:
    line = f"RCPT TO:<{address}>"
    if "DSN" in keywords:
        if address in envelope.notify:
            line += f" NOTIFY={envelope.notify[address]}"
        if address in envelope.orcpt:
            kind, _, original = envelope.orcpt[address].partition(";")
            line += f" ORCPT={kind};{_xtext(original)}"
    return line


async def _send_data(client: SMTPClientProtocol, message: Path) -> None:
    at_line_start = True
    carry = b""
    last = b""
    with open(message, "rb") as source:  # noqa: ASYNC230 -- local file, read in pieces
        while piece := source.read(CHUNK):
            piece, carry = _split_cr(piece, carry)
            stuffed, at_line_start = dot_stuff(piece, at_line_start)
            client.transport.write(stuffed)
            last = piece
    if carry:
        stuffed, at_line_start = dot_stuff(carry, at_line_start)
        client.transport.write(stuffed)
        last = carry
    client.transport.write(b".\r\n" if last.endswith(b"\r\n") or not last else b"\r\n.\r\n")


async def _quit(client: SMTPClientProtocol, timeouts: Timeouts) -> None:
    try:
        await client.command("QUIT", min(timeouts.command, 30.0))
    except ConnectionFailed:
        pass
