"""STARTTLS, LOGIN, AUTHENTICATE with SASL-IR (RFC 4959) for every mechanism of :mod:`cyrusmail.sasl`.

Whether a password may be sent at all is the policy module's decision
(:func:`cyrusmail.auth.policy.plaintext_allowed`, asked through the
session), which mechanisms a connection is offered the SASL registry's;
when a password or proof is checked is the portal's throttle.
"""

from __future__ import annotations

import base64
import binascii

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
    name = username.decode("utf-8", "replace")
    credentials = UsernamePasswordFrom(username, password, address_of(session.transport))
    attempt = session.context.portal.login(credentials, None, IAccount)

    def failed(failure) -> Reply:
        failure.trap(UnauthorizedLogin, UnhandledCredentials)
        return _failed(session, name, mechanism)

    return attempt.addCallbacks(lambda result: _succeeded(session, result, mechanism), failed)


def _succeeded(session, result: tuple, mechanism: str) -> Reply:
    _interface, account, _logout = result
    session.authenticated(account, mechanism)
    for warning in account.quota_warnings():  # RFC 3501 7.1: the user must see it
        session.write(responses.status(None, "OK", warning, codes.ALERT))
    return Reply(text="Logged in", code=codes.CAPABILITY + " " + " ".join(session.capabilities()))


def _failed(session, name: str, mechanism: str) -> Reply:
    logs.login_failed(session.service, session.transport, name, mechanism)
    return Reply("NO", "Authentication failed", codes.AUTHENTICATIONFAILED)


def authenticate(session, command) -> defer.Deferred | Reply:
    name = command.mechanism.upper()
    if name not in sasl.MECHANISMS:
        raise CommandFailed(f"Unsupported mechanism {command.mechanism}", codes.CANNOT)
    channel = session.sasl_channel()
    if name not in sasl.offered(channel):
        if sasl.is_plaintext(name):
            _refuse_plaintext(session)
        raise CommandFailed(f"Mechanism {name} is not available on this connection", codes.CANNOT)
    exchange = sasl.Exchange(sasl.start(name, channel), channel,
                             lambda credentials: session.context.portal.login(credentials, None, IAccount))
    return _SaslExchange(session, exchange, command.initial_response).start()


class _SaslExchange:
    """The challenge/response lines of one AUTHENTICATE."""

    def __init__(self, session, exchange: sasl.Exchange, initial: bytes | None) -> None:
        self.session = session
        self.exchange = exchange
        self.initial = initial
        self.done: defer.Deferred = defer.Deferred()

    def start(self) -> defer.Deferred:
        response = None
        if self.initial is not None:
            try:
                response = _decode(self.initial)
            except ValueError:
                return defer.fail(codes.bad("Invalid base64 in initial response"))
        self._respond(response)
        return self.done

    def _respond(self, response: bytes | None) -> None:
        self.exchange.respond(response).addCallbacks(self._outcome, self.done.errback)

    def _outcome(self, outcome: sasl.Outcome) -> None:
        if isinstance(outcome, sasl.Challenge):
            self.session.write(responses.continuation(base64.b64encode(outcome.data)))
            self.session.expect_lines(self._line)
        elif isinstance(outcome, sasl.Succeeded):
            self.done.callback(_succeeded(self.session, outcome.avatar, self.exchange.name))
        else:
            self.done.callback(_failed(self.session, outcome.user, self.exchange.name))

    def _line(self, event) -> None:
        self.session.stop_lines()
        if isinstance(event, wire.ParseError):
            self.done.errback(codes.bad("Authentication line too long"))
            return
        if event.data == b"*":
            self.done.errback(codes.bad("Authentication cancelled"))
            return
        try:
            response = _decode(event.data)
        except ValueError:
            self.done.errback(codes.bad("Invalid base64"))
            return
        self._respond(response)


def _decode(data: bytes) -> bytes:
    if data == b"=":
        return b""
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError("bad base64") from error
