"""The live sessions of this server process, and the connection limits.

Every IMAP, POP3, submission and LMTP session tells the one
:class:`SessionRegistry` (``context.sessions``) three things, one call each:
it opened (``connectionMade``), who logged in, and that it closed
(``connectionLost``).  Each session has one ``goodbye(text)`` that says its
protocol's farewell (``* BYE``, ``-ERR [SYS/TEMP]``, ``421 4.3.2``) and
closes once what is queued has been written.  On that the registry builds:

- the connection limits (:class:`Limits`), checked once, by
  :class:`AdmissionFactory`, before a session is built;
- the end of every session at shutdown (:meth:`SessionRegistry.end_all`);
- the end of one user's sessions when the user is deleted
  (:meth:`SessionRegistry.kick`, reached from ``cyrusmail-admin`` through
  the control socket, :mod:`cyrusmail.control`).

With several worker processes (:mod:`cyrusmail.workers`) each has its own
registry; the caps count the sessions of the others too (``elsewhere``, as
each worker reports its changes through the supervisor).

Addresses are counted per IPv4 address and per IPv6 /64 (one subscriber's
prefix).  Unix-socket peers (the local MTA's LMTP) and the networks in
``[server] limit_exempt`` (loopback by default) have no per-address caps;
the global caps count everyone.  A session of a service whose clients never
log in (LMTP) is never counted as waiting for a login.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.internet.protocol import Protocol as TwistedProtocol

from cyrusmail import logs

#: Services whose clients never log in (an MTA delivering): never "unauthenticated".
NO_LOGIN_SERVICES = frozenset({"lmtp"})
#: Seconds a session is given to take its goodbye before it is cut off.
GOODBYE_GRACE = 5.0
#: Seconds between two log lines about refused connections from one address.
REFUSAL_LOG_INTERVAL = 60.0
#: Seconds a kicked user's logins still in progress are ended (unless re-added).
REMOVED_USER_MEMORY = 60.0


class Session(Protocol):
    """What the registry asks of a session."""

    def goodbye(self, text: str) -> None:
        """Say the protocol's farewell with ``text``, then close once it is written."""


@dataclass(frozen=True)
class Limits:
    """The connection caps of ``[server]``; see README's configuration table."""

    max_connections: int
    max_connections_per_address: int
    max_unauthenticated: int
    max_unauthenticated_per_address: int
    exempt: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def defaults(cls) -> Limits:
        """The caps of a config that names none (the defaults in config.SCHEMA)."""
        from cyrusmail.config import SCHEMA

        return cls.from_server({key: spec.default for key, spec in SCHEMA["server"].items()})

    @classmethod
    def from_config(cls, config) -> Limits:
        return cls.from_server(config["server"])

    @classmethod
    def from_server(cls, server: dict[str, Any]) -> Limits:
        return cls(
            max_connections=server["max_connections"],
            max_connections_per_address=server["max_connections_per_address"],
            max_unauthenticated=server["max_unauthenticated"],
            max_unauthenticated_per_address=server["max_unauthenticated_per_address"],
            exempt=tuple(server["limit_exempt"]),
        )

    def address_key(self, host: str | None) -> str | None:
        """What a peer counts as for the per-address caps; None when they do not apply."""
        if host is None:
            return None  # a unix socket: a local process
        try:
            address = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return host
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.exempt):
            return None
        if isinstance(address, ipaddress.IPv6Address):
            return str(ipaddress.ip_network(f"{address}/64", strict=False))
        return str(address)


@dataclass
class LiveSession:
    """One registered session, as ``who`` would show it."""

    number: int
    service: str
    peer: str
    since: float
    session: Any  # the protocol, with goodbye(text)
    transport: Any
    key: str | None  # per-address counting key, or None (exempt)
    needs_login: bool
    user: str | None = None
    ending: Any = None  # the timer that cuts it off after its goodbye

    @property
    def waiting_for_login(self) -> bool:
        return self.needs_login and self.user is None


@dataclass
class Tally:
    """Open connections: all, waiting for a login, and both per address key (None: uncounted)."""

    total: int = 0
    waiting: int = 0
    per_address: Counter[str] = field(default_factory=Counter)
    waiting_per_address: Counter[str] = field(default_factory=Counter)

    def add(self, key: str | None, total: int, waiting: int) -> None:
        self.total += total
        self.waiting += waiting
        if key is not None:
            for counter, step in ((self.per_address, total), (self.waiting_per_address, waiting)):
                if step:
                    counter[key] += step
                    if counter[key] <= 0:
                        del counter[key]

    def steps(self, sign: int = 1) -> list[tuple[str | None, int, int]]:
        """``(key, total, waiting)`` steps that :meth:`add` up to this tally (``sign`` -1: take it away)."""
        keyed_total = sum(self.per_address.values())
        keyed_waiting = sum(self.waiting_per_address.values())
        steps = [(None, sign * (self.total - keyed_total), sign * (self.waiting - keyed_waiting))]
        for key in self.per_address.keys() | self.waiting_per_address.keys():
            steps.append((key, sign * self.per_address[key], sign * self.waiting_per_address[key]))
        return [step for step in steps if step[1] or step[2]]


