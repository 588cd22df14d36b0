"""The per-user index schema, with triggers that keep STATUS counts exact."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

SCHEMA_VERSION = 2
"""1: the first schema. 2: MAILBOXID, save dates, EMAILID, previews (:data:`ADDED_COLUMNS`)."""

SORTDATA_VERSION = 1
"""The rules :mod:`cyrusmail.mime.sortkeys` makes the ``sortdata`` rows by; an index
whose rows were made by other rules (its ``meta`` says) has them dropped when
opened, and each is made again from the MIME cache when next needed."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS mailboxes (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    name           TEXT NOT NULL UNIQUE,
    selectable     INTEGER NOT NULL DEFAULT 1,
    special_use    TEXT,
    objectid       TEXT,  -- MAILBOXID (RFC 8474): kept across RENAME, new when made again
    uidvalidity    INTEGER NOT NULL,
    uidnext        INTEGER NOT NULL DEFAULT 1,
    highestmodseq  INTEGER NOT NULL DEFAULT 1,
    recent_uid     INTEGER NOT NULL DEFAULT 0,
    messages       INTEGER NOT NULL DEFAULT 0,
    unseen         INTEGER NOT NULL DEFAULT 0,
    size           INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS messages (
    mailbox_id    INTEGER NOT NULL,
    uid           INTEGER NOT NULL,
    guid          TEXT NOT NULL,
    size          INTEGER NOT NULL,
    internaldate  REAL NOT NULL,
    flags         INTEGER NOT NULL,
    keywords      TEXT NOT NULL DEFAULT '',
    modseq        INTEGER NOT NULL,
    savedate      REAL,  -- when saved here (RFC 8514); NULL before schema 2: the internal date
    emailid       TEXT,  -- EMAILID (RFC 8474) of a copy: its original's; NULL: the guid
    PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX IF NOT EXISTS messages_modseq ON messages (mailbox_id, modseq);
CREATE TABLE IF NOT EXISTS mime (
    mailbox_id  INTEGER NOT NULL,
    uid         INTEGER NOT NULL,
    cache       BLOB NOT NULL,
    preview     TEXT,  -- RFC 8970 PREVIEW, made with the cache; NULL: not made yet
    PRIMARY KEY (mailbox_id, uid)
);
-- SORT and THREAD keys (cyrusmail.store.records.SortData), made once from the
-- MIME cache; a message without a row gets one the first time a SORT needs it.
CREATE TABLE IF NOT EXISTS sortdata (
    mailbox_id    INTEGER NOT NULL,
    uid           INTEGER NOT NULL,
    sent          REAL,
    subject       TEXT NOT NULL,
    reply         INTEGER NOT NULL,
    from_key      TEXT NOT NULL,
    to_key        TEXT NOT NULL,
    cc_key        TEXT NOT NULL,
    display_from  TEXT NOT NULL,
    display_to    TEXT NOT NULL,
    message_id    TEXT,
    refs          TEXT NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
);
CREATE TABLE IF NOT EXISTS expunged (
    mailbox_id  INTEGER NOT NULL,
    uid         INTEGER NOT NULL,
    modseq      INTEGER NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX IF NOT EXISTS expunged_modseq ON expunged (mailbox_id, modseq);
-- How far back a mailbox's expunged table reaches (QRESYNC, RFC 7162 3.2.5):
-- rows of modseq <= floor were purged, so it answers exactly "what was expunged
-- after modseq m" only for m >= floor; rows counts what is kept.
CREATE TABLE IF NOT EXISTS expunged_floor (
    mailbox_id  INTEGER PRIMARY KEY,
    floor       INTEGER NOT NULL,
    rows        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS subscriptions (
    name  TEXT PRIMARY KEY
);
-- A mailbox's ACL (RFC 4314) as JSON {identifier: rights}; no row: the default ACL.
CREATE TABLE IF NOT EXISTS acls (
    mailbox_id  INTEGER PRIMARY KEY,
    entries     TEXT NOT NULL
);
-- Quota limits (RFC 9208) of the roots in this index: '' is the whole tree,
-- 'news' covers news and news/... (the deepest root covering a name wins).
CREATE TABLE IF NOT EXISTS quota_limits (
    root      TEXT NOT NULL,
    resource  TEXT NOT NULL,
    value     INTEGER NOT NULL,
    PRIMARY KEY (root, resource)
);
-- This user's own Seen flags on mailboxes of another tree (shared folders).
CREATE TABLE IF NOT EXISTS private_seen (
    owner        TEXT NOT NULL,
    mailbox_id   INTEGER NOT NULL,
    uidvalidity  INTEGER NOT NULL,
    uid          INTEGER NOT NULL,
    PRIMARY KEY (owner, mailbox_id, uid)
);

CREATE TRIGGER IF NOT EXISTS count_insert AFTER INSERT ON messages BEGIN
    UPDATE mailboxes SET messages = messages + 1,
        unseen = unseen + ((NEW.flags & 1) = 0),
        size = size + NEW.size
    WHERE id = NEW.mailbox_id;
END;
CREATE TRIGGER IF NOT EXISTS count_delete AFTER DELETE ON messages BEGIN
    UPDATE mailboxes SET messages = messages - 1,
        unseen = unseen - ((OLD.flags & 1) = 0),
        size = size - OLD.size
    WHERE id = OLD.mailbox_id;
END;
CREATE TRIGGER IF NOT EXISTS sortdata_delete AFTER DELETE ON messages BEGIN
    DELETE FROM sortdata WHERE mailbox_id = OLD.mailbox_id AND uid = OLD.uid;
END;
CREATE TRIGGER IF NOT EXISTS count_flags AFTER UPDATE OF flags ON messages
WHEN (OLD.flags & 1) != (NEW.flags & 1) BEGIN
    UPDATE mailboxes SET unseen = unseen + ((NEW.flags & 1) = 0) - ((OLD.flags & 1) = 0)
    WHERE id = NEW.mailbox_id;
END;
"""

ADDED_COLUMNS = (
    ("mailboxes", "objectid", "TEXT"),
    ("messages", "savedate", "REAL"),
    ("messages", "emailid", "TEXT"),
    ("mime", "preview", "TEXT"),
)
"""Columns :data:`SCHEMA` has that an index made by schema 1 lacks: ``(table, column, type)``."""


def migrate(db: sqlite3.Connection, new_mailbox_id: Callable[[], str]) -> None:
    """Bring an index of an older schema up to :data:`SCHEMA_VERSION` (inside a write).

    Missing columns are added empty (NULL save dates, EMAILIDs and previews
    read as described above); every mailbox without a MAILBOXID gets one.
    Idempotent, and cheap on a current index.
    """
    for table, column, kind in ADDED_COLUMNS:
        present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    for (mailbox_id,) in db.execute("SELECT id FROM mailboxes WHERE objectid IS NULL").fetchall():
        db.execute("UPDATE mailboxes SET objectid = ? WHERE id = ?", (new_mailbox_id(), mailbox_id))
    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
