"""``cyrusmail-admin queue list|flush|delete ID``: look at and steer the outbound queue.

The admin works on the spool files the server keeps (``<data>/queue/``;
see :mod:`cyrusmail.delivery.queue`), never through the server:

* ``list`` reads every envelope: id, sender, each recipient and its state,
  the next attempt and the last error;
* ``flush`` leaves a ``flush`` file that the running server's queue runner
  picks up within a few seconds, making every message due at once;
* ``delete ID`` removes a message and its envelope; the runner drops it at
  its next look (an attempt already under way may still deliver it).

On the PostgreSQL store (``[store] backend = postgresql``) the queue is the
database's, shared by every server, and the admin of any server works on it
there: ``list`` reads the rows, ``flush`` makes every row due (and wakes the
runners with NOTIFY), ``delete`` removes the row.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from cyrusmail.delivery.queue import FLUSH_FILE, POLL_INTERVAL
from cyrusmail.delivery.spool import open_spool
from cyrusmail.private_files import PRIVATE_FILE, PRIVATE_FOLDER
from cyrusmail.store.maildir.files import fsync_dir, unlink_quietly

_ID = re.compile(r"[0-9A-Za-z]{1,64}")


def spool_of(admin) -> Path:
    return Path(admin.config.data) / "queue"


def shared_spool(admin):
    """The PostgreSQL store's shared queue, or None for the data folder's spool."""
    spool = open_spool(admin.config, lambda: admin.store)
    return spool if spool.shared else None


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _envelopes(admin):
    shared = shared_spool(admin)
    if shared is not None:
        yield from (entry.to_json() for entry in shared.listing({}))
        return
    spool = spool_of(admin)
    for path in sorted(spool.glob("*.json")) if spool.is_dir() else []:
        try:
            yield json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            continue  # removed or being replaced meanwhile


def queue_list(admin, args) -> None:
    count = 0
    for entry in _envelopes(admin):
        count += 1
        sender = entry.get("sender") or ""
        admin.say(f"{entry['id']}  <{sender}>  {entry.get('size', 0)} bytes  queued {_when(entry['arrival'])}"
                  f"  next attempt {_when(entry['next_attempt'])}  attempts {entry.get('attempts', 0)}")
        for recipient in entry["recipients"]:
            detail = f"  {recipient['diagnostic']}" if recipient.get("diagnostic") else ""
            admin.say(f"    {recipient['state']:<9} <{recipient['address']}>{detail}")
        if entry.get("last_error"):
            admin.say(f"    last error: {entry['last_error']}")
    admin.say(f"{count} messages in the queue")


def queue_flush(admin, args) -> None:
    shared = shared_spool(admin)
    if shared is not None:
        shared.flush({}, time.time())
        admin.say("flush requested: every server's queue runner retries every queued message now")
        return
    spool = spool_of(admin)
    spool.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
    (spool / FLUSH_FILE).touch(mode=PRIVATE_FILE)
    admin.say(f"flush requested: the running server retries every queued message within {POLL_INTERVAL:g} s")


def queue_delete(admin, args) -> None:
    from cyrusmail.admin.main import AdminError

    if not _ID.fullmatch(args.id):
        raise AdminError(f"not a queue id: {args.id!r}")
    shared = shared_spool(admin)
    if shared is not None:
        if not shared.delete(args.id):
            raise AdminError(f"no queued message {args.id}")
        admin.say(f"queued message {args.id} deleted")
        return
    spool = spool_of(admin)
    envelope, message = spool / f"{args.id}.json", spool / f"{args.id}.msg"
    if not envelope.exists():
        raise AdminError(f"no queued message {args.id}")
    unlink_quietly(envelope)
    unlink_quietly(message)
    fsync_dir(spool)
    admin.say(f"queued message {args.id} deleted")


def add_commands(commands, command) -> None:
    """Add ``queue list|flush|delete`` to the admin's command parser."""
    queue = commands.add_parser("queue", help="list, flush and delete queued outbound mail").add_subparsers(
        dest="action", required=True)
    command(queue, "list", queue_list, "list queued messages and their recipients")
    command(queue, "flush", queue_flush, "retry every queued message now")
    command(queue, "delete", queue_delete, "delete a queued message").add_argument("id")
