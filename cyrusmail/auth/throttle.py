"""Login throttling: when a password may be checked, decided before scrypt is spent.

Every attempt through the portal is counted under two keys:

- the client's **address**: an IPv4 address as it is, an IPv6 address by its
  /64 (one host usually holds a whole /64, and rotating inside it is free).
  IPv4 is not grouped by /24: a /24 is often many unrelated clients behind
  one provider, and IPv4 addresses are what costs an attacker money;
- the **account** the name resolves to in the user database (``Alice`` and
  ``alice@example.org`` are one key), with names that resolve to no account
  normalised the same way, so throttling never tells which accounts exist.

A key with recent failures lets one verification run at a time, and the next
may start no earlier than the last failure plus a delay of ``base`` seconds
per recent failure, up to ``maximum``; a failure is forgotten every
``forget`` seconds. Waiting attempts start oldest first as their keys allow,
however many connections they come from, so guesses per second against one
account, or from one address, are bounded. An account key lets one verification run at a
time even without failures; an address key lets ``address_parallel`` run
while it has no recent failures (many users behind one NAT). At most
``queue_limit`` attempts may wait per key with recent failures, and
``clean_queue_limit`` per key without (a webmail host or a NAT logs many
users in at once from one address, and must not be refused for it; the
connection caps bound these queues too); more are refused as a failed
login without a verification, answered after the key's current delay (so
that a refused client cannot spin).

A correct password waits its turn like any other: answering it sooner would
tell an attacker it was right. That holds for one the checker's cache of
verified passwords (:mod:`cyrusmail.auth.cache`) accepts without scrypt:
the cache is asked only once the attempt has started. A success clears the account's failures, not
the address's (else an attacker with one account of their own could reset
the address between guesses). An address that has logged in to an account
gets its own lane for that account, so that an attacker elsewhere hammering
the account cannot keep its owner out; elsewhere the owner waits at most
``maximum`` seconds per attempt queued ahead, or is refused while the queue
is full. Every table is bounded; the least recently used idle entry goes
first.

Several servers on one database (the PostgreSQL store) share the account
keys' failures through ``shared`` (:class:`SharedFailures`): each failure
is added to the account's record there, and an attempt that arrives reads
it, so that its account key counts (and waits for) the failures made
through every server, not only this one's. Only an account's common lane
is shared, not the lanes of addresses that logged in to it; the address
keys stay each server's own.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

#: Longest account name kept as a key; longer names cannot exist anyway.
MAX_NAME = 320


def address_key(host: str) -> str:
    """The key of a client address: IPv4 as is, IPv6 by its /64, anything else as given."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host[:64]  # "local" for a unix socket
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def account_key(users, local_domains: list[str], login: str) -> str:
    """The account a login name counts against, formed alike whether or not it exists."""
    resolved = users.resolve(login, local_domains)
    if resolved is not None:
        return resolved
    folded = login.strip().lower()[:MAX_NAME]
    local, at, domain = folded.rpartition("@")
    return local if at and domain in local_domains else folded


@implementer(IUsernamePassword)
class UsernamePasswordFrom(UsernamePassword):
    """A user name and password, the address of the client that sent them, and whom it asks to act as.

    ``authzid`` (SASL PLAIN's authorization identity) is empty unless the
    client asked to log in as another user, which only master users may
    (:mod:`cyrusmail.auth.masters`).
    """

    def __init__(self, username: bytes | str, password: bytes | str, client: str, authzid: str = ""):
        super().__init__(username, password)
        self.client = client
        self.authzid = authzid


@dataclass(eq=False)
class _Key:
    """What one key (an address, or an account's lane) has done lately."""

    parallel: int  # verifications at once while there are no recent failures
    failures: float = 0.0  # as of ``updated``; one is forgotten every ``forget`` seconds
    updated: float = 0.0
    ready_at: float = 0.0  # no verification of this key starts before then
    running: int = 0
    waiting: int = 0

    def recent_failures(self, now: float, forget: float) -> float:
        return max(0.0, self.failures - (now - self.updated) / forget)

    def may_start(self, now: float, forget: float) -> bool:
        limit = 1 if self.recent_failures(now, forget) > 0 else self.parallel
        return self.running < limit and now >= self.ready_at

    def busy(self) -> bool:
        return self.running > 0 or self.waiting > 0


