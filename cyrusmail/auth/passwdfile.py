"""A Dovecot-style passwd-file as the passdb (``[auth] passdb = passwd-file``).

One account a line, ``user:{SCHEME}hash`` followed by any of Dovecot's
further fields (``:uid:gid:gecos:home:shell:extra``), which are ignored;
``#`` starts a comment line. ``user`` is an account name or an address in
a local domain, compared as account names are. The file is read again
whenever its modification time or size changes; a file that goes missing
or unreadable after the start keeps the last good contents (and is
logged). Lines that cannot be read are skipped and logged with their
number, never their contents.

Schemes (Dovecot's names; a hash with no ``{SCHEME}`` is recognised by
its crypt prefix ``$2y$``, ``$5$``, ``$6$``, ``$argon2id$``):

* ``BLF-CRYPT`` (bcrypt), ``ARGON2I`` / ``ARGON2ID``, ``SHA256-CRYPT`` /
  ``SHA512-CRYPT``: slow hashes, recommended;
* ``SSHA256`` / ``SSHA512`` (salted, base64 of digest + salt) and
  ``SHA256`` / ``SHA512``: fast hashes, accepted for migrations;
* ``PLAIN`` / ``CLEAR``: only with ``[passwd_file] allow_plain = yes``;
* anything else (``CRAM-MD5``, ``MD5``, ``SHA``...) is refused: the user
  cannot log in, and the start logs how many such lines there are.

A passwd-file holds no SCRAM keys, so SCRAM is not offered with it.
Libraries: bcrypt, argon2-cffi and libpass, the maintained passlib (for the SHA-crypt schemes,
which the ``crypt`` module no longer gives from Python 3.13), all in the
``passdb`` extra; a scheme whose library is missing is refused and
logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable
from pathlib import Path

from cyrusmail import logs
from cyrusmail.auth.passdb import account_name
from cyrusmail.auth.userdb import check_against

#: Largest file read (a million accounts fit).
MAX_FILE = 256 * 1024 * 1024

CRYPT_PREFIXES = {"$2a$": "BLF-CRYPT", "$2b$": "BLF-CRYPT", "$2y$": "BLF-CRYPT", "$5$": "SHA256-CRYPT",
                  "$6$": "SHA512-CRYPT", "$argon2i$": "ARGON2I", "$argon2id$": "ARGON2ID"}
SALTED = {"SSHA256": ("sha256", 32), "SSHA512": ("sha512", 64)}
UNSALTED = {"SHA256": "sha256", "SHA512": "sha512"}
SLOW = ("BLF-CRYPT", "ARGON2I", "ARGON2ID", "SHA256-CRYPT", "SHA512-CRYPT")


def split_scheme(stored: str) -> tuple[str, str]:
    """``{SSHA512}abc`` -> (``SSHA512``, ``abc``); a bare crypt hash by its prefix; else ("", stored)."""
    if stored.startswith("{") and "}" in stored:
        scheme, _, value = stored[1:].partition("}")
        return scheme.upper(), value
    for prefix, scheme in CRYPT_PREFIXES.items():
        if stored.startswith(prefix):
            return scheme, stored
    return "", stored


def _slow(scheme: str, password: str, value: str) -> bool:
    if scheme == "BLF-CRYPT":
        import bcrypt

        return bcrypt.checkpw(password.encode("utf-8"), value.encode("ascii"))
    if scheme in ("ARGON2I", "ARGON2ID"):
        from argon2 import PasswordHasher
        from argon2.exceptions import Argon2Error

        try:
            return PasswordHasher().verify(value, password)
        except Argon2Error:
            return False
    from passlib.hash import sha256_crypt, sha512_crypt

    return (sha512_crypt if scheme == "SHA512-CRYPT" else sha256_crypt).verify(password, value)


def verify(password: str, stored: str, allow_plain: bool) -> bool:
    """Whether ``password`` matches a passwd-file hash; False for an unknown or refused scheme."""
    scheme, value = split_scheme(stored)
    try:
        if scheme in SLOW:
            return _slow(scheme, password, value)
        if scheme in SALTED:
            name, size = SALTED[scheme]
            raw = base64.b64decode(value, validate=True)
            digest, salt = raw[:size], raw[size:]
            return len(digest) == size and hmac.compare_digest(
                hashlib.new(name, password.encode("utf-8") + salt).digest(), digest)
        if scheme in UNSALTED:
            expected = base64.b64decode(value, validate=True)
            return hmac.compare_digest(hashlib.new(UNSALTED[scheme], password.encode("utf-8")).digest(), expected)
        if scheme in ("PLAIN", "CLEAR") and allow_plain:
            return hmac.compare_digest(password.encode("utf-8"), value.encode("utf-8"))
    except (ValueError, TypeError, binascii.Error, ImportError) as problem:
        logs.log.warn("passwd-file: cannot check a {scheme} hash: {problem}", scheme=scheme or "bare",
                      problem=str(problem)[:100])
    return False


def usable(stored: str, allow_plain: bool) -> bool:
    scheme, _ = split_scheme(stored)
    return scheme in SLOW or scheme in SALTED or scheme in UNSALTED or (allow_plain and scheme in ("PLAIN", "CLEAR"))


class PasswdFile:
    """The passdb over one passwd-file."""

    name = "passwd-file"
    keeps_scram_keys = False

    def __init__(self, path: Path, local_domains: list[str], allow_plain: bool = False) -> None:
        self.path = path
        self.local_domains = local_domains
        self.allow_plain = allow_plain
        self._seen: tuple[int, int] | None = None
        self._entries: dict[str, str] = {}
        self._load(at_start=True)

    def _load(self, at_start: bool = False) -> None:
        try:
            stat = self.path.stat()
            seen = (stat.st_mtime_ns, stat.st_size)
            if seen == self._seen:
                return
            if stat.st_size > MAX_FILE:
                raise OSError(f"larger than {MAX_FILE} octets")
            text = self.path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as problem:
            if at_start:
                raise OSError(f"[passwd_file] path {self.path}: {problem}") from None
            logs.log.warn("passwd-file: cannot read {path} ({problem}); keeping what was read before",
                          path=str(self.path), problem=str(problem)[:100])
            return
        entries: dict[str, str] = {}
        bad, refused = [], 0
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            user, colon, rest = line.partition(":")
            account = account_name(user.strip(), self.local_domains) if colon else None
            stored = rest.split(":", 1)[0]
            if account is None or not stored:
                bad.append(number)
                continue
            if not usable(stored, self.allow_plain):
                refused += 1
            entries[account] = stored
        self._entries, self._seen = entries, seen
        if bad:
            logs.log.warn("passwd-file: {path}: skipped unreadable line(s) {lines}",
                          path=str(self.path), lines=", ".join(map(str, bad[:20])))
        if refused:
            logs.log.warn("passwd-file: {path}: {count} account(s) with a scheme that is refused"
                          " (see the README's passwd-file schemes); they cannot log in",
                          path=str(self.path), count=refused)
        logs.log.info("passwd-file: read {count} account(s) from {path}", count=len(entries), path=str(self.path))

    def lookup(self, login: str) -> tuple[str, str] | None:
        self._load()
        account = account_name(login, self.local_domains)
        stored = self._entries.get(account) if account is not None else None
        return (account, stored) if stored is not None else None

    def checker(self, login: str) -> Callable[[str], str | None]:
        entry = self.lookup(login)
        allow_plain = self.allow_plain

        def check(password: str) -> str | None:
            if entry is None:
                check_against(password, None)  # an unknown user costs a slow hash too
                return None
            return entry[0] if verify(password, entry[1], allow_plain) else None

        return check
