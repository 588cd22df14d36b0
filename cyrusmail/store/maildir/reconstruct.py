"""Rebuild a user's index from the message files, as Cyrus's ``reconstruct``.

The files are the truth: each mailbox folder's ``mailbox.json`` names the
mailbox and its UIDVALIDITY, and each message file is named ``<uid>.<guid>``.
Whatever the old index still knows (flags, keywords, internal dates, MIME
caches, subscriptions) is kept; what it lost is rebuilt; rows whose file is
gone are dropped. An index that SQLite cannot open is set aside and rebuilt.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from cyrusmail.private_files import PRIVATE_FOLDER
from cyrusmail.store.maildir.files import unlink_quietly
from cyrusmail.store.maildir.index import new_mailbox_id
from cyrusmail.store.maildir.store import (
    _SORT_COLUMNS,
    MaildirStore,
    _analyse_file,
    _sort_row,
    message_file_name,
)
from cyrusmail.store.names import superiors, user_name


@dataclass
class Report:
    """What reconstruct found and fixed, one line each."""

    fixes: list[str] = field(default_factory=list)
    mailboxes: int = 0
    messages: int = 0

    def fix(self, text: str) -> None:
        self.fixes.append(text)


def _parse_file_name(name: str) -> tuple[int, str] | None:
    uid, dot, guid = name.partition(".")
    if not dot or not uid.isdigit() or not guid or not all(c in "0123456789abcdef" for c in guid):
        return None
    return int(uid), guid


def _open_index(store: MaildirStore, user: str, report: Report):
    """The user's index, set aside and started anew if it is unreadable."""
    path = store.user_dir(user) / "index.sqlite"
    if path.exists():
        try:
            probe = sqlite3.connect(path)
            ok = probe.execute("PRAGMA quick_check").fetchone()[0] == "ok"
            probe.close()
        except sqlite3.DatabaseError:
            ok = False
        if not ok:
            aside = path.with_name(f"index.sqlite.broken-{int(time.time())}")
            os.rename(path, aside)
            for suffix in ("-wal", "-shm"):
                unlink_quietly(path.with_name(path.name + suffix))
            report.fix(f"index was unreadable; set aside as {aside.name} and rebuilt")
    elif (store.user_dir(user) / "mail").exists():
        report.fix("index was missing; rebuilt from the message files")
    return store.index(user, create=True)


