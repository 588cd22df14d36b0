"""Server side of SASL (RFC 4422) for every protocol: the mechanisms, which are offered where, and one driver.

SMTP AUTH (RFC 4954), IMAP AUTHENTICATE (RFC 3501, 4959) and POP3 AUTH
(RFC 5034) all carry SASL the same way: base64 lines, ``*`` to cancel, an
optional initial response.  This module knows nothing of any of them.

* A **mechanism** is a sans-IO state machine: :meth:`~ServerMechanism.step`
  takes the client's decoded octets and returns the next :class:`Challenge`,
  or what the client proved (:class:`Credentials` for a password, or any
  twisted.cred credentials in a :class:`Verify`), or raises
  :class:`SASLError`.
* :data:`MECHANISMS` is the one registry, by SASL name, in the order they
  are advertised; each mechanism class says by :meth:`offered` whether it
  may run on a connection (:class:`Channel`: TLS or not, loopback or not,
  what the portal can check, the TLS channel bindings).
* :class:`Exchange` drives one exchange for a protocol: it feeds responses
  to the mechanism, sends what the mechanism proved through the portal
  (throttled there), and turns the outcome into a :class:`Challenge` to
  send, :class:`Succeeded` or :class:`Failed`.  A mechanism may send
  additional data with success (SCRAM's server signature) or a last error
  challenge (OAUTHBEARER's JSON status); both go as one more challenge,
  answered by the client with one more line, which every protocol can
  carry.

Policy fixed here:

* PLAIN with an authorization identity different from the authentication
  identity is passed on: the checker allows it only for master users
  (:mod:`cyrusmail.auth.masters`).
* Names and passwords must be UTF-8 and contain no NUL, CR or LF.  SASLprep
  (RFC 4013) is not applied to PLAIN and LOGIN; the checker compares what
  the client sent.
"""

from __future__ import annotations

import base64
import binascii
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from cyrusmail.auth.throttle import UsernamePasswordFrom

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
    """What a password mechanism learnt: who the client says it is, its secret, and whom it asks to act as.

    ``authzid`` is empty unless the client asked for another identity than
    its own (PLAIN's authorization identity).
    """

    username: str
    password: str
    authzid: str = ""


@dataclass(frozen=True)
class Verify:
    """twisted.cred credentials a mechanism wants checked by the portal (SCRAM's proof, a bearer token)."""

    credentials: Any


@dataclass(frozen=True)
class Challenge:
    """Octets to send to the client (before base64) as the next challenge."""

    data: bytes


def _no_bindings(kind: str) -> bytes | None:
    return None


@dataclass(frozen=True)
class Channel:
    """What a mechanism may know of the connection it runs on.

    ``plaintext``: a password may be sent in the clear here (inside TLS, or
    on loopback when the config allows it).  ``checks``: the portal's checkers
    by credential interface (a mechanism whose credentials nobody can check
    is not offered; SCRAM asks its checker for the stored keys).
    ``bindings(kind)``: the TLS channel binding of that kind
    (``tls-server-end-point``, ``tls-exporter``), or None when there is
    none.  ``service``: the config section of the listener (``imap``,
    ``imaps``, ``pop3``, ``pop3s``, ``submission``, ``submissions``).
    """

    client: str = "unknown"
    service: str = ""
    secure: bool = False
    local: bool = False
    plaintext: bool = False
    checks: Mapping[Any, Any] = field(default_factory=dict)
    bindings: Callable[[str], bytes | None] = field(default=_no_bindings, repr=False)

    @property
    def private(self) -> bool:
        """Inside TLS or on this machine: where secrets other than passwords (tokens) may be sent."""
        return self.secure or self.local


class ServerMechanism(Protocol):
    """One SASL exchange on the server side.

    ``step(None)`` starts an exchange that had no initial response;
    ``step(octets)`` feeds the client's (decoded) response.  Each step
    returns the next :class:`Challenge`, or :class:`Credentials` /
    :class:`Verify` when the exchange is complete, or raises
    :class:`SASLError`.  A mechanism class is made with the connection's
    :class:`Channel` and says by ``offered(channel)`` whether it may run
    there.  Optionally, ``succeeded()`` returns additional data to send
    with success and ``refused()`` a last challenge before failure (each
    None when there is none).
    """

    name: str

    def step(self, response: bytes | None) -> Challenge | Credentials | Verify: ...


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
    wanted = _text(authzid, "authorization identity") if authzid else ""
    return Credentials(username, password, "" if wanted == username else wanted)


class _PasswordMechanism:
    """A mechanism that sends the password itself: only where a password may be sent in the clear."""

    def __init__(self, channel: Channel | None = None) -> None:
        self.channel = channel

    @classmethod
    def offered(cls, channel: Channel) -> bool:
        return channel.plaintext

    plaintext = True


class PlainMechanism(_PasswordMechanism):
    """PLAIN: one message, sent as the initial response or after ``334 ``."""

    name = "PLAIN"

    def __init__(self, channel: Channel | None = None) -> None:
        super().__init__(channel)
        self._asked = False

    def step(self, response: bytes | None) -> Challenge | Credentials:
        if response is None:
            if self._asked:
                raise SASLError("PLAIN expects one response")
            self._asked = True
            return Challenge(b"")
        return decode_plain(response)


class LoginMechanism(_PasswordMechanism):
    """LOGIN (draft-murchison-sasl-login): user name, then password.

    An initial response, which some clients send, is the user name.
    """

    name = "LOGIN"

    def __init__(self, channel: Channel | None = None) -> None:
        super().__init__(channel)
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


