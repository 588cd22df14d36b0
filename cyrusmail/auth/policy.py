"""When a password may be sent, and how long a failed login waits.

Shared by IMAP, POP3 and submission so that they cannot disagree.
"""

from __future__ import annotations

import ipaddress
import time

from twisted.internet.interfaces import ISSLTransport


def is_tls(transport) -> bool:
    return ISSLTransport.providedBy(transport)


def is_loopback(transport) -> bool:
    peer = transport.getPeer()
    host = getattr(peer, "host", None)
    if host is None:  # unix socket: local by construction
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plaintext_allowed(transport, allow_loopback: bool = True) -> bool:
    """Passwords in the clear only inside TLS, or on loopback when allowed."""
    return is_tls(transport) or (allow_loopback and is_loopback(transport))


class LoginThrottle:
    """Delays the answer to a failed login, longer for each recent failure from an address.

    1 s after the first failure, one more second per further failure within
    ``window`` seconds, up to ``maximum``. A success clears the address.
    """

    def __init__(self, base: float = 1.0, maximum: float = 15.0, window: float = 600.0, clock=time.monotonic):
        self.base, self.maximum, self.window, self.clock = base, maximum, window, clock
        self._failures: dict[str, tuple[int, float]] = {}

    def failed(self, address: str) -> float:
        """Record a failure; the delay in seconds before answering it."""
        now = self.clock()
        count, last = self._failures.get(address, (0, now))
        count = 1 if now - last > self.window else count + 1
        self._failures[address] = (count, now)
        if len(self._failures) > 100_000:  # bound the table under a spray of addresses
            self._failures.clear()
        return min(self.base * count, self.maximum)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)


def address_of(transport) -> str:
    return str(getattr(transport.getPeer(), "host", "local"))
