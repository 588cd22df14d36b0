"""One user's SQLite index: a read connection per thread, one writer, grouped commits.

Threads.  Store work that must wait for the disk (message files, folder
fsyncs, durable commits) runs on worker threads (:mod:`cyrusmail.store.executor`)
while the reactor thread goes on reading the same index.  SQLite's WAL
mode lets readers work while a writer commits, but one connection cannot
serve two threads at once, so:

- each thread reads through its own connection (:attr:`UserIndex.db`); a
  worker thread's are closed when its job ends (:func:`~cyrusmail.store.executor.at_job_end`);
- every write goes through the one writer connection, taken with a lock
  (:meth:`UserIndex.write`), so one writer at a time per index in-process
  (and ``BEGIN IMMEDIATE`` queues writers of other processes); the thread
  holding it reads through the writer too, so it sees its own changes.

Group commit.  :meth:`UserIndex.group` holds the writer for several jobs in
a row: each job's writes are a savepoint of one transaction, the mailbox
folders they added names to are fsynced once, and one durable COMMIT ends
it; what must wait for that commit (removing expunged files, telling other
sessions) waits in :meth:`UserIndex.after_commit`.  A job in a group may
write only this index: the thread holds its lock, and taking another
index's lock then could deadlock with a group on that one.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path

from cyrusmail import sqlite
from cyrusmail.store.executor import at_job_end
from cyrusmail.store.maildir.files import fsync_dir
from cyrusmail.store.maildir.schema import SCHEMA, SORTDATA_VERSION, migrate


class IndexBusy(Exception):
    """Another writer holds the index and the caller chose not to wait (:meth:`UserIndex.write`)."""


def new_mailbox_id() -> str:
    """A MAILBOXID (RFC 8474 objectid: letters and digits): ``F`` and 96 random bits in hex."""
    return "F" + secrets.token_hex(12)


#: Per thread: the group this thread holds, if any.
_thread = threading.local()


class _Group:
    """The state of one group commit (see :meth:`UserIndex.group`)."""

    def __init__(self, index: UserIndex):
        self.index = index
        self.begun = False
        self.folders: set[Path] = set()
        self.committed: list[Callable[[], None]] = []
        self.rolled_back: list[Callable[[], None]] = []
        self.jobs = 0

    @contextmanager
    def savepoint(self) -> Iterator[sqlite3.Connection]:
        db = self.index._writer_connection()
        if not self.begun:
            db.execute("BEGIN IMMEDIATE")
            self.begun = True
        self.jobs += 1
        db.execute("SAVEPOINT job")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK TO job")
            db.execute("RELEASE job")
            raise
        db.execute("RELEASE job")

    def commit(self) -> None:
        if self.begun:
            for folder in sorted(self.folders):  # new names durable before the index says they exist
                fsync_dir(folder)
            self.index._writer.execute("COMMIT")
            self.begun = False

    def rollback(self) -> None:
        if self.begun:
            self.begun = False
            if self.index._writer.in_transaction:
                self.index._writer.execute("ROLLBACK")
            for undo in self.rolled_back:
                undo()


class UserIndex:
    """The index of one user's mailboxes, shared by every session in-process.

    WAL mode lets the admin command or a second server process read and
    write the same index; ``synchronous=FULL`` makes every COMMIT durable.
    With ``create`` False the file must already be there (sqlite3.OperationalError
    if not): opening never makes a user's index by accident. The connections
    are closed by :meth:`close`, or when the last reference to the index goes.
    """

    def __init__(self, path: Path, create: bool = True):
        self.path = path
        self._lock = threading.RLock()
        self._writer: sqlite3.Connection | None = None
        self._writing: int | None = None  # the thread holding the writer
        self._group: _Group | None = None
        self._readers = threading.local()
        self._connections: list[sqlite3.Connection] = []  # all of them, for close()
        self._close = weakref.finalize(self, _close_all, self._connections)
        first = sqlite.connect(path, create=create)
        self._connections.append(first)
        self._readers.db = first
        at_job_end(partial(self._drop_reader, first))  # made by a worker: its reader goes with its job
        self._version_lock = threading.Lock()
        self._version_db: sqlite3.Connection | None = None  # see generation()
        stat = os.stat(path)
        self._identity = (stat.st_dev, stat.st_ino)
        with sqlite.write(first):
            for statement in _statements(SCHEMA):
                first.execute(statement)
            migrate(first, new_mailbox_id)
            row = first.execute("SELECT value FROM meta WHERE key = 'sortdata'").fetchone()
            if row is None or row[0] != SORTDATA_VERSION:
                first.execute("DELETE FROM sortdata")
                first.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('sortdata', ?)",
                              (SORTDATA_VERSION,))

    # -- connections --------------------------------------------------------------

    @property
    def db(self) -> sqlite3.Connection:
        """The connection for this thread to read through (the writer while it holds it)."""
        if self._writing == threading.get_ident():
            return self._writer_connection()
        reader = getattr(self._readers, "db", None)
        return reader if reader is not None else self._open_reader()

    def _open_reader(self) -> sqlite3.Connection:
        reader = sqlite.connect(self.path, create=False)
        self._readers.db = reader
        # A pool of a few threads serving every user would otherwise keep a
        # connection open to every index it ever read.
        if not at_job_end(partial(self._drop_reader, reader)):
            self._connections.append(reader)
        return reader

    def _drop_reader(self, reader: sqlite3.Connection) -> None:
        if getattr(self._readers, "db", None) is reader:
            self._readers.db = None
        reader.close()

    def _writer_connection(self) -> sqlite3.Connection:
        if self._writer is None:
            self._writer = sqlite.connect(self.path, create=False)
            self._connections.append(self._writer)
        return self._writer

    # -- writing ----------------------------------------------------------------------

    @contextmanager
    def write(self, durable: bool = True, wait: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction (see :func:`cyrusmail.sqlite.write`); UIDs are allocated in order.

        Claims of \\Recent use ``durable=False``: losing them harms no one.
        With ``wait`` False, :class:`IndexBusy` instead of waiting for another
        writer (in this process or another). Inside a :meth:`group` held by
        this thread, a savepoint of the group's transaction.
        """
        me = threading.get_ident()
        group = self._group
        if group is not None and self._writing == me:
            with group.savepoint() as db:
                yield db
            return
        held = getattr(_thread, "group", None)
        if held is not None and held is not self:
            raise RuntimeError("a job in a group commit may write only its own index")
        if not self._lock.acquire(blocking=wait):
            raise IndexBusy(f"{self.path} is being written")
        before, self._writing = self._writing, me
        try:
            db = self._writer_connection()
            if wait:
                with sqlite.write(db, durable):
                    yield db
                return
            with ExitStack() as transaction:
                db.execute("PRAGMA busy_timeout = 0")  # only while taking it: another process may hold it
                try:
                    transaction.enter_context(sqlite.write(db, durable))
                except sqlite3.OperationalError as error:
                    raise IndexBusy(str(error)) from None
                finally:
                    db.execute(f"PRAGMA busy_timeout = {sqlite.BUSY_TIMEOUT_MS}")
                yield db
        finally:
            self._writing = before
            self._lock.release()

    @contextmanager
    def group(self) -> Iterator[_Group]:
        """Hold the writer for several jobs, committed together (see the module docstring).

        A job's failure undoes only its own writes (its savepoint); a failed
        COMMIT undoes them all, and runs what :meth:`on_rollback` asked.
        """
        with self._lock:
            group = _Group(self)
            self._writing, self._group, _thread.group = threading.get_ident(), group, self
            try:
                yield group
                group.commit()
            except BaseException:
                group.rollback()
                raise
            finally:
                self._writing, self._group, _thread.group = None, None, None
        for done in group.committed:
            done()

    def _own_group(self) -> _Group | None:
        group = self._group
        return group if group is not None and self._writing == threading.get_ident() else None

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run ``action`` once what this thread wrote is committed: now, or at its group's end."""
        group = self._own_group()
        if group is None:
            action()
        else:
            group.committed.append(action)

    def on_rollback(self, action: Callable[[], None]) -> None:
        """Run ``action`` if this thread's group is rolled back after its job's writes succeeded."""
        group = self._own_group()
        if group is not None:
            group.rolled_back.append(action)

    def sync_folder(self, folder: Path) -> None:
        """Make ``folder``'s new names durable before the commit: now, or once for the whole group."""
        group = self._own_group()
        if group is None:
            fsync_dir(folder)
        else:
            group.folders.add(folder)

    def generation(self) -> int:
        """A value that changes whenever the index may have changed, for one statement.

        SQLite's ``data_version`` on a connection kept for this alone, which
        never writes: every commit (this process's writer, another worker,
        ``cyrusmail-admin``) moves it.  Equal values mean nothing changed in
        between, so a session may skip looking for changes (a false
        "changed" only costs a look).
        """
        with self._version_lock:
            if self._version_db is None:
                self._version_db = sqlite.connect(self.path, create=False)
                self._connections.append(self._version_db)
            (version,) = self._version_db.execute("PRAGMA data_version").fetchone()
        return version

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for several reads."""
        db = self.db
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")

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


def _close_all(connections: list[sqlite3.Connection]) -> None:
    for connection in connections:
        connection.close()
    connections.clear()


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
