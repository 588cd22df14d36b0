"""Portable archives of mailboxes: ``cyrusmail-admin backup`` and ``restore``, and mailboxes kept for undelete.

An archive is a maildir per mailbox plus one manifest, either in a tar file
(``.tar``, or ``.tar.gz``/``.tgz``: gzip) or unpacked in a folder:

``cyrusmail-archive.json``
    ``{"format": "cyrusmail-archive", "version": 1, "user", "created",
    "mailboxes": [...]}``; each mailbox: ``name``, ``folder`` (its maildir
    in the archive), ``uidvalidity``, ``uidnext``, ``highestmodseq``,
    ``special_use``, ``subscribed``, ``acl``, and ``messages``: ``uid``,
    ``file``, ``flags`` (IMAP names), ``keywords``, ``internaldate``.
``mailboxes/N/cur/UID.GUID:2,FLAGS``
    each message's bytes as stored (CRLF), named as maildir does: the
    system flags in the name (``D`` draft, ``F`` flagged, ``R`` answered,
    ``S`` seen, ``T`` deleted), so any maildir reader, our ``import``
    included, finds the messages with their flags even without the
    manifest. The file's time is the internal date.

Nothing in it depends on the server's index: a restore rebuilds every index
row (UIDs, UIDVALIDITY, flags, keywords, internal dates, the MIME and SORT
caches) from the archive alone, so an archive survives the loss of the
index, and a restore is the way back after one. The manifest is written
last: an archive without it is incomplete, and a restore refuses it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cyrusmail.private_files import PRIVATE_FOLDER, create_private
from cyrusmail.store import names
from cyrusmail.store.errors import InvalidName, NoSuchMessage, StoreError
from cyrusmail.store.maildir.files import fsync_dir, link_or_copy
from cyrusmail.store.maildir.store import message_file_name
from cyrusmail.store.records import Flag

FORMAT = "cyrusmail-archive"
VERSION = 1
MANIFEST = "cyrusmail-archive.json"
#: Largest manifest read (a million messages' entries fit well within it).
MAX_MANIFEST = 512 * 1024 * 1024
#: Maildir's letters for the system flags, in the order maildir names them (alphabetical).
MAILDIR_LETTERS = ((Flag.DRAFT, "D"), (Flag.FLAGGED, "F"), (Flag.ANSWERED, "R"), (Flag.SEEN, "S"),
                   (Flag.DELETED, "T"))
FLAG_NAMES = {Flag.SEEN: "\\Seen", Flag.ANSWERED: "\\Answered", Flag.FLAGGED: "\\Flagged",
              Flag.DELETED: "\\Deleted", Flag.DRAFT: "\\Draft"}
_BY_NAME = {name.lower(): flag for flag, name in FLAG_NAMES.items()}


class ArchiveError(StoreError):
    """An archive that cannot be read or used: its problem in one line."""


def maildir_file(uid: int, guid: str, flags: Flag) -> str:
    return f"{uid}.{guid}:2," + "".join(letter for flag, letter in MAILDIR_LETTERS if flags & flag)


# -- writing ---------------------------------------------------------------------------


class FolderWriter:
    """Writes an archive unpacked in a new folder, hard-linking message files where it can."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(mode=PRIVATE_FOLDER)

    def add_file(self, name: str, source: Path, mtime: float) -> None:
        dest = self.path / name
        dest.parent.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
        link_or_copy(source, dest)

    def finish(self, manifest: bytes) -> None:
        with create_private(self.path / MANIFEST) as out:
            out.write(manifest)
            out.flush()
            os.fsync(out.fileno())
        fsync_dir(self.path)


