"""The user database: names, password hashes and SCRAM keys in ``users.sqlite``.

Names are ``local`` or ``local@domain`` and compared case-insensitively
(they are kept lower-cased). Passwords are never stored, only scrypt hashes
and, with ``scram_iterations`` above 0, the SCRAM-SHA-256 keys of RFC 5802
(:mod:`cyrusmail.auth.scram`), both made when the password is set. An
account whose password is checked elsewhere (a passwd-file, LDAP) has an
empty hash here, which no password matches.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from pathlib import Path

from cyrusmail import sqlite
from cyrusmail.auth.passwords import DUMMY_HASH, hash_password, verify_password
from cyrusmail.auth.scram import ScramKeys
from cyrusmail.store.errors import InvalidUserName, UnknownUser, UserExists
from cyrusmail.store.names import user_name


def check_against(password: str, stored: str | None) -> bool:
    """Verify ``password`` against a stored hash; a missing user (or an empty hash) costs as much."""
    ok = verify_password(password, stored or DUMMY_HASH)
    return ok and bool(stored)


class UserDatabase:
    keeps_scram_keys = True  # a subclass elsewhere may keep none (then SCRAM is not offered)

    def __init__(self, path: Path, scram_iterations: int = 0):
        self.path = path
        self.scram_iterations = scram_iterations  # 0: no SCRAM keys are made
        self.db = sqlite.connect(path)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, password TEXT NOT NULL, created REAL NOT NULL,"
            " scram TEXT)"
        )
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(users)")}
        if "scram" not in columns:  # a database from before SCRAM: its users get keys at their next login
            self.db.execute("ALTER TABLE users ADD COLUMN scram TEXT")
        self.db.execute("CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL)")
        self._secret: bytes | None = None

    def _scram(self, password: str) -> str | None:
        keys = ScramKeys.derive(password, self.scram_iterations) if self.scram_iterations else None
        return keys.encode() if keys is not None else None

    def add(self, name: str, password: str | None) -> str:
        """Add ``name``; with ``password`` None, an account whose password is checked elsewhere."""
        name = user_name(name)
        stored, scram = (hash_password(password), self._scram(password)) if password is not None else ("", None)
        try:
            self.db.execute(
                "INSERT INTO users (name, password, created, scram) VALUES (?, ?, ?, ?)",
                (name, stored, time.time(), scram),
            )
        except sqlite3.IntegrityError:
            raise UserExists(f"User {name} already exists") from None
        return name

    def set_password(self, name: str, password: str) -> None:
        name = user_name(name)
        cursor = self.db.execute("UPDATE users SET password = ?, scram = ? WHERE name = ?",
                                 (hash_password(password), self._scram(password), name))
        if cursor.rowcount == 0:
            raise UnknownUser(f"No user {name}")

    def scram_keys(self, name: str) -> ScramKeys | None:
        """``name``'s SCRAM-SHA-256 keys, or None (no such user, keys never made, or SCRAM off)."""
        row = self.db.execute("SELECT scram FROM users WHERE name = ?", (name,)).fetchone()
        return ScramKeys.decode(row[0]) if row else None

    def set_scram_keys(self, name: str, keys: ScramKeys, stored: str) -> bool:
        """Keep ``keys`` for ``name`` if its password hash is still ``stored`` (not changed meanwhile)."""
        cursor = self.db.execute("UPDATE users SET scram = ? WHERE name = ? AND password = ?",
                                 (keys.encode(), name, stored))
        return cursor.rowcount == 1

    def secret(self) -> bytes:
        """A random key made once per database, for what must look the same across restarts and processes."""
        if self._secret is None:
            self.db.execute("INSERT OR IGNORE INTO secrets (name, value) VALUES ('stand-in', ?)",
                            (secrets.token_bytes(32),))
            self._secret = self.db.execute("SELECT value FROM secrets WHERE name = 'stand-in'").fetchone()[0]
        return self._secret

    def delete(self, name: str) -> None:
        name = user_name(name)
        if self.db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
            raise UnknownUser(f"No user {name}")

    def exists(self, name: str) -> bool:
        try:
            name = user_name(name)
        except InvalidUserName:
            return False
        return self.db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone() is not None

    def names(self) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT name FROM users ORDER BY name")]

    def resolve(self, login: str, local_domains: list[str]) -> str | None:
        """The account a login or address names: exact, else the local part in a local domain."""
        try:
            name = user_name(login)
        except InvalidUserName:
            return None
        if self.exists(name):
            return name
        local, at, domain = name.rpartition("@")
        if at and domain in local_domains and self.exists(local):
            return local
        return None

    def password_hash(self, name: str) -> str | None:
        row = self.db.execute("SELECT password FROM users WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def check_password(self, name: str, password: str) -> bool:
        """Verify; costs the same whether or not the user exists."""
        return check_against(password, self.password_hash(name))

    def close(self) -> None:
        self.db.close()
