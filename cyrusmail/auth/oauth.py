"""OAUTHBEARER (RFC 7628) and XOAUTH2 (Google's form): logging in with an OAuth 2.0 bearer token.

A token is checked against the one issuer of ``[oauth]``, in one of two ways:

* a **JWT** (RFC 7519) signed by the issuer: its signature with the public
  key of ``jwt_key`` (PEM) or the key of ``jwks`` (a JWKS file, chosen by
  the token's ``kid``), with PyJWT; ``iss`` must be ``issuer``, ``aud``
  must hold ``audience`` when one is set, ``exp`` is required, and ``exp``
  and ``nbf`` are honoured with 30 seconds of leeway. Both files are read
  again when they change (keys rotate);
* **introspection** (RFC 7662): the token is POSTed to
  ``introspection_url`` with the client's credentials (HTTP Basic); the
  answer must say ``"active": true``, and its ``iss``, ``aud`` and ``exp``
  are checked as above when present. Answers are kept for ``cache_ttl``
  (never past the token's ``exp``), at most 1,000 of them; a request takes
  at most ``timeout``.

The claim ``user_claim`` (``email``, ``preferred_username``, ``sub``...)
names the user: an account name, or an address in a local domain. An
authorization identity in the exchange (OAUTHBEARER's ``a=``, XOAUTH2's
``user=``) must name the same account. Tokens cannot make master logins.

With ``single_use``, a token is refused the second time it is presented
while it is still valid: tokens are known by their ``jti``, or by their
SHA-256 when they have none, and remembered until they expire (at most
100,000; past that the oldest are forgotten). Each server process keeps its
own memory. It is off by default because mail clients log in again and
again with one token until it expires.

Failures follow each mechanism: OAUTHBEARER sends RFC 7628's JSON status
as a last challenge and fails after the client's answer (``%x01``),
XOAUTH2 its JSON the same way. The check goes through the portal, so the
login throttle counts it as it counts passwords, under the name the
client claims (the authorization identity, else the token's user claim
read without trusting it).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jwt
from twisted.cred import error
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.web.client import Agent, FileBodyProducer
from twisted.web.http_headers import Headers
from zope.interface import Attribute, Interface, implementer

from cyrusmail.sasl import Challenge, Channel, SASLError, Verify

log = Logger(namespace="cyrusmail.auth.oauth")

#: Seconds of clock difference forgiven for ``exp`` and ``nbf``.
LEEWAY = 30
#: Introspection answers kept, and the largest answer read.
CACHE_SIZE, MAX_ANSWER = 1000, 64 * 1024
#: Tokens remembered for ``single_use``.
REPLAY_MEMORY = 100_000


class IBearerToken(Interface):
    """An OAuth 2.0 bearer token a client presented."""

    username = Attribute("the user the client claims, for the throttle (may be empty)")
    authzid = Attribute("the authorization identity the client sent, or empty")
    token = Attribute("the token, as text")
    client = Attribute("the client's address")


@implementer(IBearerToken)
class BearerToken:
    def __init__(self, token: str, authzid: str, client: str, user_claim: str) -> None:
        self.token, self.authzid, self.client = token, authzid, client
        self.username = authzid or _unverified_claim(token, user_claim)


def _unverified_claim(token: str, claim: str) -> str:
    """The claim as a JWT says it, unchecked: only to throttle by a name; empty for an opaque token."""
    try:
        value = jwt.decode(token, options={"verify_signature": False}).get(claim, "")
    except (jwt.PyJWTError, ValueError, AttributeError):
        return ""
    return value[:320] if isinstance(value, str) else ""


# -- the mechanisms ------------------------------------------------------------------------------


class _BearerMechanism:
    """What OAUTHBEARER and XOAUTH2 share: one message with the token, a JSON status on failure."""

    name = ""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.user = ""
        self._state = "start"

    @classmethod
    def offered(cls, channel: Channel) -> bool:
        """Only where the token cannot be read on the way: inside TLS, or on this machine."""
        return IBearerToken in channel.checks and channel.private

    def step(self, response: bytes | None):
        state, self._state = self._state, "done"
        if state == "start" and response is None:
            self._state = "asked"
            return Challenge(b"")
        if state == "done":
            raise SASLError(f"{self.name} exchange is already complete")
        authzid, token = self.parse(response or b"")
        self.user = authzid
        checker = self.channel.checks.get(IBearerToken)
        claim = getattr(checker, "user_claim", "email")
        return Verify(BearerToken(token, authzid, self.channel.client, claim))

    def refused(self) -> bytes:
        checker = self.channel.checks.get(IBearerToken)
        return json.dumps(checker.status(self.name) if checker is not None else {"status": "invalid_token"},
                          separators=(",", ":")).encode("ascii")


def _kvpairs(text: str, what: str) -> dict[str, str]:
    """``key=value`` items between ^A separators, the last item followed by ^A^A."""
    if not text.endswith("\x01\x01"):
        raise SASLError(f"{what} message does not end with two ^A")
    pairs = {}
    for item in text[:-2].split("\x01"):
        key, equals, value = item.partition("=")
        if not equals or not key.isascii() or not key.isalpha():
            raise SASLError(f"{what} message has a malformed key=value pair")
        pairs[key.lower()] = value
    return pairs


def _bearer(value: str | None, what: str) -> str:
    scheme, _, token = (value or "").partition(" ")
    token = token.strip(" ")
    if scheme.lower() != "bearer" or not token or not token.isascii() or not token.isprintable():
        raise SASLError(f"{what} message has no Bearer token")
    return token


def _text(response: bytes, what: str) -> str:
    try:
        return response.decode("utf-8")
    except UnicodeDecodeError:
        raise SASLError(f"{what} message is not UTF-8") from None


class OAuthBearerMechanism(_BearerMechanism):
    """RFC 7628: ``n,a=user,^Ahost=...^Aport=...^Aauth=Bearer TOKEN^A^A``."""

    name = "OAUTHBEARER"

    def parse(self, response: bytes) -> tuple[str, str]:
        text = _text(response, self.name)
        flag, _, rest = text.partition(",")
        authzid, comma, pairs = rest.partition(",")
        if flag not in ("n", "y") or not comma:
            raise SASLError("OAUTHBEARER GS2 header is malformed (channel binding is not offered)")
        if authzid:
            if not authzid.startswith("a="):
                raise SASLError("OAUTHBEARER GS2 header is malformed")
            authzid = authzid[2:].replace("=2C", ",").replace("=3D", "=")
        if not pairs.startswith("\x01"):
            raise SASLError("OAUTHBEARER message has no ^A after the GS2 header")
        return authzid, _bearer(_kvpairs(pairs[1:], self.name).get("auth"), self.name)


class XOAuth2Mechanism(_BearerMechanism):
    """Google's XOAUTH2: ``user=USER^Aauth=Bearer TOKEN^A^A``."""

    name = "XOAUTH2"

    def parse(self, response: bytes) -> tuple[str, str]:
        pairs = _kvpairs(_text(response, self.name), self.name)
        user = pairs.get("user", "")
        if not user:
            raise SASLError("XOAUTH2 message has no user")
        return user, _bearer(pairs.get("auth"), self.name)


