"""One POP3 session per maildrop: an in-process registry plus an advisory flock.

RFC 1939 section 8 asks for an exclusive lock on the maildrop while a POP3
session is in TRANSACTION. IMAP sessions do not take it and go on working.
The in-process registry refuses a second session of this server at once; the
``flock`` on ``<user folder>/pop3.lock`` covers other server processes on
the same data folder. The lock goes with the connection, however it ends.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from cyrusmail.private_files import PRIVATE_FILE, PRIVATE_FOLDER

LOCK_FILE = "pop3.lock"


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


class MaildropLocks:
    """The POP3 locks of one server process.

    ``folder_of(user)`` names the user's folder for the cross-process lock
    file (``MaildirStore.user_dir``); without it only the in-process registry
    applies.
    """

    def __init__(self, folder_of: Callable[[str], Path] | None = None):
        self.folder_of = folder_of
        self._held: dict[str, MaildropLock] = {}

    def is_locked(self, user: str) -> bool:
        return user in self._held

    def acquire(self, user: str) -> MaildropLock | None:
        """The lock of ``user``'s maildrop, or None when another session holds it."""
        if user in self._held:
            return None
        fd = self._flock(user)
        if fd is False:
            return None

        def release() -> None:
            self._held.pop(user, None)
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                finally:
                    os.close(fd)

        lock = self._held[user] = MaildropLock(user, release)
        return lock

    def _flock(self, user: str) -> int | None | bool:
        """An fd holding the flock; None when there is no folder to lock; False when taken."""
        if self.folder_of is None:
            return None
        folder = self.folder_of(user)
        folder.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        return fd
