"""The control socket: how ``cyrusmail-admin`` reaches the running server.

The server listens on the unix socket ``DATA/control.sock`` (mode 0600;
on Linux the peer's uid is checked too: only root and the server's own
user are answered).  The protocol is one command per line, UTF-8:

``kick USER``
    end every live session of USER (IMAP ``* BYE``, POP3 ``-ERR``,
    submission ``421``); answers ``ok N``, the number ended.
``who``
    one ``* NUMBER SERVICE PEER USER SINCE PID`` line per live session (USER
    is ``-`` before login; PID the process serving it), then ``ok N``.
``workers``
    one ``* SLOT PID SINCE RESTARTS`` line per serving process (slot 0 alone
    when the server runs as one process), then ``ok N``.

With several worker processes the supervisor answers on the socket: it
sends each command to every worker and joins their answers (the ``*``
lines, and the sum of their ``ok N``); see :mod:`cyrusmail.workers`.

A failure answers ``error TEXT``.  Every answer ends with its ``ok`` or
``error`` line, so commands can follow one another on one connection.
When no server runs, :func:`ask` says so and the admin command goes on.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

from twisted.application import service
from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver

from cyrusmail import logs
from cyrusmail.sessions import SessionRegistry, session_rows

SOCKET_NAME = "control.sock"
#: sun_path holds 108 bytes with the terminating NUL.
MAX_SOCKET_PATH = 107


class ControlError(Exception):
    """The server answered ``error``, or could not be understood."""


def socket_path(data: Path) -> Path:
    return Path(data).resolve() / SOCKET_NAME


def _peer_allowed(transport) -> bool:
    """Only root and the server's own user (Linux SO_PEERCRED; elsewhere the 0600 mode decides)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return True
    try:
        credentials = transport.getHandle().getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    except OSError:
        return False
    _pid, uid, _gid = struct.unpack("3i", credentials)
    return uid in (0, os.getuid())


class ControlProtocol(LineOnlyReceiver):
    """One connection to the control socket: commands answered one at a time, in order.

    A handler returns the answer's lines, or a Deferred of them.
    """

    delimiter = b"\n"
    MAX_LENGTH = 1024

    def __init__(self, registry: SessionRegistry) -> None:
        self.registry = registry
        self.commands: dict[str, Callable[[str], list[str] | defer.Deferred]] = {
            "kick": self.kick, "who": self.who, "workers": self.workers}
        self._turn: defer.Deferred = defer.succeed(None)

    def connectionMade(self) -> None:
        if not _peer_allowed(self.transport):
            logs.log.warn("control: refused a connection from another user")
            self.transport.loseConnection()

    def lineReceived(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").strip()
        self._turn.addCallback(lambda _: self.execute(text)).addCallback(self.answer)

    def execute(self, text: str) -> defer.Deferred:
        """The answer's lines to one command line."""
        name, _, argument = text.partition(" ")
        handler = self.commands.get(name.lower())
        if handler is None:
            return defer.succeed([f"error unknown command {name[:40]!r} (known: {', '.join(self.commands)})"])
        answer = defer.maybeDeferred(handler, argument.strip())
        answer.addErrback(_failed, name)
        return answer

    def lineLengthExceeded(self, line: bytes) -> None:
        self.answer(["error line too long"])
        self.transport.loseConnection()

    def answer(self, lines: list[str]) -> None:
        if self.transport is not None and self.connected:
            self.transport.write("".join(line + "\n" for line in lines).encode("utf-8"))

    def kick(self, user: str) -> list[str]:
        if not user or " " in user:
            return ["error usage: kick USER"]
        ended = self.registry.kick(user)
        logs.log.info("control: ended {n} sessions of {user}", n=ended, user=user)
        return [f"ok {ended}"]

    def who(self, argument: str) -> list[str]:
        rows = session_rows(self.registry.live())
        return [f"* {row}" for row in rows] + [f"ok {len(rows)}"]

    def workers(self, argument: str) -> list[str]:
        return [f"* 0 {os.getpid()} {timestamp(STARTED)} 0", "ok 1"]


#: When this process started (for ``workers``).
STARTED = time.time()


def timestamp(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def _failed(failure, name: str) -> list[str]:
    logs.log.failure("control: {name} failed", failure, name=name)
    return [f"error {name} failed: {failure.getErrorMessage()[:200]}"]


class ControlService(service.Service):
    """Listens on ``DATA/control.sock`` while the server runs."""

    def __init__(self, data: Path, registry: SessionRegistry, reactor) -> None:
        self.path = socket_path(data)
        self.registry = registry
        self.reactor = reactor
        self.port = None

    def startService(self) -> None:
        super().startService()
        if len(os.fsencode(self.path)) > MAX_SOCKET_PATH:
            logs.log.warn(
                "control: {path} is too long for a unix socket; cyrusmail-admin cannot reach this server"
                " (use a data folder with a shorter path)", path=str(self.path))
            return
        _remove_stale(self.path)
        factory = Factory.forProtocol(self.protocol)
        factory.noisy = False
        self.port = self.reactor.listenUNIX(str(self.path), factory, backlog=16, mode=0o600)
        logs.log.info("control: listening on {path}", path=str(self.path))

    def protocol(self) -> ControlProtocol:
        """What answers one connection (a worker process answers the supervisor's commands with it too)."""
        return ControlProtocol(self.registry)

    def stopService(self):
        super().stopService()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None


def _remove_stale(path: Path) -> None:
    """Remove a socket file left by a server that is gone; refuse if one still answers."""
    if not path.exists() and not path.is_symlink():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()
        return
    finally:
        probe.close()
    raise RuntimeError(f"another cyrusmail server answers on {path}")


def ask(data: Path, command: str, timeout: float = 10.0) -> list[str] | None:
    """Send one command; the answer's lines (the last is ``ok ...``), or None when no server listens.

    :raises ControlError: the server answered ``error``, or hung up.
    :raises OSError: the socket exists but cannot be used (permissions).
    """
    path = socket_path(data)
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        try:
            conn.connect(str(path))
        except OSError as error:
            if error.errno in (errno.ENOENT, errno.ECONNREFUSED):
                return None
            raise
        conn.sendall(command.encode("utf-8") + b"\n")
        received = b""
        lines: list[str] = []
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                raise ControlError("the server hung up without an answer")
            received += chunk
            *complete, received = received.split(b"\n")
            for line in complete:
                text = line.decode("utf-8", "replace")
                lines.append(text)
                if text.startswith("error"):
                    raise ControlError(text.partition(" ")[2])
                if text.startswith("ok"):
                    return lines
