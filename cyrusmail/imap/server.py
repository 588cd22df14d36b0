"""The IMAP4rev1 and IMAP4rev2 server protocol: bytes in, one command at a time, responses out.

:class:`IMAPServer` owns the connection.  It feeds what arrives to the
sans-IO :class:`~cyrusmail.imap.wire.CommandParser` (which pauses after
every command, so nothing is parsed ahead of what has run), looks each
command up in the one table (:data:`cyrusmail.imap.handlers.COMMANDS`),
checks the state, runs the handler, and completes the command: untagged
updates of the selected mailbox first (:meth:`SelectedMailbox.poll`), then
the tagged reply.  Handlers return a :class:`~cyrusmail.imap.codes.Reply`,
None (plain OK) or a Deferred of either, and raise
:class:`~cyrusmail.imap.codes.CommandFailed` or store errors to refuse.

Long work (SEARCH) runs in slices on the reactor thread
(:meth:`IMAPServer.run_in_slices`), so other sessions are served between
them; the next command waits for it, and a lost connection stops it.

Flow control: responses go through :class:`~cyrusmail.imap.output.ResponseWriter`,
attached to the connection's :class:`~cyrusmail.flow.OutputFlow`; while more
than the transport's high-water mark (64 KiB) of output waits unsent, no further
command runs, and reading from the transport stops while more than
:attr:`IMAPServer.MAX_BUFFERED` bytes wait unparsed.  Timers: 30 minutes
without activity (input while output flows, or output draining) logs out an
authenticated session (RFC 3501 5.4), :attr:`IMAPServer.PREAUTH_TIMEOUT` an
unauthenticated one; when output is blocked the BYE could never arrive, and
the connection is aborted instead.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from cyrusmail import logs, slices
from cyrusmail.auth.policy import is_loopback, is_tls
from cyrusmail.flow import OutputFlow
from cyrusmail.imap import codes, compress, contexts, responses, wire
from cyrusmail.imap import commands as c
from cyrusmail.imap.compress import CompressionError, DeflateTransport, Inflater
from cyrusmail.imap.output import ResponseWriter
from cyrusmail.imap.state import Authenticated, LoggedOut, NotAuthenticated, Selected
from cyrusmail.protocols import ServerContext, set_no_delay
from cyrusmail.store.errors import PermissionDenied, StoreError

log = Logger(namespace="cyrusmail.imap")

BASE_CAPABILITIES = (
    "IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE", "UIDPLUS",
    "MOVE", "UNSELECT", "CHILDREN", "SPECIAL-USE", "CREATE-SPECIAL-USE", "LIST-EXTENDED",
    "MULTIAPPEND", "CONDSTORE", "QRESYNC", "ACL", "RIGHTS=texk", "QUOTA", "QUOTA=RES-STORAGE", "QUOTA=RES-MESSAGE",
    "QUOTA=RES-MAILBOX", "QUOTASET", "BINARY", "CATENATE", "UTF8=ACCEPT",
    "OBJECTID", "SAVEDATE", "PREVIEW", "LIST-STATUS", "STATUS=SIZE",
    "ESEARCH", "SEARCHRES", "WITHIN", "CONTEXT=SEARCH",
    "SORT", "SORT=DISPLAY", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES", "ESORT", "CONTEXT=SORT",
)
#: Offered once logged in: there is nothing to leave before, and RFC 4978
#: makes COMPRESS a command of the authenticated state.
AUTHENTICATED_CAPABILITIES = ("COMPRESS=DEFLATE", "UNAUTHENTICATE")


class _AppendSink:
    """An APPEND literal written straight into a staged store message.

    A NUL octet (which RFC 3501's CHAR8 excludes from literals) is noticed
    as it streams in.  In a literal the staged file is thrown away at once,
    the rest of the literal is read and dropped, and ``has_nul`` tells the
    handler to refuse the APPEND; a ``literal8`` (``binary``, RFC 3516) is
    kept whole, for the handler to re-encode its NUL parts
    (:mod:`cyrusmail.mime.binary`).
    """

    def __init__(self, staged, binary: bool = False) -> None:
        self.staged = staged
        self.binary = binary
        self.size = 0
        self.has_nul = False

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.has_nul and not self.binary:
            return
        if b"\x00" in data:
            self.has_nul = True
            if not self.binary:
                self.staged.discard()
                return
        self.staged.write(data)

    def close(self) -> None:
        self.staged.discard()


class IMAPServer(Protocol):
    AUTOLOGOUT = 30 * 60
    PREAUTH_TIMEOUT = 3 * 60
    IDLE_POLL = 5.0
    MAX_BUFFERED = 256 * 1024
    #: inflated input fed to the parser per reactor turn under COMPRESS
    INFLATE_TURN = 1024 * 1024
    #: the cost of long work (see :mod:`cyrusmail.slices`) done per reactor turn; about 10 ms
    WORK_SLICE = 10_000_000

    def __init__(self, context: ServerContext, service: str = "imap", reactor=None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = context.reactor or default_reactor
        self.context = context
        self.service = service
        self.reactor = reactor
        self.IDLE_POLL = float(context.config["server"]["idle_check_interval"])
        self.state: Any = NotAuthenticated()
        self.tls_started = False
        self.enabled: set[str] = set()
        self.client_id: dict[str, bytes | None] | None = None
        self.parser = wire.CommandParser(
            max_message_size=context.config["server"]["max_message_size"],
            sink_factory=self._append_sink,
            pause_after_commands=True,
        )
        self._pending: deque = deque()
        self._running: c.Command | None = None
        self._line_handler = None
        self._reading_paused = False
        self._advancing = False
        self._timer = None
        self._work: defer.Deferred | None = None
        self._refreshing = defer.DeferredLock()
        self.closing = False
        self.cleanups: list = []  # run when the connection goes (IDLE's watcher)
        self.out: ResponseWriter | None = None
        self.flow: OutputFlow | None = None
        # COMPRESS=DEFLATE (RFC 4978): the two directions, once it is on
        self.inflater: Inflater | None = None
        self._deflater: DeflateTransport | None = None
        self._inflate_call = None

    # -- connection ------------------------------------------------------------

    def connectionMade(self) -> None:
        set_no_delay(self.transport)
        self.flow = OutputFlow(self.transport, self.reactor, self._output_drained)
        self.out = ResponseWriter(self.transport, self.reactor)
        self.flow.attach(self.out)
        logs.connection_opened(self.service, self.transport)
        self.context.sessions.opened(self, self.service, self.transport)
        self._reset_timer()
        self.write(responses.status(None, "OK", f"{self.context.config.hostname} cyrusmail IMAP4rev1 ready",
                                    codes.CAPABILITY + " " + " ".join(self.capabilities())))

    def connectionLost(self, reason=None) -> None:
        self.closing = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.flow is not None:
            self.flow.stopProducing()  # and the ResponseWriter's queued answers with it
        if self._deflater is not None:
            self._deflater.stop()
        if self._inflate_call is not None and self._inflate_call.active():
            self._inflate_call.cancel()
        self._inflate_call = None
        for cleanup in list(self.cleanups):
            cleanup()
        self.leave_mailbox()
        for event in self._pending:
            _close_sinks(event)
        self._pending.clear()
        self.parser.close()  # an APPEND cut off mid-literal leaves no file in tmp/
        if not isinstance(self.state, LoggedOut):
            self.state = LoggedOut()
        self._stop_work()
        self.context.sessions.closed(self)
        logs.connection_closed(self.service, self.transport)

    def dataReceived(self, data: bytes) -> None:
        if isinstance(self.state, LoggedOut):
            return
        if not self.flow.blocked:  # a client that sends but does not read is not active
            self._reset_timer()
        if self.inflater is not None:
            self.inflater.feed(data)
            self._inflate()
            return
        self._pending.extend(self.parser.feed(data))
        self._advance()

    # -- what the connection is --------------------------------------------------

    @property
    def utf8(self) -> bool:
        """Mailbox names go out in UTF-8: RFC 6855 UTF8=ACCEPT or RFC 9051 IMAP4rev2 is enabled."""
        return "UTF8=ACCEPT" in self.enabled or self.rev2

    @property
    def rev2(self) -> bool:
        """``ENABLE IMAP4rev2`` was given: the session follows RFC 9051, not RFC 3501
        (RFC 9051 Appendix A; see :mod:`cyrusmail.imap.handlers.general`)."""
        return "IMAP4rev2" in self.enabled

    @property
    def compressed(self) -> bool:
        """RFC 4978 COMPRESS=DEFLATE is on."""
        return self.inflater is not None

    @property
    def secure(self) -> bool:
        return self.tls_started or is_tls(self.transport)

    def plaintext_allowed(self) -> bool:
        allow = self.context.config["server"]["allow_plaintext_on_loopback"]
        return self.secure or (allow and is_loopback(self.transport))

    def capabilities(self) -> list[str]:
        caps = list(BASE_CAPABILITIES)
        caps.append(f"APPENDLIMIT={self.context.config['server']['max_message_size']}")
        if isinstance(self.state, NotAuthenticated):
            if not self.secure and not self.compressed and self.context.tls is not None:
                caps.append("STARTTLS")
            if self.plaintext_allowed():
                caps += ["AUTH=PLAIN", "AUTH=LOGIN"]
            else:
                caps.append("LOGINDISABLED")
        else:
            caps += AUTHENTICATED_CAPABILITIES
        return caps

    # -- writing -----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.out is not None:
            self.out.write(data)

    def untagged(self, data: bytes | str) -> None:
        self.write(responses.untagged(data))

    def stream(self, pieces) -> defer.Deferred:
        assert self.out is not None
        return self.out.stream(pieces)

    def run_in_slices(self, steps: slices.Steps) -> defer.Deferred:
        """Run a handler's long work in slices of :attr:`WORK_SLICE` (see
        :mod:`cyrusmail.slices`); the work stops when the session ends."""
        work = slices.run_in_slices(self.reactor, steps, self.WORK_SLICE)
        if not work.called:
            self._work = work

            def finished(result):
                self._work = None
                return result

            work.addBoth(finished)
        return work

    def _stop_work(self) -> None:
        if self._work is not None:
            self._work.cancel()

    def expect_lines(self, handler) -> None:
        """Hand the following raw lines to ``handler(Line | ParseError)``
        until :meth:`stop_lines` (AUTHENTICATE, IDLE)."""
        self._line_handler = handler

    def stop_lines(self) -> None:
        self._line_handler = None

    # -- the command loop ----------------------------------------------------------

    def _advance(self) -> None:
        """Run what can run now.  Re-entrant calls (a command that completed
        synchronously) return at once: the outer loop carries on, so a
        thousand pipelined commands do not nest a thousand frames."""
        if self._advancing:
            return
        self._advancing = True
        try:
            self._run_events()
        finally:
            self._advancing = False
        self._flow_control()

    def _run_events(self) -> None:
        while not isinstance(self.state, LoggedOut) and not self.flow.blocked:
            if self._pending:
                event = self._pending[0]
                if self._line_handler is not None and isinstance(event, (wire.Line, wire.ParseError)):
                    self._pending.popleft()
                    self._line_handler(event)
                    continue
                if self._running is not None:
                    break
                self._pending.popleft()
                self._event(event)
                continue
            if not self.parser.paused:
                break
            if self._line_handler is not None:
                events = self.parser.read_lines()
            elif self._running is None:
                events = self.parser.read_commands()
            else:
                break
            if not events:
                break
            self._pending.extend(events)

    def _output_drained(self) -> None:
        """The client has taken all the output: it is active, and what waited runs."""
        if isinstance(self.state, LoggedOut):
            return
        self._reset_timer()
        self._advance()

    def _flow_control(self) -> None:
        if self.transport is None or isinstance(self.state, LoggedOut):
            return  # hanging up: nothing more is read, so nothing to resume
        too_much = self.parser.buffered > self.MAX_BUFFERED
        if self.inflater is not None:
            # Compressed input waits while the parser is full; inflate it
            # when there is room, and stop reading while too much waits.
            if (self.inflater.pending and not too_much and self._inflate_call is None):
                self._inflate_call = self.reactor.callLater(0, self._inflate)
            too_much = too_much or self.inflater.held > self.MAX_BUFFERED
        if too_much and not self._reading_paused:
            self.transport.pauseProducing()
            self._reading_paused = True
        elif not too_much and self._reading_paused:
            self._reading_paused = False
            self.transport.resumeProducing()

    def _inflate(self) -> None:
        """Feed the parser the compressed input, inflated a piece at a time,
        while the parser holds no more than :attr:`MAX_BUFFERED` and for at
        most :attr:`INFLATE_TURN` octets per reactor turn (the rest waits
        for the next turn, or for the parser to have room)."""
        if self._inflate_call is not None and self._inflate_call.active():
            self._inflate_call.cancel()
        self._inflate_call = None
        inflater = self.inflater
        budget = self.INFLATE_TURN
        while (inflater.pending and budget > 0 and self.parser.buffered <= self.MAX_BUFFERED
               and not isinstance(self.state, LoggedOut)):
            try:
                piece = inflater.piece()
            except CompressionError as error:
                log.info("IMAP: {peer} sent compressed data that cannot be inflated: {error}",
                         peer=logs.peer_of(self.transport), error=error)
                self.bye("Invalid compressed data")
                return
            budget -= len(piece) or 1
            if piece:
                self._pending.extend(self.parser.feed(piece))
                self._advance()
        self._flow_control()  # the rest on the next turn, or once the parser has room

    def start_compression(self) -> None:
        """RFC 4978: DEFLATE both ways from here on.  The tagged OK of COMPRESS
        has gone uncompressed (commands run one at a time, and a streamed
        answer completes its command only once written); what the client
        pipelined after COMPRESS is compressed already, and is inflated first."""
        self._deflater = DeflateTransport(self.transport, self.reactor)
        self.out.write_through(self._deflater, compress.TURN_BYTES)
        self.flow.transport = self._deflater  # a close flushes what is compressed first
        self.inflater = Inflater()
        self.inflater.feed(self.parser.take_buffered())

    def _event(self, event) -> None:
        if isinstance(event, wire.ContinuationNeeded):
            self.write(responses.continuation("Ready for literal data"))
        elif isinstance(event, wire.ParseError):
            self.write(responses.parse_error(event))
        elif isinstance(event, wire.Line):
            self.write(responses.status(None, "BAD", "Unexpected line"))
        else:
            self._execute(event)

    def _execute(self, command: c.Command) -> None:
        from cyrusmail.imap.handlers import COMMANDS

        spec = COMMANDS.get(type(command))
        if spec is None:
            _close_sinks(command)
            self.write(responses.tagged(command.tag, "BAD", f"{command.name} is not supported"))
            return
        if type(self.state) not in spec.states:
            _close_sinks(command)
            self.write(responses.tagged(command.tag, "BAD",
                                        f"{command.name} is not allowed in the {self.state.label} state"))
            return
        self._running = command
        result = defer.maybeDeferred(spec.handler, self, command)
        result.addErrback(self._failed, command)
        result.addCallback(self._complete, command, spec)
        result.addErrback(self._crashed)

    def _failed(self, failure: Failure, command: c.Command) -> codes.Reply:
        _close_sinks(command)
        # A command's work cancelled because the session ended has nobody to answer.
        stopped = self.closing and failure.check(defer.CancelledError)
        if not stopped and not failure.check(codes.CommandFailed, StoreError):
            log.failure("IMAP {command} failed", failure, command=command.name)
        return codes.reply_for(failure.value)

    def _complete(self, reply: codes.Reply | None, command: c.Command, spec) -> defer.Deferred | None:
        reply = reply or codes.Reply()
        if isinstance(self.state, Selected):
            # At once, unless search contexts are being tested in slices.
            return self.refresh(spec.expunges).addCallback(lambda _: self._answer(reply, command))
        self._answer(reply, command)
        return None

    def _answer(self, reply: codes.Reply, command: c.Command) -> None:
        if not self.closing:
            text = reply.text or _done_text(command, reply)
            self.write(responses.tagged(command.tag, reply.status, text, reply.code))
        self._running = None
        if reply.after is not None:
            reply.after()
        self._advance()

    def _crashed(self, failure: Failure) -> None:
        log.failure("IMAP session crashed", failure)
        if self.transport is not None:
            self.flow.close()

    def refresh(self, send_expunges: bool) -> defer.Deferred:
        """:meth:`send_updates`, then the ADDTO/REMOVEFROM of the search
        contexts (:func:`cyrusmail.imap.contexts.updates`), which may read
        message files and so run in slices.  One refresh at a time: another
        waits for it, so numbers never shift under one being written."""
        return self._refreshing.run(self._refresh, send_expunges)

    def _refresh(self, send_expunges: bool) -> defer.Deferred:
        self.send_updates(send_expunges)
        state = self.state
        if not isinstance(state, Selected) or not state.view.contexts or self.closing:
            return defer.succeed(None)
        work = self.run_in_slices(contexts.updates(state.view, self.reactor.seconds()))

        def write(lines: list[bytes]) -> None:
            if self.state is state and not self.closing:
                for line in lines:
                    self.write(line)

        def stopped(failure: Failure) -> None:
            if not (self.closing and failure.check(defer.CancelledError)):
                log.failure("IMAP: search context update failed", failure)

        return work.addCallbacks(write, stopped)

    def send_updates(self, send_expunges: bool) -> None:
        """Untagged EXISTS/RECENT/EXPUNGE/FETCH for the selected mailbox."""
        state = self.state
        if not isinstance(state, Selected):
            return
        try:
            lines = state.view.poll(send_expunges)
        except PermissionDenied:
            # "r" was taken away while selected (a SETACL takes effect at once):
            # no updates; each command now answers NO [NOPERM] until the client leaves.
            return
        except StoreError as error:  # the mailbox was deleted under us (or may no longer be seen)
            log.info("IMAP: selected mailbox vanished: {error}", error=error)
            self.bye("Selected mailbox no longer exists")
            return
        for line in lines:
            self.write(line)

    # -- session changes -----------------------------------------------------------

    def enable(self, *extensions: str) -> list[str]:
        """Turn CONDSTORE or QRESYNC on for the rest of the connection (RFC 5161,
        RFC 7162); the ones that were not on yet.

        QRESYNC implies CONDSTORE.  A CONDSTORE enabling command given while a
        mailbox is selected gets ``* OK [HIGHESTMODSEQ n]`` for it (RFC 7162 3.1).
        """
        fresh = [name for name in extensions if name not in self.enabled]
        self.enabled.update(fresh)
        if "QRESYNC" in self.enabled:
            self.enabled.add("CONDSTORE")
        if isinstance(self.state, Selected):
            view = self.state.view
            if "CONDSTORE" in self.enabled and not view.condstore:
                view.condstore = True
                self.untagged(f"OK [{codes.HIGHESTMODSEQ} {view.highest_modseq}] Highest")
            view.qresync = "QRESYNC" in self.enabled
        return fresh

    def authenticated(self, account, mechanism: str) -> None:
        self.state = Authenticated(account)
        logs.login_succeeded(self.service, self.transport, account.user, mechanism)
        self._reset_timer()
        self.context.sessions.logged_in(self, account.user)

    def unauthenticated(self, how: str) -> None:
        """Back to the not-authenticated state (RFC 8437), as on a new connection."""
        user = self.state.account.user
        self.leave_mailbox()
        self.state = NotAuthenticated()
        self.enabled.clear()
        self.parser.utf8 = False  # names are modified UTF-7 again until UTF8=ACCEPT is enabled anew
        self.parser.rev2 = False  # and IMAP4rev1 is spoken until IMAP4rev2 is
        self.context.sessions.logged_out(self)
        logs.logged_out(self.service, self.transport, user, how)
        self._reset_timer()

    def select(self, view) -> None:
        self.leave_mailbox()
        self.state = Selected(self.state.account, view)

    def leave_mailbox(self) -> None:
        if isinstance(self.state, Selected):
            self.state = Authenticated(self.state.account)

    def bye(self, text: str) -> None:
        """``* BYE text`` and hang up, with no tagged reply to what runs."""
        self.write(responses.status(None, "BYE", text))
        self.closing = True
        self.state = LoggedOut()
        self._stop_work()
        if self.transport is not None:
            self.flow.close()

    def goodbye(self, text: str) -> None:
        """The registry's farewell (shutdown, user removed): ``* BYE``, once."""
        if not self.closing:
            self.bye(text)

    # -- timers ------------------------------------------------------------------

    def _reset_timer(self) -> None:
        timeout = self.PREAUTH_TIMEOUT if isinstance(self.state, NotAuthenticated) else self.AUTOLOGOUT
        if self._timer is not None and self._timer.active():
            self._timer.reset(timeout)
        else:
            self._timer = self.reactor.callLater(timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        if self.flow.blocked:
            # Output has not drained for the whole timeout: the client is not
            # reading, and a BYE would never reach it.
            log.info("IMAP: {peer} took no output for too long; connection aborted",
                     peer=logs.peer_of(self.transport))
            self.closing = True
            self.state = LoggedOut()
            self.flow.abort()
            return
        self.bye("Autologout; idle for too long")

    # -- APPEND literals ---------------------------------------------------------

    def _append_sink(self, size: int, binary: bool = False):
        if isinstance(self.state, NotAuthenticated):
            raise wire.LiteralRefused("APPEND needs authentication", None, "BAD")
        return _AppendSink(self.context.store.stage(), binary)


def _done_text(command: c.Command, reply: codes.Reply) -> str:
    name = command.name
    if getattr(command, "uid", False) is True:
        name = "UID " + name
    return f"{name} completed" if reply.status == "OK" else f"{name} failed"


def _close_sinks(command) -> None:
    for message in getattr(command, "messages", ()) or ():
        for sink in message.sinks():
            try:
                sink.close()
            except OSError as error:
                log.warning("IMAP: could not discard an APPEND literal: {error}", error=error)


class IMAPFactory(Factory):
    protocol = IMAPServer

    def __init__(self, context: ServerContext, service: str = "imap", reactor=None) -> None:
        self.context = context
        self.service = service
        self.reactor = reactor

    def buildProtocol(self, addr):
        protocol = IMAPServer(self.context, self.service, self.reactor)
        protocol.factory = self
        return protocol

    def refusal(self, text: str) -> bytes:
        """The greeting of a connection over a cap (RFC 3501 7.1.5, RFC 5530)."""
        return responses.status(None, "BYE", text, codes.UNAVAILABLE)


def make_factory(context: ServerContext, service: str = "imap") -> IMAPFactory:
    """The REGISTRY builder for ``imap`` and ``imaps``."""
    return IMAPFactory(context, service)