@dataclass(eq=False)
class _Attempt:
    keys: tuple[_Key, _Key]  # (address, account lane)
    account: str
    address: str
    verify: Callable[[], defer.Deferred]
    result: defer.Deferred
    shared: bool = False  # the account's common lane, whose failures every server sees


class SharedFailures(Protocol):
    """The account keys' failures that several servers share (``PostgresStore.login_failures``)."""

    def recent(self, account: str) -> tuple[float, float] | None:
        """(failures as of ``updated``, ``updated``), or None when none are recorded."""

    def failed(self, account: str, now: float, forget: float) -> None:
        """Add one failure at ``now``; one is forgotten every ``forget`` seconds."""

    def succeeded(self, account: str) -> None:
        """Clear the account's failures."""


class _Table:
    """Key states by name, bounded: the least recently used idle one goes first."""

    def __init__(self, limit: int):
        self.limit = limit
        self.entries: OrderedDict = OrderedDict()

    def get(self, name, parallel: int) -> _Key:
        state = self.entries.get(name)
        if state is None:
            state = self.entries[name] = _Key(parallel)
            if len(self.entries) > self.limit:
                self._evict()
        self.entries.move_to_end(name)
        return state

    def _evict(self) -> None:
        for name, state in self.entries.items():
            if not state.busy():
                del self.entries[name]
                return


