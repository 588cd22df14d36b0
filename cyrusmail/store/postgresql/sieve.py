"""Sieve scripts and vacation records in the PostgreSQL store's database, which every server shares.

The tables ``sieve_scripts`` (owner, name, text, active flag; a partial
unique index allows one active script per owner) and ``sieve_vacation``
(schema migration 10) hold what the embedded store keeps in each user's
``sieve.sqlite``; the names and quotas are checked as there
(:class:`~cyrusmail.sieve.scripts.ScriptStore`).  Every change to a user's
scripts locks the user's row in ``users`` first, so that two servers
changing one user's scripts at once are serialised and ``max_scripts``
holds; a user whose tree is not provisioned has no scripts to change.
Deleting a user (:meth:`PostgresStore.remove_user`) deletes both.
"""

from __future__ import annotations

import psycopg

from cyrusmail.sieve.scripts import (
    MAX_VACATION_RECORDS,
    ScriptError,
    ScriptStore,
    check_name,
)
from cyrusmail.store import names
from cyrusmail.store.errors import InvalidName
from cyrusmail.store.postgresql.store import PostgresStore


class PostgresSieveScripts(ScriptStore):
    """Every user's scripts in ``store``'s database (see the module docstring)."""

    errors = (psycopg.Error,)

    def __init__(self, store: PostgresStore, **quotas) -> None:
        super().__init__(**quotas)
        self.store = store

    @staticmethod
    def _owner(user: str) -> str:
        try:
            return names.user_name(user)
        except InvalidName:
            raise ScriptError("NONEXISTENT", "No such user") from None

    def _lock(self, db: psycopg.Connection, user: str) -> str:
        """Lock ``user``'s row (inside a transaction); ScriptError when the user has no tree."""
        owner = self._owner(user)
        row = db.execute("SELECT provisioned FROM users WHERE name = %s FOR UPDATE", (owner,)).fetchone()
        if not (row and row[0]):
            raise ScriptError("NONEXISTENT", "No such user")
        return owner

    @staticmethod
    def _script(db: psycopg.Connection, owner: str, name: str) -> tuple[str, bool] | None:
        """The (text, active) of ``owner``'s script ``name``, or None."""
        if "\x00" in name:  # no script has one (a text column cannot hold it)
            return None
        return db.execute("SELECT content, active FROM sieve_scripts WHERE owner = %s AND name = %s",
                          (owner, name)).fetchone()

    # -- reading ------------------------------------------------------------------

    def list(self, user: str) -> list[tuple[str, bool]]:
        return [(name, active) for name, active in self.store.db.execute(
            "SELECT name, active FROM sieve_scripts WHERE owner = %s ORDER BY name COLLATE \"C\"",
            (self._owner(user),))]

    def get(self, user: str, name: str) -> str | None:
        row = self._script(self.store.db, self._owner(user), name)
        return None if row is None else row[0]

    def active(self, user: str) -> tuple[str, str] | None:
        row = self.store.db.execute("SELECT name, content FROM sieve_scripts WHERE owner = %s AND active",
                                    (self._owner(user),)).fetchone()
        return None if row is None else (row[0], row[1])

    # -- changing -----------------------------------------------------------------------

    def put(self, user: str, name: str, content: str) -> None:
        self.check_space(user, name, len(content.encode("utf-8")))
        if "\x00" in content:  # the one character a text column cannot hold
            raise ScriptError("", "A script may hold no NUL character")
        with self.store.write() as db:
            owner = self._lock(db, user)
            (count,) = db.execute("SELECT count(*) FROM sieve_scripts WHERE owner = %s AND name != %s",
                                  (owner, name)).fetchone()
            if count >= self.max_scripts:
                self.too_many()
            db.execute("INSERT INTO sieve_scripts (owner, name, content) VALUES (%s, %s, %s)"
                       " ON CONFLICT (owner, name) DO UPDATE SET content = excluded.content", (owner, name, content))

    def set_active(self, user: str, name: str) -> None:
        with self.store.write() as db:
            owner = self._lock(db, user)
            if name and self._script(db, owner, name) is None:
                raise ScriptError("NONEXISTENT", f"There is no script named {name}")
            # two statements: the unique index on the active one is checked row by row
            db.execute("UPDATE sieve_scripts SET active = false WHERE owner = %s AND active AND name != %s",
                       (owner, name))
            db.execute("UPDATE sieve_scripts SET active = true WHERE owner = %s AND name = %s", (owner, name))

    def delete(self, user: str, name: str) -> None:
        with self.store.write() as db:
            owner = self._lock(db, user)
            row = self._script(db, owner, name)
            if row is None:
                raise ScriptError("NONEXISTENT", f"There is no script named {name}")
            if row[1]:
                raise ScriptError("ACTIVE", "The active script cannot be deleted; deactivate it first")
            db.execute("DELETE FROM sieve_scripts WHERE owner = %s AND name = %s", (owner, name))

    def rename(self, user: str, old: str, new: str) -> None:
        check_name(new)
        with self.store.write() as db:
            owner = self._lock(db, user)
            if self._script(db, owner, old) is None:
                raise ScriptError("NONEXISTENT", f"There is no script named {old}")
            if self._script(db, owner, new) is not None:
                raise ScriptError("ALREADYEXISTS", f"A script named {new} exists already")
            db.execute("UPDATE sieve_scripts SET name = %s WHERE owner = %s AND name = %s", (new, owner, old))

    # -- vacation (RFC 5230 section 4.2) ---------------------------------------------------

    def vacation_due(self, user: str, handle: str, sender: str, now: float, period: float) -> bool:
        owner, sender = self._owner(user), sender.lower()
        with self.store.write() as db:
            # one statement: of two servers delivering at once, one inserts or renews, the other finds it
            due = db.execute(
                "INSERT INTO sieve_vacation (owner, handle, sender, until) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (owner, handle, sender) DO UPDATE SET until = excluded.until"
                " WHERE sieve_vacation.until <= %s RETURNING 1",
                (owner, handle, sender, now + period, now)).fetchone() is not None
            if due:
                db.execute("DELETE FROM sieve_vacation WHERE owner = %s AND until <= %s", (owner, now))
                db.execute("DELETE FROM sieve_vacation WHERE owner = %s AND (handle, sender) IN"
                           " (SELECT handle, sender FROM sieve_vacation WHERE owner = %s"
                           "  ORDER BY until DESC OFFSET %s)", (owner, owner, MAX_VACATION_RECORDS))
            return due
