"""Durable file operations: write, fsync, rename, fsync the folder; every file made 0600."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cyrusmail.private_files import create_private


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (new names, removed names) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomically(path: Path, value: object) -> None:
    """Replace ``path`` with ``value`` as JSON, never leaving half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with create_private(tmp, "w") as out:
        json.dump(value, out, sort_keys=True)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def link_or_copy(source: Path, dest: Path) -> None:
    """Give ``dest`` the bytes of ``source``: a hard link, else a durable copy."""
    try:
        os.link(source, dest)
        return
    except OSError:
        pass
    tmp = dest.with_name(dest.name + ".copying")
    with open(source, "rb") as src, create_private(tmp) as out:
        while chunk := src.read(1 << 20):
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, dest)


def unlink_quietly(path: Path) -> None:
    """Remove ``path`` if it is there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
