"""``cyrusmail-admin --config PATH ...``: administer users and mailboxes.

It works on the same data folder as a running server (the indexes are
SQLite in WAL mode, safe across processes). Every failure prints one line
on standard error and exits non-zero, having changed nothing.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from pathlib import Path

from cyrusmail.admin import importer
from cyrusmail.config import ConfigError, load
from cyrusmail.store.errors import StoreError

DEFAULT_CONFIG = "etc/cyrusmail.conf"

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class AdminError(Exception):
    """A refusal the admin sees as one line."""


class Admin:
    """The store and user database of one data folder, opened on demand."""

    def __init__(self, config_path: str, out=sys.stdout, err=sys.stderr):
        self.config = load(config_path)
        self.out, self.err = out, err
        self._store = self._users = None

    @property
    def store(self):
        if self._store is None:
            from cyrusmail.store.maildir import MaildirStore

            self.config.data.mkdir(parents=True, exist_ok=True)
            self._store = MaildirStore(self.config.data)
        return self._store

    @property
    def users(self):
        if self._users is None:
            from cyrusmail.auth.userdb import UserDatabase

            self.config.data.mkdir(parents=True, exist_ok=True)
            self._users = UserDatabase(self.config.data / "users.sqlite")
        return self._users

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
        if self._users is not None:
            self._users.close()

    def say(self, text: str) -> None:
        print(text, file=self.out)

    def known_user(self, name: str) -> str:
        from cyrusmail.store.names import user_name

        user = user_name(name)
        if not self.users.exists(user):
            raise AdminError(f"no such user: {user}")
        return user

    def user_and_mailbox(self, spec: str) -> tuple[str, str]:
        user, sep, mailbox = spec.partition("/")
        if not sep or not mailbox:
            raise AdminError(f"expected USER/MAILBOX, got {spec!r}")
        return self.known_user(user), mailbox

    def provision(self, user: str) -> None:
        self.store.provision(user, self.config.special_use_folders())


# -- password input ---------------------------------------------------------------


def read_password(args) -> str:
    stdin = sys.stdin
    if args.password is not None:
        password = args.password
    elif stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise AdminError("the passwords do not match")
    else:
        password = stdin.readline().rstrip("\r\n")
    if not password:
        raise AdminError("the password is empty")
    return password


# -- commands -----------------------------------------------------------------------


def user_add(admin: Admin, args) -> None:
    password = read_password(args)
    user = admin.users.add(args.name, password)
    try:
        admin.provision(user)
    except BaseException:
        admin.users.delete(user)
        raise
    admin.say(f"user {user} added")


def user_passwd(admin: Admin, args) -> None:
    user = admin.known_user(args.name)
    admin.users.set_password(user, read_password(args))
    admin.say(f"password of {user} changed")


def user_delete(admin: Admin, args) -> None:
    user = admin.known_user(args.name)
    if not args.yes:
        raise AdminError(f"deleting {user} removes all their mail; add --yes to confirm")
    admin.users.delete(user)
    admin.store.remove_user(user)
    admin.say(f"user {user} deleted")


def user_list(admin: Admin, args) -> None:
    for name in admin.users.names():
        admin.say(name)


def mailbox_create(admin: Admin, args) -> None:
    user, name = admin.user_and_mailbox(args.mailbox)
    admin.store.mailboxes(user).create(name, special_use=args.special_use)
    admin.say(f"mailbox {user}/{name} created")


def mailbox_delete(admin: Admin, args) -> None:
    user, name = admin.user_and_mailbox(args.mailbox)
    admin.store.mailboxes(user).delete(name)
    admin.say(f"mailbox {user}/{name} deleted")


def mailbox_rename(admin: Admin, args) -> None:
    user, old = admin.user_and_mailbox(args.old)
    new_user, new = admin.user_and_mailbox(args.new)
    if new_user != user:
        raise AdminError("a mailbox cannot be renamed into another user's tree")
    admin.store.mailboxes(user).rename(old, new)
    admin.say(f"mailbox {user}/{old} renamed to {user}/{new}")


def mailbox_list(admin: Admin, args) -> None:
    from cyrusmail.store.records import MailboxAttribute

    user = admin.known_user(args.user)
    tree = admin.store.mailboxes(user)
    for listing in tree.list("*"):
        if MailboxAttribute.NOSELECT in listing.attributes:
            admin.say(f"{listing.name}\t(no messages: hierarchy only)")
            continue
        status = tree.status(listing.name)
        use = f"\t\\{listing.special_use.capitalize()}" if listing.special_use else ""
        admin.say(f"{listing.name}\t{status.messages} messages\t{status.unseen} unseen\t{status.size} bytes{use}")


def import_mail(admin: Admin, args) -> None:
    user, name = admin.user_and_mailbox(args.mailbox)
    tree = admin.store.mailboxes(user)
    mailbox = tree.open(name)
    source = Path(args.source)
    progress = Progress(admin.err if admin.err.isatty() else None)
    staged, items = [], []
    try:
        for item in importer.read_source(source):
            message = admin.store.stage()
            staged.append(message)
            message.write(item.data)
            message.finish()
            items.append((message, item.flags, (), item.internal_date))
            progress.step(len(items), "read")
        uids = mailbox.append_many(items) if items else []  # one transaction: all or nothing
    finally:
        for message in staged:
            message.discard()
        progress.done()
    admin.say(f"imported {len(uids)} messages into {user}/{mailbox.name}")


def reconstruct(admin: Admin, args) -> None:
    from cyrusmail.store.maildir.reconstruct import reconstruct as rebuild

    user = admin.known_user(args.user)
    report = rebuild(admin.store, user)
    for fix in report.fixes:
        admin.say(f"fixed: {fix}")
    admin.provision(user)
    admin.say(f"reconstructed {user}: {report.mailboxes} mailboxes, {report.messages} messages, "
              f"{len(report.fixes)} fixes")


class Progress:
    """A one-line progress counter on a terminal; silent otherwise."""

    def __init__(self, stream):
        self.stream = stream

    def step(self, count: int, verb: str) -> None:
        if self.stream is not None and count % 100 == 0:
            self.stream.write(f"\r{verb} {count} messages")
            self.stream.flush()

    def done(self) -> None:
        if self.stream is not None:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


# -- the command line -----------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="cyrusmail-admin", description=__doc__.splitlines()[0])
    top.add_argument("--config", "-c", default=DEFAULT_CONFIG, help="the server's configuration file")
    commands = top.add_subparsers(dest="command", required=True)

    def command(group, name: str, handler: Callable, help: str) -> argparse.ArgumentParser:
        sub = group.add_parser(name, help=help)
        sub.set_defaults(handler=handler)
        return sub

    users = commands.add_parser("user", help="add, change, delete and list users").add_subparsers(
        dest="action", required=True)
    for name, handler, help in (("add", user_add, "add a user"), ("passwd", user_passwd, "change a password")):
        sub = command(users, name, handler, help)
        sub.add_argument("name")
        sub.add_argument("--password", help="the password (default: read from standard input)")
    sub = command(users, "delete", user_delete, "delete a user and all their mail")
    sub.add_argument("name")
    sub.add_argument("--yes", action="store_true", help="confirm")
    command(users, "list", user_list, "list users")

    boxes = commands.add_parser("mailbox", help="create, delete, rename and list mailboxes").add_subparsers(
        dest="action", required=True)
    sub = command(boxes, "create", mailbox_create, "create USER/PATH")
    sub.add_argument("mailbox")
    sub.add_argument("--special-use", choices=["drafts", "sent", "trash", "junk", "archive", "all", "flagged"])
    command(boxes, "delete", mailbox_delete, "delete USER/PATH").add_argument("mailbox")
    sub = command(boxes, "rename", mailbox_rename, "rename USER/OLD to USER/NEW")
    sub.add_argument("old")
    sub.add_argument("new")
    command(boxes, "list", mailbox_list, "list USER's mailboxes").add_argument("user")

    sub = command(commands, "import", import_mail, "import an mbox file or maildir folder")
    sub.add_argument("source", help="an mbox file or a maildir folder")
    sub.add_argument("mailbox", help="USER/MAILBOX")
    command(commands, "reconstruct", reconstruct, "rebuild USER's index from the message files").add_argument("user")

    from cyrusmail.admin import queue as queue_admin

    queue_admin.add_commands(commands, command)
    return top


def main(argv: list[str] | None = None, out=sys.stdout, err=sys.stderr) -> int:
    args = parser().parse_args(argv)
    try:
        admin = Admin(args.config, out, err)
    except ConfigError as error:
        print(f"cyrusmail-admin: {error}", file=err)
        return EXIT_USAGE
    try:
        args.handler(admin, args)
    except (AdminError, StoreError, importer.ImportError_) as error:
        print(f"cyrusmail-admin: {error}", file=err)
        return EXIT_FAILED
    except OSError as error:
        print(f"cyrusmail-admin: {error.strerror or error}: {error.filename or ''}".rstrip(": "), file=err)
        return EXIT_FAILED
    finally:
        admin.close()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
