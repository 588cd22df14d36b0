"""When a password may be sent, and where it comes from.

Shared by IMAP, POP3 and submission so that they cannot disagree. How long
an attempt waits is the portal's throttle (:mod:`cyrusmail.auth.throttle`).
"""

from __future__ import annotations

import ipaddress

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


def address_of(transport) -> str:
    return str(getattr(transport.getPeer(), "host", "local"))
