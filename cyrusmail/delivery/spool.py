"""Where the outbound queue keeps its entries: files in the data folder, or the PostgreSQL store's tables.

:class:`cyrusmail.delivery.queue.Queue` keeps its state through one of
these, chosen by :func:`open_spool` from the store:

* :class:`FileSpool` (the embedded store): ``<data>/queue/ID.msg`` and
  ``ID.json`` (see :mod:`cyrusmail.delivery.queue`); one server, and with
  worker processes one runner (worker 0), attempts its entries, so an
  attempt claims nothing;
* :class:`cyrusmail.store.postgresql.queue.PostgresSpool` (``[store]
  backend = postgresql``): the tables every server shares; every server
  runs a runner and an attempt first claims its entry with a lease.

Every method is given the queue's in-memory ``entries`` where the file
spool needs them; times are the queue clock's seconds.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Collection
from pathlib import Path

from cyrusmail import logs
from cyrusmail.private_files import PRIVATE_FOLDER, create_private
from cyrusmail.store.maildir.files import (
    fsync_dir,
    link_or_copy,
    unlink_quietly,
    write_json_atomically,
)

FLUSH_FILE = "flush"


def shared(config) -> bool:
    """Whether the queue is the database's, shared by every server (each runs a runner)."""
    return config["store"]["backend"] == "postgresql"


def open_spool(config, store: Callable[[], object]):
    """The spool of the server configured by ``config``; ``store()`` gives its store when needed."""
    if shared(config):
        return store().outbound_spool(config["queue"]["lease"])
    return FileSpool(Path(config.data) / "queue")


class FileSpool:
    """``ID.msg`` and ``ID.json`` in one server's folder (see :mod:`cyrusmail.delivery.queue`)."""

    #: only this server attempts these entries (with worker processes, one of them)
    shared = False
    #: attempts claim nothing, so hold no lease
    lease: float | None = None

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)

    def _paths(self, entry_id: str) -> tuple[Path, Path]:
        return self.folder / f"{entry_id}.msg", self.folder / f"{entry_id}.json"

    def message_file(self, entry) -> Path:
        return self._paths(entry.id)[0]

    def write(self, entry, message) -> None:
        """Write the entry's two files, durably (any thread: files only): the message, then the envelope."""
        msg_path, json_path = self._paths(entry.id)
        if isinstance(message, (bytes, bytearray)):
            tmp = msg_path.with_name(msg_path.name + ".tmp")
            with create_private(tmp) as out:
                out.write(message)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, msg_path)
        else:
            link_or_copy(Path(message.path), msg_path)
        try:
            write_json_atomically(json_path, entry.to_json())  # fsyncs the folder: both names durable
        except BaseException:
            unlink_quietly(msg_path)
            raise

    def save(self, entry) -> bool:
        json_path = self._paths(entry.id)[1]
        if not json_path.exists():
            return False
        write_json_atomically(json_path, entry.to_json())
        return True

    def remove(self, entry_id: str) -> None:
        msg_path, json_path = self._paths(entry_id)
        unlink_quietly(json_path)  # the envelope first: a lone .msg is cleaned at the next scan
        unlink_quietly(msg_path)
        fsync_dir(self.folder)

    def delete(self, entry_id: str) -> bool:
        existed = self._paths(entry_id)[1].exists()
        self.remove(entry_id)
        return existed

    def load(self, entries: dict, orphan_age: float = 0.0) -> None:
        """Scan the folder into ``entries``: read every envelope, remove what was never acknowledged."""
        from cyrusmail.delivery.queue import QueueEntry

        seen = set()
        cutoff = time.time() - orphan_age

        def orphaned(path: Path) -> bool:
            try:
                return orphan_age <= 0 or path.stat().st_mtime < cutoff
            except FileNotFoundError:
                return False

        for path in sorted(self.folder.iterdir()):
            name = path.name
            if name.endswith((".tmp", ".copying")):
                if orphaned(path):
                    unlink_quietly(path)
            elif name.endswith(".json"):
                entry_id = name[: -len(".json")]
                seen.add(entry_id)
                if entry_id in entries:
                    continue
                message = self.folder / f"{entry_id}.msg"
                try:
                    entry = QueueEntry.from_json(json.loads(path.read_text("utf-8")))
                except (OSError, ValueError, TypeError, KeyError):
                    logs.log.error("queue: unreadable envelope {name}; left in place", name=name)
                    continue
                if not message.exists():
                    logs.log.error("queue: {id} has no message file; dropped", id=entry_id)
                    unlink_quietly(path)
                    continue
                entries[entry_id] = entry
        for path in self.folder.glob("*.msg"):
            entry_id = path.name[: -len(".msg")]
            if entry_id not in seen and entry_id not in entries and orphaned(path):
                unlink_quietly(path)  # written, but the envelope never was: not acknowledged
        for entry_id in list(entries):
            if entry_id not in seen and not self._paths(entry_id)[1].exists():
                del entries[entry_id]  # deleted by the admin

    def flush(self, entries: dict, now: float) -> None:
        for entry in list(entries.values()):
            entry.next_attempt = now
            self.save(entry)

    def take_flush(self) -> bool:
        """Whether the admin asked for a flush (its ``flush`` file, removed here)."""
        flush = self.folder / FLUSH_FILE
        if not flush.exists():
            return False
        unlink_quietly(flush)
        return True

    def claim_due(self, entries: dict, now: float, limit: int, busy: Collection[str]) -> list:
        due = sorted((e for e in entries.values() if e.next_attempt <= now and e.id not in busy),
                     key=lambda e: e.next_attempt)
        return due[:limit]

    def next_due(self, entries: dict, busy: Collection[str]) -> float | None:
        return min((e.next_attempt for e in entries.values() if e.id not in busy), default=None)

    def claim(self, entry, now: float) -> bool:
        return True

    def renew(self, entry_id: str, now: float) -> None:
        pass

    def release(self, entry) -> None:
        pass

    def listing(self, entries: dict) -> list:
        return sorted(entries.values(), key=lambda e: e.arrival)

    def watch(self, wake: Callable[[], None]) -> None:
        pass

    def unwatch(self, wake: Callable[[], None]) -> None:
        pass
