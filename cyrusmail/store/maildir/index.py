"""One user's SQLite index: a connection with durable write transactions."""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cyrusmail import sqlite
from cyrusmail.store.maildir.schema import SCHEMA, SORTDATA_VERSION, migrate


def new_mailbox_id() -> str:
    """A MAILBOXID (RFC 8474 objectid: letters and digits): ``F`` and 96 random bits in hex."""
    return "F" + secrets.token_hex(12)


class UserIndex:
    """The index of one user's mailboxes, shared by every session in-process.

    WAL mode lets the admin command or a second server process read and
    write the same index; ``synchronous=FULL`` makes every COMMIT durable.
    With ``create`` False the file must already be there (sqlite3.OperationalError
    if not): opening never makes a user's index by accident. The connection
    is closed by :meth:`close`, or when the last reference to the index goes.
    """

    def __init__(self, path: Path, create: bool = True):
        self.path = path
        #: write transactions that changed rows through this object (see :meth:`generation`)
        self.writes = 0
        self.db = sqlite.connect(path, create=create)
        self._close = weakref.finalize(self, self.db.close)
        stat = os.stat(path)
        self._identity = (stat.st_dev, stat.st_ino)
        with self.write():
            for statement in _statements(SCHEMA):
                self.db.execute(statement)
            migrate(self.db, new_mailbox_id)
            row = self.db.execute("SELECT value FROM meta WHERE key = 'sortdata'").fetchone()
            if row is None or row[0] != SORTDATA_VERSION:
                self.db.execute("DELETE FROM sortdata")
                self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('sortdata', ?)",
                                (SORTDATA_VERSION,))

    @contextmanager
    def write(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction (see :func:`cyrusmail.sqlite.write`); UIDs are allocated in order.

        Claims of \\Recent use ``durable=False``: losing them harms no one.
        """
        changes = self.db.total_changes
        try:
            with sqlite.write(self.db, durable) as db:
                yield db
        finally:
            if self.db.total_changes != changes:
                self.writes += 1

    def generation(self) -> tuple[int, int]:
        """A value that changes whenever the index may have changed, for one statement.

        Writes through this object are counted; a commit by any other
        connection (another process, another worker, ``cyrusmail-admin``)
        moves SQLite's ``data_version``, which this connection's own writes
        do not.  Equal values mean nothing changed in between, so a
        session may skip looking for changes (a false "changed" only costs
        a look).
        """
        (version,) = self.db.execute("PRAGMA data_version").fetchone()
        return self.writes, version

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

    def is_current(self) -> bool:
        """Whether the file this index opened is still the one at its path.

        False once ``cyrusmail-admin user delete`` (another process) moved it
        away, or a new index took its place: the caller opens it afresh.
        """
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return False
        return (stat.st_dev, stat.st_ino) == self._identity

    def close(self) -> None:
        self._close()


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