class TarWriter:
    """Writes an archive as a tar file (gzip for ``.gz``/``.tgz``), in place only once it is whole."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self.file = create_private(self.partial)
        compressed = path.name.endswith((".gz", ".tgz"))
        self.tar = tarfile.open(  # noqa: SIM115 -- closed by finish() or abandon()
            fileobj=self.file, mode="w:gz" if compressed else "w", format=tarfile.PAX_FORMAT)

    def add_file(self, name: str, source: Path | BinaryIO, mtime: float) -> None:
        """``source``: a message file, or a message open as a binary file (closed here)."""
        with source if not isinstance(source, Path) else open(source, "rb") as data:
            info = tarfile.TarInfo(name)
            info.size = data.seek(0, os.SEEK_END)
            data.seek(0)
            info.mtime, info.mode = int(mtime), 0o600
            self.tar.addfile(info, data)

    def finish(self, manifest: bytes) -> None:
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mtime, info.mode = len(manifest), int(time.time()), 0o600
        self.tar.addfile(info, io.BytesIO(manifest))
        self.tar.close()
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.partial, self.path)

    def abandon(self) -> None:
        self.tar.close()
        self.file.close()
        self.partial.unlink(missing_ok=True)


@dataclass
class Mailbox:
    """What an archive says of a mailbox besides its messages."""

    name: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    special_use: str | None
    subscribed: bool
    acl: dict[str, str] | None


@dataclass
class Snapshot(Mailbox):
    """One mailbox to archive: what the index says, read at one moment, and its folder
    (a store without message files: ``open_message(uid)``, a binary file)."""

    records: list
    folder: Path | None
    open_message: Callable[[int], BinaryIO] | None = None


def snapshot(tree, name: str) -> Snapshot:
    """``name`` of ``tree`` as it is now (its records in one read of the index)."""
    mailbox = tree.open(name)
    status = mailbox.status()
    folder = getattr(mailbox, "folder", None)  # the PostgreSQL store's messages are rows, read through open_file
    return Snapshot(name, mailbox.uid_validity, status.uid_next, status.highest_modseq, tree.special_use(name),
                    name in set(tree.subscriptions()), tree.acl(name), mailbox.messages(), folder,
                    None if folder is not None else mailbox.open_file)


def write_archive(user: str, snapshots: Iterable[Snapshot], writer) -> dict:
    """Write each snapshot's messages and then the manifest through ``writer``; the manifest.

    A message whose file is gone by the time it is read (expunged
    meanwhile) is left out.
    """
    entries = []
    for number, mailbox in enumerate(snapshots, 1):
        folder = f"mailboxes/{number}"
        messages = []
        for record in mailbox.records:
            file = f"{folder}/cur/{maildir_file(record.uid, record.guid, record.flags)}"
            try:
                source = (mailbox.folder / message_file_name(record.uid, record.guid) if mailbox.folder is not None
                          else mailbox.open_message(record.uid))
                writer.add_file(file, source, record.internal_date)
            except (FileNotFoundError, NoSuchMessage):
                continue
            messages.append({"uid": record.uid, "file": file, "flags": flag_names(record.flags),
                             "keywords": sorted(record.keywords), "internaldate": record.internal_date})
        entries.append({"name": mailbox.name, "folder": folder, "uidvalidity": mailbox.uidvalidity,
                        "uidnext": mailbox.uidnext, "highestmodseq": mailbox.highestmodseq,
                        "special_use": mailbox.special_use, "subscribed": mailbox.subscribed,
                        "acl": mailbox.acl, "messages": messages})
    manifest = {"format": FORMAT, "version": VERSION, "user": user, "created": time.time(), "mailboxes": entries}
    writer.finish(json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8"))
    return manifest


def flag_names(flags: Flag) -> list[str]:
    return [name for flag, name in FLAG_NAMES.items() if flags & flag]


# -- reading ---------------------------------------------------------------------------


@dataclass
class MessageEntry:
    uid: int
    file: str
    flags: Flag
    keywords: list[str]
    internal_date: float


@dataclass
class MailboxEntry(Mailbox):
    """One mailbox an archive holds, as its manifest says."""

    messages: list[MessageEntry]


class Archive:
    """An archive opened for reading: its manifest, checked, and its files."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tar = None
        try:
            if path.is_dir():
                raw = self._folder_manifest()
            else:
                self.tar = tarfile.open(path, "r:*")  # noqa: SIM115 -- closed by close()
                raw = self._tar_manifest()
        except tarfile.TarError:
            raise ArchiveError(f"{path}: not a readable archive: not a tar file, or a damaged one") from None
        except OSError as error:
            raise ArchiveError(f"{path}: not a readable archive: {error.strerror or error}") from None
        self.user, self.mailboxes = parse_manifest(path, raw)

    def _folder_manifest(self) -> bytes:
        manifest = self.path / MANIFEST
        if not manifest.is_file():
            raise ArchiveError(f"{self.path}: no {MANIFEST}: not an archive, or an incomplete one")
        if manifest.stat().st_size > MAX_MANIFEST:
            raise ArchiveError(f"{self.path}: {MANIFEST} is too big")
        return manifest.read_bytes()

    def _tar_manifest(self) -> bytes:
        try:
            member = self.tar.getmember(MANIFEST)
        except KeyError:
            raise ArchiveError(f"{self.path}: no {MANIFEST}: not an archive, or an incomplete one") from None
        if not member.isfile() or member.size > MAX_MANIFEST:
            raise ArchiveError(f"{self.path}: {MANIFEST} is not a plain file of a sane size")
        return self.tar.extractfile(member).read()

    def open(self, name: str) -> BinaryIO:
        """One message file of the archive (names come from the checked manifest)."""
        try:
            if self.tar is None:
                return open(self.path / name, "rb")
            member = self.tar.getmember(name)
            if not member.isfile():
                raise ArchiveError(f"{self.path}: {name} is not a plain file")
            return self.tar.extractfile(member)
        except (KeyError, FileNotFoundError):
            raise ArchiveError(f"{self.path}: {name} is missing from the archive") from None

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()