# -- checking tokens ---------------------------------------------------------------------------------


class _Reloading:
    """A file read again when its modification time or size changes."""

    def __init__(self, path: Path, parse) -> None:
        self.path, self.parse = path, parse
        self._seen: tuple[int, int] | None = None
        self.value = None
        self.get()  # a missing or bad file stops the start

    def get(self):
        stat = self.path.stat()
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen != self._seen:
            self.value = self.parse(self.path.read_bytes())
            self._seen = seen
        return self.value


def _pem_key(data: bytes):
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        return load_pem_public_key(data)
    except ValueError as problem:
        raise ValueError(f"not a PEM public key: {problem}") from None


def _jwks(data: bytes) -> jwt.PyJWKSet:
    try:
        return jwt.PyJWKSet.from_json(data.decode("utf-8"))
    except (jwt.PyJWTError, ValueError) as problem:
        raise ValueError(f"not a JWKS file: {problem}") from None


class JWTValidator:
    """Checks a JWT's signature and its ``iss``, ``aud``, ``exp`` and ``nbf``; gives its claims."""

    def __init__(self, issuer: str, audience: str, algorithms: list[str], key_file: Path | None = None,
                 jwks_file: Path | None = None) -> None:
        self.issuer, self.audience, self.algorithms = issuer, audience, algorithms
        self.key = _Reloading(key_file, _pem_key) if key_file is not None else None
        self.jwks = _Reloading(jwks_file, _jwks) if jwks_file is not None else None

    def _key_for(self, token: str):
        if self.key is not None:
            return self.key.get()
        keys = self.jwks.get()
        kid = jwt.get_unverified_header(token).get("kid")
        if kid is None and len(keys.keys) == 1:
            return keys.keys[0]
        try:
            return keys[kid]
        except KeyError:
            raise jwt.InvalidTokenError(f"no key with kid {str(kid)[:40]!r}") from None

    def validate(self, token: str) -> dict[str, Any]:
        try:
            key = self._key_for(token)
        except (jwt.PyJWTError, ValueError, TypeError) as problem:
            raise error.UnauthorizedLogin(f"token refused: {problem}") from None
        except OSError as problem:  # the key file went away or went bad since the start
            log.warn("oauth: cannot read the issuer's key: {problem}", problem=problem)  # noqa: G010
            raise error.UnauthorizedLogin("issuer key unreadable") from None
        try:
            return jwt.decode(token, key, algorithms=self.algorithms,
                              audience=self.audience or None, issuer=self.issuer, leeway=LEEWAY,
                              options={"require": ["exp", "iss"] + (["aud"] if self.audience else []),
                                       "verify_aud": bool(self.audience)})
        except (jwt.PyJWTError, ValueError, TypeError) as problem:
            raise error.UnauthorizedLogin(f"token refused: {problem}") from None


