"""One user's SQLite index: a connection with durable write transactions."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cyrusmail.store.maildir.schema import SCHEMA, SCHEMA_VERSION

BUSY_TIMEOUT_MS = 30_000


class UserIndex:
    """The index of one user's mailboxes, shared by every session in-process.

    WAL mode lets the admin command or a second server process read and
    write the same index; ``synchronous=FULL`` makes every COMMIT durable.
    """

    def __init__(self, path: Path):
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = FULL")
        with self.write():
            for statement in _statements(SCHEMA):
                self.db.execute(statement)
            self.db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,)
            )

    @contextmanager
    def write(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction, taken at once so that UIDs are allocated in order.

        ``durable=False`` is for state whose loss in a power cut harms no one
        (which messages were already reported \\Recent): the commit skips the
        fsync, the index stays consistent either way.
        """
        if not durable:
            self.db.execute("PRAGMA synchronous = NORMAL")
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            else:
                self.db.execute("COMMIT")
        finally:
            if not durable:
                self.db.execute("PRAGMA synchronous = FULL")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for several reads."""
        self.db.execute("BEGIN")
        try:
            yield self.db
        finally:
            self.db.execute("COMMIT")

    def next_uidvalidity(self, db: sqlite3.Connection) -> int:
        """A UIDVALIDITY never given before in this index (call inside write())."""
        row = db.execute("SELECT value FROM meta WHERE key = 'uidvalidity'").fetchone()
        value = max(int(time.time()), (row[0] + 1) if row else 0)
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('uidvalidity', ?)", (value,))
        return value

    def close(self) -> None:
        self.db.close()


def _statements(script: str) -> list[str]:
    """Split the schema into statements, keeping trigger bodies whole."""
    statements, current = [], []
    for line in script.strip().splitlines():
        current.append(line)
        joined = "\n".join(current)
        if sqlite3.complete_statement(joined):
            statements.append(joined)
            current = []
    return statements
