"""Groups and who shares with whom, in the PostgreSQL store's database, so that every server shares them.

The same registry as ``access.sqlite`` (:class:`cyrusmail.acl.registry.AccessRegistry`,
whose SQL both databases take) over the tables ``groups`` and ``grants``
(migration 6), through the store's connections (one per thread). Every
write also counts up ``access_version`` in its transaction: that count is
the generation, read from the database each time it is asked, so a group
changed through one server governs the next rights check on every other
at once; nothing is kept in a server between checks but rights whose
generation is still the current one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import psycopg

from cyrusmail.acl.registry import AccessRegistry


def _postgres(query: str) -> str:
    """The registry's ``?`` parameters as psycopg's ``%s`` (its SQL holds no other ``?``)."""
    return query.replace("?", "%s")


class _Connection:
    """A store connection that takes the registry's SQL, as its SQLite connection does."""

    def __init__(self, db: psycopg.Connection):
        self.db = db

    def execute(self, query: str, parameters: Iterable = ()) -> psycopg.Cursor:
        return self.db.execute(_postgres(query), tuple(parameters))

    def executemany(self, query: str, rows: Iterable[tuple]) -> None:
        rows = list(rows)
        if rows:
            with self.db.cursor() as cursor:
                cursor.executemany(_postgres(query), rows)


class PostgresAccessRegistry(AccessRegistry):
    """The registry in the tables of ``store`` (a :class:`PostgresStore`)."""

    def __init__(self, store):
        self.store = store

    @contextmanager
    def _write(self) -> Iterator[_Connection]:
        with self.store.write() as db:
            yield _Connection(db)
            db.execute("UPDATE access_version SET version = version + 1")

    def _rows(self, query: str, parameters: Iterable = ()) -> list[tuple]:
        return _Connection(self.store.db).execute(query, parameters).fetchall()

    def generation(self) -> int:
        """The count of changes made to groups and grants through any server."""
        return self.store.db.execute("SELECT version FROM access_version").fetchone()[0]

    def close(self) -> None:
        """Nothing of its own: the store closes the connections."""
