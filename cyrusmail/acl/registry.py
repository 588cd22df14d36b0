"""The global access registry: groups, and which owners grant rights to whom.

Each mailbox's ACL lives in its owner's index (the truth, deleted with the
mailbox, following renames). This small database beside the users answers
the one question that would otherwise scan every user: "whose mailboxes
might this user see?" It records, per owner, the identifiers any of their
ACLs name; a stale row only costs a look at that owner's index. Writers
add rows before changing an ACL and drop them after, so it never misses one.

Where it lives is the store's choice (:func:`open_registry`): ``access.sqlite``
in the data folder, or the PostgreSQL store's tables, which every server
on that database shares.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cyrusmail import sqlite

#: The embedded store's registry, beside the users in the data folder.
ACCESS_REGISTRY = "access.sqlite"

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS groups (name TEXT NOT NULL, member TEXT NOT NULL, PRIMARY KEY (name, member))",
    ("CREATE TABLE IF NOT EXISTS grants (owner TEXT NOT NULL, identifier TEXT NOT NULL,"
     " PRIMARY KEY (owner, identifier))"),
    "CREATE INDEX IF NOT EXISTS grants_identifier ON grants (identifier)",
    "CREATE INDEX IF NOT EXISTS groups_member ON groups (member)",
)


class AccessRegistry:
    """``access.sqlite`` in the data folder (WAL, safe across processes).

    Its one connection is locked: store work on worker threads checks rights too.
    """

    def __init__(self, path: Path | str):
        self.writes = 0  # write transactions through this object (see generation)
        self.db = sqlite.connect(path)
        self._lock = threading.RLock()
        with self._write() as db:
            for statement in SCHEMA:
                db.execute(statement)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                with sqlite.write(self.db) as db:
                    yield db
            finally:
                self.writes += 1

    def _rows(self, query: str, parameters: Iterable = ()) -> list[tuple]:
        """The rows of ``query`` (``?`` parameters, SQL that SQLite and PostgreSQL both take)."""
        with self._lock:
            return self.db.execute(query, tuple(parameters)).fetchall()

    def generation(self) -> tuple[int, int]:
        """Changes whenever groups or grants may have changed, here or in another
        process (as :meth:`cyrusmail.store.maildir.index.UserIndex.generation`)."""
        with self._lock:
            (version,) = self.db.execute("PRAGMA data_version").fetchone()
        return self.writes, version

    def close(self) -> None:
        self.db.close()

    # -- groups ------------------------------------------------------------------

    def groups_of(self, user: str) -> frozenset[str]:
        rows = self._rows("SELECT name FROM groups WHERE member = ?", (user,))
        return frozenset(row[0] for row in rows)

    def members(self, group: str) -> list[str]:
        return sorted(row[0] for row in self._rows("SELECT member FROM groups WHERE name = ?", (group,)))

    def groups(self) -> list[str]:
        return sorted(row[0] for row in self._rows("SELECT DISTINCT name FROM groups"))

    def add_members(self, group: str, members: Iterable[str]) -> None:
        with self._write() as db:
            db.executemany("INSERT INTO groups (name, member) VALUES (?, ?) ON CONFLICT DO NOTHING",
                           [(group, member) for member in members])

    def remove_members(self, group: str, members: Iterable[str] | None = None) -> int:
        """Remove ``members`` (every one if None, which deletes the group); how many went."""
        with self._write() as db:
            if members is None:
                return db.execute("DELETE FROM groups WHERE name = ?", (group,)).rowcount
            return sum(db.execute("DELETE FROM groups WHERE name = ? AND member = ?", (group, member)).rowcount
                       for member in members)

    # -- grants ------------------------------------------------------------------

    def add_grants(self, owner: str, identifiers: Iterable[str]) -> None:
        with self._write() as db:
            db.executemany("INSERT INTO grants (owner, identifier) VALUES (?, ?) ON CONFLICT DO NOTHING",
                           [(owner, identifier) for identifier in identifiers])

    def replace_grants(self, owner: str, identifiers: Iterable[str]) -> None:
        """Set the identifiers ``owner``'s ACLs name, once an ACL change is durable."""
        with self._write() as db:
            db.execute("DELETE FROM grants WHERE owner = ?", (owner,))
            db.executemany("INSERT INTO grants (owner, identifier) VALUES (?, ?) ON CONFLICT DO NOTHING",
                           [(owner, identifier) for identifier in set(identifiers)])

    def owners_granting(self, identifiers: Iterable[str]) -> list[str]:
        """Owners with an ACL naming any of ``identifiers``, sorted."""
        identifiers = list(identifiers)
        marks = ",".join("?" * len(identifiers))
        rows = self._rows(f"SELECT DISTINCT owner FROM grants WHERE identifier IN ({marks})", identifiers)
        return sorted(row[0] for row in rows)

    def forget_owner(self, owner: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM grants WHERE owner = ?", (owner,))

    def forget_user(self, user: str) -> None:
        """Drop ``user`` from every group and the grants of their own tree (a deleted user)."""
        with self._write() as db:
            db.execute("DELETE FROM groups WHERE member = ?", (user,))
            db.execute("DELETE FROM grants WHERE owner = ?", (user,))


def open_registry(store) -> AccessRegistry:
    """The registry of ``store``: its own (``access_registry()``, the PostgreSQL
    store's shared tables) or ``access.sqlite`` in its data folder."""
    own = getattr(store, "access_registry", None)
    return own() if own is not None else AccessRegistry(store.root / ACCESS_REGISTRY)