def parse_manifest(path: Path, raw: bytes) -> tuple[str, list[MailboxEntry]]:
    """The user and mailboxes a manifest names, every field checked (ArchiveError names the first problem)."""

    def need(condition: bool, problem: str) -> None:
        if not condition:
            raise ArchiveError(f"{path}: {MANIFEST}: {problem}")

    try:
        manifest = json.loads(raw)
    except ValueError as error:
        raise ArchiveError(f"{path}: {MANIFEST} is not JSON: {error}") from None
    need(isinstance(manifest, dict) and manifest.get("format") == FORMAT, "not a cyrusmail archive")
    need(manifest.get("version") == VERSION, f"version {manifest.get('version')!r}; this cyrusmail reads {VERSION}")
    need(isinstance(manifest.get("user"), str) and isinstance(manifest.get("mailboxes"), list), "no user or mailboxes")
    mailboxes = []
    seen_names: set[str] = set()
    for item in manifest["mailboxes"]:
        need(isinstance(item, dict), "a mailbox entry is not an object")
        try:
            name = names.check(item.get("name"))
        except (InvalidName, TypeError, AttributeError) as error:
            raise ArchiveError(f"{path}: {MANIFEST}: bad mailbox name {item.get('name')!r}: {error}") from None
        need(name not in seen_names, f"mailbox {name} appears twice")
        seen_names.add(name)
        numbers = [item.get(key) for key in ("uidvalidity", "uidnext", "highestmodseq")]
        need(all(isinstance(n, int) and not isinstance(n, bool) and 0 < n < 2**63 for n in numbers)
             and numbers[0] < 2**32 and numbers[1] < 2**32, f"{name}: bad uidvalidity, uidnext or highestmodseq")
        folder = item.get("folder")
        need(isinstance(folder, str) and _safe_member(folder), f"{name}: bad folder {folder!r}")
        messages = []
        uids: set[int] = set()
        for message in item.get("messages") or []:
            uid, file = message.get("uid"), message.get("file")
            need(isinstance(uid, int) and not isinstance(uid, bool) and 0 < uid < numbers[1] and uid not in uids,
                 f"{name}: bad or repeated uid {uid!r} (each below uidnext, once)")
            uids.add(uid)
            need(isinstance(file, str) and _safe_member(file) and file.startswith(folder + "/"),
                 f"{name}: UID {uid}: bad file {file!r}")
            flags = Flag(0)
            for flag in message.get("flags") or []:
                need(isinstance(flag, str) and flag.lower() in _BY_NAME, f"{name}: UID {uid}: bad flag {flag!r}")
                flags |= _BY_NAME[flag.lower()]
            keywords = message.get("keywords") or []
            need(isinstance(keywords, list) and all(isinstance(k, str) and k and k.isprintable() and " " not in k
                                                    and len(k) < 256 for k in keywords),
                 f"{name}: UID {uid}: bad keywords")
            date = message.get("internaldate")
            need(isinstance(date, (int, float)) and not isinstance(date, bool) and 0 <= date < 2**40,
                 f"{name}: UID {uid}: bad internaldate")
            messages.append(MessageEntry(uid, file, flags, keywords, float(date)))
        acl = item.get("acl")
        need(acl is None or (isinstance(acl, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                            for k, v in acl.items())), f"{name}: bad acl")
        special_use = item.get("special_use")
        need(special_use is None or isinstance(special_use, str), f"{name}: bad special_use")
        mailboxes.append(MailboxEntry(name, numbers[0], numbers[1], numbers[2], special_use,
                                      bool(item.get("subscribed")), acl, messages))
    return manifest["user"], mailboxes