@dataclass
class _RefusalLog:
    last: float
    suppressed: int = 0


class SessionRegistry:
    """The live sessions of this process; see the module docstring."""

    def __init__(self, limits: Limits | None = None, clock=None,
                 user_exists: Callable[[str], bool] | None = None, first_number: int = 1,
                 number_step: int = 1) -> None:
        self.limits = limits or Limits.defaults()
        self._clock = clock
        self.user_exists = user_exists
        self._sessions: dict[int, LiveSession] = {}  # id(session) -> entry
        # Worker k of N numbers its sessions k+1, k+1+N, ...: numbers never clash across workers.
        self._numbers = itertools.count(first_number, number_step)
        self.here = Tally()
        #: the sessions of the other worker processes, as last reported (cyrusmail.workers)
        self.elsewhere = Tally()
        #: told ``(key, total, waiting)`` at each change of ``here`` (a worker reports it)
        self.report: Callable[[str | None, int, int], None] | None = None
        self._removed_users: dict[str, float] = {}  # user -> when kicked
        self._refusals: dict[str, _RefusalLog] = {}
        self._drained: list[defer.Deferred] = []
        self.shutting_down = False

    @property
    def clock(self):
        if self._clock is None:
            from twisted.internet import reactor

            self._clock = reactor
        return self._clock

    # -- what the sessions call ---------------------------------------------------

    def opened(self, session: Session, service: str, transport) -> None:
        peer = transport.getPeer()
        entry = LiveSession(
            number=next(self._numbers), service=service, peer=logs.peer_of(transport),
            since=time.time(), session=session, transport=transport,
            key=self.limits.address_key(getattr(peer, "host", None)),
            needs_login=service not in NO_LOGIN_SERVICES,
        )
        self._sessions[id(session)] = entry
        self._count(entry, +1)

    def logged_in(self, session: Session, user: str) -> None:
        entry = self._sessions.get(id(session))
        if entry is None or entry.user is not None:
            return
        self._count(entry, -1)
        entry.user = user
        self._count(entry, +1)
        if self._was_removed(user):
            self.end(entry, "Account removed")

    def logged_out(self, session: Session) -> None:
        """The session is back to waiting for a login (IMAP UNAUTHENTICATE)."""
        entry = self._sessions.get(id(session))
        if entry is None or entry.user is None:
            return
        self._count(entry, -1)
        entry.user = None
        self._count(entry, +1)

    def closed(self, session: Session) -> None:
        entry = self._sessions.pop(id(session), None)
        if entry is None:
            return
        self._count(entry, -1)
        if entry.ending is not None and entry.ending.active():
            entry.ending.cancel()
        if not self._sessions:
            drained, self._drained = self._drained, []
            for waiting in drained:
                if not waiting.called:  # end_all's own deadline may have fired it
                    waiting.callback(None)

    def _count(self, entry: LiveSession, step: int) -> None:
        waiting = step if entry.waiting_for_login else 0
        self.here.add(entry.key, step, waiting)
        if self.report is not None:
            self.report(entry.key, step, waiting)

    # -- what others ask ------------------------------------------------------------

    def live(self) -> list[LiveSession]:
        """Every registered session, oldest first."""
        return sorted(self._sessions.values(), key=lambda entry: entry.number)

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def waiting_for_login(self) -> int:
        return self.here.waiting

    def refusal(self, service: str, host: str | None) -> str | None:
        """Why a new connection of ``service`` from ``host`` must be refused, or None.

        The reason is logged here, at most once a minute per address (with
        the number refused in between), so a flood cannot flood the log.
        """
        limits = self.limits
        key = limits.address_key(host)
        needs_login = service not in NO_LOGIN_SERVICES
        here, elsewhere = self.here, self.elsewhere
        reason = None
        if self.shutting_down:
            reason = "Server shutting down"
        elif here.total + elsewhere.total >= limits.max_connections:
            reason = "Too many connections, try again later"
        elif (key is not None and here.per_address[key] + elsewhere.per_address[key]
              >= limits.max_connections_per_address):
            reason = "Too many connections from your address"
        elif needs_login and here.waiting + elsewhere.waiting >= limits.max_unauthenticated:
            reason = "Too many connections waiting to log in, try again later"
        elif (needs_login and key is not None
              and here.waiting_per_address[key] + elsewhere.waiting_per_address[key]
              >= limits.max_unauthenticated_per_address):
            reason = "Too many connections from your address waiting to log in"
        if reason is not None:
            self._log_refusal(service, host or "local", reason)
        return reason

    def _log_refusal(self, service: str, host: str, reason: str) -> None:
        now = self.clock.seconds()
        seen = self._refusals.get(host)
        if seen is not None and now - seen.last < REFUSAL_LOG_INTERVAL:
            seen.suppressed += 1
            return
        more = f" ({seen.suppressed} more refused since the last report)" if seen and seen.suppressed else ""
        logs.log.warn(
            "{service}: refused a connection from {host}: {reason}{more}",
            service=service, host=host, reason=reason, more=more)
        if len(self._refusals) > 10_000:  # bound the table under a spray of addresses
            self._refusals = {h: r for h, r in self._refusals.items() if now - r.last < REFUSAL_LOG_INTERVAL}
        self._refusals[host] = _RefusalLog(now)

    # -- ending sessions --------------------------------------------------------------

    def end(self, entry: LiveSession, text: str, grace: float = GOODBYE_GRACE) -> None:
        """Say goodbye to one session; cut it off if it is still open after ``grace`` seconds."""
        if entry.ending is not None:
            return
        entry.ending = self.clock.callLater(grace, _cut_off, entry.transport)
        entry.session.goodbye(text)

    def kick(self, user: str, text: str = "Account removed") -> int:
        """End every session of ``user``; the number ended.

        The user is remembered for a while: a login of that user that was
        already being checked ends as it completes, unless the user exists
        again by then (``user_exists``).
        """
        user = user.lower()
        now = self.clock.seconds()
        self._removed_users = {name: when for name, when in self._removed_users.items()
                               if now - when < REMOVED_USER_MEMORY}
        self._removed_users[user] = now
        ending = [entry for entry in self.live() if entry.user is not None and entry.user.lower() == user]
        for entry in ending:
            self.end(entry, text)
        return len(ending)

    def _was_removed(self, user: str) -> bool:
        when = self._removed_users.get(user.lower())
        if when is None or self.clock.seconds() - when >= REMOVED_USER_MEMORY:
            return False
        return self.user_exists is None or not self.user_exists(user)

    def end_all(self, text: str, grace: float = GOODBYE_GRACE) -> defer.Deferred:
        """Refuse new sessions, say goodbye to every one; fires once all are closed.

        A session still open ``grace`` seconds after its goodbye (a client
        that does not read) is cut off, so this fires within about ``grace``
        (and after ``grace + 1`` at the latest, whatever the sessions do).
        """
        self.shutting_down = True
        drained: defer.Deferred = defer.Deferred()
        if not self._sessions:
            drained.callback(None)
            return drained
        self._drained.append(drained)
        for entry in self.live():
            self.end(entry, text, grace)
        latest = self.clock.callLater(grace + 1, lambda: drained.called or drained.callback(None))
        drained.addBoth(_cancelling(latest))
        return drained


