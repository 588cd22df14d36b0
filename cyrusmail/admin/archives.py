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

from pathlib import Path

from cyrusmail.store import names


def backup(admin, args) -> None:
    from cyrusmail.admin.main import AdminError
    from cyrusmail.store.maildir.archive import TarWriter, write_archive

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
        manifest = write_archive(tree, user, wanted, writer)
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


def add_commands(commands, command) -> None:
    sub = command(commands, "backup", backup, "write USER's mail to a portable archive (.tar, .tar.gz)")
    sub.add_argument("user")
    sub.add_argument("archive", help="a new file ending in .tar, .tar.gz or .tgz")
    sub = command(commands, "restore", restore, "put mailboxes back from an archive, UIDs and flags as they were")
    sub.add_argument("archive")
    sub.add_argument("user", nargs="?", help="whose mailboxes they become (default: the archive's user)")
    sub.add_argument("--mailbox", action="append", default=[], help="only this mailbox (may be repeated)")
    sub.add_argument("--prefix", help="restore under this folder (e.g. Restored) instead of in place")
