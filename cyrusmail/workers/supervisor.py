"""The supervisor: the twistd process when ``[server] workers`` is above 1.

It starts as a single-process server does (:mod:`cyrusmail.startup`): the
config and certificate are checked, every port is bound, and after
``twistd -u/-g`` the data folder is locked, swept of what a crash left and
opened once (schemas, the self-signed certificate), then closed again: the
supervisor serves no connection and never accepts on its ports.  It starts
``workers`` worker processes (:mod:`cyrusmail.workers.worker`), each given
every listening socket, the data folder's lock (so that the lock outlives
the supervisor until its last worker is gone) and one end of a socket pair,
its channel (:mod:`cyrusmail.workers.channel`).  The kernel hands each new
connection to whichever worker accepts it first; a worker accepts only
when its event loop is free, so a busy worker takes fewer.

What is shared, and how:

- **change notification**: a worker that commits a change tells the
  supervisor, which tells every other worker; their IDLE sessions are
  pushed the change at once, as in one process;
- **connection caps**: each worker reports its counts (all, waiting for a
  login, per address) once per turn of its event loop; the supervisor sums
  them and sends each worker the others'.  A worker admits a connection
  against its own counts plus the others' as last heard, so the caps can be
  overshot only by connections accepted in different workers within the
  same moment (the time a report takes to arrive, under a millisecond on
  an idle machine);
- **login throttle**: the supervisor holds the one
  :class:`~cyrusmail.auth.throttle.LoginThrottle`; a worker asks it when
  each password may be checked and tells it the outcome, so spreading
  guesses over workers gains nothing;
- **outbound queue**: worker 0 runs it; the others write the spool and tell
  it, through the supervisor, of each message they queued;
- **control socket**: the supervisor listens on ``DATA/control.sock``,
  sends each command to every worker and joins their answers; ``workers``
  it answers itself.

A worker that dies is logged and replaced: at once after a long run, after
0.5 s, 1 s, 2 s ... up to 30 s while replacements keep dying young.  SIGTERM
(or Ctrl-C) stops the workers, each saying goodbye to its sessions, and the
supervisor exits 0 once all are gone (a worker not gone after 15 s is
killed).  SIGHUP reopens the supervisor's log file (the workers' lines go
through it) and re-reads the certificate, which every worker then serves.
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import socket
import sys
import time

from OpenSSL.SSL import Error as SSLError
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import address, defer
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from cyrusmail import logs, startup
from cyrusmail.auth.throttle import LoginThrottle
from cyrusmail.control import ControlProtocol, ControlService, timestamp
from cyrusmail.metrics import merge_expositions
from cyrusmail.private_files import PRIVATE_UMASK
from cyrusmail.protocols import ServerContext
from cyrusmail.service import ServerService, SignalledService, open_context
from cyrusmail.sessions import GOODBYE_GRACE, Tally
from cyrusmail.workers.channel import Channel, adopt
from cyrusmail.workers.worker import (
    BOOT,
    CHANNEL_FD,
    FIRST_LISTENER_FD,
    LOCK_FD,
    Listener,
    WorkerSetup,
)

#: Seconds before replacing a worker that died young the first time; doubled each time after.
RESTART_FIRST = 0.5
RESTART_MAX = 30.0
#: A worker that ran this long before it died is replaced at once.
STABLE_AFTER = 60.0
#: Seconds a worker is given to stop (its goodbyes take up to GOODBYE_GRACE) before it is killed.
STOP_GRACE = GOODBYE_GRACE + 10.0
#: Seconds each worker is given to answer a control command.
CONTROL_TIMEOUT = 8.0
#: Longest log line relayed from a worker; longer ones are cut.
MAX_LOG_LINE = 64 * 1024
#: Where the workers find Python's modules: this process's, with relative entries made absolute now.
MODULE_PATH = [os.path.abspath(entry) for entry in sys.path]


class WorkerGone(Exception):
    """The worker asking went away before its turn."""


class WorkerProcess(ProcessProtocol):
    """One worker as the supervisor sees it: its process, channel, counts and logins in progress."""

    def __init__(self, supervisor: SupervisorService, slot: int) -> None:
        self.supervisor = supervisor
        self.slot = slot
        self.pid: int | None = None
        self.started = supervisor.reactor.seconds()
        self.since = time.time()
        self.ready = False
        self.channel: Channel | None = None
        self.tally = Tally()
        self.verifying: dict[int, defer.Deferred] = {}
        self.ended: defer.Deferred = defer.Deferred()
        self._partial = {1: b"", 2: b""}

    @property
    def talking(self) -> bool:
        """Whether its channel is open."""
        return self.channel is not None and self.channel.open

    def childDataReceived(self, fd: int, data: bytes) -> None:
        lines = (self._partial.get(fd, b"") + data).split(b"\n")
        rest = lines.pop()
        if len(rest) > MAX_LOG_LINE:
            lines.append(rest[:MAX_LOG_LINE])
            rest = b""
        self._partial[fd] = rest
        for line in lines:
            self._log(line)

    def _log(self, line: bytes) -> None:
        logs.log.info("worker {slot}: {text}", slot=self.slot, text=line.decode("utf-8", "replace").rstrip("\r"))

    def processEnded(self, reason: Failure) -> None:
        for fd, rest in self._partial.items():
            if rest:
                self._log(rest)
            self._partial[fd] = b""
        self.supervisor.ended(self, reason)


class SupervisorService(ServerService):
    """The supervisor; see the module docstring."""

    control_socket = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.count = self.config["server"]["workers"]
        self.workers: dict[int, WorkerProcess] = {}
        self.restarting: dict[int, object] = {}  # slot -> the timer that starts its next worker
        self.young_deaths: dict[int, int] = {}
        self.restarts: dict[int, int] = {}
        self.stopping = False
        self.throttle: LoginThrottle | None = None
        self._tickets = itertools.count(1)

    # -- starting --------------------------------------------------------------------

    def open(self) -> tuple[ServerContext, dict]:
        """Lock the data folder, open it once (sweep, schemas, certificate), and close it again."""
        os.umask(PRIVATE_UMASK)
        self.lock_fd = startup.take_data_folder(self.config.data)  # held until the process exits
        context = open_context(self.config, self.reactor, self.tls_options)
        context.realm.close()
        context.store.close()
        context.users.close()
        return context, {}

    def serve(self, context: ServerContext, factories: dict) -> None:
        self.tls = context.tls
        for endpoint in self.bound.values():
            endpoint.port.stopReading()  # the workers accept; this process never does
        self.throttle = LoginThrottle(self.reactor, maximum=self.config["server"]["login_delay_max"])
        SupervisorSignals(self).setServiceParent(self)
        SupervisorControl(self).setServiceParent(self)
        self.serve_metrics(self.gather_metrics)
        self.schedule_expire()
        self.reactor.callWhenRunning(self._start_workers)

    def _start_workers(self) -> None:
        logs.log.info("cyrusmail: starting {n} worker processes", n=self.count)
        for slot in range(self.count):
            self.spawn(slot)

    def spawn(self, slot: int) -> None:
        """Start the worker of ``slot``."""
        self.restarting.pop(slot, None)
        if self.stopping:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setblocking(False)
        theirs.setblocking(False)
        fds: dict[int, int | str] = {0: "w", 1: "r", 2: "r", CHANNEL_FD: theirs.fileno(), LOCK_FD: self.lock_fd}
        listeners = []
        for fd, ((name, description), endpoint) in enumerate(self.bound.items(), FIRST_LISTENER_FD):
            fds[fd] = endpoint.port.fileno()
            listeners.append(Listener(name, description, fd, family_of(endpoint.port)))
        setup = WorkerSetup(self.config, slot, self.count, listeners, (self.tls.cert_path, self.tls.key_path),
                            self.tls.pem)
        worker = WorkerProcess(self, slot)
        try:
            transport = self.reactor.spawnProcess(
                worker, sys.executable, [sys.executable, "-c", BOOT, json.dumps(MODULE_PATH)],
                env=dict(os.environ), childFDs=fds)
        except OSError as error:
            ours.close()
            logs.log.error("cyrusmail: cannot start worker {slot}: {error}", slot=slot, error=str(error))
            self._restart_later(slot, young=True)
            return
        finally:
            theirs.close()
        worker.pid = transport.pid
        self.workers[slot] = worker
        worker.channel = Channel(self._handlers(worker), f"worker {slot}", lost=lambda: self._channel_lost(worker))
        adopt(self.reactor, ours.fileno(), worker.channel)
        ours.close()
        others = Tally()
        for other in self.workers.values():
            for step in other.tally.steps():
                others.add(*step)
        worker.channel.send("elsewhere", steps=others.steps())
        transport.write(pickle.dumps(setup))
        transport.closeStdin()

    def _handlers(self, worker: WorkerProcess) -> dict:
        return {
            "ready": lambda message: self._ready(worker),
            "counts": lambda message: self._counted(worker, message["steps"]),
            "changed": lambda message: self._relay(worker, "changed", user=message["user"],
                                                   mailbox=message["mailbox"]),
            "queued": lambda message: self._queued(),
            "login": lambda message: self._login(worker, message),
            "verified": lambda message: self._verified(worker, message),
        }

    def _ready(self, worker: WorkerProcess) -> None:
        worker.ready = True
        logs.log.info("cyrusmail: worker {slot} (process {pid}) is serving", slot=worker.slot, pid=worker.pid)

    # -- what the workers share ----------------------------------------------------------

    def _relay(self, sender: WorkerProcess | None, op: str, **fields) -> None:
        for worker in self.workers.values():
            if worker is not sender and worker.talking:
                worker.channel.send(op, **fields)

    def _counted(self, worker: WorkerProcess, steps: list) -> None:
        for key, total, waiting in steps:
            worker.tally.add(key, total, waiting)
        self._relay(worker, "elsewhere", steps=steps)

    def _queued(self) -> None:
        runner = self.workers.get(0)
        if runner is not None and runner.talking:
            runner.channel.send("queued")

    def _login(self, worker: WorkerProcess, message: dict) -> defer.Deferred:
        """Answer ``go`` (with a ticket) when the throttle lets the check start, or refuse it."""
        ticket = next(self._tickets)
        answer: defer.Deferred = defer.Deferred()

        def verify() -> defer.Deferred:
            if not worker.talking:
                return defer.fail(WorkerGone())
            outcome = worker.verifying[ticket] = defer.Deferred()
            answer.callback({"go": True, "ticket": ticket})
            return outcome

        attempt = self.throttle.attempt(str(message["client"]), str(message["account"]), verify)
        attempt.addErrback(lambda failure: None)  # the outcome is the worker's to tell its client
        attempt.addCallback(lambda _: answer.called or answer.callback({"go": False}))
        return answer

    def _verified(self, worker: WorkerProcess, message: dict) -> None:
        outcome = worker.verifying.pop(message["ticket"], None)
        if outcome is None:
            return
        if message["outcome"] == "ok":
            outcome.callback(None)
        elif message["outcome"] == "fail":
            outcome.errback(UnauthorizedLogin())
        else:
            outcome.errback(WorkerGone("the check failed"))

    def _channel_lost(self, worker: WorkerProcess) -> None:
        verifying, worker.verifying = worker.verifying, {}
        for outcome in verifying.values():
            outcome.errback(WorkerGone())

    # -- workers that end ---------------------------------------------------------------------

    def ended(self, worker: WorkerProcess, reason: Failure) -> None:
        self._channel_lost(worker)
        if self.workers.get(worker.slot) is worker:
            del self.workers[worker.slot]
        gone, worker.tally = worker.tally.steps(-1), Tally()
        if gone:
            self._relay(None, "elsewhere", steps=gone)
        how = ended_how(reason)
        if self.stopping:
            logs.log.info("cyrusmail: worker {slot} (process {pid}) {how}", slot=worker.slot, pid=worker.pid, how=how)
        else:
            young = self.reactor.seconds() - worker.started < STABLE_AFTER
            delay = self._restart_later(worker.slot, young)
            self.restarts[worker.slot] = self.restarts.get(worker.slot, 0) + 1
            logs.log.error("cyrusmail: worker {slot} (process {pid}) {how}; another starts in {delay:.1f} s",
                           slot=worker.slot, pid=worker.pid, how=how, delay=delay)
        worker.ended.callback(None)

    def _restart_later(self, slot: int, young: bool) -> float:
        deaths = self.young_deaths[slot] = self.young_deaths.get(slot, 0) + 1 if young else 0
        delay = 0.0 if not deaths else min(RESTART_MAX, RESTART_FIRST * 2 ** (deaths - 1))
        self.restarting[slot] = self.reactor.callLater(delay, self.spawn, slot)
        return delay

    # -- the control socket, signals and stopping ----------------------------------------------

    def ask_workers(self, line: str) -> defer.Deferred:
        """Every worker's answer to a control command, joined (see :mod:`cyrusmail.control`)."""
        asking = [worker for _, worker in sorted(self.workers.items()) if worker.talking]
        answers = [worker.channel.request("control", line=line).addTimeout(CONTROL_TIMEOUT, self.reactor)
                   for worker in asking]
        joined = defer.DeferredList(answers, consumeErrors=True)
        return joined.addCallback(lambda results: join_answers(
            [(worker.slot, result[1]["lines"] if result[0] else result[1]) for worker, result in
             zip(asking, results, strict=True)]))

    def gather_metrics(self) -> defer.Deferred:
        """The figures of every worker, asked over the channel and summed (:func:`merge_expositions`),
        and two of the supervisor's own: the workers serving, and those that answered."""
        asking = [worker for _, worker in sorted(self.workers.items()) if worker.talking]
        answers = [worker.channel.request("control", line="metrics").addTimeout(CONTROL_TIMEOUT, self.reactor)
                   for worker in asking]

        def join(results) -> str:
            texts = ["".join(line[2:] + "\n" for line in result["lines"] if line.startswith("* "))
                     for ok, result in results if ok]
            return merge_expositions(texts) + (
                "# HELP cyrusmail_workers Worker processes serving now.\n# TYPE cyrusmail_workers gauge\n"
                f"cyrusmail_workers {len(asking)}\n"
                "# HELP cyrusmail_workers_answered Workers whose figures are in this scrape (the others timed out)."
                "\n# TYPE cyrusmail_workers_answered gauge\n"
                f"cyrusmail_workers_answered {len(texts)}\n")

        return defer.DeferredList(answers, consumeErrors=True).addCallback(join)

    def worker_rows(self) -> list[str]:
        serving = [worker for _, worker in sorted(self.workers.items()) if worker.ready]
        rows = [f"* {worker.slot} {worker.pid} {timestamp(worker.since)} {self.restarts.get(worker.slot, 0)}"
                for worker in serving]
        return [*rows, f"ok {len(serving)}"]

    def reload_tls(self) -> None:
        """Re-read the certificate and key, and have every worker serve them."""
        try:
            fingerprint = self.tls.reload()
        except (OSError, ValueError, TypeError, SSLError) as error:
            logs.log.error("cyrusmail: SIGHUP: kept the old TLS certificate: {error}", error=str(error) or repr(error))
            return
        cert, key = (part.decode("latin-1") for part in self.tls.pem)
        told = [worker.channel.request("tls", cert=cert, key=key) for worker in self.workers.values()
                if worker.talking]

        def report(results) -> None:
            failed = [str(result[1].value) for result in results if not result[0]]
            for problem in failed:
                logs.log.error("cyrusmail: SIGHUP: a worker kept the old TLS certificate: {error}", error=problem)
            logs.log.info("cyrusmail: TLS certificate reloaded, SHA-256 fingerprint {fp} ({n} workers)",
                          fp=fingerprint, n=len(told) - len(failed))

        defer.DeferredList(told, consumeErrors=True).addCallback(report)

    def stopService(self) -> defer.Deferred:
        """Stop every worker (each says goodbye to its sessions), then the rest; fires when all are gone."""
        self.stopping = True
        for timer in self.restarting.values():
            if timer.active():
                timer.cancel()
        self.restarting.clear()
        # Each worker logs how many sessions it ends: a sum here could miss one
        # accepted an instant ago, whose count has not reached the supervisor yet.
        for endpoint in self.bound.values():
            # Closed, not shut down: a shutdown() would stop the socket in every worker at once,
            # under accept() calls; it goes when the last worker's copy closes.
            endpoint.port._shouldShutdown = False
            endpoint.port.stopListening()
        waiting = []
        for worker in list(self.workers.values()):
            if worker.talking:
                worker.channel.send("stop")
            waiting.append(worker.ended)  # without its channel it is ending already
        killer = self.reactor.callLater(STOP_GRACE, self._kill_all)
        stopped = defer.DeferredList(waiting)

        def rest(_):
            if killer.active():
                killer.cancel()
            logs.log.info("cyrusmail: every worker has stopped")
            return super(SupervisorService, self).stopService()

        return stopped.addCallback(rest)

    def _kill_all(self) -> None:
        for worker in self.workers.values():
            logs.log.warn("cyrusmail: worker {slot} (process {pid}) did not stop; killing it",
                          slot=worker.slot, pid=worker.pid)
            _signal(worker, "KILL")


