"""The POP3 session: a Twisted protocol, its states, and one table of commands.

States carry their data (STYLE 5): :class:`Authorization` holds the name
given by USER, :class:`Authenticating` a SASL exchange in progress,
:class:`Transaction` the maildrop and its lock. ``COMMANDS`` is the one
table of (name, states, handler); a handler reads its parsed arguments,
asks the maildrop, and answers.

Pipelining (RFC 2449): received lines wait in the line reader while a reply
is still being produced (a message streaming out, a login waiting its turn
and being checked), and are taken in order after it, and while more
than the transport's high-water mark (64 KiB) of output waits unsent
(:class:`~cyrusmail.flow.OutputFlow`); reading from the socket pauses while
too much input waits. Every bad input gets ``-ERR`` and the session goes on;
only QUIT, the idle timeout (RFC 1939: 10 minutes) or the client ends it.
Input that arrives while output is blocked does not restart the idle timer,
and a client whose output is still blocked when it expires is cut off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.internet import defer, interfaces
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from cyrusmail import logs, sasl
from cyrusmail.account import IAccount
from cyrusmail.auth.policy import address_of, is_tls, plaintext_allowed, sasl_channel
from cyrusmail.auth.throttle import UsernamePasswordFrom
from cyrusmail.flow import OutputFlow
from cyrusmail.pop3 import wire
from cyrusmail.pop3.locks import MaildropLock, MaildropLocks
from cyrusmail.pop3.maildrop import STORE_FAILURES, Maildrop, MaildropError
from cyrusmail.protocols import ServerContext, set_no_delay

#: RFC 1939 section 3: the autologout timer is at least 10 minutes.
IDLE_TIMEOUT = 600.0
#: Received octets waiting behind a reply before we stop reading the socket.
MAX_PENDING_INPUT = 64 * 1024
#: Octets read from a message file at a time.
CHUNK_SIZE = 128 * 1024

GREETING = "cyrusmail POP3 server ready"


# -- states --------------------------------------------------------------------


@dataclass
class Authorization:
    """Before login; ``user`` is USER's argument, waiting for PASS."""

    user: str | None = None


@dataclass
class Authenticating:
    """A SASL exchange (AUTH) waiting for the client's next response line."""

    exchange: sasl.Exchange


@dataclass
class Transaction:
    """Logged in, working on the maildrop, holding its lock."""

    user: str
    maildrop: Maildrop
    lock: MaildropLock
    logout: Callable[[], None]


@dataclass
class Update:
    """After QUIT: the changes are being made and the connection closes."""


STATE_NAMES = {Authorization: "AUTHORIZATION", Authenticating: "AUTHORIZATION",
               Transaction: "TRANSACTION", Update: "UPDATE"}


# -- streaming a message ---------------------------------------------------------


@implementer(interfaces.IPushProducer)
class MessageProducer:
    """Streams one message file, dot-stuffed, as the body of a multi-line reply.

    Reads ``CHUNK_SIZE`` octets at a time while the transport wants more, so
    a 50 MiB message never sits in memory; with ``top`` only as much of the
    file is read as the header and the requested body lines need.
    """

    def __init__(self, source: BinaryIO, write: Callable[[bytes], None],
                 finished: Callable[[BaseException | None], None], top: wire.TopFilter | None = None):
        self.source = source
        self.write = write
        self.finished = finished
        self.top = top
        self.stuffer = wire.DotStuffer()
        self.paused = False
        self.done = False
        self._producing = False

    def resumeProducing(self) -> None:
        self.paused = False
        if self.done:  # stopped (the connection went) before we began
            return
        if self._producing:  # a write inside the loop resumed us: the loop goes on
            return
        self._producing = True
        try:
            while not self.paused and not self.done:
                self._send_chunk()
        finally:
            self._producing = False

    def _send_chunk(self) -> None:
        try:
            chunk = self.source.read(CHUNK_SIZE)
        except OSError as error:
            self._finish(error)
            return
        if self.top is not None:
            chunk = self.top.feed(chunk)
        if chunk:
            self.write(self.stuffer.feed(chunk))
        if not chunk or (self.top is not None and self.top.done):
            self.write(self.stuffer.finish())
            self._finish(None)

    def _finish(self, error: BaseException | None) -> None:
        self.done = True
        self.source.close()
        self.finished(error)

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        if not self.done:
            self.done = True
            self.source.close()


