"""STARTTLS, LOGIN, AUTHENTICATE PLAIN / LOGIN / GSSAPI with SASL-IR (RFC 4959).

Whether a password may be sent at all is the policy module's decision
(:func:`cyrusmail.auth.policy.plaintext_allowed`, asked through the
session), which mechanisms are offered :func:`cyrusmail.sasl.offered`'s;
when a password or a Kerberos principal is checked is the portal's throttle.
"""

from __future__ import annotations

import base64
import binascii
from typing import ClassVar

from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.internet import defer

from cyrusmail import logs, sasl
from cyrusmail.account import IAccount
from cyrusmail.auth.policy import address_of
from cyrusmail.auth.throttle import UsernamePasswordFrom
from cyrusmail.imap import codes, responses, wire
from cyrusmail.imap.codes import CommandFailed, Reply


def starttls(session, command) -> Reply:
    if session.secure:
        raise codes.bad("TLS is already active")
    if session.compressed:
        # Only after COMPRESS and UNAUTHENTICATE.  What the client pipelined
        # would wait compressed in the inflater, where it cannot be thrown
        # away as plaintext injected before TLS must be; and TLS is started
        # before COMPRESS, never inside a compressed stream (RFC 4978 3).
        raise codes.bad("STARTTLS is not allowed after COMPRESS")
    if session.context.tls is None:
        raise CommandFailed("TLS is not available", codes.UNAVAILABLE)

    def begin() -> None:
        # Anything the client pipelined after STARTTLS came in plaintext and
        # could have been injected: it is never executed inside TLS.
        session.parser.discard_buffered()
        session.transport.startTLS(session.context.tls)
        session.tls_started = True

    return Reply(text="Begin TLS negotiation now", after=begin)


def unauthenticate(session, command) -> Reply:
    """RFC 8437: the selected mailbox is closed (nothing expunged), the account let
    go and every ENABLEd extension forgotten; TLS stays.  The session is then as a
    new connection's: a login goes through the throttle again, the shorter
    unauthenticated timeout runs, and the capabilities are those before login."""
    session.unauthenticated("UNAUTHENTICATE")
    return Reply(text="UNAUTHENTICATE completed", code=codes.CAPABILITY + " " + " ".join(session.capabilities()))


def _refuse_plaintext(session) -> None:
    if not session.plaintext_allowed():
        raise CommandFailed("Use TLS before sending a password", codes.PRIVACYREQUIRED)


def login(session, command) -> defer.Deferred:
    _refuse_plaintext(session)
    return check_password(session, command.username, command.password, "LOGIN")


def check_password(session, username: bytes, password: bytes, mechanism: str) -> defer.Deferred:
    """Ask the portal; on success the session is authenticated."""
    credentials = UsernamePasswordFrom(username, password, address_of(session.transport))
    return check(session, credentials, username.decode("utf-8", "replace"), mechanism)


def check(session, credentials, name: str, mechanism: str) -> defer.Deferred:
    """Ask the portal about any credentials; ``name`` and ``mechanism`` are for the log."""
    attempt = session.context.portal.login(credentials, None, IAccount)

    def succeeded(result) -> Reply:
        _interface, account, _logout = result
        session.authenticated(account, mechanism)
        for warning in account.quota_warnings():  # RFC 3501 7.1: the user must see it
            session.write(responses.status(None, "OK", warning, codes.ALERT))
        return Reply(text="Logged in", code=codes.CAPABILITY + " " + " ".join(session.capabilities()))

    def failed(failure) -> Reply:
        failure.trap(UnauthorizedLogin, UnhandledCredentials)
        logs.login_failed(session.service, session.transport, name, mechanism)
        return Reply("NO", "Authentication failed", codes.AUTHENTICATIONFAILED)

    return attempt.addCallbacks(succeeded, failed)


def authenticate(session, command) -> defer.Deferred | Reply:
    if command.mechanism not in session.sasl_mechanisms(with_tls=True):
        raise CommandFailed(f"Unsupported mechanism {command.mechanism}", codes.CANNOT)
    if command.mechanism not in session.sasl_mechanisms():  # offered only inside TLS (or on loopback)
        _refuse_plaintext(session)
        raise CommandFailed("Use TLS before authenticating", codes.PRIVACYREQUIRED)
    if command.mechanism == "GSSAPI":
        mechanism = sasl.start("GSSAPI", session.context.portal, session.service, address_of(session.transport))
        return _MechanismExchange(session, mechanism, command.initial_response).start()
    return _SaslExchange(session, command).start()