def _cancelling(timer):
    def cancel(result):
        if timer.active():
            timer.cancel()
        return result
    return cancel


def _cut_off(transport) -> None:
    abort = getattr(transport, "abortConnection", None)
    if abort is not None:
        abort()
    else:
        transport.loseConnection()


# -- admission ---------------------------------------------------------------------------


class Refused(TwistedProtocol):
    """A connection over a cap: one refusal line, then closed (cut off if it will not go)."""

    def __init__(self, line: bytes, clock) -> None:
        self.line = line
        self.clock = clock
        self._cut = None

    def connectionMade(self) -> None:
        self.transport.write(self.line)
        self.transport.loseConnection()
        self._cut = self.clock.callLater(GOODBYE_GRACE, _cut_off, self.transport)

    def dataReceived(self, data: bytes) -> None:
        pass  # nothing a refused client says matters

    def connectionLost(self, reason=None) -> None:
        if self._cut is not None and self._cut.active():
            self._cut.cancel()


class AdmissionFactory(Factory):
    """Wraps a protocol factory: checks the caps before a session is built.

    ``wrapped.refusal(text)`` gives the protocol's refusal line (``* BYE``,
    ``-ERR [SYS/TEMP]``, ``421 4.7.0``).  Under implicit TLS this factory
    sits inside the TLS wrapper, so the refusal is sent in TLS.
    """

    noisy = False

    def __init__(self, wrapped, registry: SessionRegistry, service: str) -> None:
        self.wrapped = wrapped
        self.registry = registry
        self.service = service

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()

    def logPrefix(self) -> str:
        return self.wrapped.logPrefix()

    def buildProtocol(self, addr):
        reason = self.registry.refusal(self.service, getattr(addr, "host", None))
        if reason is None:
            return self.wrapped.buildProtocol(addr)
        return Refused(self.wrapped.refusal(reason), self.registry.clock)


def session_rows(entries: Iterable[LiveSession]) -> list[str]:
    """``NUMBER SERVICE PEER USER SINCE PID`` per session (``-`` before login), for ``who``.

    PID is the process serving the session (a worker's, with several).
    """
    pid = os.getpid()
    return [f"{e.number} {e.service} {e.peer} {e.user or '-'} "
            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(e.since))} {pid}" for e in entries]
