"""Starting the server safely: check, bind, lock, and only then make anything.

A start that fails says why in one line on standard error and exits with
status 2, never with a traceback, and leaves the disk as it found it. So
the steps run in this order:

1. While twistd parses the options (nothing touched): the config, the
   certificate and key it names (readable, PEM, one the other's), and
   whether the data folder can be made.
2. In ``makeService``, still as the user twistd was started as (root, for
   ports below 1024): every listening port is bound. A port in use stops
   the start there, and the ports already bound are closed again.
3. When the service starts, after ``twistd -u/-g`` has switched user: the
   umask becomes 077, the data folder is made (0700), its lock is taken,
   and only then are the store, user database, self-signed certificate and
   queue opened. Until then a bound port has no protocol to hand
   connections to, but the reactor is not running yet, so none arrive.

The lock is ``DATA/server.lock``, held (``flock``) for the server's
lifetime: a second server on the same data folder would deliver every
queued message a second time, so it refuses to start. ``cyrusmail-admin``
never takes it and works beside a running server.
"""

from __future__ import annotations

import fcntl
import os
import stat
import sys
from pathlib import Path
from typing import NoReturn

from twisted.internet import defer, endpoints, error, protocol
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer

from cyrusmail.config import Config, ConfigError
from cyrusmail.private_files import PRIVATE_FILE, make_private_folder

LOCK_FILE = "server.lock"
EXIT_START_FAILED = 2


class StartupError(Exception):
    """A reason the server cannot start, said in one line."""


def refuse(message: str, stream=None) -> NoReturn:
    """Say ``message`` on one line of standard error and exit with status 2."""
    stream = stream or sys.stderr
    stream.write(f"cyrusmail: {' '.join(message.split())}\n")
    stream.flush()
    raise SystemExit(EXIT_START_FAILED)


def one_line(problem: BaseException) -> str:
    """What went wrong, for a person: an OSError's reason and file, else the message."""
    if isinstance(problem, OSError) and problem.strerror:
        return f"{problem.filename}: {problem.strerror}" if problem.filename else problem.strerror
    return str(problem) or type(problem).__name__


# -- step 1: checks that touch nothing -------------------------------------------


def check_data_folder(config: Config) -> None:
    """ConfigError unless the data folder exists and is usable, or can be made."""
    data = config.data.absolute()
    for candidate in (data, *data.parents):
        try:
            status = os.stat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as problem:
            raise ConfigError(config.path, "server", "data", f"cannot use {data}: {one_line(problem)}") from None
        wanted = os.R_OK | os.W_OK | os.X_OK if candidate == data else os.W_OK | os.X_OK
        if not stat.S_ISDIR(status.st_mode):
            raise ConfigError(config.path, "server", "data", f"cannot make {data}: {candidate} is not a folder")
        if not os.access(candidate, wanted):
            verb = "use" if candidate == data else "make"
            raise ConfigError(config.path, "server", "data",
                              f"cannot {verb} {data}: no permission to write in {candidate}")
        return


# -- step 2: bind every port ----------------------------------------------------------


class StandInFactory(protocol.Factory):
    """Holds a bound port's place until the service's own factory exists."""

    noisy = False

    def __init__(self, name: str):
        self.name = name
        self.served: protocol.Factory | None = None

    def logPrefix(self) -> str:
        return self.name

    def serve(self, factory: protocol.Factory) -> None:
        self.served = factory
        factory.doStart()

    def buildProtocol(self, addr):
        return None if self.served is None else self.served.buildProtocol(addr)

    def stopFactory(self) -> None:
        if self.served is not None:
            self.served.doStop()


@implementer(IStreamServerEndpoint)
class BoundEndpoint:
    """An endpoint whose port is bound already: ``listen`` gives it the factory to serve."""

    def __init__(self, port: IListeningPort, stand_in: StandInFactory):
        self.port = port
        self.stand_in = stand_in

    def listen(self, factory: protocol.Factory) -> defer.Deferred:
        self.stand_in.serve(factory)
        return defer.succeed(self.port)

    def close_now(self) -> None:
        """Close the port while the reactor is not running (a unix socket's file goes too)."""
        self.port.stopReading()
        self.port.connectionLost(Failure(error.ConnectionDone("the start failed")))


def bind_all(reactor, config: Config, sections: list[str] | None = None) -> dict[tuple[str, str], BoundEndpoint]:
    """Bind every endpoint of every enabled service (or of ``sections``), or StartupError having bound none."""
    bound: dict[tuple[str, str], BoundEndpoint] = {}
    backlog = config["server"]["listen_backlog"]
    for name in config.enabled_services() if sections is None else sections:
        for description in config[name]["listen"]:
            stand_in = StandInFactory(name)
            outcome: list = []
            endpoint = endpoints.serverFromString(reactor, with_backlog(description, backlog))
            endpoint.listen(stand_in).addBoth(outcome.append)
            if not outcome or isinstance(outcome[0], Failure):
                close_all(bound.values())
                drop_unix_lock(description)
                reason = outcome[0].value if outcome else "the endpoint did not listen at once"
                raise StartupError(f"[{name}] listen {description}: cannot listen: {listen_problem(reason)}")
            bound[name, description] = BoundEndpoint(outcome[0], stand_in)
    return bound


def with_backlog(description: str, backlog: int) -> str:
    """The endpoint ``description`` with ``backlog=N`` added, unless it names its own."""
    if ":backlog=" in description:
        return description
    return f"{description}:backlog={backlog}"


def listen_problem(problem) -> str:
    socket_error = getattr(problem, "socketError", None)
    if isinstance(socket_error, OSError) and socket_error.strerror:
        return socket_error.strerror
    return str(socket_error or problem)


def drop_unix_lock(description: str) -> None:
    """Remove the ``PATH.lock`` Twisted leaves when binding a unix socket fails after taking it."""
    address = getattr(endpoints.serverFromString(None, description), "_address", None)
    if not isinstance(address, str):
        return
    lock = address + ".lock"
    try:
        if os.readlink(lock) == str(os.getpid()):
            os.unlink(lock)
    except OSError:
        pass  # no lock, or another process's


def remove_own_pid_file(path: str | None) -> None:
    """Remove twistd's pid file if it names this process."""
    if not path:
        return
    try:
        with open(path, "rb") as source:
            if source.read().strip() == str(os.getpid()).encode("ascii"):
                os.unlink(path)
    except OSError:
        pass  # none, or not ours to remove


def close_all(bound) -> None:
    for endpoint in bound:
        endpoint.close_now()


# -- step 3: the data folder, private and locked ------------------------------------


def take_data_folder(data: Path) -> int:
    """Make the data folder private (0700) and lock it; the lock's descriptor, never to be closed."""
    try:
        make_private_folder(data)
    except OSError as problem:
        raise StartupError(f"cannot make the data folder {data} private: {one_line(problem)}") from None
    return hold_lock(data)


def hold_lock(data: Path) -> int:
    """Take ``DATA/server.lock`` for as long as the process lives; StartupError if held.

    The returned descriptor is never closed: the lock goes with the process.
    """
    lock_path = data / LOCK_FILE
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        process = f" (process {holder})" if holder.isdigit() else ""
        raise StartupError(f"another cyrusmail server{process} is using {data}: it holds {lock_path}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return fd
