"""The outbound SMTP client: one connection, one message, every recipient's reply.

A small client of our own on a Twisted protocol (not ``twisted.mail.smtp``):
:class:`SMTPClientProtocol` reads replies (multi-line ones too) and sends
command lines, each wait bounded by a timeout that aborts the connection;
:func:`send_message` runs one transaction over it: greeting, EHLO (HELO if
EHLO is refused), optional STARTTLS (and EHLO again), optional AUTH PLAIN or
LOGIN, MAIL, one RCPT per recipient, DATA with the message file streamed by
a :class:`MessageSender` (a pull producer: one piece read, dot-stuffed and
written each time the transport's buffer has drained, so a large message is
never held in memory), QUIT.

What :func:`send_message` returns is a :class:`DeliveryResult`: one
:class:`ClientReply` per recipient (the RCPT reply if it refused, else the
reply to the end of data).  A failure that concerns the whole transaction
(greeting, MAIL or DATA refused) is given to every recipient.  A failure to
talk at all (refused connection, timeout, lost connection) raises
:class:`ConnectionFailed`, so the caller can try the next MX host.

Timeouts follow RFC 5321 section 4.5.3.2: 5 minutes for the greeting, MAIL
and RCPT, 2 for DATA's 354, 3 for the server to take each piece of the
message, 10 for the reply after the end of data.
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
from twisted.internet.interfaces import IPullProducer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

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
    data_block: float = 180.0  # the server reading on: each piece of the message taken
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
        self.sender: MessageSender | None = None  # the message being streamed, if any

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
        if self.sender is not None:
            self.sender.stopProducing()

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

    def has_pending_input(self) -> bool:
        """Whether anything was received beyond the replies read so far."""
        return bool(self._buffer or self._lines or self._replies)

    def send_line(self, line: str) -> None:
        self.transport.write(line.encode("utf-8") + b"\r\n")

    def command(self, line: str, timeout: float) -> defer.Deferred:
        self.send_line(line)
        return self.read_reply(timeout)


def dot_stuff(piece: bytes, before: bytes) -> tuple[bytes, bytes]:
    """Double every dot that starts a line (RFC 5321 section 4.5.2), one piece at a time.

    ``before`` is the last two bytes of what came before the piece
    (``b"\\r\\n"`` at the start: the message starts a line), so a CR LF "."
    split across pieces is seen whole.  Returns the stuffed piece and the
    ``before`` for the next one.  An inserted dot always follows a whole
    CR LF, so it is never inside the ``before`` bytes stripped off again.
    """
    joined = before + piece
    return joined.replace(b"\r\n.", b"\r\n..")[len(before):], joined[-2:]


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
    on_result: Callable[[DeliveryResult], None] | None = None,
) -> DeliveryResult:
    """Deliver ``message`` (a CRLF file) to ``envelope.recipients`` over one connection.

    ``on_result`` is called with the result as soon as every recipient has
    its reply, before QUIT: the caller can record it durably without
    waiting for the server's goodbye, which narrows the window in which a
    crash would send a message again (RFC 5321 section 6.1).
    """
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
                if client.has_pending_input():
                    # Plaintext after the 220 would be read as if it came over
                    # TLS: a man in the middle's injection (CVE-2011-0411's kind).
                    client.transport.abortConnection()
                    raise ConnectionFailed(f"{host} sent data after its STARTTLS reply")
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
            if on_result is not None:
                on_result(result)
            await _quit(client, timeouts)
            return result
        reply = await client.command("DATA", timeouts.data_start)
        if reply.code != 354:
            return everyone(reply)
        await _send_data(client, message, timeouts)
        reply = await client.read_reply(timeouts.data_end)
        for address in accepted:
            result.replies[address] = reply
        if on_result is not None:
            on_result(result)
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


@implementer(IPullProducer)
class MessageSender:
    """Streams a message file into a transport, dot-stuffed, ending with CR LF "." CR LF.

    A pull producer: each ``resumeProducing`` (the transport's buffer has
    drained) reads one :data:`CHUNK` of the file, so memory stays at a
    piece or two however large the message.  The last two bytes of each
    piece are kept, so a line-starting dot is stuffed even when CR LF "."
    falls across pieces (:func:`dot_stuff`).  If the server takes no piece
    for ``block_timeout`` seconds the connection is aborted.  ``deferred``
    fires once all is written, or fails with :class:`ConnectionFailed`.
    """

    def __init__(self, source, consumer, clock=None, block_timeout: float = 180.0,
                 on_timeout: Callable[[], None] | None = None) -> None:
        self.source = source
        self.consumer = consumer
        self.clock = clock
        self.block_timeout = block_timeout
        self.on_timeout = on_timeout
        self.deferred: defer.Deferred = defer.Deferred()
        self.sent = 0  # bytes written, stuffing included
        self._before = b"\r\n"  # the last two bytes of the message sent so far
        self._timer = None

    def begin(self) -> defer.Deferred:
        self.consumer.registerProducer(self, False)
        self._arm()
        return self.deferred

    def _arm(self) -> None:
        if self.clock is None or self.on_timeout is None:
            return
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.block_timeout)
        else:
            self._timer = self.clock.callLater(self.block_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        self._fail(ConnectionFailed(f"the server took no data for {self.block_timeout:g} seconds"))
        self.on_timeout()

    def resumeProducing(self) -> None:
        if self.deferred.called:
            return
        piece = self.source.read(CHUNK)
        if piece:
            stuffed, self._before = dot_stuff(piece, self._before)
            self._write(stuffed)
            self._arm()
            return
        self._write(b".\r\n" if self._before == b"\r\n" else b"\r\n.\r\n")
        self._disarm()
        self.consumer.unregisterProducer()
        self.deferred.callback(self.sent)

    def _write(self, data: bytes) -> None:
        self.sent += len(data)
        self.consumer.write(data)

    def stopProducing(self) -> None:
        self._fail(ConnectionFailed("connection lost while sending the message"))

    def _fail(self, error: Exception) -> None:
        self._disarm()
        if not self.deferred.called:
            self.deferred.errback(Failure(error))


async def _send_data(client: SMTPClientProtocol, message: Path, timeouts: Timeouts = Timeouts()) -> None:
    with open(message, "rb") as source:  # noqa: ASYNC230 -- local file, read a piece at a time
        sender = MessageSender(source, client.transport, client.clock, timeouts.data_block,
                               on_timeout=client.transport.abortConnection)
        client.sender = sender
        try:
            await sender.begin()
        finally:
            client.sender = None


async def _quit(client: SMTPClientProtocol, timeouts: Timeouts) -> None:
    try:
        await client.command("QUIT", min(timeouts.command, 30.0))
    except ConnectionFailed:
        pass