# -- the protocol ----------------------------------------------------------------


class POP3Session(Protocol):
    """One POP3 connection."""

    def __init__(self, context: ServerContext, service: str, locks: MaildropLocks, reactor,
                 idle_timeout: float = IDLE_TIMEOUT):
        self.context = context
        self.service = service
        self.locks = locks
        self.reactor = reactor
        self.idle_timeout = idle_timeout
        self.state: Authorization | Authenticating | Transaction | Update = Authorization()
        self.reader = wire.LineReader(wire.AUTH_LINE_LIMIT)
        self._busy = False  # a reply is still being made: lines wait
        self._processing = False
        self._reading_paused = False
        self._closed = False
        self._idle = None
        self._streaming: MessageProducer | None = None  # a RETR/TOP answer going out
        self.flow: OutputFlow | None = None

    # -- connection ---------------------------------------------------------------

    def connectionMade(self) -> None:
        logs.connection_opened(self.service, self.transport)
        self.context.sessions.opened(self, self.service, self.transport)
        set_no_delay(self.transport)
        self.flow = OutputFlow(self.transport, self.reactor, self._output_drained)
        self._idle = self.reactor.callLater(self.idle_timeout, self._idle_out)
        self.send(wire.ok(GREETING))

    def connectionLost(self, reason: Failure = None) -> None:
        self._closed = True
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        if self.flow is not None:
            self.flow.stopProducing()  # and a RETR being streamed
        self._end_transaction()
        self.context.sessions.closed(self)
        logs.connection_closed(self.service, self.transport)

    def _end_transaction(self) -> None:
        state = self.state
        if isinstance(state, Transaction):
            state.lock.release()
            state.logout()
            self.state = Update()

    def goodbye(self, text: str) -> None:
        """The registry's farewell: ``-ERR [SYS/TEMP] text``, then close without UPDATE.

        Nothing marked with DELE is removed (RFC 1939 6).  In the middle of
        a RETR or TOP answer no reply can be told from the message, so the
        connection is only closed.
        """
        if self._closed or isinstance(self.state, Update):
            return
        streaming = self._streaming is not None
        if not streaming:
            self.send(wire.err(text, wire.SYS_TEMP))
        self._end_transaction()
        self._closed = True
        if streaming:
            self.flow.abort()  # a cut message without its final "." is never taken as whole
        else:
            self.flow.close()

    def _idle_out(self) -> None:
        """RFC 1939: close without a reply and without entering UPDATE.

        If output has been blocked all along, the client is not reading:
        the connection is aborted rather than left to drain."""
        logs.log.info("{service}: idle timeout for {peer}", service=self.service,
                      peer=logs.peer_of(self.transport))
        self._end_transaction()
        if self.flow.blocked:
            self.flow.abort()
        else:
            self.flow.close()

    def _touch(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.idle_timeout)

    def send(self, data: bytes) -> None:
        if not self._closed:
            self.transport.write(data)

    # -- input --------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if not self.flow.blocked:  # a client that sends but does not read is not active
            self._touch()
        self.reader.feed(data)
        self._process()
        if self.reader.pending > MAX_PENDING_INPUT and not self._reading_paused:
            pause = getattr(self.transport, "pauseProducing", None)
            if pause is not None:
                self._reading_paused = True
                pause()

    def _process(self) -> None:
        """Answer waiting lines in order until one needs to wait."""
        if self._processing:
            return
        self._processing = True
        try:
            while not (self._busy or self._closed or self.flow.blocked or isinstance(self.state, Update)):
                line = self.reader.next_line()
                if line is None:
                    break
                self._handle_line(line)
        finally:
            self._processing = False
        if self._reading_paused and self.reader.pending <= MAX_PENDING_INPUT // 2:
            self._reading_paused = False
            self.transport.resumeProducing()

    def _output_drained(self) -> None:
        """The client has taken all the output: it is active, and what waited runs."""
        self._touch()
        self._process()

    def _handle_line(self, line: bytes | object) -> None:
        if isinstance(self.state, Authenticating):
            self._sasl_response(self.state, line)
            return
        if line is wire.LINE_TOO_LONG:
            self.send(wire.err(f"Line too long (at most {wire.COMMAND_LINE_LIMIT} octets)"))
            return
        command = wire.parse_command(line)
        if isinstance(command, wire.BadCommand):
            self.send(wire.err(command.reason))
            return
        spec = COMMANDS[command.name]
        if type(self.state) not in spec.states:
            self.send(wire.err(f"{command.name} is not allowed in the {STATE_NAMES[type(self.state)]} state"))
            return
        try:
            spec.handler(self, command)
        except STORE_FAILURES:  # logged whole, answered, and the session goes on
            self._unexpected(Failure())

    def _wait(self, work: defer.Deferred) -> None:
        """Hold further lines until ``work`` has answered."""
        self._busy = True

        def done(result):
            self._busy = False
            self._process()
            return result

        work.addErrback(self._unexpected)
        work.addBoth(done)

    def _unexpected(self, failure: Failure) -> None:
        logs.log.failure("{service}: unexpected error", failure, service=self.service)
        self.send(wire.err("Internal error", wire.SYS_TEMP))

    # -- authorization ------------------------------------------------------------

    def _plaintext_allowed(self) -> bool:
        allow_loopback = self.context.config["server"]["allow_plaintext_on_loopback"]
        return plaintext_allowed(self.transport, allow_loopback)

    def _refuse_plaintext(self) -> None:
        self.send(wire.err("Plaintext authentication is not allowed without TLS; use STLS first", wire.AUTH))

    def do_user(self, command: wire.Command) -> None:
        if not self._plaintext_allowed():
            self._refuse_plaintext()
            return
        self.state = Authorization(user=command.args[0])
        self.send(wire.ok("Send PASS"))

    def do_pass(self, command: wire.Command) -> None:
        user = self.state.user
        if user is None:
            self.send(wire.err("Send USER first"))
            return
        if not self._plaintext_allowed():
            self._refuse_plaintext()
            return
        self.state = Authorization()
        self._login(user, command.args[0], "USER")

    def _sasl_channel(self) -> sasl.Channel:
        allow_loopback = self.context.config["server"]["allow_plaintext_on_loopback"]
        return sasl_channel(self.transport, self.context.portal, allow_loopback, service=self.service)

    def do_auth(self, command: wire.Command) -> None:
        channel = self._sasl_channel()
        if not command.args:
            self.send(wire.multiline("SASL mechanisms follow", sasl.offered(channel)))
            return
        mechanism = command.args[0].upper()
        if mechanism not in sasl.MECHANISMS:
            self.send(wire.err(f"Unsupported mechanism {mechanism[:20]}"))
            return
        if mechanism not in sasl.offered(channel):
            if sasl.is_plaintext(mechanism):
                self._refuse_plaintext()
            else:
                self.send(wire.err(f"Mechanism {mechanism} is not available on this connection", wire.AUTH))
            return
        exchange = Authenticating(sasl.Exchange(sasl.start(mechanism, channel), channel, self._portal_login))
        self.state = exchange
        if len(command.args) == 2:  # RFC 5034 initial response
            self._sasl_step(exchange, command.args[1].encode("ascii", "replace"))
        else:
            self._sasl_step(exchange, None)

    def _portal_login(self, credentials) -> defer.Deferred:
        return defer.maybeDeferred(self.context.portal.login, credentials, None, IAccount)

    def _sasl_response(self, exchange: Authenticating, line: bytes | object) -> None:
        if line is wire.LINE_TOO_LONG:
            self.state = Authorization()
            self.send(wire.err("SASL response too long"))
            return
        self._sasl_step(exchange, line.strip())

    def _sasl_step(self, exchange: Authenticating, line: bytes | None) -> None:
        """Feed one client line (None: no initial response) to the exchange."""
        try:
            response = None if line is None else sasl.decode_response(line)
        except sasl.SASLCancelled:
            self.state = Authorization()
            self.send(wire.err("Authentication cancelled"))
            return
        except sasl.SASLError as error:
            self.state = Authorization()
            self.send(wire.err(str(error), wire.AUTH))
            return
        work = exchange.exchange.respond(response)
        work.addCallbacks(self._sasl_outcome, self._login_failed,
                          callbackArgs=(exchange,), errbackArgs=(exchange.exchange.user, exchange.exchange.name))
        self._wait(work)

    def _sasl_outcome(self, outcome: sasl.Outcome, exchange: Authenticating) -> None:
        if isinstance(outcome, sasl.Challenge):
            self.send(wire.challenge(sasl.encode_challenge(outcome.data)))
            return
        self.state = Authorization()
        if isinstance(outcome, sasl.Succeeded):
            self._logged_in(outcome.avatar, exchange.exchange.name)
        else:
            logs.login_failed(self.service, self.transport, outcome.user, exchange.exchange.name)
            self.send(wire.err(outcome.reason if outcome.malformed else "Authentication failed", wire.AUTH))

    def _login(self, user: str, password: str, mechanism: str) -> None:
        credentials = UsernamePasswordFrom(user, password, address_of(self.transport))
        work = defer.maybeDeferred(self.context.portal.login, credentials, None, IAccount)
        work.addCallbacks(self._logged_in, self._login_failed,
                          callbackArgs=(mechanism,), errbackArgs=(user, mechanism))
        self._wait(work)

    def _logged_in(self, avatar: tuple, mechanism: str) -> None:
        _, account, logout = avatar
        if self._closed:
            logout()
            return
        logs.login_succeeded(self.service, self.transport, account.user, mechanism)
        lock = self.locks.acquire(account.user)
        if lock is None:
            logout()
            self.send(wire.err("Maildrop is in use by another POP3 session", wire.IN_USE))
            return
        try:
            maildrop = Maildrop.open(account)
        except STORE_FAILURES as error:
            lock.release()
            logout()
            logs.log.warn("{service}: cannot open the maildrop of {user}: {error}",
                          service=self.service, user=account.user, error=str(error))
            self.send(wire.err("Cannot open the maildrop", wire.SYS_TEMP))
            return
        self.state = Transaction(account.user, maildrop, lock, logout)
        count, octets = maildrop.stat()
        self.send(wire.ok(f"{account.user} has {count} messages ({octets} octets)"))
        self.context.sessions.logged_in(self, account.user)

    def _login_failed(self, failure: Failure, user: str, mechanism: str) -> None:
        if not failure.check(UnauthorizedLogin, UnhandledCredentials):
            logs.log.failure("{service}: login error", failure, service=self.service)
            self.send(wire.err("Cannot log in now, try again later", wire.SYS_TEMP))
            return
        logs.login_failed(self.service, self.transport, user, mechanism)
        self.send(wire.err("Authentication failed", wire.AUTH))

    def do_stls(self, command: wire.Command) -> None:
        if is_tls(self.transport):
            self.send(wire.err("Already using TLS"))
            return
        start_tls = getattr(self.transport, "startTLS", None)
        if self.context.tls is None or start_tls is None:
            self.send(wire.err("TLS is not available"))
            return
        self.send(wire.ok("Begin TLS negotiation now"))
        self.reader.clear()  # RFC 2595: anything pipelined after STLS is void
        self.state = Authorization()
        start_tls(self.context.tls)

    # -- both states --------------------------------------------------------------

    def do_capa(self, command: wire.Command) -> None:
        capabilities = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if not isinstance(self.state, Transaction):
            if self._plaintext_allowed():
                capabilities.append("USER")
            mechanisms = sasl.offered(self._sasl_channel())
            if mechanisms:
                capabilities.append("SASL " + " ".join(mechanisms))
            if self.context.tls is not None and not is_tls(self.transport):
                capabilities.append("STLS")
        capabilities.append("IMPLEMENTATION cyrusmail")
        self.send(wire.multiline("Capability list follows", capabilities))

    def do_quit(self, command: wire.Command) -> None:
        state = self.state
        self.state = Update()
        if not isinstance(state, Transaction):
            self._bye(wire.ok("Bye"))
            return

        def failed(failure: Failure) -> bytes:  # the lock is released whatever went wrong
            logs.log.failure("{service}: UPDATE failed for {user}", failure, service=self.service, user=state.user)
            return wire.err("Some deleted messages not removed", wire.SYS_TEMP)

        def done(reply: bytes) -> None:
            state.lock.release()  # only now may another POP3 session take the maildrop
            state.logout()
            self._bye(reply)

        committed = state.maildrop.commit_async()  # off the reactor; answered once durable
        committed.addCallbacks(lambda left: wire.ok(f"Bye ({left} messages left)"), failed)
        self._wait(committed.addCallback(done))

    def _bye(self, reply: bytes) -> None:
        self.send(reply)
        self.flow.close()

    def do_noop(self, command: wire.Command) -> None:
        self.send(wire.ok())

    # -- transaction --------------------------------------------------------------

    def do_stat(self, command: wire.Command) -> None:
        count, octets = self.state.maildrop.stat()
        self.send(wire.ok(f"{count} {octets}"))

    def do_list(self, command: wire.Command) -> None:
        self._scan_listing(command, lambda record: str(record.size))

    def do_uidl(self, command: wire.Command) -> None:
        self._scan_listing(command, lambda record: record.guid)

    def _scan_listing(self, command: wire.Command, value: Callable) -> None:
        maildrop = self.state.maildrop
        if command.args:
            number = command.args[0]
            try:
                record = maildrop.get(number)
            except MaildropError as error:
                self.send(wire.err(str(error)))
                return
            self.send(wire.ok(f"{number} {value(record)}"))
            return
        listing = maildrop.listing()
        self.send(wire.multiline(f"{len(listing)} messages",
                                 [f"{number} {value(record)}" for number, record in listing]))

    def do_dele(self, command: wire.Command) -> None:
        number = command.args[0]
        try:
            self.state.maildrop.delete(number)
        except MaildropError as error:
            self.send(wire.err(str(error)))
            return
        self.send(wire.ok(f"Message {number} deleted"))

    def do_rset(self, command: wire.Command) -> None:
        maildrop = self.state.maildrop
        maildrop.reset()
        count, octets = maildrop.stat()
        self.send(wire.ok(f"Maildrop has {count} messages ({octets} octets)"))

    def do_retr(self, command: wire.Command) -> None:
        self._send_message(command.args[0], None)

    def do_top(self, command: wire.Command) -> None:
        number, lines = command.args
        self._send_message(number, lines)

    def _send_message(self, number: int, top_lines: int | None) -> None:
        maildrop = self.state.maildrop
        try:
            record = maildrop.get(number)
            source = maildrop.open_file(number)
        except MaildropError as error:
            self.send(wire.err(str(error)))
            return
        if top_lines is None:
            maildrop.retrieved.add(number)
            self.send(wire.ok(f"{record.size} octets"))
        else:
            self.send(wire.ok("Top of message follows"))
        streamed: defer.Deferred = defer.Deferred()

        def finished(error: BaseException | None) -> None:
            self._streaming = None
            self.flow.detach(producer)
            if error is not None:  # the reply cannot be ended honestly: drop the connection
                logs.log.error("{service}: reading message {uid} failed: {error}",
                               service=self.service, uid=record.uid, error=str(error))
                self.flow.close()
            streamed.callback(None)

        producer = MessageProducer(source, self._write_chunk, finished,
                                   None if top_lines is None else wire.TopFilter(top_lines))
        self._wait(streamed)
        self._streaming = producer
        self.flow.attach(producer)  # it writes while the client takes the output

    def _write_chunk(self, data: bytes) -> None:
        self._touch()
        self.send(data)


