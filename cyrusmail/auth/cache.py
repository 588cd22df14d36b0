"""A bounded, short-lived cache of verified passwords: a client that logs in again and again pays scrypt once.

Webmail front ends and synchronising clients (mbsync, imapsync) log in for
every few commands; each scrypt check costs about 40 ms of CPU. After a
password has been verified, the pair is remembered for ``ttl`` seconds, as
Dovecot's ``auth_cache`` does, so that the same password for the same
account is accepted without scrypt until then.

What is kept, per successful verification:

- the key: a keyed BLAKE2b digest of the account name, the password and the
  account's stored scrypt hash. The 32-byte key is drawn at random when the
  cache is made and lives only in this process's memory (never written,
  logged or shared), so a digest tells nothing about the password without
  it, and two processes (or two caches) never agree on one;
- the value: the account name and when the password was verified.

Neither the password nor an unkeyed hash of it is kept.

A hit needs the account's stored hash of *now* (read from the user database
at every login, one indexed read), so a password changed, or an account
deleted (and maybe made again), by any process (``cyrusmail-admin user
passwd`` / ``delete``, another worker) can no longer hit from the next
login on: every stored hash has its own random salt, so even the same
password set again is a new key. Entries that cannot hit any more are
dropped when their time is up or when the bound pushes them out.

Only successes are kept, never failures: a wrong password never matches an
entry (its digest differs), so it is always checked with scrypt, as before.
The cache sits in the checker, behind the login throttle: a hit is answered
only when the throttle lets the attempt start, like any other check (see
:mod:`cyrusmail.auth.throttle`), so it cannot tell a right password from a
wrong one sooner than the throttle allows.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict

from twisted.internet.interfaces import IReactorTime

KEY_BYTES = 32


def _field(text: str) -> bytes:
    """``text`` with its length before it, so that no two different triples read the same."""
    data = text.encode("utf-8", "surrogatepass")
    return len(data).to_bytes(4, "big") + data


class CredentialCache:
    """Recently verified (account, password) pairs, at most ``size`` of them, each for ``ttl`` seconds.

    ``ttl`` or ``size`` 0 turns the cache off: nothing is kept and nothing hits.
    """

    def __init__(self, clock: IReactorTime, ttl: float, size: int):
        self.clock = clock
        self.ttl, self.size = ttl, size
        self._key = secrets.token_bytes(KEY_BYTES)
        self._entries: OrderedDict[bytes, tuple[str, float]] = OrderedDict()  # digest -> (account, verified at)

    def __repr__(self) -> str:
        return f"<CredentialCache {len(self._entries)}/{self.size} entries, ttl {self.ttl}s>"

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def enabled(self) -> bool:
        return self.ttl > 0 and self.size > 0

    def digest(self, account: str, password: str, stored: str) -> bytes:
        """The key an (account, password, stored hash) triple is kept under: keyed, so not derivable."""
        hasher = hashlib.blake2b(key=self._key, digest_size=32)
        for text in (account, password, stored):
            hasher.update(_field(text))
        return hasher.digest()

    def hit(self, account: str, password: str, stored: str) -> bool:
        """Whether ``password`` was verified for ``account``, against this very ``stored`` hash, within ``ttl``."""
        if not self.enabled:
            return False
        digest = self.digest(account, password, stored)
        entry = self._entries.get(digest)
        if entry is None:
            return False
        if self.clock.seconds() - entry[1] >= self.ttl:
            del self._entries[digest]
            return False
        self._entries.move_to_end(digest)
        return True

    def remember(self, account: str, password: str, stored: str) -> None:
        """Note that ``password`` was just verified for ``account`` against ``stored``."""
        if not self.enabled:
            return
        digest = self.digest(account, password, stored)
        self._entries[digest] = (account, self.clock.seconds())
        self._entries.move_to_end(digest)
        self._drop_old()

    def _drop_old(self) -> None:
        """Over the bound, the least recently used go first; so do expired entries at the front."""
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        now = self.clock.seconds()
        while self._entries:
            digest, (_account, verified_at) = next(iter(self._entries.items()))
            if now - verified_at < self.ttl:
                break
            del self._entries[digest]
