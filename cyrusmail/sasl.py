"""Server side of the SASL mechanisms PLAIN, LOGIN and (with a keytab) GSSAPI, for every protocol.

SMTP AUTH (RFC 4954), IMAP AUTHENTICATE (RFC 3501, 4959) and POP3 AUTH
(RFC 5034) all carry SASL (RFC 4422) the same way: base64 lines, ``*`` to
cancel, an optional initial response.  This module knows nothing of any of
them: a protocol decodes the line with :func:`decode_response`, hands the
octets to a mechanism's :meth:`~ServerMechanism.step`, and sends back the
:class:`Challenge` it gets, until it gets :class:`Credentials` (which a
twisted.cred checker then verifies) or a :class:`SASLError`.

Policy fixed here:

* PLAIN with an authorization identity different from the authentication
  identity is refused: proxy authorisation is not supported (yet).  An empty
  authzid, or one equal to the authcid, is accepted.
* Names and passwords must be UTF-8 and contain no NUL, CR or LF.  SASLprep
  (RFC 4013) is not applied; the checker compares what the client sent.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Protocol

#: RFC 4616 section 2: each of authzid, authcid and passwd is at most 255 octets.
MAX_FIELD_OCTETS = 255


class SASLError(Exception):
    """The client's SASL exchange is malformed or not allowed.

    The protocol answers with its "authentication failed" or "syntax error"
    reply; the message is for the log, not for the client.
    """


class SASLCancelled(SASLError):
    """The client sent ``*`` to cancel the exchange."""


@dataclass(frozen=True)
class Credentials:
    """What a mechanism learnt: who the client says it is, and its secret."""

    username: str
    password: str


@dataclass(frozen=True)
class Challenge:
    """Octets to send to the client (before base64) as the next challenge."""

    data: bytes


class ServerMechanism(Protocol):
    """One SASL exchange on the server side.

    ``step(None)`` starts an exchange that had no initial response;
    ``step(octets)`` feeds the client's (decoded) response.  Each step
    returns the next :class:`Challenge`, or :class:`Credentials` when the
    exchange is complete, or raises :class:`SASLError`.  A mechanism that
    proves something other than a password (GSSAPI) ends with twisted.cred
    credentials of its own, which carry the client's address; see
    :func:`portal_credentials`.
    """

    name: str

    def step(self, response: bytes | None) -> Challenge | Credentials | object: ...


def portal_credentials(outcome: Credentials | object, client: str):
    """What the portal checks for an exchange's final outcome (a password's, or the mechanism's own)."""
    if isinstance(outcome, Credentials):
        from cyrusmail.auth.throttle import UsernamePasswordFrom

        return UsernamePasswordFrom(outcome.username.encode("utf-8"), outcome.password.encode("utf-8"), client)
    return outcome


def logged_as(mechanism: ServerMechanism, outcome: Credentials | object) -> tuple[str, str]:
    """What a finished exchange's log line names: (who, how); a GSSAPI login adds its principal to how."""
    principal = getattr(mechanism, "principal", None)  # a mechanism that proves a principal, not a password
    if principal:
        return principal, f"{mechanism.name} {principal}"
    if principal is not None:  # its token was refused before it named one
        return "(no principal)", mechanism.name
    return outcome.username, mechanism.name


def decode_response(line: bytes) -> bytes:
    """Decode one client response line of a SASL exchange.

    ``*`` raises :class:`SASLCancelled`; an empty line and ``=`` (RFC 4954's
    spelling of an empty initial response) decode to ``b""``.  Anything that
    is not strict base64 raises :class:`SASLError`.
    """
    line = line.strip(b" ")
    if line == b"*":
        raise SASLCancelled("client cancelled the exchange")
    if line in (b"", b"="):
        return b""
    try:
        return base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError) as error:
        raise SASLError(f"response is not base64: {error}") from None


def encode_challenge(data: bytes) -> bytes:
    """The base64 form of a challenge, as it goes after ``334`` or ``+``."""
    return base64.b64encode(data)


