"""The ManageSieve session (RFC 5804): states, one table of commands, STARTTLS and SASL.

States carry their data: :class:`NotAuthenticated`, :class:`Authenticating`
(a SASL exchange), :class:`Authenticated` (the account).  ``COMMANDS`` is
the one table of (name, states, handler); a handler reads its arguments,
asks :class:`~cyrusmail.sieve.scripts.ScriptStore`, and answers.  Lines
are answered in order: one that waits (a login being checked) holds the
ones behind it, and so does output the client is not reading
(:class:`~cyrusmail.flow.OutputFlow`); past :data:`MAX_PENDING_INPUT`
octets waiting, the socket is no longer read.

Passwords go through the portal and its login throttle as for every
other protocol, PLAIN and LOGIN, only over TLS or on loopback
(``allow_plaintext_on_loopback``); elsewhere the SASL capability is empty
and AUTHENTICATE answers ``NO (ENCRYPT-NEEDED)``.  After STARTTLS the
capabilities are sent again (section 2.2) and anything pipelined in the
clear is dropped.  Scripts are checked by the same compiler delivery uses,
so PUTSCRIPT and CHECKSCRIPT report the first error with its line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.internet import defer
from twisted.internet.interfaces import ITLSTransport
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from cyrusmail import logs, sasl
from cyrusmail.account import IAccount
from cyrusmail.auth.policy import address_of, is_tls, plaintext_allowed, sasl_channel
from cyrusmail.auth.throttle import UsernamePasswordFrom
from cyrusmail.flow import OutputFlow
from cyrusmail.managesieve import wire
from cyrusmail.protocols import ServerContext, set_no_delay
from cyrusmail.sieve.commands import EXTENSIONS, compile_script
from cyrusmail.sieve.scripts import ScriptError, ScriptStore, check_name
from cyrusmail.sieve.syntax import SieveSyntaxError
from cyrusmail.store.errors import StoreError

IDLE_TIMEOUT = 600.0
MAX_PENDING_INPUT = 256 * 1024
IMPLEMENTATION = "cyrusmail"


@dataclass
class NotAuthenticated:
    pass


@dataclass
class Authenticating:
    mechanism: sasl.ServerMechanism


@dataclass
class Authenticated:
    user: str
    logout: Callable[[], None]


class Refusal(Exception):
    """A command that gets ``NO`` (with an optional response code)."""

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.code = code


class ManageSieveSession(Protocol):
    """One ManageSieve connection."""

    def __init__(self, context: ServerContext, service: str, scripts: ScriptStore, clock,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.context = context
        self.service = service
        self.scripts = scripts
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.state: NotAuthenticated | Authenticating | Authenticated = NotAuthenticated()
        # A PUTSCRIPT over the size quota is still read (and dropped) to stay in step.
        self.parser = wire.LineParser(max_literal=max(scripts.max_script_size, 64 * 1024))
        self.tls = False
        self._pending: list = []
        self._busy = False
        self._processing = False
        self._reading_paused = False
        self._closed = False
        self._idle = None
        self.flow: OutputFlow | None = None

    # -- connection ---------------------------------------------------------------------

    def connectionMade(self) -> None:
        set_no_delay(self.transport)
        self.tls = is_tls(self.transport)
        logs.connection_opened(self.service, self.transport)
        self.context.sessions.opened(self, self.service, self.transport)
        self.flow = OutputFlow(self.transport, self.clock, self._output_drained)
        self._idle = self.clock.callLater(self.idle_timeout, self._idle_out)
        self.send_capabilities()

    def connectionLost(self, reason: Failure = None) -> None:
        self._closed = True
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        if self.flow is not None:
            self.flow.stopProducing()
        self._logout()
        self.context.sessions.closed(self)
        logs.connection_closed(self.service, self.transport)

    def _logout(self) -> None:
        if isinstance(self.state, Authenticated):
            self.state.logout()
            self.context.sessions.logged_out(self)
        self.state = NotAuthenticated()

    def goodbye(self, text: str) -> None:
        """The registry's farewell (shutdown, ``kick``): ``BYE``, then close."""
        if not self._closed:
            self.send(wire.response("BYE", text))
            self.close()

    def close(self) -> None:
        self._closed = True
        self._pending.clear()
        self.flow.close()

    def _idle_out(self) -> None:
        logs.log.info("{service}: idle timeout for {peer}", service=self.service, peer=logs.peer_of(self.transport))
        if self.flow.blocked:
            self._closed = True
            self.flow.abort()
            return
        self.send(wire.response("BYE", "Idle for too long", "TRYLATER"))
        self.close()

    def send(self, data: bytes) -> None:
        if not self._closed:
            self.transport.write(data)

    # -- input ----------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        if not self.flow.blocked and self._idle is not None and self._idle.active():
            self._idle.reset(self.idle_timeout)
        self._pending.extend(self.parser.feed(data))
        self._process()
        if not self._closed and not self._reading_paused and self.parser.buffered > MAX_PENDING_INPUT:
            self._reading_paused = True
            self.transport.pauseProducing()

    def _process(self) -> None:
        if self._processing:
            return
        self._processing = True
        try:
            while self._pending and not (self._busy or self._closed or self.flow.blocked):
                self._handle(self._pending.pop(0))
        finally:
            self._processing = False
        if self._reading_paused and not self._closed and self.parser.buffered <= MAX_PENDING_INPUT // 2:
            self._reading_paused = False
            self.transport.resumeProducing()

    def _output_drained(self) -> None:
        if not self._closed:
            if self._idle is not None and self._idle.active():
                self._idle.reset(self.idle_timeout)
            self._process()

    def _wait(self, work: defer.Deferred) -> None:
        self._busy = True

        def done(result):
            self._busy = False
            self._process()
            return result

        work.addErrback(self._unexpected)
        work.addBoth(done)

    def _unexpected(self, failure: Failure) -> None:
        logs.log.failure("{service}: unexpected error", failure, service=self.service)
        self.context.metrics.internal_error(self.service)
        self.send(wire.response("NO", "Internal error, try again later", "TRYLATER"))

    def _handle(self, line: wire.Line | wire.BadLine) -> None:
        if isinstance(self.state, Authenticating):
            self._sasl_response(self.state, line)
            return
        if isinstance(line, wire.BadLine):
            self.send(wire.response("NO", line.reason, "QUOTA/MAXSIZE" if line.too_big else None))
            return
        if not line.arguments:
            return  # an empty line
        name = line.arguments[0]
        if not isinstance(name, wire.Atom):
            self.send(wire.response("NO", "A command name was expected"))
            return
        spec = COMMANDS.get(name.text.upper())
        if spec is None:
            self.send(wire.response("NO", f"Unknown command {name.text[:30]}"))
            return
        states, handler = spec
        if type(self.state) not in states:
            need = "after" if Authenticated in states else "before"
            self.send(wire.response("NO", f"{name.text.upper()} is allowed only {need} AUTHENTICATE"))
            return
        try:
            handler(self, list(line.arguments[1:]))
        except Refusal as refusal:
            self.send(wire.response("NO", str(refusal), refusal.code))
        except ScriptError as error:
            self.send(wire.response("NO", str(error), error.code or None))
        except (StoreError, OSError, *self.scripts.errors):
            self._unexpected(Failure())

    # -- arguments ----------------------------------------------------------------------

    @staticmethod
    def _strings(arguments: list, count: int, optional: int = 0) -> list[str]:
        if not count - optional <= len(arguments) <= count:
            raise Refusal(f"Expected {count} arguments")
        values = []
        for argument in arguments:
            if isinstance(argument, wire.Atom):
                values.append(argument.text)
                continue
            if not isinstance(argument, bytes):
                raise Refusal("Expected a string")
            try:
                values.append(argument.decode("utf-8"))
            except UnicodeDecodeError:
                raise Refusal("Strings must be UTF-8") from None
        return values

    # -- capabilities, STARTTLS --------------------------------------------------------

    def can_starttls(self) -> bool:
        return not self.tls and self.context.tls is not None and ITLSTransport.providedBy(self.transport)

    def _plaintext_allowed(self) -> bool:
        allow_loopback = self.context.config["server"]["allow_plaintext_on_loopback"]
        return self.tls or plaintext_allowed(self.transport, allow_loopback)

    def _mechanisms(self) -> list[str]:
        """What may be used here: the password mechanisms (PLAIN, LOGIN) where a
        password may be sent, since a ManageSieve login checks a password."""
        if not self._plaintext_allowed():
            return []
        allow_loopback = self.context.config["server"]["allow_plaintext_on_loopback"]
        channel = sasl_channel(self.transport, self.context.portal, allow_loopback,
                               secure=True if self.tls else None, service=self.service)
        return [name for name in sasl.offered(channel) if sasl.is_plaintext(name)]

    def capability_lines(self) -> list[bytes]:
        mechanisms = " ".join(self._mechanisms())
        lines = [
            wire.string("IMPLEMENTATION") + b" " + wire.string(IMPLEMENTATION),
            wire.string("SASL") + b" " + wire.string(mechanisms),
            wire.string("SIEVE") + b" " + wire.string(" ".join(EXTENSIONS)),
            wire.string("MAXREDIRECTS") + b" " + wire.string(str(self.context.config["sieve"]["max_redirects"])),
            wire.string("VERSION") + b" " + wire.string("1.0"),
            wire.string("UNAUTHENTICATE"),
        ]
        if self.can_starttls():
            lines.append(wire.string("STARTTLS"))
        if isinstance(self.state, Authenticated):
            lines.append(wire.string("OWNER") + b" " + wire.string(self.state.user))
        return lines

    def send_capabilities(self) -> None:
        self.send(b"".join(line + b"\r\n" for line in self.capability_lines()) + wire.response("OK", "Ready"))

    def do_capability(self, arguments: list) -> None:
        self._strings(arguments, 0)
        self.send_capabilities()

    def do_noop(self, arguments: list) -> None:
        values = self._strings(arguments, 1, optional=1)
        code = "TAG " + wire.string(values[0]).decode("utf-8") if values else None
        self.send(wire.response("OK", "Done", code))

    def do_logout(self, arguments: list) -> None:
        self.send(wire.response("OK", "Logout"))
        self._logout()
        self.close()

    def do_starttls(self, arguments: list) -> None:
        self._strings(arguments, 0)
        if not self.can_starttls():
            raise Refusal("TLS is already active" if self.tls else "TLS is not available")
        self.send(wire.response("OK", "Begin TLS negotiation"))
        self.transport.startTLS(self.context.tls)
        self._pending.clear()
        dropped = self.parser.buffered
        self.parser = wire.LineParser(self.parser.max_literal)
        if dropped:
            logs.log.warn("{service}: {peer} pipelined {n} octets after STARTTLS; dropped",
                          service=self.service, peer=logs.peer_of(self.transport), n=dropped)
        self.tls = True
        self.send_capabilities()

    # -- AUTHENTICATE (RFC 5804 section 2.1) --------------------------------------------

    def do_authenticate(self, arguments: list) -> None:
        values = self._strings(arguments, 2, optional=1)
        mechanism = values[0].upper()
        if mechanism not in sasl.MECHANISMS:
            raise Refusal(f"Unsupported mechanism {mechanism[:20]}")
        if not self._plaintext_allowed():
            raise Refusal("Passwords are accepted only over TLS; use STARTTLS", "ENCRYPT-NEEDED")
        if mechanism not in self._mechanisms():
            raise Refusal(f"Mechanism {mechanism} is not available on ManageSieve")
        exchange = Authenticating(sasl.start(mechanism))
        self.state = exchange
        if len(values) == 2:
            try:
                initial = sasl.decode_response(values[1].encode("ascii", "replace"))
            except sasl.SASLError as error:
                self._sasl_failed(str(error))
                return
            self._sasl_step(exchange, initial)
        else:
            self._sasl_step(exchange, None)

    def _sasl_response(self, exchange: Authenticating, line) -> None:
        if isinstance(line, wire.BadLine) or len(line.arguments) != 1 or isinstance(line.arguments[0], int):
            self._sasl_failed("a SASL response is one string")
            return
        argument = line.arguments[0]
        raw = argument.text.encode("ascii", "replace") if isinstance(argument, wire.Atom) else argument
        try:
            response = sasl.decode_response(raw)
        except sasl.SASLCancelled:
            self.state = NotAuthenticated()
            self.send(wire.response("NO", "Authentication cancelled"))
            return
        except sasl.SASLError as error:
            self._sasl_failed(str(error))
            return
        self._sasl_step(exchange, response)

    def _sasl_step(self, exchange: Authenticating, response: bytes | None) -> None:
        try:
            outcome = exchange.mechanism.step(response)
        except sasl.SASLError as error:
            self._sasl_failed(str(error))
            return
        if isinstance(outcome, sasl.Challenge):
            self.send(wire.string(sasl.encode_challenge(outcome.data)) + b"\r\n")
            return
        self.state = NotAuthenticated()
        credentials = UsernamePasswordFrom(outcome.username.encode("utf-8"), outcome.password.encode("utf-8"),
                                           address_of(self.transport))
        work = defer.maybeDeferred(self.context.portal.login, credentials, None, IAccount)
        work.addCallbacks(self._logged_in, self._login_failed, callbackArgs=(exchange.mechanism.name,),
                          errbackArgs=(outcome.username, exchange.mechanism.name))
        self._wait(work)

    def _sasl_failed(self, reason: str) -> None:
        self.state = NotAuthenticated()
        logs.log.info("{service}: SASL exchange from {peer} failed: {reason}", service=self.service,
                      peer=logs.peer_of(self.transport), reason=reason)
        self.send(wire.response("NO", "Authentication failed"))

    def _logged_in(self, avatar: tuple, mechanism: str) -> None:
        _, account, logout = avatar
        if self._closed:
            logout()
            return
        logs.login_succeeded(self.service, self.transport, account.user, mechanism)
        self.state = Authenticated(account.user, logout)
        self.context.sessions.logged_in(self, account.user)
        self.send(wire.response("OK", "Logged in"))

    def _login_failed(self, failure: Failure, user: str, mechanism: str) -> None:
        if not failure.check(UnauthorizedLogin, UnhandledCredentials):
            logs.log.failure("{service}: login error", failure, service=self.service)
            self.send(wire.response("NO", "Cannot log in now, try again later", "TRYLATER"))
            return
        logs.login_failed(self.service, self.transport, user, mechanism)
        self.send(wire.response("NO", "Authentication failed"))

    def do_unauthenticate(self, arguments: list) -> None:
        self._strings(arguments, 0)
        self._logout()
        self.send(wire.response("OK", "Logged out; authenticate again"))

    # -- scripts ----------------------------------------------------------------------

    @property
    def user(self) -> str:
        return self.state.user

    def _compiled(self, content: bytes) -> None:
        """Refusal with the script's first error (and its line) unless ``content`` is a valid script."""
        try:
            compile_script(content)
        except SieveSyntaxError as error:
            raise Refusal(str(error)) from None

    def do_havespace(self, arguments: list) -> None:
        if len(arguments) != 2 or not isinstance(arguments[1], int):
            raise Refusal("HAVESPACE takes a script name and a size")
        (name,) = self._strings(arguments[:1], 1)
        self.scripts.check_space(self.user, name, arguments[1])
        self.send(wire.response("OK", "There is room"))

    def do_putscript(self, arguments: list) -> None:
        name, content = self._script_arguments(arguments)
        self.scripts.check_space(self.user, check_name(name), len(content))
        self._compiled(content)
        self.scripts.put(self.user, name, content.decode("utf-8"))
        logs.log.info("{service}: {user} stored script {name!r}", service=self.service, user=self.user, name=name)
        self.send(wire.response("OK", "Stored"))

    def do_checkscript(self, arguments: list) -> None:
        if len(arguments) != 1 or not isinstance(arguments[0], bytes):
            raise Refusal("CHECKSCRIPT takes the script as a string")
        if len(arguments[0]) > self.scripts.max_script_size:
            raise Refusal(f"A script may have at most {self.scripts.max_script_size} octets", "QUOTA/MAXSIZE")
        self._compiled(arguments[0])
        self.send(wire.response("OK", "Script is valid"))

    def _script_arguments(self, arguments: list) -> tuple[str, bytes]:
        if len(arguments) != 2 or not isinstance(arguments[1], bytes):
            raise Refusal("PUTSCRIPT takes a name and the script as a string")
        (name,) = self._strings(arguments[:1], 1)
        return name, arguments[1]

    def do_listscripts(self, arguments: list) -> None:
        self._strings(arguments, 0)
        lines = [wire.string(name) + (b" ACTIVE" if active else b"") + b"\r\n"
                 for name, active in self.scripts.list(self.user)]
        self.send(b"".join(lines) + wire.response("OK", "Listed"))

    def do_setactive(self, arguments: list) -> None:
        (name,) = self._strings(arguments, 1)
        self.scripts.set_active(self.user, name)
        self.send(wire.response("OK", f"{name} is active" if name else "No script is active"))

    def do_getscript(self, arguments: list) -> None:
        (name,) = self._strings(arguments, 1)
        content = self.scripts.get(self.user, name)
        if content is None:
            raise Refusal(f"There is no script named {name}", "NONEXISTENT")
        data = content.encode("utf-8")
        self.send(b"{%d}\r\n" % len(data) + data + b"\r\n" + wire.response("OK", "Got it"))

    def do_deletescript(self, arguments: list) -> None:
        (name,) = self._strings(arguments, 1)
        self.scripts.delete(self.user, name)
        self.send(wire.response("OK", "Deleted"))

    def do_renamescript(self, arguments: list) -> None:
        old, new = self._strings(arguments, 2)
        self.scripts.rename(self.user, old, new)
        self.send(wire.response("OK", "Renamed"))


