"""SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (RFC 5802, 7677), server side, with stored keys only.

The user database keeps, beside each scrypt hash, what RFC 5802 section 3
calls the server's stored information: the salt, the iteration count, the
StoredKey and the ServerKey (:class:`ScramKeys`), made when the password is
set. They let the server check a client's proof and prove itself to the
client, and never give the password or anything that logs in by itself: a
stolen StoredKey does not make a proof (that needs the ClientKey). They can
still be attacked offline by guessing passwords, at the cost of
``iterations`` PBKDF2-SHA-256 rounds a guess (cheaper than scrypt): see
the README's Authentication section.

Why our own code and not scramp (which the tests use as a client): scramp
refuses the ``tls-exporter`` channel binding (RFC 9266, the one TLS 1.3
clients use), fixes one channel binding type per exchange before the
client names its choice, and tells unknown users apart at the first
message. The protocol is small; this implementation is strict:

* the client's messages are parsed exactly as RFC 5802 section 7's grammar
  says; a mandatory extension (``m=``) is refused, others are ignored;
* the combined nonce is the client's nonce and 24 random octets of ours,
  made anew for every exchange, so a client-final message replayed from
  another exchange never matches;
* an unknown user, or one whose keys were never made, gets a salt and an
  iteration count that look like a real user's (the salt is a keyed hash
  of the name, the same every time) and fails only at the proof, so the
  first message tells nothing;
* the proof is checked only through the portal, so the login throttle
  decides when, as for passwords;
* channel binding (RFC 5802 section 6): SCRAM-SHA-256-PLUS needs ``p=``
  with a binding this connection has (``tls-exporter`` under TLS 1.3,
  ``tls-server-end-point`` under any TLS); plain SCRAM-SHA-256 refuses
  ``p=``, and refuses ``y`` where -PLUS was offered (a downgrade).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import stringprep
import unicodedata
from dataclasses import dataclass

from twisted.cred import error
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import defer
from zope.interface import Attribute, Interface, implementer

from cyrusmail.sasl import Challenge, Channel, SASLError, Verify

#: RFC 7677 section 4: at least 4096; the server's default is ``[auth] scram_iterations``.
MIN_ITERATIONS = 4096
#: Beyond this, an iteration count read from the database is refused as damaged.
MAX_ITERATIONS = 10_000_000
SALT_BYTES = 16
NONCE_BYTES = 24
#: Longest client nonce accepted (RFC 5802 sets none; real clients send 24 to 48).
MAX_NONCE = 256
#: The channel bindings SCRAM-SHA-256-PLUS accepts, in the order tried when offering it.
BINDINGS = ("tls-exporter", "tls-server-end-point")


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise SASLError(f"SCRAM {what} is not base64") from None


# -- SASLprep (RFC 4013) --------------------------------------------------------------


def saslprep(text: str) -> str:
    """RFC 4013 SASLprep of a stored string; ValueError for a prohibited or badly bidirectional one."""
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch for ch in text if not stringprep.in_table_b1(ch)
    )
    normal = unicodedata.normalize("NFKC", mapped)
    if not normal:
        return normal
    prohibited = (stringprep.in_table_c12, stringprep.in_table_c21, stringprep.in_table_c22,
                  stringprep.in_table_c3, stringprep.in_table_c4, stringprep.in_table_c5,
                  stringprep.in_table_c6, stringprep.in_table_c7, stringprep.in_table_c8,
                  stringprep.in_table_c9, stringprep.in_table_a1)
    for ch in normal:
        if any(test(ch) for test in prohibited):
            raise ValueError(f"character U+{ord(ch):04X} is not allowed")
    right_to_left = [stringprep.in_table_d1(ch) for ch in normal]
    if any(right_to_left):
        if any(stringprep.in_table_d2(ch) for ch in normal):
            raise ValueError("mixes left-to-right and right-to-left text")
        if not (right_to_left[0] and right_to_left[-1]):
            raise ValueError("right-to-left text must begin and end with a right-to-left character")
    return normal


# -- stored keys -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ScramKeys:
    """What the server keeps for SCRAM-SHA-256 (RFC 5802 section 3)."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    PREFIX = "SCRAM-SHA-256"

    @classmethod
    def derive(cls, password: str, iterations: int, salt: bytes | None = None) -> ScramKeys | None:
        """The keys for ``password``, or None when SASLprep refuses it (that user cannot use SCRAM)."""
        try:
            prepared = saslprep(password)
        except ValueError:
            return None
        salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
        salted = hashlib.pbkdf2_hmac("sha256", prepared.encode("utf-8"), salt, iterations)
        client_key = _hmac(salted, b"Client Key")
        return cls(salt, iterations, hashlib.sha256(client_key).digest(), _hmac(salted, b"Server Key"))

    def encode(self) -> str:
        """``SCRAM-SHA-256$iterations:salt$StoredKey:ServerKey`` (base64), as Dovecot writes them."""
        return (f"{self.PREFIX}${self.iterations}:{_b64(self.salt)}"
                f"${_b64(self.stored_key)}:{_b64(self.server_key)}")

    @classmethod
    def decode(cls, text: str | None) -> ScramKeys | None:
        """The keys stored as :meth:`encode` wrote them; None for none or a damaged value."""
        if not text:
            return None
        try:
            prefix, params, keys = text.split("$")
            iterations, salt = params.split(":")
            stored_key, server_key = keys.split(":")
            result = cls(base64.b64decode(salt, validate=True), int(iterations),
                         base64.b64decode(stored_key, validate=True), base64.b64decode(server_key, validate=True))
        except (ValueError, binascii.Error):
            return None
        if prefix != cls.PREFIX or not MIN_ITERATIONS <= result.iterations <= MAX_ITERATIONS:
            return None
        if len(result.stored_key) != 32 or len(result.server_key) != 32 or not result.salt:
            return None
        return result


