"""A per-user protocol trace, as Dovecot's rawlog: what a chosen user's client sent and got, with passwords masked.

Users are chosen in ``[server] rawlog_users`` or, while the server runs,
with ``cyrusmail-admin trace USER on|off`` (through the control socket;
until the next start).  While any user is traced, every new IMAP, POP3 and
submission connection passes through a :class:`TracingProtocol`, which sees
the bytes the session reads and writes (inside TLS; IMAP COMPRESS is
inflated again).  What comes before the login is held in memory (at most
:data:`PRE_LOGIN_LIMIT` octets each way); once the session logs in as a
traced user it is written to ``DATA/rawlog/USER/<time>-<session>-<service>.in``
and ``.out`` (0600, in 0700 folders) and the rest follows as it passes;
for any other user it is dropped and the connection is no longer looked at.
Sessions already open when a trace is turned on are not traced.

Passwords never reach the files: the input is masked line by line
(:class:`InputMasker`) before anything is held or written: the arguments
of IMAP LOGIN (literals included), POP3 PASS, and the initial response and
every following response line of IMAP AUTHENTICATE, POP3 AUTH and SMTP AUTH
become ``***``.

Bounds: each file stops at ``[server] rawlog_max_size`` (10M) with a line
saying so; each user keeps the newest :data:`KEEP_SESSIONS` traces, older
ones are removed when a new one starts.  The files are written on the
server's thread, so a trace costs some speed: keep it for debugging.
"""

from __future__ import annotations

import os
import re
import time
import zlib
from pathlib import Path
from typing import Any

from twisted.internet.protocol import Protocol
from zope.interface import providedBy

from cyrusmail import logs
from cyrusmail.private_files import create_private, make_private_folder
from cyrusmail.store.names import user_name

#: Services whose clients log in (LMTP has no login and is never traced).
TRACED_SERVICES = frozenset({"imap", "imaps", "pop3", "pop3s", "submission", "submissions"})
#: Octets held per direction before a login decides whether the connection is traced.
PRE_LOGIN_LIMIT = 64 * 1024
#: Traces (sessions) kept per user; older ones go when a new one starts.
KEEP_SESSIONS = 50
#: A partial input line longer than this is masked or written as it is, without waiting for its end.
MAX_PARTIAL_LINE = 8192
MASK = b"***"

_SENSITIVE = {b"LOGIN", b"PASS", b"AUTH", b"AUTHENTICATE"}
_SASL = {b"AUTH", b"AUTHENTICATE"}
_LITERAL_AT_END = re.compile(rb"\{\d+\+?\}$")


class InputMasker:
    """Masks passwords in a client's input, line by line (see the module docstring).

    The command word is the first word (POP3, SMTP) or the second (IMAP,
    after the tag).  After AUTH or AUTHENTICATE, each following line with no
    space in it (base64, or ``*`` to cancel) is a SASL response and is
    masked, until the server answers other than with a challenge
    (:meth:`reply`) or a line with a space comes (a command).  After a LOGIN
    ending in a literal ``{n}``, the lines up to one that ends none are its
    arguments and are masked.  More is masked than strictly needed (an IMAP
    tag spelled ``PASS``), never less.
    """

    def __init__(self) -> None:
        self.partial = b""
        self.sasl = False
        self.literal = False

    def feed(self, data: bytes) -> bytes:
        """The masked form of whole lines of ``data``; a partial line waits for its end."""
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        shown = [self.mask_line(line + b"\n") for line in lines]
        if len(self.partial) > MAX_PARTIAL_LINE:
            shown.append(self.mask_line(self.partial))
            self.partial = b""
        return b"".join(shown)

    def flush(self) -> bytes:
        """What waits of a last partial line, masked."""
        rest, self.partial = self.partial, b""
        return self.mask_line(rest) if rest else b""

    def reply(self, line: bytes) -> None:
        """The server sent ``line``: anything but a SASL challenge ends the exchange."""
        if self.sasl and not (line.startswith((b"+ ", b"334")) or line.rstrip(b"\r") == b"+"):
            self.sasl = False

    def mask_line(self, line: bytes) -> bytes:
        body = line.rstrip(b"\r\n")
        end = line[len(body):]
        if self.literal:
            self.literal = _LITERAL_AT_END.search(body) is not None
            return MASK + end
        if self.sasl:
            if b" " not in body.strip():
                return MASK + end
            self.sasl = False
        words = body.split(b" ")
        for at in (0, 1):
            if at < len(words) and words[at].upper() in _SENSITIVE:
                command = words[at].upper()
                keep = at + (2 if command in _SASL else 1)
                self.sasl = command in _SASL
                self.literal = command == b"LOGIN" and _LITERAL_AT_END.search(body) is not None
                return b" ".join(words[:keep]) + (b" " + MASK if len(words) > keep else b"") + end
        return line


