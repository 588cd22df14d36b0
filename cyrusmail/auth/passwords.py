"""Password hashing with scrypt: slow, salted, and never reversible.

Stored form: ``$scrypt$ln=14,r=8,p=1$<salt>$<hash>`` (base64, no padding),
so the cost can rise later without invalidating old hashes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

LOG2_N, R, P, LENGTH = 14, 8, 1, 32
_MAXMEM = 64 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, log2_n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=1 << log2_n, r=r, p=p, dklen=length, maxmem=_MAXMEM
    )


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, LOG2_N, R, P, LENGTH)
    return f"$scrypt$ln={LOG2_N},r={R},p={P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored``; False for any malformed hash."""
    try:
        _, scheme, params, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        cost = dict(item.split("=") for item in params.split(","))
        expected = _unb64(digest)
        actual = _scrypt(password, _unb64(salt), int(cost["ln"]), int(cost["r"]), int(cost["p"]), len(expected))
    except (ValueError, KeyError):
        return False
    return hmac.compare_digest(actual, expected)


#: Verified against when the user is unknown, so that timing does not tell.
DUMMY_HASH = hash_password(secrets.token_hex(8))