def _signal(worker: WorkerProcess, name: str) -> None:
    try:
        worker.transport.signalProcess(name)
    except (OSError, AttributeError, ProcessExitedAlready):
        pass


class SupervisorSignals(SignalledService):
    """SIGTERM and Ctrl-C stop the supervisor (and its workers); SIGHUP reloads (see the module docstring)."""

    def __init__(self, supervisor: SupervisorService) -> None:
        self.supervisor = supervisor
        self.reactor = supervisor.reactor

    def reload_tls(self) -> None:
        self.supervisor.reload_tls()


class RelayingControl(ControlProtocol):
    """The control socket of a supervisor: ``workers`` it answers, every other command its workers do."""

    def __init__(self, supervisor: SupervisorService) -> None:
        super().__init__(None)
        self.supervisor = supervisor

    def execute(self, text: str) -> defer.Deferred:
        if text.partition(" ")[0].lower() == "workers":
            return defer.succeed(self.supervisor.worker_rows())
        if text.partition(" ")[0].lower() == "metrics":  # one exposition, not the workers' one after another
            return self.supervisor.gather_metrics().addCallback(
                lambda text: [*(f"* {line}" for line in text.splitlines()), f"ok {len(text.splitlines())}"])
        return self.supervisor.ask_workers(text)