def reconstruct(store: MaildirStore, user: str) -> Report:
    user = user_name(user)
    report = Report()
    index = _open_index(store, user, report)
    mail_dir = store.user_dir(user) / "mail"
    mail_dir.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
    with index.write() as db:
        known = {row[0]: row for row in db.execute("SELECT id, name, uidvalidity, uidnext FROM mailboxes")}
        on_disk = {}
        for folder in sorted(mail_dir.iterdir()):
            if not folder.is_dir() or not folder.name.isdigit():
                continue
            try:
                header = json.loads((folder / "mailbox.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                header = None
            on_disk[int(folder.name)] = (folder, header)
        for mailbox_id, (folder, header) in on_disk.items():
            if mailbox_id not in known:
                if header is None:
                    report.fix(f"folder {folder.name} has no readable mailbox.json; left alone")
                    continue
                name = header["name"]
                clash = db.execute("SELECT id FROM mailboxes WHERE name = ?", (name,)).fetchone()
                if clash:
                    name = f"{name}-recovered-{mailbox_id}"
                db.execute(
                    "INSERT INTO mailboxes (id, name, uidvalidity, special_use, objectid) VALUES (?, ?, ?, ?, ?)",
                    (mailbox_id, name, header["uidvalidity"], header.get("special_use"),
                     header.get("objectid") or new_mailbox_id()),
                )
                report.fix(f"mailbox {name} was missing from the index; restored")
            _reconstruct_mailbox(store, db, mailbox_id, folder, report)
            report.mailboxes += 1
        for mailbox_id, (_, name, *_rest) in known.items():
            selectable = db.execute("SELECT selectable FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()[0]
            if mailbox_id not in on_disk and selectable:
                for table in ("messages", "mime", "expunged"):
                    db.execute(f"DELETE FROM {table} WHERE mailbox_id = ?", (mailbox_id,))
                (mail_dir / str(mailbox_id)).mkdir(mode=PRIVATE_FOLDER)
                report.fix(f"mailbox {name} had no folder; its index entries were dropped")
        _restore_superiors(index, db, report)
        meta = db.execute("SELECT max(uidvalidity) FROM mailboxes").fetchone()[0] or 0
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('uidvalidity', max(?, "
                   "coalesce((SELECT value FROM meta WHERE key = 'uidvalidity'), 0)))", (meta,))
    return report


def _restore_superiors(index, db, report: Report) -> None:
    """Hierarchy nodes lost with the index come back as \\Noselect names."""
    all_names = {row[0] for row in db.execute("SELECT name FROM mailboxes")}
    for name in sorted(all_names):
        for superior in superiors(name):
            if superior not in all_names:
                db.execute("INSERT INTO mailboxes (name, selectable, uidvalidity, objectid) VALUES (?, 0, ?, ?)",
                           (superior, index.next_uidvalidity(db), new_mailbox_id()))
                all_names.add(superior)
                report.fix(f"hierarchy node {superior} restored as \\Noselect")


def _reconstruct_mailbox(store: MaildirStore, db, mailbox_id: int, folder: Path, report: Report) -> None:
    name, uidnext, highestmodseq = db.execute(
        "SELECT name, uidnext, highestmodseq FROM mailboxes WHERE id = ?", (mailbox_id,)
    ).fetchone()
    rows = {uid: guid for uid, guid in db.execute(
        "SELECT uid, guid FROM messages WHERE mailbox_id = ?", (mailbox_id,))}
    expunged = {row[0] for row in db.execute("SELECT uid FROM expunged WHERE mailbox_id = ?", (mailbox_id,))}
    files: dict[int, tuple[str, Path]] = {}
    for entry in folder.iterdir():
        parsed = _parse_file_name(entry.name)
        if parsed is None:
            continue
        uid, guid = parsed
        if uid in expunged and uid not in rows:
            unlink_quietly(entry)  # an expunge that crashed before removing the file
            report.fix(f"{name}: removed the file of expunged UID {uid}")
            continue
        files[uid] = (guid, entry)
    modseq = highestmodseq + 1
    changed = False
    for uid, guid in sorted(rows.items()):
        if uid not in files or files[uid][0] != guid:
            db.execute("DELETE FROM messages WHERE mailbox_id = ? AND uid = ?", (mailbox_id, uid))
            db.execute("DELETE FROM mime WHERE mailbox_id = ? AND uid = ?", (mailbox_id, uid))
            db.execute("INSERT OR REPLACE INTO expunged (mailbox_id, uid, modseq) VALUES (?, ?, ?)",
                       (mailbox_id, uid, modseq))
            report.fix(f"{name}: UID {uid} had no message file; removed from the index")
            changed = True
    for uid, (guid, path) in sorted(files.items()):
        if rows.get(uid) == guid:
            continue
        size = path.stat().st_size
        db.execute(
            "INSERT INTO messages (mailbox_id, uid, guid, size, internaldate, flags, keywords, modseq)"
            " VALUES (?, ?, ?, ?, ?, 0, '', ?)",
            (mailbox_id, uid, guid, size, path.stat().st_mtime, modseq),
        )
        if store.analyser is not None:
            cache = _analyse_file(path, size, store.analyser)
            if cache is not None:
                db.execute("INSERT OR REPLACE INTO mime (mailbox_id, uid, cache) VALUES (?, ?, ?)",
                           (mailbox_id, uid, cache))
        report.fix(f"{name}: UID {uid} was missing from the index; added")
        changed = True
    _rebuild_caches(store, db, mailbox_id, folder, name, report)
    top_uid = max(files, default=0)
    if top_uid >= uidnext:
        db.execute("UPDATE mailboxes SET uidnext = ? WHERE id = ?", (top_uid + 1, mailbox_id))
        report.fix(f"{name}: UIDNEXT raised from {uidnext} to {top_uid + 1}")
    if changed:
        db.execute("UPDATE mailboxes SET highestmodseq = ? WHERE id = ?", (modseq, mailbox_id))
    counts = db.execute(
        "SELECT count(*), coalesce(sum((flags & 1) = 0), 0), coalesce(sum(size), 0)"
        " FROM messages WHERE mailbox_id = ?", (mailbox_id,)).fetchone()
    stored = db.execute("SELECT messages, unseen, size FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
    if tuple(counts) != tuple(stored):
        db.execute("UPDATE mailboxes SET messages = ?, unseen = ?, size = ? WHERE id = ?", (*counts, mailbox_id))
        if not changed:
            report.fix(f"{name}: message counts corrected")
    report.messages += counts[0]


def _rebuild_caches(store: MaildirStore, db, mailbox_id: int, folder: Path, name: str, report: Report) -> None:
    """Every message gets its MIME cache (from its file, if the index lost it) and
    its SORT and THREAD keys made again from that cache."""
    db.execute("DELETE FROM sortdata WHERE mailbox_id = ?", (mailbox_id,))
    rows = db.execute(
        "SELECT m.uid, m.guid, m.size, c.cache FROM messages AS m LEFT JOIN mime AS c"
        " ON c.mailbox_id = m.mailbox_id AND c.uid = m.uid WHERE m.mailbox_id = ? ORDER BY m.uid",
        (mailbox_id,)).fetchall()
    for uid, guid, size, cache in rows:
        if cache is None and store.analyser is not None:
            cache = _analyse_file(folder / message_file_name(uid, guid), size, store.analyser)
            if cache is not None:
                db.execute("INSERT INTO mime (mailbox_id, uid, cache) VALUES (?, ?, ?)", (mailbox_id, uid, cache))
                report.fix(f"{name}: UID {uid} had no MIME cache; rebuilt")
        data = None if cache is None or store.sort_keyer is None else store.sort_keyer(cache)
        if data is not None:
            db.execute(f"INSERT INTO sortdata (mailbox_id, uid, {_SORT_COLUMNS})"
                       " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (mailbox_id, uid, *_sort_row(data)))
