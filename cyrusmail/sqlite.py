"""SQLite as cyrusmail uses it: one way to open a database, one way to write.

Every database (user index, user database, access registry) is opened in
WAL mode, so the server and ``cyrusmail-admin`` may use it at once, with
``synchronous=FULL``, so that a COMMIT is durable when it returns.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cyrusmail.private_files import PRIVATE_FILE

BUSY_TIMEOUT_MS = 30_000


def connect(path: Path | str, create: bool = True) -> sqlite3.Connection:
    """A connection in autocommit mode; transactions are explicit (:func:`write`).

    A new database file is made 0600; SQLite gives its -wal and -shm files the
    same mode.  With ``create`` False a missing file is an error
    (sqlite3.OperationalError), never a new empty database.
    """
    if create:
        if path != ":memory:":
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE))
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    else:
        uri = Path(path).resolve().as_uri() + "?mode=rw"
        db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    return db


@contextmanager
def write(db: sqlite3.Connection, durable: bool = True) -> Iterator[sqlite3.Connection]:
    """A write transaction, taken at once (BEGIN IMMEDIATE) so writers queue in order.

    ``durable=False`` is for state whose loss in a power cut harms no one:
    the commit skips the fsync; the database stays consistent either way.
    """
    if not durable:
        db.execute("PRAGMA synchronous = NORMAL")
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        else:
            db.execute("COMMIT")
    finally:
        if not durable:
            db.execute("PRAGMA synchronous = FULL")