class TraceFile:
    """One direction of one session's trace, bounded at ``limit`` octets."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path = path
        self.limit = limit
        self.written = 0
        self.file = create_private(path, "wb")
        self.full = False

    def write(self, data: bytes) -> None:
        if self.full or not data:
            return
        room = self.limit - self.written
        if len(data) > room:
            data = data[:room] + f"\n[trace stopped: rawlog_max_size of {self.limit} octets reached]\n".encode()
            self.full = True
        self.file.write(data)
        self.file.flush()
        self.written += len(data)

    def close(self) -> None:
        self.file.close()


class _Inflating:
    """Raw DEFLATE (RFC 4978) undone for the trace, a bounded piece at a time."""

    def __init__(self) -> None:
        self.inflater = zlib.decompressobj(-15)

    def __call__(self, data: bytes) -> bytes:
        try:
            out = self.inflater.decompress(data, 4 * PRE_LOGIN_LIMIT)
            while self.inflater.unconsumed_tail:
                out += self.inflater.decompress(self.inflater.unconsumed_tail, 4 * PRE_LOGIN_LIMIT)
            return out
        except zlib.error:
            return b"[compressed data that does not inflate]\n"


class TracingProtocol(Protocol):
    """Stands between the transport and a session: the session's transport, and the transport's protocol.

    Everything it does not trace it passes to the real transport, which it
    also claims to be as far as interfaces go (a TLS transport stays one).
    """

    def __init__(self, wrapped: Protocol, tracer: Tracer, service: str) -> None:
        self.wrapped = wrapped
        self.tracer = tracer
        self.service = service
        self.masker = InputMasker()
        self.held: list[list[bytes]] | None = [[], []]  # input, output: until the login decides
        self.held_size = [0, 0]
        self.files: tuple[TraceFile, TraceFile] | None = None
        self.watching = True
        self._compress_tag: bytes | None = None
        self._output_tail = b""
        self._reply_head = b""
        self._inflate_in: _Inflating | None = None
        self._inflate_out: _Inflating | None = None

    @property
    def __providedBy__(self):
        return providedBy(self.transport)

    def __getattr__(self, name: str) -> Any:
        if name in ("transport", "wrapped"):
            raise AttributeError(name)
        return getattr(self.transport, name)

    # -- the transport's side -------------------------------------------------------

    def makeConnection(self, transport) -> None:
        self.transport = transport
        self.connected = 1
        self.tracer.opened(self)
        self.wrapped.makeConnection(self)

    def dataReceived(self, data: bytes) -> None:
        if self.watching:
            self._input(data)
        self.wrapped.dataReceived(data)

    def connectionLost(self, reason=None) -> None:
        self.connected = 0
        try:
            self.wrapped.connectionLost(reason)
        finally:
            self.tracer.closed(self)
            self.finish()

    # -- the session's side ----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.watching:
            self._output(data)
        self.transport.write(data)

    def writeSequence(self, data) -> None:
        for piece in data:
            self.write(piece)

    # -- tracing ------------------------------------------------------------------------------

    def _input(self, data: bytes) -> None:
        if self._inflate_in is not None:
            data = self._inflate_in(data)
        elif self.service in ("imap", "imaps") and self._compress_tag is None:
            self._compress_tag = _compress_command(data)
        self._record(0, self.masker.feed(data))

    def _output(self, data: bytes) -> None:
        """Output as it goes, inflated after the OK of an IMAP COMPRESS."""
        if self._inflate_out is not None:
            data = self._inflate_out(data)
            self._replies(data)
            self._record(1, data)
            return
        self._replies(data)
        tag = self._compress_tag
        if tag is None or tag is _DECIDED:
            self._record(1, data)
            return
        text = self._output_tail + data
        offset = 0
        for line in text.split(b"\n")[:-1]:
            offset += len(line) + 1
            if line.startswith(tag + b" "):
                self._compress_tag = _DECIDED
                if not line[len(tag) + 1:].upper().startswith(b"OK"):
                    break
                plain = max(0, offset - len(self._output_tail))  # octets of data up to the OK line's end
                self._record(1, data[:plain])
                self._inflate_in, self._inflate_out = _Inflating(), _Inflating()
                self._record(1, self._inflate_out(data[plain:]))
                self._output_tail = b""
                return
        self._output_tail = text.rpartition(b"\n")[2][-1024:]
        self._record(1, data)

    def _replies(self, data: bytes) -> None:
        """Tell the masker of each reply line's start (all it looks at)."""
        lines = (self._reply_head + data).split(b"\n")
        self._reply_head = lines.pop()[:8]
        for line in lines:
            self.masker.reply(line)

    def _record(self, direction: int, data: bytes) -> None:
        if not data:
            return
        if self.files is not None:
            self.files[direction].write(data)
            return
        if self.held is None:
            return
        if self.held_size[direction] + len(data) > PRE_LOGIN_LIMIT:
            data = data[:max(0, PRE_LOGIN_LIMIT - self.held_size[direction])]
        self.held[direction].append(data)
        self.held_size[direction] += len(data)

    def start(self, user: str, number: int) -> None:
        """The session logged in as a traced user: write what was held, and the rest as it passes."""
        if self.files is not None:
            return
        try:
            self.files = self.tracer.open_files(user, number, self.service)
        except OSError as error:
            logs.log.error("trace: cannot write the trace of {user}: {error}", user=user, error=str(error))
            self.stop()
            return
        held, self.held = self.held or [[], []], None
        for direction in (0, 1):
            self.files[direction].write(b"".join(held[direction]))

    def stop(self) -> None:
        """The session is not traced: forget what was held and look no further."""
        if self.files is None:
            self.watching = False
            self.held = None

    def finish(self) -> None:
        if self.files is not None:
            self.files[0].write(self.masker.flush())
            for trace in self.files:
                trace.close()
            self.files = None
        self.watching = False
        self.held = None


