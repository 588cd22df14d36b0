"""The SMTP/LMTP session engine: one Twisted protocol for submission and LMTP.

Like Dovecot's ``smtp_server_callbacks``, the engine owns the protocol (the
parser from :mod:`cyrusmail.smtp.wire`, the states, the command table, AUTH,
STARTTLS, DATA and BDAT, timeouts, back-pressure) and asks a
:class:`Callbacks` object for every decision that differs between the
services: who may send (``check_mail``), who may receive (``check_rcpt``),
the trace headers added to a message (``trace_headers``) and where the
message goes (``deliver``).  ``callbacks.lmtp`` switches the two protocol
differences of RFC 2033: LHLO instead of HELO/EHLO, and one reply per
accepted recipient after the end of DATA (or BDAT LAST).

Flow.  Received bytes go to the parser at once; the events it returns wait
in :attr:`SMTPSession._pending` and are handled in order.  A handler may
return a Deferred (a login waiting its turn and being checked, a
delivery): the session is then *busy* and handles nothing more until it
fires, so pipelined commands (RFC 2920) are answered in order.  Nothing
more is handled either while more than the transport's high-water mark of
replies waits unsent (:class:`~cyrusmail.flow.OutputFlow`): a client that
pipelines and never reads gets no more answers.  While the parser is paused
(after DATA/BDAT/AUTH/STARTTLS, waiting for this session), the session is
busy or output is blocked, reading from the socket stops once more than
:data:`MAX_PENDING_INPUT` octets wait.  Input that arrives while output is
blocked does not restart the idle timer, and a client whose output is still
blocked when it expires is cut off without the 421 it could never read.

Wire safety is the parser's: an over-long line or a bare CR/LF inside a
message fails the message, reported after its end, and nothing of it is
ever read as a command.  After STARTTLS everything pipelined in plaintext
is dropped (:meth:`~cyrusmail.smtp.wire.SMTPParser.discard_buffered`) and
the session starts over: a new EHLO, no login, no transaction.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet import defer
from twisted.internet.interfaces import ITLSTransport
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from cyrusmail import logs, sasl
from cyrusmail.account import IAccount
from cyrusmail.auth.policy import address_of, is_tls, sasl_channel
from cyrusmail.flow import OutputFlow
from cyrusmail.protocols import set_no_delay
from cyrusmail.smtp import codes, wire
from cyrusmail.smtp.codes import Reply

#: RFC 5321 section 4.5.3.2.7: the server waits at least 5 minutes for a command.
IDLE_TIMEOUT = 300.0
#: Octets waiting unparsed (or events unhandled) before reading the socket pauses.
MAX_PENDING_INPUT = 256 * 1024
MAX_PENDING_EVENTS = 1000
#: RFC 5321 section 4.5.3.1.8 asks for at least 100.
MAX_RECIPIENTS = 1000
#: Octets of a message's start kept in memory to find its header block.
MAX_HEADER_SCAN = 256 * 1024


# -- what the callbacks see ---------------------------------------------------------


@dataclass
class Recipient:
    """An accepted RCPT and what the callbacks resolved it to."""

    rcpt: wire.Rcpt
    target: Any = None

    @property
    def address(self) -> str:
        return self.rcpt.forward_path.address


@dataclass
class Transaction:
    """One mail transaction, from MAIL to the end of its message."""

    mail: wire.Mail
    id: str = field(default_factory=lambda: secrets.token_hex(6).upper())
    recipients: list[Recipient] = field(default_factory=list)
    message: MessageWriter | None = None
    bdat: bool = False  # a BDAT chunk was accepted: DATA is out of sequence

    @property
    def sender(self) -> str | None:
        path = self.mail.reverse_path
        return None if path is None else path.address


class Callbacks(TypingProtocol):
    """What differs between submission and LMTP (see the module docstring)."""

    lmtp: bool
    service: str

    def ehlo_keywords(self, session: SMTPSession) -> list[str]: ...

    def check_mail(self, session: SMTPSession, mail: wire.Mail) -> Reply: ...

    def check_rcpt(self, session: SMTPSession, rcpt: wire.Rcpt) -> tuple[Reply, Any]: ...

    def trace_headers(self, session: SMTPSession, transaction: Transaction, header: bytes) -> bytes: ...

    def deliver(self, session: SMTPSession, transaction: Transaction, staged) -> Any:
        """The replies (one, or one per recipient for LMTP), or a Deferred of them."""


class MessageWriter:
    """Writes a received message to a staged message, trace headers first.

    The first octets are kept until the end of the header block is seen (or
    :data:`MAX_HEADER_SCAN` octets, or the end of the message), so that the
    callbacks can look at the header (is there a Message-ID?) before the
    headers they add are written in front of it.  Once written, the client's
    header block stays in :attr:`header` for checks after the end of data;
    :attr:`header_complete` is False when it was longer than the scan.
    """

    def __init__(self, staged, prefix: Callable[[bytes], bytes]) -> None:
        self.staged = staged
        self._prefix = prefix
        self._head: bytearray | None = bytearray()
        self.received = 0  # octets of the client's message
        self.header = b""
        self.header_complete = False

    def write(self, data: bytes) -> None:
        self.received += len(data)
        head = self._head
        if head is None:
            self.staged.write(data)
            return
        head += data
        if head.startswith(b"\r\n") or b"\r\n\r\n" in head or len(head) > MAX_HEADER_SCAN:
            self._flush(at_end=False)

    def _flush(self, at_end: bool) -> None:
        head = bytes(self._head or b"")
        self._head = None
        end = head.find(b"\r\n\r\n")
        if head.startswith(b"\r\n"):
            header, complete = b"", True
        elif end >= 0:
            header, complete = head[: end + 2], True
        else:  # no empty line: all header if the message ended, else cut short
            header, complete = head, at_end
        self.header, self.header_complete = header, complete
        self.staged.write(self._prefix(header))
        self.staged.write(head)

    def finish(self) -> None:
        """Write what is held back; the delivery makes it durable (its fsync runs off the reactor)."""
        if self._head is not None:
            self._flush(at_end=True)

    def discard(self) -> None:
        self.staged.discard()


# -- the session -----------------------------------------------------------------------


class SMTPSession(Protocol, TimeoutMixin):
    """One client connection, submission or LMTP as ``callbacks`` say."""

    def __init__(self, context, callbacks: Callbacks, clock, *, implicit_tls: bool = False,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.context = context
        self.callbacks = callbacks
        self.clock = clock
        self.callLater = clock.callLater  # TimeoutMixin's timer
        self.idle_timeout = idle_timeout
        self.implicit_tls = implicit_tls
        self.parser = wire.SMTPParser()
        self.hostname = context.config.hostname
        self.max_size: int = context.config["server"]["max_message_size"]
        # Session state: who greeted, who logged in, the transaction.
        self.helo: str | None = None
        self.esmtp = True
        self.tls = False
        self.account = None
        self.principal: str | None = None  # the Kerberos principal of a GSSAPI login
        self.transaction: Transaction | None = None
        self._sasl: sasl.Exchange | None = None
        self._sasl_name = ""
        self._pending: deque = deque()
        self._busy = False
        self._reading_paused = False
        self._closed = False
        self.flow: OutputFlow | None = None

    # -- connection ------------------------------------------------------------

    def connectionMade(self) -> None:
        set_no_delay(self.transport)
        self.flow = OutputFlow(self.transport, self.clock, self._output_drained)
        self.tls = self.implicit_tls or is_tls(self.transport)
        logs.connection_opened(self.callbacks.service, self.transport)
        self.context.sessions.opened(self, self.callbacks.service, self.transport)
        self.setTimeout(self.idle_timeout)
        greeting = f"{self.hostname} {'LMTP' if self.callbacks.lmtp else 'ESMTP'} cyrusmail ready"
        self.reply(codes.READY.with_text(greeting))

    def connectionLost(self, reason: Failure = None) -> None:
        self._closed = True
        self.setTimeout(None)
        if self.flow is not None:
            self.flow.stopProducing()
        self._end_transaction()
        self.context.sessions.closed(self)
        logs.connection_closed(self.callbacks.service, self.transport)

    def timeoutConnection(self) -> None:
        if self.flow.blocked:  # not reading for the whole timeout: a 421 would never arrive
            logs.log.info("{service}: {peer} took no output for too long; connection aborted",
                          service=self.callbacks.service, peer=logs.peer_of(self.transport))
            self._closed = True
            self._pending.clear()
            self.flow.abort()
            return
        self.reply(codes.TIMEOUT)
        self.close()

    def goodbye(self, text: str) -> None:
        """The registry's farewell: ``421 4.3.2`` (RFC 5321 3.8), then close.

        A message being received is dropped, never delivered: the client
        was not told it was accepted, so it sends it again later.
        """
        if not self._closed:
            self.reply(codes.SERVICE_UNAVAILABLE.with_text(f"{self.hostname} {text}"))
            self.close()

    def close(self) -> None:
        """Hang up after what is written has gone; what the client sent
        that will never be read is dropped, and what arrives later is
        ignored (reading goes on: a TLS session needs the peer's
        close_notify to finish closing)."""
        self._closed = True
        self._pending.clear()
        self.parser.close()
        self.flow.close()

    def reply(self, reply: Reply) -> None:
        if not self._closed:
            self.transport.write(reply.to_bytes(enhanced=self.esmtp))

    @property
    def peer(self) -> str:
        return address_of(self.transport)

    @property
    def authenticated_user(self) -> str | None:
        return None if self.account is None else self.account.user

    # -- input -------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        if not self.flow.blocked:  # a client that sends but does not read is not active
            self.resetTimeout()
        self._pending.extend(self.parser.feed(data))
        self._process()
        if not self._closed and not self._reading_paused and (
            self.parser.buffered > MAX_PENDING_INPUT or len(self._pending) > MAX_PENDING_EVENTS
        ):
            self._reading_paused = True
            self.transport.pauseProducing()

    def _process(self) -> None:
        """Handle waiting events in order until one makes the session busy."""
        while not (self._busy or self._closed or self.flow.blocked):
            if not self._pending:
                if self.parser.mode in (wire.Mode.PAUSED, wire.Mode.CLOSED):
                    break
                more = self.parser.feed(b"")
                if not more:
                    break
                self._pending.extend(more)
            event = self._pending.popleft()
            started = time.perf_counter()
            result = self._handle(event)
            name = _command_name(event)
            if isinstance(result, defer.Deferred):
                self._busy = True
                result.addErrback(self._internal_error)
                if name is not None:
                    result.addBoth(self._count, name, started)
                result.addBoth(self._done)
            elif name is not None:
                self._count(None, name, started)
        if self._reading_paused and not self._closed and (
            self.parser.buffered <= MAX_PENDING_INPUT // 2 and len(self._pending) <= MAX_PENDING_EVENTS // 2
        ):
            self._reading_paused = False
            self.transport.resumeProducing()

    def _output_drained(self) -> None:
        """The client has taken all the output: it is active, and what waited runs."""
        if not self._closed:
            self.resetTimeout()
            self._process()

    def _count(self, result: object, name: str, started: float) -> object:
        self.context.metrics.command(self.callbacks.service, name, time.perf_counter() - started)
        return result

    def _done(self, _: object) -> None:
        self._busy = False
        self._process()

    def _internal_error(self, failure: Failure) -> None:
        logs.log.failure("{service}: internal error", failure, service=self.callbacks.service)
        self.context.metrics.internal_error(self.callbacks.service)
        self.reply(codes.TEMP_FAIL)

    def _handle(self, event: wire.Event):
        if isinstance(event, wire.Command):
            handler = COMMANDS[type(event)]
            return handler(self, event)
        if isinstance(event, wire.DataChunk):
            if self.transaction is not None and self.transaction.message is not None:
                self.transaction.message.write(event.data)
            return None
        if isinstance(event, wire.DataEnd):
            return self._message_end(event.error, per_recipient=True)
        if isinstance(event, wire.ChunkEnd):
            return self._chunk_end(event)
        if isinstance(event, wire.AuthResponse):
            return self._sasl_step(event.response)
        if isinstance(event, wire.AuthCancelled):
            self._sasl = None
            self.parser.resume()
            self.reply(codes.AUTH_CANCELLED)
            return None
        assert isinstance(event, wire.CommandError)
        return self._command_error(event)

    def _command_error(self, error: wire.CommandError) -> None:
        if self.parser.paused_on is error:  # a bad SASL line ends the exchange
            self._sasl = None
            self.parser.resume()
        self.reply(error.reply)
        if error.fatal:  # RFC 5321 section 3.8: close only after saying 421
            self.reply(codes.CLOSING_AFTER_BAD_BDAT)
            self.close()

    # -- greeting and session commands ------------------------------------------------

    def _start_over(self) -> None:
        self._end_transaction()

    def _end_transaction(self) -> None:
        transaction, self.transaction = self.transaction, None
        if transaction is not None and transaction.message is not None:
            transaction.message.discard()

    def do_helo(self, command: wire.Helo | wire.Ehlo | wire.Lhlo) -> None:
        wanted = wire.Lhlo if self.callbacks.lmtp else (wire.Helo, wire.Ehlo)
        if not isinstance(command, wanted):
            self.reply(codes.SYNTAX_ERROR.with_text(
                "Use LHLO, this is LMTP" if self.callbacks.lmtp else "Use EHLO or HELO, this is not LMTP"))
            return
        self._end_transaction()
        self.helo = command.domain
        self.esmtp = not isinstance(command, wire.Helo)
        if self.esmtp:
            keywords = self.callbacks.ehlo_keywords(self)
            self.reply(codes.ehlo_reply(f"{self.hostname} Hello {_shown(command.domain)}", keywords))
        else:
            self.reply(codes.HELLO.with_text(f"{self.hostname} Hello {_shown(command.domain)}"))

    def do_rset(self, command: wire.Rset) -> None:
        self._end_transaction()
        self.reply(codes.OK)

    def do_noop(self, command: wire.Noop) -> None:
        self.reply(codes.OK)

    def do_quit(self, command: wire.Quit) -> None:
        self.reply(codes.BYE)
        self.close()

    def do_vrfy(self, command: wire.Vrfy) -> None:
        self.reply(codes.CANNOT_VRFY)

    def do_help(self, command: wire.Help) -> None:
        self.reply(codes.HELP)

    # -- STARTTLS (RFC 3207) -------------------------------------------------------------

    def can_starttls(self) -> bool:
        return (not self.callbacks.lmtp and not self.tls and self.context.tls is not None
                and ITLSTransport.providedBy(self.transport))

    def do_starttls(self, command: wire.Starttls) -> None:
        if self.callbacks.lmtp:
            self.parser.resume()
            self.reply(codes.NOT_IMPLEMENTED)
            return
        if self.tls:
            self.parser.resume()
            self.reply(codes.BAD_SEQUENCE.with_text("TLS is already active"))
            return
        if not self.can_starttls():
            self.parser.resume()
            self.reply(codes.TLS_UNAVAILABLE)
            return
        self.reply(codes.TLS_READY)
        self.transport.startTLS(self.context.tls)
        discarded = self.parser.discard_buffered()
        if discarded:
            logs.log.warn("{service}: {peer} pipelined {n} octets after STARTTLS; dropped",
                          service=self.callbacks.service, peer=logs.peer_of(self.transport), n=discarded)
        # RFC 3207 section 4.2: forget everything learnt before TLS.
        self._pending.clear()
        self._end_transaction()
        self.tls = True
        self.helo = None
        self.esmtp = True
        self.account = None
        self.principal = None

    # -- AUTH (RFC 4954) ----------------------------------------------------------------

    def sasl_channel(self) -> sasl.Channel:
        allow_loopback = self.context.config["server"]["allow_plaintext_on_loopback"]
        return sasl_channel(self.transport, self.context.portal, allow_loopback, secure=self.tls,
                            service=self.callbacks.service)

    def auth_mechanisms(self) -> list[str]:
        """The SASL mechanisms AUTH offers here: none on LMTP; each where the registry allows it."""
        if self.callbacks.lmtp:
            return []
        return sasl.offered(self.sasl_channel())

    def do_auth(self, command: wire.Auth):
        refusal = None
        mechanism = command.mechanism.upper()
        if self.callbacks.lmtp:
            refusal = codes.NOT_IMPLEMENTED
        elif self.helo is None or not self.esmtp:
            refusal = codes.BAD_SEQUENCE.with_text("Send EHLO first")
        elif self.account is not None:
            refusal = codes.BAD_SEQUENCE.with_text("Already authenticated")
        elif self.transaction is not None:
            refusal = codes.BAD_SEQUENCE.with_text("AUTH is not allowed during a mail transaction")
        elif mechanism not in sasl.MECHANISMS:
            refusal = codes.MECHANISM_UNSUPPORTED
        elif mechanism not in self.auth_mechanisms():
            refusal = codes.ENCRYPTION_REQUIRED if not self.tls else codes.MECHANISM_UNSUPPORTED
        if refusal is not None:
            self.parser.resume()
            self.reply(refusal)
            return None
        channel = self.sasl_channel()
        self._sasl = sasl.Exchange(sasl.start(mechanism, channel), channel,
                                   lambda credentials: self.context.portal.login(credentials, None, IAccount))
        self._sasl_name = mechanism
        return self._sasl_step(command.initial_response)

    def _sasl_step(self, response: bytes | None):
        exchange = self._sasl
        if exchange is None:  # cannot happen: the parser only reads SASL lines after 334
            self.parser.resume()
            self.reply(codes.BAD_SEQUENCE)
            return None
        return exchange.respond(response).addCallback(self._sasl_outcome)

    def _sasl_outcome(self, outcome: sasl.Outcome) -> None:
        if isinstance(outcome, sasl.Challenge):
            self.parser.start_auth()
            self.reply(codes.AUTH_CONTINUE.with_text(sasl.encode_challenge(outcome.data).decode("ascii")))
            return
        mechanism, self._sasl = self._sasl.mechanism, None
        if isinstance(outcome, sasl.Succeeded):
            self.principal = getattr(mechanism, "principal", "") or None  # GSSAPI: for the Received header
            self._auth_succeeded(outcome.avatar)
        else:
            self._auth_failed(outcome.user, self._sasl_name)

    def _auth_succeeded(self, result) -> None:
        _interface, account, _logout = result
        self.account = account
        logs.login_succeeded(self.callbacks.service, self.transport, account.user, self._sasl_name)
        self.context.metrics.login(self.callbacks.service, self._sasl_name, ok=True)
        self.parser.resume()
        self.reply(codes.AUTH_OK)
        self.context.sessions.logged_in(self, account.user)

    def _auth_failed(self, user: str, mechanism: str) -> None:
        self._sasl = None
        logs.login_failed(self.callbacks.service, self.transport, user, mechanism)
        self.context.metrics.login(self.callbacks.service, mechanism, ok=False)
        if not self._closed:
            self.parser.resume()
            self.reply(codes.AUTH_FAILED)

    # -- the mail transaction ----------------------------------------------------------

    def do_mail(self, command: wire.Mail) -> None:
        if self.helo is None:
            self.reply(codes.BAD_SEQUENCE.with_text("Send " + ("LHLO" if self.callbacks.lmtp else "EHLO") + " first"))
        elif self.transaction is not None:
            self.reply(codes.BAD_SEQUENCE.with_text("Nested MAIL command"))
        elif command.size is not None and command.size > self.max_size:
            self.reply(codes.TOO_BIG.with_text(f"Message too big, the limit is {self.max_size} octets"))
        elif not self.callbacks.dsn and (command.ret is not None or command.envid is not None):
            self.reply(codes.PARAM_UNRECOGNIZED.with_text("DSN is not offered here (RET, ENVID)"))
        elif command.body is wire.BodyType.BINARY_MIME:
            # Not offered in EHLO; RFC 5321 section 4.3.2 allows no 504 for MAIL.
            self.reply(codes.PARAM_UNRECOGNIZED.with_text("BODY=BINARYMIME is not supported"))
        else:
            reply = self.callbacks.check_mail(self, command)
            if reply.is_positive:
                self.transaction = Transaction(command)
            self.reply(reply)

    def do_rcpt(self, command: wire.Rcpt) -> None:
        transaction = self.transaction
        if transaction is None:
            self.reply(codes.BAD_SEQUENCE.with_text("Need MAIL before RCPT"))
        elif transaction.bdat:
            self.reply(codes.BAD_SEQUENCE.with_text("RCPT after BDAT"))
        elif len(transaction.recipients) >= MAX_RECIPIENTS:
            self.reply(codes.TOO_MANY_RECIPIENTS)
        elif not self.callbacks.dsn and (command.notify is not None or command.orcpt is not None):
            self.reply(codes.PARAM_UNRECOGNIZED.with_text("DSN is not offered here (NOTIFY, ORCPT)"))
        else:
            reply, target = self.callbacks.check_rcpt(self, command)
            if reply.is_positive:
                transaction.recipients.append(Recipient(command, target))
            self.reply(reply)

    def _data_refusal(self) -> Reply | None:
        transaction = self.transaction
        if transaction is None:
            return codes.BAD_SEQUENCE.with_text("Need MAIL before DATA")
        if not transaction.recipients:
            if self.callbacks.lmtp:  # RFC 2033 section 4.2: MUST fail with 503
                return codes.BAD_SEQUENCE.with_text("No valid recipients")
            return codes.NO_VALID_RECIPIENTS  # RFC 5321 section 3.3 allows 503 or 554
        return None

    def _new_message(self, transaction: Transaction) -> MessageWriter:
        return MessageWriter(
            self.context.store.stage(),
            lambda header: self.callbacks.trace_headers(self, transaction, header),
        )

    def do_data(self, command: wire.Data) -> None:
        refusal = self._data_refusal()
        if refusal is None and self.transaction.bdat:
            refusal = codes.BAD_SEQUENCE.with_text("DATA after BDAT")
        if refusal is not None:
            self.parser.resume()
            self.reply(refusal)
            return
        self.transaction.message = self._new_message(self.transaction)
        self.parser.start_data(self.max_size)
        self.reply(codes.START_DATA)

    def do_bdat(self, command: wire.Bdat) -> None:
        if command.size > 2 * self.max_size:
            # RFC 3030 wants a refused chunk read to stay in step; one this far
            # past the size limit is not worth reading: say why, then close.
            self.reply(codes.TOO_BIG.with_text(f"Chunk of {command.size} octets is over the limit of "
                                               f"{self.max_size}"))
            self.reply(codes.CLOSING_AFTER_BAD_BDAT.with_text("Not reading a chunk that large, closing channel"))
            self.close()
            return
        refusal = self._data_refusal()
        if refusal is not None:
            self.parser.resume()  # the chunk is still read, and dropped
            self.reply(refusal)
            return
        transaction = self.transaction
        if transaction.message is None:
            transaction.message = self._new_message(transaction)
        transaction.bdat = True
        self.parser.start_data(self.max_size - transaction.message.received)

    def _chunk_end(self, event: wire.ChunkEnd):
        transaction = self.transaction
        if transaction is None or transaction.message is None:
            return None  # a refused BDAT's chunk: already answered
        if event.error is None and not event.last:
            self.reply(codes.CHUNK_OK.with_text(f"{event.size} octets received"))
            return None
        return self._message_end(event.error, per_recipient=event.last)

    def _message_end(self, error: Reply | None, per_recipient: bool):
        """The whole message is in (or failed): deliver it and answer."""
        transaction = self.transaction
        if transaction is None or transaction.message is None:
            return None
        count = len(transaction.recipients) if self.callbacks.lmtp and per_recipient else 1
        if error is not None:
            self._end_transaction()
            for _ in range(count):
                self.reply(error)
            return None
        message = transaction.message
        try:
            message.finish()
        except OSError:
            logs.log.failure("{service}: cannot write a message", service=self.callbacks.service)
            self._end_transaction()
            for _ in range(count):
                self.reply(codes.INSUFFICIENT_STORAGE)
            return None
        result = defer.maybeDeferred(self.callbacks.deliver, self, transaction, message.staged)

        def answer(replies: list[Reply]) -> None:
            for reply in replies:
                self.reply(reply)

        def failed(failure: Failure) -> None:
            logs.log.failure("{service}: delivery failed", failure, service=self.callbacks.service)
            for _ in range(count):
                self.reply(codes.TEMP_FAIL)

        result.addCallbacks(answer, failed)
        result.addBoth(lambda _: self._end_transaction() if self.transaction is transaction else None)
        return result


#: The one command table: each parsed command's handler.  Which states allow
#: a command is decided at the top of its handler, in one place.
COMMANDS: dict[type, Callable[[SMTPSession, Any], Any]] = {
    wire.Helo: SMTPSession.do_helo,
    wire.Ehlo: SMTPSession.do_helo,
    wire.Lhlo: SMTPSession.do_helo,
    wire.Mail: SMTPSession.do_mail,
    wire.Rcpt: SMTPSession.do_rcpt,
    wire.Data: SMTPSession.do_data,
    wire.Bdat: SMTPSession.do_bdat,
    wire.Rset: SMTPSession.do_rset,
    wire.Noop: SMTPSession.do_noop,
    wire.Quit: SMTPSession.do_quit,
    wire.Vrfy: SMTPSession.do_vrfy,
    wire.Help: SMTPSession.do_help,
    wire.Starttls: SMTPSession.do_starttls,
    wire.Auth: SMTPSession.do_auth,
}


#: Command class -> its name as a /metrics label; the end of a message is ``message``.
_COMMAND_NAMES = {kind: kind.__name__.upper() for kind in COMMANDS}


def _command_name(event) -> str | None:
    """The label a handled event is counted under, or None for what is not a command (message data)."""
    if isinstance(event, wire.DataEnd) or (isinstance(event, wire.ChunkEnd) and event.last):
        return "message"
    if isinstance(event, wire.CommandError):
        return "other"
    return _COMMAND_NAMES.get(type(event))


def _shown(text: str, limit: int = 100) -> str:
    """A client's word as it may appear in a reply: printable (no CR, LF, DEL) and short."""
    return "".join(ch if ch.isprintable() else "?" for ch in text[:limit])
