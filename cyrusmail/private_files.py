"""Files and folders only the server's user may read: files 0600, folders 0700.

The server and ``cyrusmail-admin`` set the umask to 077 as they start, and
every file and folder of the data folder is also made with these modes, so
that what holds mail and password hashes never depends on the shell's umask.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_UMASK = 0o077
PRIVATE_FILE = 0o600
PRIVATE_FOLDER = 0o700


def create_private(path: Path | str, mode: str = "wb"):
    """Open ``path`` for writing (made 0600 if new), as ``open(path, mode)`` would."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, PRIVATE_FILE)
    return os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8")


def make_private_folder(path: Path) -> None:
    """Make ``path`` (0700), or take group and other rights away from the one there."""
    path.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(PRIVATE_FOLDER)