def stand_in_keys(secret: bytes, name: str, iterations: int) -> ScramKeys:
    """Keys for a name that has none: a salt that is the same at every attempt, and a key nothing matches."""
    salt = _hmac(secret, b"salt\x00" + name.encode("utf-8"))[:SALT_BYTES]
    return ScramKeys(salt, iterations, secrets.token_bytes(32), secrets.token_bytes(32))


# -- the credentials and their checker ----------------------------------------------------------------


class IScramCredentials(Interface):
    """A finished SCRAM exchange, whose proof the checker tests once the throttle lets it."""

    username = Attribute("the login name the client gave (n=)")
    authzid = Attribute("the identity the client asked to act as (a=), or empty")
    client = Attribute("the client's address, for the throttle")

    def check_proof() -> bool:
        """Whether the client's proof matches the stored key it was made against."""


@implementer(IScramCredentials)
class ScramProof:
    def __init__(self, username: str, authzid: str, client: str, account: str | None, proof_ok) -> None:
        self.username, self.authzid, self.client = username, authzid, client
        self.account = account  # the account whose keys were used, None for stand-in keys
        self._proof_ok = proof_ok

    def check_proof(self) -> bool:
        return self.account is not None and self._proof_ok()


@implementer(ICredentialsChecker)
class ScramChecker:
    """Gives SCRAM exchanges the stored keys, and turns a correct proof into the account's name.

    ``users`` is the built-in :class:`~cyrusmail.auth.userdb.UserDatabase`
    (only it keeps SCRAM keys); ``authorize(account, authzid, client)``
    decides whom a proven account may act as (master users).
    """

    credentialInterfaces = (IScramCredentials,)

    def __init__(self, users, local_domains: list[str], iterations: int, authorize) -> None:
        self.users = users
        self.local_domains = local_domains
        self.iterations = iterations
        self.authorize = authorize

    def keys_for(self, login: str) -> tuple[str | None, ScramKeys, str]:
        """The account ``login`` names, its keys, and whom it asks to act as (``user*master``).

        (None, stand-in keys, "") for a name that has no keys.
        """
        split = getattr(self.authorize, "split", None)
        login, wanted = split(login) if split is not None else (login, "")
        account = self.users.resolve(login, self.local_domains)
        keys = self.users.scram_keys(account) if account is not None else None
        if keys is None:
            return None, stand_in_keys(self.users.secret(), login.lower(), self.iterations), ""
        return account, keys, wanted

    def requestAvatarId(self, credentials) -> defer.Deferred:
        if not credentials.check_proof():
            return defer.fail(error.UnauthorizedLogin("Invalid credentials"))
        return defer.maybeDeferred(self.authorize, credentials.account, credentials.authzid, credentials.client)


