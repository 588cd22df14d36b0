"""The user database in the PostgreSQL store's database, so that every server knows every account."""

from __future__ import annotations

import time

from cyrusmail.auth.passwords import hash_password
from cyrusmail.auth.userdb import UserDatabase
from cyrusmail.store.errors import InvalidUserName, UnknownUser, UserExists
from cyrusmail.store.names import user_name
from cyrusmail.store.postgresql.store import PostgresStore


class PostgresUserDatabase(UserDatabase):
    """:class:`UserDatabase` over the ``accounts`` table, through the store's connections
    (one per thread); the rules (names, hashes, resolving addresses) are the same."""

    path = None  # no file
    keeps_scram_keys = False  # SCRAM keys are kept only in users.sqlite so far
    scram_iterations = 0

    def __init__(self, store: PostgresStore):
        self.store = store

    def add(self, name: str, password: str) -> str:
        name = user_name(name)
        row = self.store.db.execute(
            "INSERT INTO accounts (name, password, created) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING RETURNING name",
            (name, hash_password(password), time.time())).fetchone()
        if row is None:
            raise UserExists(f"User {name} already exists")
        return name

    def set_password(self, name: str, password: str) -> None:
        name = user_name(name)
        cursor = self.store.db.execute("UPDATE accounts SET password = %s WHERE name = %s",
                                       (hash_password(password), name))
        if cursor.rowcount == 0:
            raise UnknownUser(f"No user {name}")

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
