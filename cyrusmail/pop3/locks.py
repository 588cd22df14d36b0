"""One POP3 session per maildrop: an in-process registry plus a lock other servers see.

RFC 1939 section 8 asks for an exclusive lock on the maildrop while a POP3
session is in TRANSACTION. IMAP sessions do not take it and go on working.
The in-process registry refuses a second session of this server at once;
the store's own lock covers other server processes (:meth:`MaildropLocks.for_store`):
on the embedded store a ``flock`` on ``<user folder>/pop3.lock`` (other
processes on the same data folder), on the PostgreSQL store a session-level
advisory lock held by a connection of its own (every server on the database;
see :meth:`cyrusmail.store.postgresql.store.PostgresStore.maildrop_lock`).
The lock goes with the connection, however it ends, and with the process.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from cyrusmail.private_files import PRIVATE_FILE, PRIVATE_FOLDER

LOCK_FILE = "pop3.lock"

#: Takes the lock of a user's maildrop that other processes see: what releases it, or None when it is taken.
Across = Callable[[str], "Callable[[], None] | None"]


class MaildropLock:
    """A held lock; :meth:`release` is idempotent."""

    def __init__(self, user: str, release: Callable[[], None]):
        self.user = user
        self._release: Callable[[], None] | None = release

    @property
    def held(self) -> bool:
        return self._release is not None

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()


def folder_lock(folder_of: Callable[[str], Path]) -> Across:
    """The ``flock`` on ``pop3.lock`` in the user's folder (``MaildirStore.user_dir``)."""

    def take(user: str) -> Callable[[], None] | None:
        folder = folder_of(user)
        folder.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise

        def release() -> None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        return release
    return take


class MaildropLocks:
    """The POP3 locks of one server process.

    ``folder_of(user)`` names the user's folder for the cross-process lock
    file (``MaildirStore.user_dir``); ``across`` is any other such lock;
    without either only the in-process registry applies.
    """

    def __init__(self, folder_of: Callable[[str], Path] | None = None, across: Across | None = None):
        self.across = across if across is not None or folder_of is None else folder_lock(folder_of)
        self._held: dict[str, MaildropLock] = {}

    @classmethod
    def for_store(cls, store) -> MaildropLocks:
        """The locks over ``store``: its own ``maildrop_lock`` (PostgreSQL), else a flock in its user folders."""
        across = getattr(store, "maildrop_lock", None)
        return cls(across=across) if across is not None else cls(getattr(store, "user_dir", None))

    def is_locked(self, user: str) -> bool:
        return user in self._held

    def acquire(self, user: str) -> MaildropLock | None:
        """The lock of ``user``'s maildrop, or None when another session holds it."""
        if user in self._held:
            return None
        release_across = self.across(user) if self.across is not None else None
        if self.across is not None and release_across is None:
            return None

        def release() -> None:
            self._held.pop(user, None)
            if release_across is not None:
                release_across()

        lock = self._held[user] = MaildropLock(user, release)
        return lock