# -- the exchange ---------------------------------------------------------------------------------


def _attributes(message: str, what: str) -> list[tuple[str, str]]:
    """``a=1,b=2`` -> [("a", "1"), ("b", "2")], strictly."""
    pairs = []
    for part in message.split(","):
        if len(part) < 2 or part[1] != "=" or not ("a" <= part[0] <= "z" or "A" <= part[0] <= "Z"):
            raise SASLError(f"SCRAM {what} is malformed")
        pairs.append((part[0], part[2:]))
    return pairs


def _saslname(value: str, what: str) -> str:
    """RFC 5802 saslname: ``=2C`` is ``,`` and ``=3D`` is ``=``; any other ``=`` is an error."""
    if not value:
        raise SASLError(f"SCRAM {what} is empty")
    pieces = value.split("=")
    out = [pieces[0]]
    for piece in pieces[1:]:
        if piece[:2] == "2C":
            out.append("," + piece[2:])
        elif piece[:2] == "3D":
            out.append("=" + piece[2:])
        else:
            raise SASLError(f"SCRAM {what} has a bad escape")
    return "".join(out)


def _nonce_ok(nonce: str) -> bool:
    return 0 < len(nonce) <= MAX_NONCE and all(0x21 <= ord(ch) <= 0x7E and ch != "," for ch in nonce)


