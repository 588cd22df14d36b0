"""``cyrusmail-admin backup USER ARCHIVE`` and ``restore ARCHIVE [USER]``: a user's mail in a portable archive.

The archive (:mod:`cyrusmail.store.maildir.archive`) is a tar file, gzip
compressed when its name ends in ``.gz`` or ``.tgz``: a maildir per mailbox
with the flags in the file names, and a manifest with UIDVALIDITY, UIDs,
flags, keywords and internal dates. It needs nothing of the server's index,
so it survives the loss of one, and works beside a running server (each
mailbox is read in one snapshot of the index).

``restore`` puts the mailboxes back for a user that exists (the archive
holds no password): UIDs, UIDVALIDITY, flags, keywords and internal dates
as they were, so clients that knew them fetch nothing again. Each target
must not exist, or be new and empty (as INBOX and the special folders of a
user just added are); ``--mailbox`` picks some, ``--prefix`` restores them
under another folder. Every target is checked before anything changes.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from cyrusmail.store import names


def backup(admin, args) -> None:
    from cyrusmail.admin.main import AdminError
    from cyrusmail.store.maildir.archive import TarWriter, snapshot, write_archive

    user = admin.known_user(args.user)
    target = Path(args.archive)
    if target.exists() or target.is_symlink():
        raise AdminError(f"{target} already exists; name a new file")
    if not target.name.endswith((".tar", ".tar.gz", ".tgz")):
        raise AdminError(f"{target}: the name must end in .tar, .tar.gz or .tgz")
    tree = admin.store.mailboxes(user)
    wanted = [listing.name for listing in tree.list("*")
              if not any(attribute.value == "noselect" for attribute in listing.attributes)]
    writer = TarWriter(target)
    try:
        manifest = write_archive(user, (snapshot(tree, name) for name in wanted), writer)
    except BaseException:
        writer.abandon()
        raise
    count = sum(len(mailbox["messages"]) for mailbox in manifest["mailboxes"])
    admin.say(f"backed up {count} messages in {len(wanted)} mailboxes of {user} to {target}")


def restore(admin, args) -> None:
    from cyrusmail.store.maildir.archive import Archive, restore_archive

    archive = Archive(Path(args.archive))
    try:
        user = admin.known_user(args.user or archive.user)
        chosen = [names.check(name) for name in args.mailbox] if args.mailbox else [
            entry.name for entry in archive.mailboxes]
        prefix = names.check(args.prefix) + names.SEPARATOR if args.prefix else ""
        wanted = {name: names.check(prefix + name) for name in chosen}
        done = restore_archive(admin.store, admin.store.mailboxes(user), archive, wanted)
    finally:
        archive.close()
    for name, count in done:
        admin.say(f"restored {user}/{name}: {count} messages")
    admin.say(f"restored {sum(count for _, count in done)} messages in {len(done)} mailboxes of {user}")


def undelete(admin, args) -> None:
    """List USER's deleted mailboxes kept for undelete, or put USER/NAME back (the newest kept)."""
    from cyrusmail.admin.main import AdminError
    from cyrusmail.store.maildir.archive import Archive, kept_mailboxes, restore_archive

    user, _, name = args.mailbox.partition("/")
    user = admin.known_user(user)
    in_database = hasattr(admin.store, "kept_mailboxes")  # the PostgreSQL store keeps them in its tables
    kept = admin.store.kept_mailboxes(user) if in_database else kept_mailboxes(admin.store, user)
    retention = admin.config["server"]["delete_retention"]
    if not name:
        for entry in kept:
            admin.say(f"{entry.name}\tdeleted {_when(entry.deleted)}\t{entry.messages} messages"
                      f"\tkept until {_when(entry.deleted + retention)}")
        admin.say(f"{len(kept)} deleted mailboxes of {user} kept")
        return
    name = names.check(name)
    found = [entry for entry in kept if entry.name == name]
    if not found:
        raise AdminError(f"no deleted mailbox {user}/{name} is kept"
                         + ("" if admin.config["server"]["delete_mode"] == "delayed" else
                            " ([server] delete_mode is immediate: deleted mailboxes are not kept)"))
    target = names.check(args.as_name) if args.as_name else name
    if in_database:
        restored = admin.store.mailboxes(user).undelete(found[-1].mailbox_id, target)
        admin.say(f"undeleted {user}/{restored}: {found[-1].messages} messages (deleted {_when(found[-1].deleted)})")
        return
    archive = Archive(found[-1].path)
    try:
        ((restored, count),) = restore_archive(admin.store, admin.store.mailboxes(user), archive, {name: target})
    finally:
        archive.close()
    shutil.rmtree(found[-1].path, ignore_errors=True)
    admin.say(f"undeleted {user}/{restored}: {count} messages (deleted {_when(found[-1].deleted)})")


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


def add_commands(commands, command) -> None:
    sub = command(commands, "backup", backup, "write USER's mail to a portable archive (.tar, .tar.gz)")
    sub.add_argument("user")
    sub.add_argument("archive", help="a new file ending in .tar, .tar.gz or .tgz")
    sub = command(commands, "restore", restore, "put mailboxes back from an archive, UIDs and flags as they were")
    sub.add_argument("archive")
    sub.add_argument("user", nargs="?", help="whose mailboxes they become (default: the archive's user)")
    sub.add_argument("--mailbox", action="append", default=[], help="only this mailbox (may be repeated)")
    sub.add_argument("--prefix", help="restore under this folder (e.g. Restored) instead of in place")
    sub = command(commands, "undelete", undelete,
                  "USER: list the deleted mailboxes kept (delete_mode = delayed); USER/NAME: put one back")
    sub.add_argument("mailbox", metavar="USER[/NAME]")
    sub.add_argument("--as", dest="as_name", metavar="NEW", help="put it back under another name")
