"""The user database: names and password hashes in ``users.sqlite``.

Names are ``local`` or ``local@domain`` and compared case-insensitively
(they are kept lower-cased). Passwords are never stored, only scrypt hashes.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from cyrusmail import sqlite
from cyrusmail.auth.passwords import DUMMY_HASH, hash_password, verify_password
from cyrusmail.store.errors import InvalidUserName, UnknownUser, UserExists
from cyrusmail.store.names import user_name


def check_against(password: str, stored: str | None) -> bool:
    """Verify ``password`` against a stored hash; a missing user costs as much."""
    ok = verify_password(password, stored or DUMMY_HASH)
    return ok and stored is not None


class UserDatabase:
    def __init__(self, path: Path):
        self.path = path
        self.db = sqlite.connect(path)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, password TEXT NOT NULL, created REAL NOT NULL)"
        )

    def add(self, name: str, password: str) -> str:
        name = user_name(name)
        try:
            self.db.execute(
                "INSERT INTO users (name, password, created) VALUES (?, ?, ?)",
                (name, hash_password(password), time.time()),
            )
        except sqlite3.IntegrityError:
            raise UserExists(f"User {name} already exists") from None
        return name

    def set_password(self, name: str, password: str) -> None:
        name = user_name(name)
        cursor = self.db.execute("UPDATE users SET password = ? WHERE name = ?", (hash_password(password), name))
        if cursor.rowcount == 0:
            raise UnknownUser(f"No user {name}")

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