ANY = (NotAuthenticated, Authenticated)
BEFORE = (NotAuthenticated,)
AFTER = (Authenticated,)

#: The one command table: name -> (states it is allowed in, handler).
COMMANDS: dict[str, tuple[tuple[type, ...], Callable]] = {
    "CAPABILITY": (ANY, ManageSieveSession.do_capability),
    "NOOP": (ANY, ManageSieveSession.do_noop),
    "LOGOUT": (ANY, ManageSieveSession.do_logout),
    "STARTTLS": (BEFORE, ManageSieveSession.do_starttls),
    "AUTHENTICATE": (BEFORE, ManageSieveSession.do_authenticate),
    "UNAUTHENTICATE": (AFTER, ManageSieveSession.do_unauthenticate),
    "HAVESPACE": (AFTER, ManageSieveSession.do_havespace),
    "PUTSCRIPT": (AFTER, ManageSieveSession.do_putscript),
    "CHECKSCRIPT": (AFTER, ManageSieveSession.do_checkscript),
    "LISTSCRIPTS": (AFTER, ManageSieveSession.do_listscripts),
    "SETACTIVE": (AFTER, ManageSieveSession.do_setactive),
    "GETSCRIPT": (AFTER, ManageSieveSession.do_getscript),
    "DELETESCRIPT": (AFTER, ManageSieveSession.do_deletescript),
    "RENAMESCRIPT": (AFTER, ManageSieveSession.do_renamescript),
}