#: Every mechanism this server implements, by its (upper-case) SASL name, as
#: ``module:Class``, in the order they are advertised (strongest first).
MECHANISMS: dict[str, str] = {
    "SCRAM-SHA-256-PLUS": "cyrusmail.auth.scram:ScramPlusMechanism",
    "SCRAM-SHA-256": "cyrusmail.auth.scram:ScramMechanism",
    "GSSAPI": "cyrusmail.auth.kerberos:GSSAPIMechanism",
    "OAUTHBEARER": "cyrusmail.auth.oauth:OAuthBearerMechanism",
    "XOAUTH2": "cyrusmail.auth.oauth:XOAuth2Mechanism",
    "PLAIN": "cyrusmail.sasl:PlainMechanism",
    "LOGIN": "cyrusmail.sasl:LoginMechanism",
}


def mechanism_class(name: str) -> type:
    """The class of mechanism ``name``; ``KeyError`` if unknown."""
    module_name, _, class_name = MECHANISMS[name.upper()].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def offered(channel: Channel) -> list[str]:
    """The mechanisms a client may use on ``channel``, in the order to advertise them."""
    return [name for name in MECHANISMS if mechanism_class(name).offered(channel)]


def is_plaintext(name: str) -> bool:
    """Whether mechanism ``name`` sends the password itself (PLAIN, LOGIN)."""
    return bool(getattr(mechanism_class(name), "plaintext", False))


def start(name: str, channel: Channel | None = None) -> ServerMechanism:
    """A fresh exchange for mechanism ``name``; ``KeyError`` if unknown."""
    return mechanism_class(name)(channel if channel is not None else Channel())


# -- the driver ------------------------------------------------------------------


@dataclass(frozen=True)
class Succeeded:
    """The client is logged in: ``avatar`` is the portal's ``(interface, account, logout)``."""

    avatar: tuple


@dataclass(frozen=True)
class Failed:
    """The exchange failed: bad credentials, or a ``malformed`` exchange (``reason`` says how)."""

    user: str
    reason: str
    malformed: bool = False


Outcome = Challenge | Succeeded | Failed


class Exchange:
    """One SASL exchange on one connection, for any protocol.

    The protocol sends each :class:`Challenge` the exchange answers, feeds
    the client's next (decoded) response to :meth:`respond`, and ends on
    :class:`Succeeded` or :class:`Failed`.  What the mechanism proves goes
    through ``login`` (the portal's login, which throttles every check);
    the protocol turns a cancellation (``*``) and undecodable lines into its
    own replies before they get here.
    """

    def __init__(self, mechanism: ServerMechanism, channel: Channel, login: Callable[[Any], defer.Deferred]) -> None:
        self.mechanism = mechanism
        self.name = mechanism.name
        self.channel = channel
        self.login = login  # credentials -> Deferred of (interface, avatar, logout)
        self.user = ""
        self._final: Outcome | None = None  # sent after the client's answer to a last challenge

    def respond(self, response: bytes | None) -> defer.Deferred:
        """Feed one response (None: the exchange began without an initial response); a Deferred of the outcome."""
        if self._final is not None:
            final, self._final = self._final, None
            if isinstance(final, Succeeded) and response:
                return defer.succeed(Failed(self.user, "non-empty response to additional data with success", True))
            return defer.succeed(final)
        try:
            step = self.mechanism.step(response)
        except SASLError as error:
            return self._malformed(str(error)[:120])
        if isinstance(step, Challenge):
            return defer.succeed(step)
        if isinstance(step, Credentials):
            self.user = step.username
            credentials = UsernamePasswordFrom(step.username, step.password, self.channel.client, step.authzid)
        else:
            credentials = step.credentials
            self.user = _name_of(credentials)
        return self.login(credentials).addCallbacks(self._verified, self._refused)

    def _verified(self, avatar: tuple) -> Outcome:
        extra = getattr(self.mechanism, "succeeded", lambda: None)()
        if extra is None:
            return Succeeded(avatar)
        self._final = Succeeded(avatar)
        return Challenge(extra)

    def _refused(self, failure: Failure) -> Outcome:
        failure.trap(UnauthorizedLogin, UnhandledCredentials)
        failed = Failed(self.user, failure.getErrorMessage()[:120])
        extra = getattr(self.mechanism, "refused", lambda: None)()
        if extra is None:
            return failed
        self._final = failed
        return Challenge(extra)


    def _malformed(self, reason: str) -> defer.Deferred:
        """A malformed exchange fails, after waiting its turn in the throttle and counting there as a failure."""
        failed = Failed(self.user or getattr(self.mechanism, "user", ""), reason, True)
        if ISASLRefusal not in self.channel.checks:
            return defer.succeed(failed)
        counted = self.login(Refusal(failed.user, self.channel.client, reason))
        return counted.addCallbacks(lambda _: failed, lambda failure: failure.trap(UnauthorizedLogin) and failed)


class ISASLRefusal(Interface):
    """A malformed SASL exchange, sent through the portal only so that the throttle counts it."""

    username = Attribute("the name the exchange gave, if any")
    client = Attribute("the client's address")


@implementer(ISASLRefusal)
@dataclass(frozen=True)
class Refusal:
    username: str
    client: str
    reason: str


@implementer(ICredentialsChecker)
class RefusalChecker:
    """Refuses every :class:`Refusal`: the portal's throttle then delays the client's next attempt."""

    credentialInterfaces = (ISASLRefusal,)

    def requestAvatarId(self, credentials) -> defer.Deferred:
        return defer.fail(UnauthorizedLogin(credentials.reason))


def _name_of(credentials: Any) -> str:
    name = getattr(credentials, "username", b"")
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