class _BoundedBody(protocol.Protocol):
    def __init__(self, finished: defer.Deferred) -> None:
        self.finished, self.data = finished, bytearray()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if len(self.data) > MAX_ANSWER:
            self.transport.stopProducing()

    def connectionLost(self, reason) -> None:
        if len(self.data) > MAX_ANSWER:
            self.finished.errback(ValueError(f"introspection answer over {MAX_ANSWER} octets"))
        else:
            self.finished.callback(bytes(self.data))


class IntrospectionValidator:
    """Asks the issuer's RFC 7662 endpoint about a token; keeps the answers of active tokens a while."""

    def __init__(self, reactor, url: str, client_id: str, client_secret: str, issuer: str, audience: str,
                 timeout: float, cache_ttl: float) -> None:
        self.reactor, self.url = reactor, url
        self.issuer, self.audience, self.timeout, self.cache_ttl = issuer, audience, timeout, cache_ttl
        credentials = f"{client_id}:{client_secret}".encode()
        self._authorization = b"Basic " + base64.b64encode(credentials)
        self._agent = Agent(reactor, connectTimeout=timeout)
        self._cache: OrderedDict[bytes, tuple[float, dict]] = OrderedDict()

    def validate(self, token: str) -> defer.Deferred:
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        now = self.reactor.seconds()
        cached = self._cache.get(digest)
        if cached is not None:
            if cached[0] > now and self._still_valid(cached[1]):
                return defer.succeed(cached[1])
            del self._cache[digest]
        body = urlencode({"token": token, "token_type_hint": "access_token"}).encode("ascii")
        headers = Headers({b"Content-Type": [b"application/x-www-form-urlencoded"],
                           b"Authorization": [self._authorization], b"Accept": [b"application/json"]})
        asked = self._agent.request(b"POST", self.url.encode("ascii"), headers, FileBodyProducer(io.BytesIO(body)))
        asked.addCallback(self._read)
        asked.addTimeout(self.timeout, self.reactor)
        asked.addCallback(self._claims, digest)
        asked.addErrback(self._unavailable)
        return asked

    def _read(self, response) -> defer.Deferred:
        if response.code != 200:
            response.deliverBody(protocol.Protocol())  # read and drop
            raise ValueError(f"introspection answered HTTP {response.code}")
        finished: defer.Deferred = defer.Deferred()
        response.deliverBody(_BoundedBody(finished))
        return finished

    def _still_valid(self, claims: dict) -> bool:
        exp = claims.get("exp")
        return not isinstance(exp, (int, float)) or exp + LEEWAY > time.time()

    def _claims(self, body: bytes, digest: bytes) -> dict:
        try:
            claims = json.loads(body)
        except ValueError:
            raise ValueError("introspection answer is not JSON") from None
        if not isinstance(claims, dict) or claims.get("active") is not True:
            raise error.UnauthorizedLogin("token is not active")
        now = time.time()
        if "iss" in claims and claims["iss"] != self.issuer:
            raise error.UnauthorizedLogin("token is from another issuer")
        if self.audience and "aud" in claims:
            audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
            if self.audience not in audiences:
                raise error.UnauthorizedLogin("token is for another audience")
        if not self._still_valid(claims):
            raise error.UnauthorizedLogin("token has expired")
        nbf = claims.get("nbf")
        if isinstance(nbf, (int, float)) and nbf - LEEWAY > now:
            raise error.UnauthorizedLogin("token is not valid yet")
        if self.cache_ttl:
            keep = self.cache_ttl
            if isinstance(claims.get("exp"), (int, float)):
                keep = min(keep, claims["exp"] - now)
            if keep > 0:
                self._cache[digest] = (self.reactor.seconds() + keep, claims)
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
        return claims

    def _unavailable(self, failure):
        if failure.check(error.UnauthorizedLogin):
            return failure
        log.warn("oauth: introspection at {url} failed: {problem}", url=self.url,  # noqa: G010
                 problem=failure.getErrorMessage() or failure.type.__name__)
        raise error.UnauthorizedLogin("introspection failed")