class LoginThrottle:
    """Decides when each password verification may start; see the module's docstring."""

    def __init__(self, clock: IReactorTime, base: float = 1.0, maximum: float = 15.0, forget: float = 60.0,
                 address_parallel: int = 4, queue_limit: int = 10, clean_queue_limit: int = 1000,
                 table_limit: int = 100_000, shared: SharedFailures | None = None):
        self.clock = clock
        self.shared = shared
        self.base, self.maximum, self.forget = base, maximum, forget
        self.address_parallel, self.queue_limit, self.clean_queue_limit = address_parallel, queue_limit, clean_queue_limit
        self._addresses = _Table(table_limit)
        self._accounts = _Table(table_limit)
        self._known: OrderedDict[tuple[str, str], None] = OrderedDict()  # (account, address) that logged in
        self._table_limit = table_limit
        self._queue: list[_Attempt] = []
        self._timer: IDelayedCall | None = None
        self._pumping = self._pump_again = False

    def attempt(self, client: str, account: str, verify: Callable[[], defer.Deferred]) -> defer.Deferred:
        """Run ``verify`` (which fails with UnauthorizedLogin on a wrong password) when its turn comes.

        When too many attempts already wait for the address or the account,
        fails with UnauthorizedLogin without calling ``verify``.
        """
        address = address_key(client)
        lane = (account, address) if (account, address) in self._known else (account,)
        keys = (self._addresses.get(address, self.address_parallel), self._accounts.get(lane, 1))
        now = self.clock.seconds()
        shared = self.shared is not None and len(lane) == 1
        if shared:
            self._merge_shared(keys[1], account, now)
        if any(key.waiting >= self._queue_bound(key, now) for key in keys):
            return self._refuse(keys)
        attempt = _Attempt(keys, account, address, verify, defer.Deferred(), shared)
        for key in keys:
            key.waiting += 1
        self._queue.append(attempt)
        self._pump()
        return attempt.result

    def _merge_shared(self, key: _Key, account: str, now: float) -> None:
        """Count the account's failures made through every server (they include this one's)."""
        row = self.shared.recent(account)
        if row is None:
            return
        failures, updated = row
        recent = max(0.0, failures - max(0.0, now - updated) / self.forget)
        if recent > key.recent_failures(now, self.forget):
            key.failures, key.updated = recent, now
            key.ready_at = max(key.ready_at, updated + self._delay(failures))

    def _queue_bound(self, key: _Key, now: float) -> int:
        """How many attempts may wait for ``key``: few once it has failed lately."""
        return self.queue_limit if key.recent_failures(now, self.forget) > 0 else self.clean_queue_limit

    def waiting(self) -> int:
        """How many attempts wait for their turn."""
        return len(self._queue)

    def remembered(self) -> int:
        """How many addresses, account lanes and known (account, address) pairs are kept."""
        return len(self._addresses.entries) + len(self._accounts.entries) + len(self._known)

    # -- scheduling ----------------------------------------------------------------

    def _pump(self) -> None:
        """Start every waiting attempt whose keys allow it, oldest first."""
        if self._pumping:
            self._pump_again = True
            return
        self._pumping = True
        try:
            self._pump_again = True
            while self._pump_again:
                self._pump_again = False
                for attempt in list(self._queue):
                    if all(key.may_start(self.clock.seconds(), self.forget) for key in attempt.keys):
                        self._queue.remove(attempt)
                        self._start(attempt)
        finally:
            self._pumping = False
        self._wake_later()

    def _refuse(self, keys: tuple[_Key, _Key]) -> defer.Deferred:
        """Refused without a check; the answer still waits the keys' current delay.

        Nothing waits in the queue for it, but a refused client cannot spin:
        otherwise each connection could loop on instant refusals, a log line each.
        """
        now = self.clock.seconds()
        delay = max(self._delay(key.recent_failures(now, self.forget)) for key in keys)

        def refused() -> None:
            raise UnauthorizedLogin("Too many login attempts waiting")

        return task.deferLater(self.clock, max(delay, self.base), refused)

    def _delay(self, failures: float) -> float:
        return min(self.base * failures, self.maximum)

    def _wake_later(self) -> None:
        now = self.clock.seconds()
        times = [key.ready_at for attempt in self._queue for key in attempt.keys if key.ready_at > now]
        if not times:
            return
        when = min(times)
        if self._timer is not None and self._timer.active():
            if self._timer.getTime() <= when:
                return
            self._timer.cancel()
        self._timer = self.clock.callLater(when - now, self._pump)

    def _start(self, attempt: _Attempt) -> None:
        for key in attempt.keys:
            key.waiting -= 1
            key.running += 1
        outcome = defer.maybeDeferred(attempt.verify)
        outcome.addBoth(self._finished, attempt)

    def _finished(self, outcome, attempt: _Attempt) -> None:
        now = self.clock.seconds()
        for key in attempt.keys:
            key.running -= 1
        if isinstance(outcome, Failure):
            if outcome.check(UnauthorizedLogin):
                for key in attempt.keys:
                    self._failed(key, now)
                if attempt.shared:
                    self.shared.failed(attempt.account, now, self.forget)
        else:
            self._succeeded(attempt, now)
        self._pump()
        if isinstance(outcome, Failure):
            attempt.result.errback(outcome)
        else:
            attempt.result.callback(outcome)

    def _failed(self, key: _Key, now: float) -> None:
        key.failures = key.recent_failures(now, self.forget) + 1
        key.updated = now
        key.ready_at = max(key.ready_at, now + self._delay(key.failures))

    def _succeeded(self, attempt: _Attempt, now: float) -> None:
        account_lane = attempt.keys[1]
        account_lane.failures, account_lane.updated, account_lane.ready_at = 0.0, now, now
        if attempt.shared:
            self.shared.succeeded(attempt.account)
        pair = (attempt.account, attempt.address)
        self._known[pair] = None
        self._known.move_to_end(pair)
        if len(self._known) > self._table_limit:
            self._known.popitem(last=False)


class ThrottledPortal(Portal):
    """A portal that asks the throttle before any checker spends a verification.

    Every credential interface goes through it, so IMAP, POP3 and submission
    cannot differ, and a future SASL mechanism is throttled without more code.
    The client's address comes from the credentials' ``client`` attribute
    (:class:`UsernamePasswordFrom`); credentials without one share one key.
    """

    def __init__(self, realm, checkers, throttle: LoginThrottle, account_of: Callable[[str], str]):
        super().__init__(realm, checkers)
        self.throttle = throttle
        self.account_of = account_of

    def login(self, credentials, mind, *interfaces) -> defer.Deferred:
        username = getattr(credentials, "username", b"")
        if isinstance(username, bytes):
            username = username.decode("utf-8", "replace")
        client = getattr(credentials, "client", None) or "unknown"
        return self.throttle.attempt(
            client, self.account_of(username), lambda: super(ThrottledPortal, self).login(credentials, mind, *interfaces)
        )