def _text(octets: bytes, what: str) -> str:
    if len(octets) > MAX_FIELD_OCTETS:
        raise SASLError(f"{what} longer than {MAX_FIELD_OCTETS} octets")
    try:
        text = octets.decode("utf-8")
    except UnicodeDecodeError:
        raise SASLError(f"{what} is not UTF-8") from None
    if any(ch in text for ch in "\x00\r\n"):
        raise SASLError(f"{what} contains NUL, CR or LF")
    return text


def decode_plain(message: bytes) -> Credentials:
    """Decode a PLAIN message (RFC 4616): ``authzid NUL authcid NUL passwd``."""
    fields = message.split(b"\x00")
    if len(fields) != 3:
        raise SASLError("PLAIN message must have exactly three NUL-separated fields")
    authzid, authcid, passwd = fields
    if not authcid:
        raise SASLError("PLAIN authentication identity is empty")
    if not passwd:
        raise SASLError("PLAIN password is empty")
    username = _text(authcid, "authentication identity")
    password = _text(passwd, "password")
    if authzid and _text(authzid, "authorization identity") != username:
        raise SASLError("authorization identity differs; proxy login is not supported")
    return Credentials(username, password)


class PlainMechanism:
    """PLAIN: one message, sent as the initial response or after ``334 ``."""

    name = "PLAIN"

    def __init__(self) -> None:
        self._asked = False

    def step(self, response: bytes | None) -> Challenge | Credentials:
        if response is None:
            if self._asked:
                raise SASLError("PLAIN expects one response")
            self._asked = True
            return Challenge(b"")
        return decode_plain(response)


class LoginMechanism:
    """LOGIN (draft-murchison-sasl-login): user name, then password.

    An initial response, which some clients send, is the user name.
    """

    name = "LOGIN"

    def __init__(self) -> None:
        self._username: str | None = None
        self._started = False
        self._done = False

    def step(self, response: bytes | None) -> Challenge | Credentials:
        if self._done:
            raise SASLError("LOGIN exchange is already complete")
        if response is None:
            if self._started:
                raise SASLError("LOGIN expects a response")
            self._started = True
            return Challenge(b"Username:")
        self._started = True
        if self._username is None:
            if not response:
                raise SASLError("LOGIN user name is empty")
            self._username = _text(response, "user name")
            return Challenge(b"Password:")
        if not response:
            raise SASLError("LOGIN password is empty")
        self._done = True
        return Credentials(self._username, _text(response, "password"))


#: The password mechanisms this server implements, by their (upper-case) SASL name.
MECHANISMS: dict[str, type[PlainMechanism | LoginMechanism]] = {
    "PLAIN": PlainMechanism,
    "LOGIN": LoginMechanism,
}
#: Every mechanism, as advertised (GSSAPI first, where it is offered at all).
ALL_MECHANISMS = ("GSSAPI", *MECHANISMS)


def offered(portal, service: str, plaintext: bool, private: bool) -> list[str]:
    """The mechanisms a connection to config section ``service`` is offered.

    PLAIN and LOGIN where a password may be sent (``plaintext``); GSSAPI
    where the portal has a keytab for the protocol and the connection is
    TLS or loopback (``private``): no security layer is offered, so what
    follows the login is protected by TLS or not at all.
    """
    from cyrusmail.auth.kerberos import acceptor_of

    names = list(MECHANISMS) if plaintext else []
    acceptor = acceptor_of(portal)
    if private and acceptor is not None and acceptor.offers(service):
        names.insert(0, "GSSAPI")
    return names


def start(name: str, portal=None, service: str = "", client: str = "unknown") -> ServerMechanism:
    """A fresh exchange for mechanism ``name``; ``KeyError`` if unknown or not configured.

    GSSAPI needs the ``portal`` (its keytab), the config section ``service``
    and the ``client``'s address (for the throttle).
    """
    if name.upper() == "GSSAPI":
        from cyrusmail.auth.kerberos import acceptor_of

        acceptor = acceptor_of(portal)
        if acceptor is None or not acceptor.offers(service):
            raise KeyError(name)
        return acceptor.mechanism(service, client)
    return MECHANISMS[name.upper()]()