class ReplayGuard:
    """Tokens seen, until they expire: a second use is refused."""

    def __init__(self, limit: int = REPLAY_MEMORY) -> None:
        self.limit = limit
        self._seen: OrderedDict[str, float] = OrderedDict()  # identity -> expiry (wall clock)

    def first_use(self, identity: str, expires: float) -> bool:
        now = time.time()
        while self._seen:
            oldest, until = next(iter(self._seen.items()))
            if until > now and len(self._seen) <= self.limit:
                break
            del self._seen[oldest]
        until = self._seen.get(identity)
        if until is not None and until > now:
            return False
        self._seen[identity] = expires
        return True


@implementer(ICredentialsChecker)
class TokenChecker:
    """Turns a valid bearer token into the account its user claim names."""

    credentialInterfaces = (IBearerToken,)

    def __init__(self, validator, users, local_domains: list[str], user_claim: str, issuer: str,
                 replay: ReplayGuard | None = None) -> None:
        self.validator, self.users, self.local_domains = validator, users, local_domains
        self.user_claim, self.issuer, self.replay = user_claim, issuer, replay

    def status(self, mechanism: str) -> dict[str, str]:
        """The JSON a failed exchange sends (RFC 7628 3.2.2; XOAUTH2's is alike)."""
        if mechanism == "XOAUTH2":
            return {"status": "401", "schemes": "Bearer"}
        status = {"status": "invalid_token", "schemes": "bearer"}
        if self.issuer.startswith("https://"):
            status["openid-configuration"] = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        return status

    def requestAvatarId(self, credentials) -> defer.Deferred:
        checked = defer.maybeDeferred(self.validator.validate, credentials.token)
        return checked.addCallback(self._account, credentials)

    def _account(self, claims: dict, credentials) -> str:
        value = claims.get(self.user_claim)
        account = self.users.resolve(value, self.local_domains) if isinstance(value, str) else None
        if account is None:
            raise error.UnauthorizedLogin(f"token's {self.user_claim} names no user")
        if credentials.authzid and self.users.resolve(credentials.authzid, self.local_domains) != account:
            raise error.UnauthorizedLogin("token is for another user than the one asked for")
        if self.replay is not None:
            identity = claims.get("jti")
            if not isinstance(identity, str) or not identity:
                identity = "sha256:" + hashlib.sha256(credentials.token.encode("utf-8")).hexdigest()
            expires = claims.get("exp")
            expires = float(expires) + LEEWAY if isinstance(expires, (int, float)) else time.time() + 86400
            if not self.replay.first_use(identity, expires):
                log.warn("oauth: a token of {user} was presented again from {client}; refused",  # noqa: G010
                         user=account, client=credentials.client)
                raise error.UnauthorizedLogin("token was used before")
        return account


def make_token_checker(config, reactor, authorizer=None) -> TokenChecker:
    """The checker ``[oauth]`` describes; a missing or bad key file stops the start."""
    oauth = config["oauth"]
    if oauth["introspection_url"]:
        validator = IntrospectionValidator(reactor, oauth["introspection_url"], oauth["client_id"],
                                           oauth["client_secret"], oauth["issuer"], oauth["audience"],
                                           oauth["timeout"], oauth["cache_ttl"])
    else:
        validator = JWTValidator(oauth["issuer"], oauth["audience"], oauth["algorithms"],
                                 key_file=oauth["jwt_key"], jwks_file=oauth["jwks"])
    users = authorizer.users
    replay = ReplayGuard() if oauth["single_use"] else None
    return TokenChecker(validator, users, config.domains, oauth["user_claim"], oauth["issuer"], replay)
