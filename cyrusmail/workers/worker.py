"""One worker process: serves connections on the sockets its supervisor bound.

The supervisor (:mod:`cyrusmail.workers.supervisor`) starts it as
``python -c BOOT PATHS`` with its listening sockets, its end of the channel
(:mod:`cyrusmail.workers.channel`) and the data folder's lock as inherited
file descriptors, and writes a :class:`WorkerSetup` (pickled) to its
standard input: the checked config and the TLS certificate and key, which
the worker may not be able to read itself after ``twistd -u``.  The worker
opens the store as a single-process server would, but without the sweep
of what a crash left (the supervisor did it, and other workers may be
staging files now), and then:

- tells the supervisor of each committed change (``changed``), and lets
  the store's watchers (IDLE) know of those the supervisor relays;
- reports its connection counts (``counts``) and keeps the others' as
  ``sessions.elsewhere``, so the connection caps count every worker, and
  leaves new connections to the others while it holds more than its share
  (:mod:`cyrusmail.workers.balance`);
- asks the supervisor when each password may be checked (``login``,
  ``verified``): the login throttle is the supervisor's, one for all;
- runs the outbound queue if it is worker 0, and else tells worker 0,
  through the supervisor, of each message it queued (``queued``);
- answers the control socket's commands for its own sessions (``control``),
  takes a renewed certificate (``tls``) and stops (``stop``) when told.

Its log lines go to standard output, which the supervisor logs.  It stops,
saying goodbye to its sessions, on ``stop``, on SIGTERM, or when the
channel closes (the supervisor is gone); SIGINT and SIGHUP are for the
supervisor and are ignored.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import eventAsText, globalLogBeginner
from twisted.python.failure import Failure
from twisted.python.threadable import isInIOThread
from zope.interface import implementer

from cyrusmail import logs, tls
from cyrusmail.config import Config
from cyrusmail.private_files import PRIVATE_UMASK
from cyrusmail.protocols import ServerContext
from cyrusmail.service import ServerService, StoreService, open_context
from cyrusmail.sessions import Limits, SessionRegistry
from cyrusmail.workers.balance import AcceptBalancer
from cyrusmail.workers.channel import Channel, adopt

#: What the supervisor runs: ``python -c BOOT JSON-LIST-OF-sys.path``.
#: Signals are ignored from the first instant (see WorkerStoreService).
BOOT = ("import json, signal, sys\n"
        "for name in ('SIGTERM', 'SIGINT', 'SIGHUP', 'SIGUSR1'):\n"
        "    signal.signal(getattr(signal, name), signal.SIG_IGN)\n"
        "sys.path[:] = json.loads(sys.argv[1])\n"
        "from cyrusmail.workers.worker import main\n"
        "main()\n")
#: The worker's end of the channel, and the data folder's lock (kept open, never used).
CHANNEL_FD, LOCK_FD, FIRST_LISTENER_FD = 3, 4, 5
#: Exit status of a worker that could not start.
EXIT_START_FAILED = 1


@dataclass
class Listener:
    service: str
    description: str
    fd: int
    family: int


@dataclass
class WorkerSetup:
    """What the supervisor gives each worker."""

    config: Config
    slot: int  # 0 .. workers-1; worker 0 runs the outbound queue
    workers: int
    listeners: list[Listener]
    cert_paths: tuple[Path, Path]
    cert_pem: tuple[bytes, bytes]


# -- listening on the supervisor's sockets ------------------------------------------------


@implementer(IListeningPort)
class AdoptedPort:
    """A port on a socket the supervisor bound and shares with the other workers.

    Stopping stops this worker's accepting.  A TCP socket's copy is closed
    (the socket lives on in the others); a unix socket's is left to the
    process's end, since Twisted would remove the socket's file, which is
    the supervisor's to remove.
    """

    def __init__(self, port, family: int) -> None:
        self.port = port
        self.family = family
        self.listening = True

    def startListening(self) -> None:
        self.listening = True
        self.port.startReading()

    def stopListening(self):
        self.listening = False
        if self.family == socket.AF_UNIX:
            self.port.stopReading()
            return None
        return self.port.stopListening()

    def getHost(self):
        return self.port.getHost()

    def pause(self) -> None:
        """Leave new connections to the other workers for now (:mod:`cyrusmail.workers.balance`)."""
        if self.listening:
            self.port.stopReading()

    def resume(self) -> None:
        if self.listening:
            self.port.startReading()


@implementer(IStreamServerEndpoint)
class AdoptedEndpoint:
    def __init__(self, reactor, listener: Listener, balancer: AcceptBalancer) -> None:
        self.reactor = reactor
        self.listener = listener
        self.balancer = balancer

    def listen(self, factory) -> defer.Deferred:
        port = self.reactor.adoptStreamPort(self.listener.fd, self.listener.family, factory)
        os.close(self.listener.fd)  # the port holds its own duplicate
        adopted = AdoptedPort(port, self.listener.family)
        self.balancer.add(adopted)
        return defer.succeed(adopted)


# -- asking the supervisor -----------------------------------------------------------------------


class RemoteThrottle:
    """The supervisor's login throttle, with :class:`~cyrusmail.auth.throttle.LoginThrottle`'s ``attempt``.

    The supervisor says when the password may be checked (``go``), or that
    the attempt is refused; the check runs here, and its outcome goes back
    (``ok``, ``fail`` for a wrong password, ``error`` for anything else).
    """

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def attempt(self, client: str, account: str, verify: Callable[[], defer.Deferred]) -> defer.Deferred:
        turn = self.channel.request("login", client=client, account=account)
        return turn.addCallback(self._turn, verify)

    def _turn(self, reply: dict, verify: Callable[[], defer.Deferred]) -> defer.Deferred:
        if not reply.get("go"):
            raise UnauthorizedLogin("Too many login attempts waiting")
        outcome = defer.maybeDeferred(verify)
        outcome.addBoth(self._report, reply["ticket"])
        return outcome

    def _report(self, outcome, ticket: int):
        if not isinstance(outcome, Failure):
            kind = "ok"
        else:
            kind = "fail" if outcome.check(UnauthorizedLogin) else "error"
        self.channel.send("verified", ticket=ticket, outcome=kind)
        return outcome


class CountReporter:
    """Sends the changes of this worker's connection counts, gathered over one reactor turn.

    ``changed()`` is called at once, at each change (the worker's share of new connections).
    """

    def __init__(self, channel: Channel, reactor, changed: Callable[[], None]) -> None:
        self.channel = channel
        self.reactor = reactor
        self.changed = changed
        self.pending: dict[str | None, list[int]] = {}
        self.call = None

    def __call__(self, key: str | None, total: int, waiting: int) -> None:
        self.changed()
        step = self.pending.setdefault(key, [0, 0])
        step[0] += total
        step[1] += waiting
        if self.call is None:
            self.call = self.reactor.callLater(0, self.flush)

    def flush(self) -> None:
        self.call = None
        steps = [[key, total, waiting] for key, (total, waiting) in self.pending.items() if total or waiting]
        self.pending.clear()
        if steps:
            self.channel.send("counts", steps=steps)


# -- the worker's server ---------------------------------------------------------------------------


class WorkerStoreService(StoreService):
    """Signals are the supervisor's: a worker ignores SIGTERM, SIGINT, SIGHUP and SIGUSR1.

    A service manager, a terminal's Ctrl-C or ``timeout`` signal the whole
    process group at once; the supervisor alone decides, so that it never
    takes a worker stopping on its own for one that died.
    """

    def _install_signal_handlers(self) -> None:
        for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1"):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


class WorkerService(ServerService):
    """The services of one worker: those of a single-process server, less the lock, sweep and control socket."""

    store_service = WorkerStoreService
    control_socket = False  # the supervisor's; commands come over the channel

    def __init__(self, setup: WorkerSetup, reactor) -> None:
        self.balancer = AcceptBalancer(setup.workers, reactor)
        bound = {(item.service, item.description): AdoptedEndpoint(reactor, item, self.balancer)
                 for item in setup.listeners}
        options = tls.ReloadableTLS.from_pem(*setup.cert_paths, *setup.cert_pem)
        super().__init__(setup.config, reactor, bound, options)
        self.setup = setup
        self.status = 0
        self.stopping = False
        self.context: ServerContext | None = None
        self.channel = Channel({}, f"worker {setup.slot}", lost=self._supervisor_gone)

    def startService(self) -> None:
        adopt(self.reactor, CHANNEL_FD, self.channel)
        os.close(CHANNEL_FD)
        super().startService()
        if self.status == 0:
            self.channel.send("ready", pid=os.getpid())

    def open(self) -> tuple[ServerContext, dict]:
        """The data folder, opened as the supervisor left it: locked, swept, its certificate made."""
        os.umask(PRIVATE_UMASK)
        context = self.context = open_context(self.config, self.reactor, self.tls_options, sweep=False)
        self.join(context)
        return context, {name: self.factory(context, name) for name in self.config.enabled_services()}

    def start_failed(self, error: Exception) -> None:
        """Logged; the supervisor starts another worker after a pause."""
        logs.log.failure("cyrusmail: worker {slot} could not start", slot=self.setup.slot)  # inside the except
        self.status = EXIT_START_FAILED
        self.reactor.callLater(0, _stop_quietly, self.reactor)

    def join(self, context: ServerContext) -> None:
        """Make ``context`` one worker among several (see the module docstring)."""
        setup, channel = self.setup, self.channel
        tracer = context.sessions.tracer
        context.sessions = SessionRegistry(Limits.from_config(self.config), self.reactor, context.users.exists,
                                           first_number=setup.slot + 1, number_step=setup.workers)
        context.sessions.tracer = tracer
        context.sessions.report = CountReporter(channel, self.reactor, self.balancer.check)
        self.balancer.registry = context.sessions
        context.store.publish = self._publish
        context.portal.throttle = RemoteThrottle(channel)
        if setup.slot == 0:
            context.extras["spool_shared"] = True
        else:
            context.extras["queue_elsewhere"] = lambda: channel.send("queued")
        control = self.control_service(context)
        channel.handlers.update({
            "changed": lambda message: context.store.tell_watchers(message["user"], message["mailbox"]),
            "elsewhere": lambda message: self._elsewhere(context.sessions, message["steps"]),
            "queued": lambda message: self._queued(),
            "control": lambda message: control.protocol().execute(message["line"]).addCallback(
                lambda lines: {"lines": lines}),
            "tls": self._use_pem,
            "stop": lambda message: _stop_quietly(self.reactor),
        })

    def _publish(self, user: str, mailbox_id: int) -> None:
        if isInIOThread():
            self.channel.send("changed", user=user, mailbox=mailbox_id)
        else:  # a store write finished in a thread: the channel is the reactor's
            self.reactor.callFromThread(self.channel.send, "changed", user=user, mailbox=mailbox_id)

    def _elsewhere(self, registry: SessionRegistry, steps: list) -> None:
        """The other workers' counts changed by ``steps``."""
        for key, total, waiting in steps:
            registry.elsewhere.add(key, total, waiting)
        self.balancer.check()

    def _queued(self) -> None:
        runner = self.context.extras.get("queue_runner") if self.context else None
        if runner is not None:
            runner.poll()

    def _use_pem(self, message: dict) -> dict:
        fingerprint = self.context.tls.use_pem(message["cert"].encode("latin-1"), message["key"].encode("latin-1"))
        return {"fingerprint": fingerprint}

    def _supervisor_gone(self) -> None:
        if not self.stopping:
            logs.log.warn("cyrusmail: worker {slot}: the supervisor is gone; stopping", slot=self.setup.slot)
            self.reactor.callLater(0, _stop_quietly, self.reactor)

    def stopService(self):
        self.stopping = True
        self.balancer.stop()
        return super().stopService()


def _stop_quietly(reactor) -> None:
    try:
        reactor.stop()
    except ReactorNotRunning:
        pass


def _log_to_stdout(event: dict) -> None:
    """One event as text on standard output, for the supervisor to log."""
    text = eventAsText(event, includeTraceback=True, includeTimestamp=False, includeSystem=False)
    data = (text.rstrip("\n") + "\n").encode("utf-8", "replace")
    try:
        while data:
            data = data[os.write(1, data):]
    except OSError:
        pass  # the supervisor is gone


def main() -> None:
    """The worker process: read the setup, serve until told to stop, exit."""
    setup: WorkerSetup = pickle.load(sys.stdin.buffer)
    sys.stdin.close()
    globalLogBeginner.beginLoggingTo([_log_to_stdout], redirectStandardIO=False)
    from twisted.internet import reactor

    worker = WorkerService(setup, reactor)
    reactor.callWhenRunning(worker.startService)
    reactor.addSystemEventTrigger("before", "shutdown", worker.stopService)
    reactor.run(installSignalHandlers=False)  # the signals stay ignored
    sys.exit(worker.status)