class ScramMechanism:
    """SCRAM-SHA-256: client-first, server-first, client-final, then the server's signature with success."""

    name = "SCRAM-SHA-256"
    plus = False

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.user = ""
        self._state = "start"
        self._client_first_bare = self._server_first = ""
        self._gs2_header = ""
        self._binding = b""
        self._nonce = ""
        self._authzid = ""
        self._account: str | None = None
        self._keys: ScramKeys | None = None
        self._server_signature = b""

    @classmethod
    def offered(cls, channel: Channel) -> bool:
        return IScramCredentials in channel.checks and channel.private

    @staticmethod
    def _plus_offered(channel: Channel) -> bool:
        return ScramPlusMechanism.offered(channel)

    def step(self, response: bytes | None):
        state, self._state = self._state, "done"  # any error below ends the exchange
        if state == "start" and response is None:
            self._state = "first"
            return Challenge(b"")
        try:
            text = (response or b"").decode("utf-8")
        except UnicodeDecodeError:
            raise SASLError("SCRAM message is not UTF-8") from None
        if state in ("start", "first"):
            self._state = "final"
            return Challenge(self._client_first(text).encode("utf-8"))
        if state == "final":
            return Verify(self._client_final(text))
        raise SASLError("SCRAM exchange is already complete")

    def _client_first(self, text: str) -> str:
        if not text:
            raise SASLError("SCRAM client-first message is empty")
        flag, comma, rest = text.partition(",")
        authzid, comma2, bare = rest.partition(",")
        if not comma or not comma2:
            raise SASLError("SCRAM client-first message has no GS2 header")
        self._check_binding_flag(flag)
        if authzid:
            if not authzid.startswith("a="):
                raise SASLError("SCRAM GS2 header is malformed")
            self._authzid = _saslname(authzid[2:], "authorization identity")
        self._gs2_header = f"{flag},{authzid},"
        attributes = _attributes(bare, "client-first message")
        if attributes[0][0] == "m":
            raise SASLError("SCRAM mandatory extension is not supported")
        if len(attributes) < 2 or attributes[0][0] != "n" or attributes[1][0] != "r":
            raise SASLError("SCRAM client-first message lacks n= and r=")
        try:
            self.user = saslprep(_saslname(attributes[0][1], "user name"))
        except ValueError as problem:
            raise SASLError(f"SCRAM user name: {problem}") from None
        client_nonce = attributes[1][1]
        if not _nonce_ok(client_nonce):
            raise SASLError("SCRAM client nonce is malformed")
        checker = self.channel.checks.get(IScramCredentials)
        if checker is None:
            raise SASLError("SCRAM is not available")
        self._account, self._keys, wanted = checker.keys_for(self.user)
        if wanted and not self._authzid:
            self._authzid = wanted
        self._nonce = client_nonce + base64.b64encode(secrets.token_bytes(NONCE_BYTES)).decode("ascii")
        self._client_first_bare = bare
        self._server_first = f"r={self._nonce},s={_b64(self._keys.salt)},i={self._keys.iterations}"
        return self._server_first

    def _check_binding_flag(self, flag: str) -> None:
        if flag.startswith("p="):
            kind = flag[2:]
            if not self.plus:
                raise SASLError("SCRAM channel binding needs SCRAM-SHA-256-PLUS")
            data = self.channel.bindings(kind) if kind in BINDINGS else None
            if data is None:
                raise SASLError(f"SCRAM channel binding {kind[:30]!r} is not available here")
            self._binding = data
        elif flag == "y":
            if self.plus or self._plus_offered(self.channel):
                raise SASLError("SCRAM client did not use the channel binding offered (downgrade)")
        elif flag == "n":
            if self.plus:
                raise SASLError("SCRAM-SHA-256-PLUS needs channel binding")
        else:
            raise SASLError("SCRAM GS2 channel binding flag is malformed")

    def _client_final(self, text: str) -> ScramProof:
        without_proof, marker, proof_text = text.rpartition(",p=")
        if not marker:
            raise SASLError("SCRAM client-final message has no proof")
        attributes = _attributes(without_proof, "client-final message")
        if len(attributes) < 2 or attributes[0][0] != "c" or attributes[1][0] != "r":
            raise SASLError("SCRAM client-final message lacks c= and r=")
        binding = _unb64(attributes[0][1], "channel binding")
        expected = self._gs2_header.encode("utf-8") + self._binding
        if not hmac.compare_digest(binding, expected):
            raise SASLError("SCRAM channel binding does not match")
        if not hmac.compare_digest(attributes[1][1].encode("utf-8"), self._nonce.encode("utf-8")):
            raise SASLError("SCRAM nonce does not match this exchange")
        proof = _unb64(proof_text, "proof")
        if len(proof) != 32:
            raise SASLError("SCRAM proof has the wrong length")
        keys = self._keys
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()

        def proof_ok() -> bool:
            signature = _hmac(keys.stored_key, auth_message)
            client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
            if not hmac.compare_digest(hashlib.sha256(client_key).digest(), keys.stored_key):
                return False
            self._server_signature = _hmac(keys.server_key, auth_message)
            return True

        return ScramProof(self.user, self._authzid, self.channel.client, self._account, proof_ok)

    def succeeded(self) -> bytes:
        """RFC 5802 server-final-message: the server's signature, proving it holds the keys too."""
        return b"v=" + base64.b64encode(self._server_signature)


class ScramPlusMechanism(ScramMechanism):
    """SCRAM-SHA-256-PLUS: as SCRAM-SHA-256, bound to this TLS connection."""

    name = "SCRAM-SHA-256-PLUS"
    plus = True

    @classmethod
    def offered(cls, channel: Channel) -> bool:
        return (IScramCredentials in channel.checks and channel.secure
                and any(channel.bindings(kind) is not None for kind in BINDINGS))
