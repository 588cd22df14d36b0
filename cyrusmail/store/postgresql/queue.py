"""The outbound queue's spool on PostgreSQL, shared by every server on the database.

One row of ``queue`` per queued message: its envelope (``QueueEntry.to_json``,
as the file spool's ``ID.json``), its message in ``blobs`` (one reference,
as a mailbox message holds: a message queued for a remote recipient and
stored for a local one is kept once), and its claim.  Enqueueing commits
the row before the 250, and ``NOTIFY`` at the commit wakes every server's
runner; each also polls.

Claims.  Every server runs a queue runner.  An attempt first claims its
row: the runner takes due rows with ``FOR UPDATE SKIP LOCKED`` (so two
runners asking at once take different rows, never wait) and sets
``claimed_by`` to itself and ``claimed_until`` to now plus the lease; a row
claimed by another server is skipped until its lease has expired.  While
the attempt runs the claim is renewed every third of the lease, so an
attempt outlasting the lease (several hosts, SMTP timeouts of 5 and 10
minutes) keeps it; at the end it is released.  A server killed
mid-attempt renews nothing: once its lease has run out another server's
runner claims the message and attempts its recipients still pending.
Every result is saved only while the claim is this server's: one whose
claim was taken over stops.  Times are the queue clock's seconds (the
servers' clocks are assumed in step to well within the lease).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
from collections.abc import Callable, Collection
from pathlib import Path

from cyrusmail import logs
from cyrusmail.private_files import create_private
from cyrusmail.store.maildir.files import unlink_quietly
from cyrusmail.store.postgresql.blobs import CHUNK

#: the payload (after the store's token) of a NOTIFY that tells the runners of new mail
QUEUE_NEWS = "queue"


class PostgresSpool:
    """The ``queue`` table of a :class:`~cyrusmail.store.postgresql.store.PostgresStore`."""

    shared = True

    def __init__(self, store, lease: float) -> None:
        self.store = store
        self.lease = float(lease)
        #: who holds a claim: this server, process and queue
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"

    # -- messages -----------------------------------------------------------------------

    def message_file(self, entry) -> Path:
        """The claimed entry's message as a file of the staging folder (made at the claim;
        removed at the release, else by the store's sweep of stale staging files)."""
        return self._message_file(entry.id)

    def _message_file(self, entry_id: str) -> Path:
        return self.store.tmp_dir / f"queue-{entry_id}-{self.owner.rpartition(':')[2]}.msg"

    def _fetch_message(self, entry, blob: str) -> None:
        path = self.message_file(entry)
        if path.exists():
            return
        source = self.store.blobs.open_blob(self.store.db, blob)
        tmp = path.with_name(path.name + ".tmp")
        with create_private(tmp) as out:
            if source is not None:
                with source:
                    shutil.copyfileobj(source, out, CHUNK)
        os.replace(tmp, path)

    # -- writing ------------------------------------------------------------------------

    def write(self, entry, message) -> None:
        """Store the entry and its message in one transaction, committed (durable) on return."""
        if isinstance(message, (bytes, bytearray)):  # a report the queue made: staged first, as mail is
            staged = self.store.tmp_dir / f"queue-{entry.id}.new"
            with create_private(staged) as out:
                out.write(message)
            try:
                body = self.store.blobs.prepare(staged)
            finally:
                unlink_quietly(staged)
        else:
            body = self.store.blobs.prepare(message.path)
        try:
            with self.store.write() as db:
                self.store.blobs.add(db, body)  # where [store] blobs keeps bodies, durable before the COMMIT
                db.execute("INSERT INTO queue (id, blob, envelope, arrival, next_attempt)"
                           " VALUES (%s, %s, %s, %s, %s)",
                           (entry.id, body.sha, _envelope(entry), entry.arrival, entry.next_attempt))
                self._news(db)
        finally:
            self.store.blobs.discard(body)

    def _news(self, db) -> None:
        db.execute("SELECT pg_notify(%s, %s)", (self.store.channel, f"{self.store.token} {QUEUE_NEWS}"))

    def save(self, entry) -> bool:
        """Record the entry while this spool holds its claim; False if it is gone or another has it."""
        with self.store.write() as db:
            done = db.execute("UPDATE queue SET envelope = %s, next_attempt = %s WHERE id = %s AND claimed_by = %s",
                              (_envelope(entry), entry.next_attempt, entry.id, self.owner)).rowcount
        if not done:
            logs.log.warn("queue: {id} was deleted or taken over by another server; this attempt stops",
                          id=entry.id)
        return bool(done)

    def remove(self, entry_id: str) -> None:
        """Drop a finished entry this spool holds (one another server took over stays)."""
        self._delete(entry_id, "AND claimed_by = %s", (self.owner,))

    def delete(self, entry_id: str) -> bool:
        """The admin's delete, whoever holds the entry (an attempt under way stops at its next save)."""
        return self._delete(entry_id, "", ())

    def _delete(self, entry_id: str, condition: str, params: tuple) -> bool:
        with self.store.write() as db:
            rows = db.execute(f"DELETE FROM queue WHERE id = %s {condition} RETURNING blob",
                              (entry_id, *params)).fetchall()
            if rows:
                self.store.release_blobs(db, "SELECT unnest(%s::text[]) AS blob", ([blob for (blob,) in rows],))
        return bool(rows)

    def flush(self, entries: dict, now: float) -> None:
        """Every message of every server due now."""
        for entry in entries.values():
            entry.next_attempt = min(entry.next_attempt, now)
        with self.store.write() as db:
            db.execute("UPDATE queue SET next_attempt = %s WHERE next_attempt > %s", (now, now))
            self._news(db)

    def take_flush(self) -> bool:
        return False  # the admin's flush is an UPDATE every runner sees

    # -- claims ---------------------------------------------------------------------------

    def claim(self, entry, now: float) -> bool:
        """Claim ``entry`` for an attempt unless another server holds it; refreshed from its row."""
        with self.store.write() as db:
            row = db.execute(
                "UPDATE queue SET claimed_by = %s, claimed_until = %s WHERE id = %s"
                " AND (claimed_by IS NULL OR claimed_by = %s OR claimed_until < %s)"
                " RETURNING id, envelope, next_attempt, blob",
                (self.owner, now + self.lease, entry.id, self.owner, now)).fetchone()
        if row is None:
            return False
        fresh = _entry(row)
        for name, value in vars(fresh).items():
            setattr(entry, name, value)
        self._fetch_message(entry, row[3])
        return True

    def claim_due(self, entries: dict, now: float, limit: int, busy: Collection[str]) -> list:
        """Claim up to ``limit`` due rows no runner holds (or whose lease ran out), oldest due first."""
        with self.store.write() as db:
            rows = db.execute(
                "UPDATE queue SET claimed_by = %s, claimed_until = %s WHERE id IN ("
                " SELECT id FROM queue WHERE next_attempt <= %s AND (claimed_by IS NULL OR claimed_until < %s)"
                " AND NOT id = ANY(%s) ORDER BY next_attempt LIMIT %s FOR UPDATE SKIP LOCKED)"
                " RETURNING id, envelope, next_attempt, blob",
                (self.owner, now + self.lease, now, now, sorted(busy), limit)).fetchall()
        claimed = []
        for row in sorted(rows, key=lambda row: row[2]):
            entry = _entry(row)
            self._fetch_message(entry, row[3])
            claimed.append(entry)
        return claimed

    def renew(self, entry_id: str, now: float) -> None:
        with self.store.write() as db:
            db.execute("UPDATE queue SET claimed_until = %s WHERE id = %s AND claimed_by = %s",
                       (now + self.lease, entry_id, self.owner))
        try:
            os.utime(self._message_file(entry_id))  # in use: not a stale staging file
        except FileNotFoundError:
            pass

    def release(self, entry) -> None:
        try:
            with self.store.write() as db:
                db.execute("UPDATE queue SET claimed_by = NULL, claimed_until = 0 WHERE id = %s AND claimed_by = %s",
                           (entry.id, self.owner))
        finally:
            unlink_quietly(self.message_file(entry))

    def next_due(self, entries: dict, busy: Collection[str]) -> float | None:
        """When a row not in ``busy`` is next due, or its claim runs out."""
        (when,) = self.store.db.execute(
            "SELECT min(CASE WHEN claimed_by IS NULL THEN next_attempt ELSE greatest(next_attempt, claimed_until)"
            " END) FROM queue WHERE NOT id = ANY(%s)", (sorted(busy),)).fetchone()
        return when

    # -- reading ------------------------------------------------------------------------

    def load(self, entries: dict, orphan_age: float = 0.0) -> None:
        """Every row into ``entries`` (what this process knows of the queue; attempts claim afresh)."""
        rows = self.store.db.execute("SELECT id, envelope, next_attempt FROM queue").fetchall()
        found = {row[0]: row for row in rows}
        for entry_id in list(entries):
            if entry_id not in found:
                del entries[entry_id]
        for entry_id, row in found.items():
            entries.setdefault(entry_id, _entry(row))

    def listing(self, entries: dict) -> list:
        rows = self.store.db.execute("SELECT id, envelope, next_attempt FROM queue ORDER BY arrival, id").fetchall()
        return [_entry(row) for row in rows]

    def watch(self, wake: Callable[[], None]) -> None:
        self.store.queue_watchers.append(wake)

    def unwatch(self, wake: Callable[[], None]) -> None:
        if wake in self.store.queue_watchers:
            self.store.queue_watchers.remove(wake)


def _envelope(entry) -> str:
    return json.dumps(entry.to_json())


def _entry(row):
    """The entry of a row ``(id, envelope, next_attempt, ...)``: the column is what flush sets."""
    from cyrusmail.delivery.queue import QueueEntry  # late: the store needs no queue

    entry = QueueEntry.from_json(json.loads(row[1]))
    entry.next_attempt = row[2]
    return entry
