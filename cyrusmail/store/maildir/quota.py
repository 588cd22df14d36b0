"""Quota limits checked inside the index's write transactions (RFC 9208 resources).

Usage is never stored: it is the sum of the per-mailbox counters the
triggers keep exact (``mailboxes.size``, ``mailboxes.messages``) over the
mailboxes a root covers, read in the same ``BEGIN IMMEDIATE`` transaction
that inserts. Two deliveries racing for the last kilobyte are serialized
by SQLite, so the second one sees the first and is refused; usage cannot
drift from the messages because it is derived from them.

A root is a name prefix within one index: ``""`` covers the whole tree (a
user's root), ``"news"`` covers ``news`` and ``news/...``. A mailbox counts
towards the deepest root covering it, as in Cyrus.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from cyrusmail.store.errors import OverQuota

STORAGE, MESSAGE, MAILBOX = "STORAGE", "MESSAGE", "MAILBOX"
RESOURCES = (STORAGE, MESSAGE, MAILBOX)
KIB = 1024


@dataclass(frozen=True)
class Usage:
    """What a root holds: bytes of messages, messages, selectable mailboxes."""

    storage_bytes: int = 0
    messages: int = 0
    mailboxes: int = 0

    def of(self, resource: str) -> int:
        """Usage in the resource's own unit (STORAGE in KiB, rounded up)."""
        if resource == STORAGE:
            return -(-self.storage_bytes // KIB)
        return self.messages if resource == MESSAGE else self.mailboxes


def covers(root: str, name: str) -> bool:
    return root == "" or name == root or name.startswith(root + "/")


def root_of(name: str, roots: Iterable[str]) -> str | None:
    """The deepest root covering ``name``, or None."""
    best = None
    for root in roots:
        if covers(root, name) and (best is None or len(root) > len(best)):
            best = root
    return best


def limits(db: sqlite3.Connection) -> dict[str, dict[str, int]]:
    """Every root of this index with its limits: {root: {resource: limit}}."""
    found: dict[str, dict[str, int]] = {}
    for root, resource, value in db.execute("SELECT root, resource, value FROM quota_limits"):
        found.setdefault(root, {})[resource] = value
    return found


def set_limits(db: sqlite3.Connection, root: str, values: dict[str, int]) -> None:
    """Replace the limits of ``root`` (an empty dict removes the root)."""
    db.execute("DELETE FROM quota_limits WHERE root = ?", (root,))
    for resource, value in values.items():
        db.execute("INSERT INTO quota_limits (root, resource, value) VALUES (?, ?, ?)", (root, resource, value))


def usage(db: sqlite3.Connection, root: str, roots: Iterable[str] | None = None) -> Usage:
    """The usage of ``root``, less what deeper roots cover."""
    roots = set(limits(db)) | {root} if roots is None else set(roots) | {root}
    if roots == {""}:
        row = db.execute(
            "SELECT coalesce(sum(size), 0), coalesce(sum(messages), 0), coalesce(sum(selectable), 0)"
            " FROM mailboxes"
        ).fetchone()
        return Usage(*row)
    size = messages = mailboxes = 0
    for name, box_size, box_messages, selectable in db.execute(
        "SELECT name, size, messages, selectable FROM mailboxes"
    ):
        if root_of(name, roots) == root:
            size, messages, mailboxes = size + box_size, messages + box_messages, mailboxes + selectable
    return Usage(size, messages, mailboxes)


def _refuse(root: str, resource: str, permanent: bool) -> OverQuota:
    where = f"quota root {root!r}" if root else "the account's quota"
    return OverQuota(f"Over {where}: {resource} limit reached", permanent=permanent)


def check_insert(db: sqlite3.Connection, mailbox_id: int, sizes: list[int],
                 credit: tuple[int, list[int]] | None = None) -> None:
    """Refuse adding messages of ``sizes`` to the mailbox if a limit would be passed.

    ``credit`` is (source mailbox id, UIDs) of messages a MOVE within this
    index removes right after; they count as gone when both mailboxes share
    the root. The message that alone exceeds a limit is refused for good.
    """
    all_limits = limits(db)
    if not all_limits:
        return
    (name,) = db.execute("SELECT name FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
    root = root_of(name, all_limits)
    if root is None:
        return
    root_limits = all_limits[root]
    storage = root_limits.get(STORAGE)
    message = root_limits.get(MESSAGE)
    if storage is not None and any(size > storage * KIB for size in sizes):
        raise _refuse(root, STORAGE, permanent=True)
    if message is not None and message < 1:
        raise _refuse(root, MESSAGE, permanent=True)
    now = usage(db, root, all_limits)
    added_bytes, added_messages = sum(sizes), len(sizes)
    if credit is not None:
        source_id, uids = credit
        source = db.execute("SELECT name FROM mailboxes WHERE id = ?", (source_id,)).fetchone()
        if source is not None and root_of(source[0], all_limits) == root:
            freed_messages, freed_bytes = _sizes(db, source_id, uids)
            added_bytes -= freed_bytes
            added_messages -= freed_messages
    if storage is not None and added_bytes > 0 and now.storage_bytes + added_bytes > storage * KIB:
        raise _refuse(root, STORAGE, permanent=False)
    if message is not None and added_messages > 0 and now.messages + added_messages > message:
        raise _refuse(root, MESSAGE, permanent=False)


def _sizes(db: sqlite3.Connection, mailbox_id: int, uids: list[int]) -> tuple[int, int]:
    count = total = 0
    for start in range(0, len(uids), 500):
        batch = uids[start:start + 500]
        marks = ",".join("?" * len(batch))
        found, size = db.execute(
            f"SELECT count(*), coalesce(sum(size), 0) FROM messages WHERE mailbox_id = ? AND uid IN ({marks})",
            (mailbox_id, *batch),
        ).fetchone()
        count, total = count + found, total + size
    return count, total


def check_new_mailboxes(db: sqlite3.Connection, names: list[str]) -> None:
    """Refuse creating the selectable mailboxes ``names`` past a MAILBOX limit."""
    all_limits = limits(db)
    if not all_limits or not names:
        return
    per_root: dict[str, int] = {}
    for name in names:
        root = root_of(name, all_limits)
        if root is not None and MAILBOX in all_limits[root]:
            per_root[root] = per_root.get(root, 0) + 1
    for root, count in per_root.items():
        if usage(db, root, all_limits).mailboxes + count > all_limits[root][MAILBOX]:
            raise _refuse(root, MAILBOX, permanent=False)


def check_moved(db: sqlite3.Connection, moved: list[tuple[str, str]], roots_before: Iterable[str],
                old: str, new: str) -> None:
    """After renaming ``old`` to ``new`` in this transaction: refuse if a root it moved into is now over.

    ``moved`` is (old name, new name) of every renamed mailbox, and
    ``roots_before`` the roots as they were (a root at or below ``old``
    follows it). Only roots that gained mailboxes from another root are
    checked, so a rename within a root an admin has squeezed still works.
    """
    all_limits = limits(db)
    if not all_limits:
        return

    def followed(root: str | None) -> str | None:
        return new + root[len(old):] if root is not None and covers(old, root) and root != "" else root

    roots_before = list(roots_before)
    gaining = set()
    for before_name, after_name in moved:
        after = root_of(after_name, all_limits)
        if after is not None and followed(root_of(before_name, roots_before)) != after:
            gaining.add(after)
    for root in gaining:
        now = usage(db, root, all_limits)
        for resource, limit in all_limits[root].items():
            over = now.storage_bytes > limit * KIB if resource == STORAGE else now.of(resource) > limit
            if over:
                raise _refuse(root, resource, permanent=False)


def rename_roots(db: sqlite3.Connection, old: str, new: str) -> None:
    """Quota roots at or below a renamed mailbox follow it."""
    prefix = old + "/"
    for (root,) in db.execute("SELECT DISTINCT root FROM quota_limits").fetchall():
        if root == old or root.startswith(prefix):
            db.execute("UPDATE quota_limits SET root = ? WHERE root = ?", (new + root[len(old):], root))