class _SaslExchange:
    """The challenge/response lines of one AUTHENTICATE."""

    PROMPTS: ClassVar[dict[str, tuple[bytes, ...]]] = {"LOGIN": (b"Username:", b"Password:"), "PLAIN": (b"",)}

    def __init__(self, session, command) -> None:
        self.session = session
        self.mechanism = command.mechanism
        self.initial = command.initial_response
        self.answers: list[bytes] = []
        self.done: defer.Deferred = defer.Deferred()

    def start(self) -> defer.Deferred:
        if self.initial is not None:
            try:
                self.answers.append(_decode(self.initial))
            except ValueError:
                return defer.fail(codes.bad("Invalid base64 in initial response"))
        self._next()
        return self.done

    def _next(self) -> None:
        prompts = self.PROMPTS[self.mechanism]
        if len(self.answers) < len(prompts):
            prompt = prompts[len(self.answers)]
            self.session.write(responses.continuation(base64.b64encode(prompt) if prompt else b""))
            self.session.expect_lines(self._line)
            return
        self.session.stop_lines()
        credentials = self._credentials()
        if credentials is None:
            self.done.callback(Reply("NO", "Malformed credentials", codes.AUTHENTICATIONFAILED))
            return
        check_password(self.session, *credentials, self.mechanism).chainDeferred(self.done)

    def _line(self, event) -> None:
        answer = _response(self.session, self.done, event)
        if answer is not None:
            self.answers.append(answer)
            self._next()

    def _credentials(self) -> tuple[bytes, bytes] | None:
        if self.mechanism == "LOGIN":
            return self.answers[0], self.answers[1]
        parts = self.answers[0].split(b"\0")
        if len(parts) != 3 or not parts[1]:
            return None
        authzid, authcid, password = parts
        if authzid and authzid != authcid:
            return None  # proxy authorisation is not offered
        return authcid, password


class _MechanismExchange:
    """The challenge/response lines of an AUTHENTICATE a :mod:`cyrusmail.sasl` mechanism drives (GSSAPI)."""

    def __init__(self, session, mechanism: sasl.ServerMechanism, initial: bytes | None) -> None:
        self.session = session
        self.mechanism = mechanism
        self.initial = initial
        self.done: defer.Deferred = defer.Deferred()

    def start(self) -> defer.Deferred:
        response = None
        if self.initial is not None:
            try:
                response = _decode(self.initial)
            except ValueError:
                return defer.fail(codes.bad("Invalid base64 in initial response"))
        self._step(response)
        return self.done

    def _step(self, response: bytes | None) -> None:
        name = self.mechanism.name
        try:
            outcome = self.mechanism.step(response)
        except sasl.SASLError as error:
            self.session.stop_lines()
            logs.login_failed(self.session.service, self.session.transport, str(error), name)
            self.done.callback(Reply("NO", "Authentication failed", codes.AUTHENTICATIONFAILED))
            return
        if isinstance(outcome, sasl.Challenge):
            self.session.write(responses.continuation(base64.b64encode(outcome.data)))
            self.session.expect_lines(self._line)
            return
        self.session.stop_lines()
        credentials = sasl.portal_credentials(outcome, address_of(self.session.transport))
        check(self.session, credentials, *sasl.logged_as(self.mechanism, outcome)).chainDeferred(self.done)

    def _line(self, event) -> None:
        response = _response(self.session, self.done, event)
        if response is not None:
            self._step(response)


def _response(session, done: defer.Deferred, event) -> bytes | None:
    """A client's line in an exchange, decoded; None when it ended the exchange (``done`` failed with BAD)."""
    session.stop_lines()
    if isinstance(event, wire.ParseError):
        done.errback(codes.bad("Authentication line too long"))
        return None
    if event.data == b"*":
        done.errback(codes.bad("Authentication cancelled"))
        return None
    try:
        return _decode(event.data)
    except ValueError:
        done.errback(codes.bad("Invalid base64"))
        return None


def _decode(data: bytes) -> bytes:
    if data == b"=":
        return b""
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError("bad base64") from error