class SupervisorControl(ControlService):
    def __init__(self, supervisor: SupervisorService) -> None:
        super().__init__(supervisor.config.data, None, supervisor.reactor)
        self.supervisor = supervisor

    def protocol(self) -> ControlProtocol:
        return RelayingControl(self.supervisor)


def join_answers(answers: list[tuple[int, list[str] | Failure]]) -> list[str]:
    """One answer from the workers' answers to a command: their ``*`` lines, in order, and the sum of their ``ok N``.

    The first ``error`` (or a worker that did not answer) is the answer.
    """
    rows: list[str] = []
    counts: list[str] = []
    for slot, answer in answers:
        if isinstance(answer, Failure):
            problem = "did not answer" if answer.check(defer.TimeoutError) else answer.getErrorMessage()
            return [f"error worker {slot}: {problem}"]
        *items, last = answer or ["ok"]
        if last.startswith("error"):
            return [last]
        rows.extend(items)
        counts.append(last.partition(" ")[2])
    rows.sort(key=_row_number)
    if all(count.isdigit() for count in counts):
        return [*rows, f"ok {sum(int(count) for count in counts)}"]
    return [*rows, f"ok {counts[0]}".rstrip() if counts else "ok 0"]


def _row_number(row: str) -> int:
    number = row[2:].partition(" ")[0]
    return int(number) if number.isdigit() else 0


def family_of(port) -> int:
    host = port.getHost()
    if isinstance(host, address.UNIXAddress):
        return socket.AF_UNIX
    if isinstance(host, address.IPv6Address):
        return socket.AF_INET6
    return socket.AF_INET


def ended_how(reason: Failure) -> str:
    """How a worker process ended, for the log."""
    value = reason.value
    if isinstance(value, ProcessDone):
        return "exited"
    if isinstance(value, ProcessTerminated):
        if value.signal is not None:
            return f"was killed by signal {value.signal}"
        return f"exited with status {value.exitCode}"
    return str(value)