_DECIDED = b"\x00decided"


def _compress_command(data: bytes) -> bytes | None:
    """The tag of an IMAP ``COMPRESS DEFLATE`` command in ``data``, or None."""
    for line in data.split(b"\n"):
        words = line.strip().split(b" ")
        if len(words) >= 2 and words[1].upper() == b"COMPRESS":
            return words[0]
    return None


class Tracer:
    """Who is traced, and the traces being written (see the module docstring)."""

    def __init__(self, folder: Path, users=(), max_size: int = 10 * 1024**2) -> None:
        self.folder = Path(folder)
        self.users: set[str] = {name.lower() for name in users}
        self.max_size = max_size
        self._watching: dict[int, TracingProtocol] = {}  # id(session) -> its wrapper

    @property
    def active(self) -> bool:
        return bool(self.users)

    def set(self, user: str, on: bool) -> None:
        user = user.lower()
        if on:
            self.users.add(user)
        else:
            self.users.discard(user)
        logs.log.info("trace: {user} {state}", user=user, state="traced from the next login" if on else "not traced")

    def wrap(self, protocol: Protocol, service: str) -> Protocol:
        """``protocol``, behind a :class:`TracingProtocol` while anyone is traced."""
        if not self.active or service not in TRACED_SERVICES or protocol is None:
            return protocol
        return TracingProtocol(protocol, self, service)

    def opened(self, wrapper: TracingProtocol) -> None:
        self._watching[id(wrapper.wrapped)] = wrapper

    def closed(self, wrapper: TracingProtocol) -> None:
        self._watching.pop(id(wrapper.wrapped), None)

    def logged_in(self, session, user: str, number: int) -> None:
        """The registry's news: ``session`` logged in as ``user``."""
        wrapper = self._watching.get(id(session))
        if wrapper is None:
            return
        if user.lower() in self.users:
            wrapper.start(user.lower(), number)
        else:
            wrapper.stop()

    def open_files(self, user: str, number: int, service: str) -> tuple[TraceFile, TraceFile]:
        folder = self.folder / user_name(user)
        make_private_folder(self.folder)
        make_private_folder(folder)
        self._prune(folder)
        stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{number}-{service}"
        logs.log.info("trace: {user} session {number} traced in {path}.in and .out",
                      user=user, number=number, path=str(folder / stem))
        return (TraceFile(folder / f"{stem}.in", self.max_size), TraceFile(folder / f"{stem}.out", self.max_size))

    @staticmethod
    def _prune(folder: Path) -> None:
        """Keep the newest KEEP_SESSIONS - 1 traces, making room for one more."""
        entries = sorted(folder.iterdir(), key=lambda entry: (entry.stat().st_mtime, entry.name))
        stems = list(dict.fromkeys(entry.name.rsplit(".", 1)[0] for entry in entries))
        for stem in stems[:max(0, len(stems) - (KEEP_SESSIONS - 1))]:
            for suffix in (".in", ".out"):
                try:
                    os.unlink(folder / (stem + suffix))
                except FileNotFoundError:
                    pass