@dataclass(frozen=True)
class CommandSpec:
    """One row of the command table."""

    name: str
    states: frozenset[type]
    handler: Callable[[POP3Session, wire.Command], None]


AUTHORIZATION = frozenset({Authorization})
TRANSACTION = frozenset({Transaction})
EITHER = AUTHORIZATION | TRANSACTION

#: Every command: its name, the states it is allowed in, its handler.
COMMANDS: dict[str, CommandSpec] = {spec.name: spec for spec in (
    CommandSpec("CAPA", EITHER, POP3Session.do_capa),
    CommandSpec("STLS", AUTHORIZATION, POP3Session.do_stls),
    CommandSpec("USER", AUTHORIZATION, POP3Session.do_user),
    CommandSpec("PASS", AUTHORIZATION, POP3Session.do_pass),
    CommandSpec("AUTH", AUTHORIZATION, POP3Session.do_auth),
    CommandSpec("QUIT", EITHER, POP3Session.do_quit),
    CommandSpec("NOOP", TRANSACTION, POP3Session.do_noop),
    CommandSpec("STAT", TRANSACTION, POP3Session.do_stat),
    CommandSpec("LIST", TRANSACTION, POP3Session.do_list),
    CommandSpec("UIDL", TRANSACTION, POP3Session.do_uidl),
    CommandSpec("RETR", TRANSACTION, POP3Session.do_retr),
    CommandSpec("TOP", TRANSACTION, POP3Session.do_top),
    CommandSpec("DELE", TRANSACTION, POP3Session.do_dele),
    CommandSpec("RSET", TRANSACTION, POP3Session.do_rset),
)}

assert set(COMMANDS) == set(wire.SYNTAX), "the wire syntax and the command table must agree"
