"""The user database in the PostgreSQL store's database, so that every server knows every account."""

from __future__ import annotations

import secrets
import time

from cyrusmail.auth.passwords import hash_password
from cyrusmail.auth.scram import ScramKeys
from cyrusmail.auth.userdb import UserDatabase
from cyrusmail.store.errors import InvalidUserName, UnknownUser, UserExists
from cyrusmail.store.names import user_name
from cyrusmail.store.postgresql.store import PostgresStore


class PostgresUserDatabase(UserDatabase):
    """:class:`UserDatabase` over the ``accounts`` table, through the store's connections
    (one per thread); the rules (names, hashes, resolving addresses) are the same."""

    path = None  # no file
    def __init__(self, store: PostgresStore, scram_iterations: int = 0):
        self.store = store
        self.scram_iterations = scram_iterations  # 0: no SCRAM keys are made
        self._secret: bytes | None = None

    def add(self, name: str, password: str | None) -> str:
        """Add ``name``; with ``password`` None, an account whose password is checked elsewhere."""
        name = user_name(name)
        stored, scram = (hash_password(password), self._scram(password)) if password is not None else ("", None)
        row = self.store.db.execute(
            "INSERT INTO accounts (name, password, created, scram) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING RETURNING name",
            (name, stored, time.time(), scram)).fetchone()
        if row is None:
            raise UserExists(f"User {name} already exists")
        return name

    def set_password(self, name: str, password: str) -> None:
        name = user_name(name)
        cursor = self.store.db.execute("UPDATE accounts SET password = %s, scram = %s WHERE name = %s",
                                       (hash_password(password), self._scram(password), name))
        if cursor.rowcount == 0:
            raise UnknownUser(f"No user {name}")

    def scram_keys(self, name: str) -> ScramKeys | None:
        row = self.store.db.execute("SELECT scram FROM accounts WHERE name = %s", (name,)).fetchone()
        return ScramKeys.decode(row[0]) if row else None

    def set_scram_keys(self, name: str, keys: ScramKeys, stored: str) -> bool:
        cursor = self.store.db.execute("UPDATE accounts SET scram = %s WHERE name = %s AND password = %s",
                                       (keys.encode(), name, stored))
        return cursor.rowcount == 1

    def secret(self) -> bytes:
        if self._secret is None:
            self.store.db.execute("INSERT INTO secrets (name, value) VALUES ('stand-in', %s) ON CONFLICT DO NOTHING",
                                  (secrets.token_bytes(32),))
            self._secret = bytes(self.store.db.execute(
                "SELECT value FROM secrets WHERE name = 'stand-in'").fetchone()[0])
        return self._secret

    def delete(self, name: str) -> None:
        name = user_name(name)
        if self.store.db.execute("DELETE FROM accounts WHERE name = %s", (name,)).rowcount == 0:
            raise UnknownUser(f"No user {name}")

    def exists(self, name: str) -> bool:
        try:
            name = user_name(name)
        except InvalidUserName:
            return False
        return self.store.db.execute("SELECT 1 FROM accounts WHERE name = %s", (name,)).fetchone() is not None

    def names(self) -> list[str]:
        return [row[0] for row in self.store.db.execute("SELECT name FROM accounts ORDER BY name")]

    def password_hash(self, name: str) -> str | None:
        row = self.store.db.execute("SELECT password FROM accounts WHERE name = %s", (name,)).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        """Nothing of its own: the store closes the connections."""
