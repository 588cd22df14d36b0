"""SASL PLAIN (RFC 4616) and LOGIN decoding for POP3 AUTH, in one small function.

The POP3 framing (``+ `` challenges, base64, ``*`` to cancel) is the
session's; this module only knows what each mechanism's decoded responses
mean. It is kept to one function so that the shared SASL decoder can take
its place without touching the session.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The mechanisms we offer; both send the password itself, so both need TLS or loopback.
MECHANISMS: tuple[str, ...] = ("PLAIN", "LOGIN")


@dataclass(frozen=True)
class Challenge:
    """Send this (before base64) and wait for the client's next response."""

    data: bytes


@dataclass(frozen=True)
class Credentials:
    """The exchange is over: check this user name and password."""

    user: str
    password: str


@dataclass(frozen=True)
class Malformed:
    """The responses make no sense for the mechanism."""

    reason: str


def password_exchange(mechanism: str, responses: list[bytes]) -> Challenge | Credentials | Malformed:
    """Given the decoded client responses so far, the next challenge or the credentials."""
    if mechanism == "PLAIN":
        if not responses:
            return Challenge(b"")
        parts = responses[0].split(b"\0")
        if len(parts) != 3 or not parts[1]:
            return Malformed("PLAIN response must be authzid NUL authcid NUL password")
        authzid, authcid, password = parts
        if authzid and authzid != authcid:
            return Malformed("Logging in as another user is not supported")
        responses = [authcid, password]
    elif mechanism == "LOGIN":
        if len(responses) < 2:
            return Challenge(b"Password:" if responses else b"Username:")
    else:
        return Malformed(f"Unsupported mechanism {mechanism}")
    try:
        return Credentials(responses[0].decode("utf-8"), responses[1].decode("utf-8"))
    except UnicodeDecodeError:
        return Malformed("User name and password must be UTF-8")