def _safe_member(name: str) -> bool:
    """A relative path inside the archive: no absolute path, no ``..``, nothing odd."""
    parts = name.split("/")
    return bool(name) and len(name) < 1024 and not name.startswith("/") and all(
        part not in ("", ".", "..") and part.isprintable() for part in parts)


# -- mailboxes kept for undelete ------------------------------------------------------


@dataclass
class Kept:
    """A deleted mailbox kept for undelete: its unpacked archive, its name and when it was deleted."""

    path: Path
    name: str
    deleted: float
    messages: int


def kept_mailboxes(store, user: str) -> list[Kept]:
    """``user``'s deleted mailboxes still kept, oldest first; one whose archive is unreadable is left out."""
    from cyrusmail.store.maildir.store import DELETED_FOLDER

    folder = store.user_dir(user) / DELETED_FOLDER
    kept = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else ():
        try:
            raw = (path / MANIFEST).read_bytes()
            _, (mailbox,) = parse_manifest(path, raw)
            deleted = float(json.loads(raw).get("created") or 0)
        except (OSError, ValueError, TypeError, ArchiveError):
            continue  # being written, or damaged: purged by age with the rest
        kept.append(Kept(path, mailbox.name, deleted, len(mailbox.messages)))
    return sorted(kept, key=lambda entry: entry.deleted)


def purge_kept(store, user: str, now: float, retention: float) -> int:
    """Remove ``user``'s deleted mailboxes kept longer than ``retention`` seconds; how many went.

    The folder's name starts with the second of the deletion, so a damaged
    one goes by age too.
    """
    from cyrusmail.store.maildir.store import DELETED_FOLDER

    folder = store.user_dir(user) / DELETED_FOLDER
    removed = 0
    for path in list(folder.iterdir()) if folder.is_dir() else ():
        stamp = path.name.partition("-")[0]
        if stamp.isdigit() and int(stamp) <= now - retention:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


# -- restoring -------------------------------------------------------------------------


def restore_archive(store, tree, archive: Archive, wanted: dict[str, str]) -> list[tuple[str, int]]:
    """Put the mailboxes ``wanted`` (archive name -> name to restore as) back into ``tree``.

    Every target is checked before anything changes: each must not exist,
    or be an empty mailbox (as INBOX and the special folders of a user just
    added are). Then each mailbox is restored in one transaction of the
    index (:meth:`MaildirMailboxList.restore`). The (name, messages) restored.
    """
    chosen = [(entry, wanted[entry.name]) for entry in archive.mailboxes if entry.name in wanted]
    unknown = sorted(set(wanted) - {entry.name for entry in archive.mailboxes})
    if unknown:
        raise ArchiveError(f"{archive.path}: holds no mailbox {', '.join(unknown)}")
    for _entry, target in chosen:
        tree.check_restorable(target)
    done = []
    for entry, target in chosen:
        staged = []
        try:
            items = []
            for message in entry.messages:
                copy = store.stage()
                staged.append(copy)
                with archive.open(message.file) as source:
                    while chunk := source.read(1 << 20):
                        copy.write(chunk)
                copy.finish()
                copy.mime_cache()  # parsed now, not while the restore holds the index's write lock
                items.append((message.uid, copy, message.flags, message.keywords, message.internal_date))
            tree.restore(target, entry.uidvalidity, entry.uidnext, entry.highestmodseq, entry.special_use, items)
        finally:
            for copy in staged:
                copy.discard()
        if entry.subscribed:
            tree.subscribe(target)
        if entry.acl:
            tree.set_acl(target, entry.acl)
        done.append((target, len(entry.messages)))
    return done

