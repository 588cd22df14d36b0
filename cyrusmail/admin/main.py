"""``cyrusmail-admin --config PATH ...``: administer users, mailboxes, ACLs and quotas.

A mailbox is named ``USER/PATH``, or by the shared namespace of the config
(``"Shared Folders/news"``, which no user name can start with) for a
shared folder. Quota roots are ``user/NAME`` and ``shared/PATH``.

It works on the same data folder as a running server (the indexes are
SQLite in WAL mode, safe across processes). Every failure prints one line
on standard error and exits non-zero, having changed nothing.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cyrusmail.admin import importer
from cyrusmail.config import ConfigError, load
from cyrusmail.private_files import PRIVATE_UMASK, make_private_folder
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
        self._store = self._users = self._access = None

    @property
    def store(self):
        if self._store is None:
            from cyrusmail.service import open_store
            from cyrusmail.startup import StartupError

            make_private_folder(self.config.data)
            try:
                self._store = open_store(self.config)  # the embedded store, or [store] backend
            except StartupError as error:
                raise AdminError(str(error)) from None
        return self._store

    @property
    def users(self):
        if self._users is None:
            from cyrusmail.service import open_users

            make_private_folder(self.config.data)
            shared = self.config["store"]["backend"] == "postgresql"  # the accounts live in its database
            self._users = open_users(self.config, self.store if shared else None)
        return self._users

    @property
    def access(self):
        """Rights decisions and ACL changes, with no rights checked: the admin may do anything."""
        if self._access is None:
            from cyrusmail.acl.control import AccessControl
            from cyrusmail.acl.registry import open_registry

            self._access = AccessControl(self.store, open_registry(self.store), self.config.admins)
        return self._access

    def close(self) -> None:
        if self._access is not None:
            self._access.registry.close()
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
        """(owner, name) of ``USER/PATH`` or of a shared folder ``Shared Folders/PATH``."""
        from cyrusmail.store.maildir.store import SHARED_OWNER

        shared = self.config["namespaces"]["shared"].rstrip("/")
        if spec.startswith(shared + "/") and spec != shared + "/":
            return SHARED_OWNER, spec[len(shared) + 1:]
        user, sep, mailbox = spec.partition("/")
        if not sep or not mailbox:
            raise AdminError(f"expected USER/MAILBOX or {shared}/PATH, got {spec!r}")
        return self.known_user(user), mailbox

    def tree(self, owner: str):
        from cyrusmail.store.maildir.store import SHARED_OWNER

        return self.store.shared_mailboxes() if owner == SHARED_OWNER else self.store.mailboxes(owner)

    def shown(self, owner: str, name: str) -> str:
        from cyrusmail.store.maildir.store import SHARED_OWNER

        if owner == SHARED_OWNER:
            return f"{self.config['namespaces']['shared'].rstrip('/')}/{name}"
        return f"{owner}/{name}"

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
    if getattr(args, "no_password", False) and args.password is not None:
        raise AdminError("give --password or --no-password, not both")
    password = None if getattr(args, "no_password", False) else read_password(args)
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
    with admin.store.user_lock():  # a login at this moment cannot make the tree again
        # rights, groups and the tree first: a failure leaves the user there to delete again
        admin.access.forget_user(user)
        doomed = admin.store.retire_user(user)
        admin.users.delete(user)
    ended = end_live_sessions(admin, user)
    if doomed is not None:
        shutil.rmtree(doomed, ignore_errors=True)
    admin.say(f"user {user} deleted{ended}")


def end_live_sessions(admin: Admin, user: str) -> str:
    """Have the running server, if one runs, end ``user``'s sessions; what to add to the report.

    On the PostgreSQL store every server on the database is told too
    (``NOTIFY``, after this server's own count), and ends the user's
    sessions it serves."""
    try:
        return _kick_here(admin, user)
    finally:
        end_everywhere(admin, user, "Account removed")


def end_everywhere(admin: Admin, user: str, reason: str) -> None:
    """On the PostgreSQL store, have every server end ``user``'s sessions (after this server's own)."""
    everywhere = getattr(admin.store, "end_sessions_everywhere", None)
    if everywhere is not None:
        everywhere(user, reason)


def _kick_here(admin: Admin, user: str) -> str:
    from cyrusmail import control

    try:
        answer = control.ask(admin.config.data, f"kick {user}")
    except (OSError, control.ControlError) as error:
        print(f"cyrusmail-admin: warning: the running server was not reached ({error});"
              f" live sessions of {user} were not ended", file=admin.err)
        return ""
    if answer is None:  # no server runs
        return ""
    return f"; {answer[-1].split()[-1]} live sessions ended"


def user_list(admin: Admin, args) -> None:
    for name in admin.users.names():
        admin.say(name)


def mailbox_create(admin: Admin, args) -> None:
    owner, name = admin.user_and_mailbox(args.mailbox)
    admin.tree(owner).create(name, special_use=args.special_use)
    admin.say(f"mailbox {admin.shown(owner, name)} created")


def mailbox_delete(admin: Admin, args) -> None:
    owner, name = admin.user_and_mailbox(args.mailbox)
    admin.tree(owner).delete(name)
    kept = admin.store.keep_deleted and admin.tree(owner).exists(name) is False
    admin.say(f"mailbox {admin.shown(owner, name)} deleted"
              + (f" (kept for undelete for {admin.config['server']['delete_retention'] // 86400} days)" if kept else ""))


def mailbox_rename(admin: Admin, args) -> None:
    owner, old = admin.user_and_mailbox(args.old)
    new_owner, new = admin.user_and_mailbox(args.new)
    if new_owner != owner:
        raise AdminError("a mailbox cannot be renamed into another user's tree")
    admin.tree(owner).rename(old, new)
    admin.say(f"mailbox {admin.shown(owner, old)} renamed to {admin.shown(owner, new)}")


def mailbox_list(admin: Admin, args) -> None:
    from cyrusmail.store.maildir.store import SHARED_OWNER
    from cyrusmail.store.records import MailboxAttribute

    shared = admin.config["namespaces"]["shared"].rstrip("/")
    owner = SHARED_OWNER if args.user.rstrip("/") == shared else admin.known_user(args.user)
    tree = admin.tree(owner)
    for listing in tree.list("*"):
        if MailboxAttribute.NOSELECT in listing.attributes:
            admin.say(f"{listing.name}\t(no messages: hierarchy only)")
            continue
        status = tree.status(listing.name)
        use = f"\t\\{listing.special_use.capitalize()}" if listing.special_use else ""
        admin.say(f"{listing.name}\t{status.messages} messages\t{status.unseen} unseen\t{status.size} bytes{use}")


def import_mail(admin: Admin, args) -> None:
    user, name = admin.user_and_mailbox(args.mailbox)
    tree = admin.tree(user)
    source = Path(args.source)
    created = False
    if args.create and not tree.exists(name):
        tree.create(name)
        created = True
    try:
        uids, cleaned, shown = _import_into(admin, tree.open(name), source, user)
    except BaseException:
        if created:
            tree.delete(name)  # a failed import leaves nothing, the mailbox it made included
        raise
    admin.say(f"imported {len(uids)} messages into {shown}" + (" (mailbox created)" if created else ""))
    if cleaned:
        admin.say(f"removed NUL octets from {cleaned} of them (no mail protocol may carry them)")


def _import_into(admin: Admin, mailbox, source: Path, user: str) -> tuple[list[int], int, str]:
    terminal = admin.err.isatty()
    progress = Progress(admin.err if terminal else None, *(importer.count_source(source) if terminal else ()))
    staged, items = [], []
    cleaned = 0
    try:
        for item in importer.read_source(source):
            cleaned += item.nul_removed > 0
            message = admin.store.stage()
            staged.append(message)
            message.write(item.data)
            message.finish()
            items.append((message, item.flags, (), item.internal_date))
            progress.step(len(items), len(item.data))
        progress.say(f"storing {len(items)} messages...")
        uids = mailbox.append_many(items) if items else []  # one transaction: all or nothing
    finally:
        for message in staged:
            message.discard()
        progress.done()
    return uids, cleaned, admin.shown(user, mailbox.name)


def reconstruct(admin: Admin, args) -> None:
    from cyrusmail.store.maildir.reconstruct import reconstruct as rebuild

    user = admin.known_user(args.user)
    if admin.config["store"]["backend"] != "embedded":
        raise AdminError("reconstruct rebuilds an index from message files: only the embedded store has them"
                         " ([store] backend = postgresql keeps messages and index in one database)")
    report = rebuild(admin.store, user)
    for fix in report.fixes:
        admin.say(f"fixed: {fix}")
    admin.provision(user)
    admin.say(f"reconstructed {user}: {report.mailboxes} mailboxes, {report.messages} messages, "
              f"{len(report.fixes)} fixes")


def sweep_blobs(admin: Admin, args) -> None:
    from cyrusmail.store.maildir.store import STALE_TMP_AGE

    blobs = getattr(admin.store, "blobs", None)
    if blobs is None or blobs.setting == "database":
        raise AdminError("sweep-blobs removes body files of a [store] blobs folder: this server keeps none")
    removed = blobs.sweep(admin.store, STALE_TMP_AGE)
    admin.say(f"removed {removed} body files of {blobs.setting} that no message used (older than an hour)")


def acl_set(admin: Admin, args) -> None:
    owner, name = admin.user_and_mailbox(args.mailbox)
    held = admin.access.set_rights(owner, name, args.identifier, args.rights)
    admin.say(f"{args.identifier} now holds {held or 'no rights'} on {admin.shown(owner, name)}")


def acl_delete(admin: Admin, args) -> None:
    owner, name = admin.user_and_mailbox(args.mailbox)
    admin.access.delete_identifier(owner, name, args.identifier)
    admin.say(f"{args.identifier} removed from the ACL of {admin.shown(owner, name)}")


def acl_list(admin: Admin, args) -> None:
    owner, name = admin.user_and_mailbox(args.mailbox)
    for identifier, rights in admin.access.acl(owner, name).items():
        admin.say(f"{identifier}\t{rights}")


def group_add(admin: Admin, args) -> None:
    members = admin.access.add_to_group(args.name, args.members)
    admin.say(f"group {args.name.lower()}: added {', '.join(members)}")


def group_delete(admin: Admin, args) -> None:
    from cyrusmail.acl.rights import group_name, identifier

    group = group_name(args.name)
    members = [identifier(member) for member in args.members] if args.members else None
    removed = admin.access.registry.remove_members(group, members)
    if not removed:
        raise AdminError(f"no such group or member: {group}")
    admin.say(f"group {group} deleted" if members is None else f"group {group}: removed {', '.join(members)}")


def group_members(admin: Admin, args) -> None:
    from cyrusmail.acl.rights import group_name

    group = group_name(args.name)
    members = admin.access.registry.members(group)
    if not members:
        raise AdminError(f"no such group: {group}")
    for member in members:
        admin.say(member)


def group_list(admin: Admin, args) -> None:
    for group in admin.access.registry.groups():
        admin.say(group)


def parse_limits(items: list[str]) -> dict[str, int | None]:
    """``STORAGE=1024 MESSAGE=none`` -> {"STORAGE": 1024, "MESSAGE": None}."""
    from cyrusmail.quota import RESOURCES

    limits: dict[str, int | None] = {}
    for item in items:
        resource, sep, value = item.partition("=")
        resource = resource.upper()
        if not sep or resource not in RESOURCES:
            raise AdminError(f"expected RESOURCE=LIMIT with RESOURCE one of {', '.join(RESOURCES)}, got {item!r}")
        if value.lower() == "none":
            limits[resource] = None
        elif value.isdigit():
            limits[resource] = int(value)
        else:
            raise AdminError(f"a limit is a whole number or 'none', got {item!r}")
    return limits


def quota_set(admin: Admin, args) -> None:
    from cyrusmail import quota
    from cyrusmail.store.errors import NoSuchQuotaRoot

    changes = parse_limits(args.limits)
    try:
        current = {resource: limit for resource, (_, limit) in quota.report(admin.store, args.root).resources.items()}
    except NoSuchQuotaRoot:
        current = {}
    for resource, limit in changes.items():
        if limit is None:
            current.pop(resource, None)
        else:
            current[resource] = limit
    try:
        quota.set_limits(admin.store, args.root, current)
    except ValueError as error:
        raise AdminError(str(error)) from None
    shown = " ".join(f"{resource}={limit}" for resource, limit in sorted(current.items())) or "no limits"
    admin.say(f"quota of {args.root}: {shown}")


def _quota_lines(report) -> list[str]:
    lines = []
    for resource, (usage, limit) in report.resources.items():
        unit = " KiB" if resource == "STORAGE" else ""
        lines.append(f"{report.root}\t{resource}\t{usage}{unit} of {limit}{unit}\t{report.percent(resource)}%")
    return lines


def quota_get(admin: Admin, args) -> None:
    from cyrusmail import quota

    report = quota.report(admin.store, args.root)
    for line in _quota_lines(report):
        admin.say(line)
    if admin.config["store"]["backend"] != "embedded":
        return  # usage is counted in the database's transactions; there are no message files to recount
    files = quota.recount(admin.store, args.root)
    for resource, (usage, _) in report.resources.items():
        if files.of(resource) != usage:
            admin.say(f"drift: {resource} is {usage} by the index but {files.of(resource)} by the message files;"
                      f" run cyrusmail-admin reconstruct")


def quota_list(admin: Admin, args) -> None:
    from cyrusmail import quota

    for root in quota.all_roots(admin.store):
        for line in _quota_lines(quota.report(admin.store, root)):
            admin.say(line)


class Progress:
    """A progress bar on a terminal (messages done of the total, MB/s, time left); silent otherwise.

    Redrawn at most five times a second, on one line, cleared at the end.
    """

    INTERVAL = 0.2
    WIDTH = 24

    def __init__(self, stream, total: int = 0, total_octets: int = 0, clock=time.monotonic):
        self.stream = stream
        self.total = total
        self.total_octets = total_octets
        self.clock = clock
        self.started = clock()
        self.octets = 0
        self.drawn = 0.0

    def step(self, count: int, octets: int = 0) -> None:
        self.octets += octets
        if self.stream is None:
            return
        now = self.clock()
        if now - self.drawn < self.INTERVAL and count != self.total:
            return
        self.drawn = now
        elapsed = max(now - self.started, 1e-6)
        rate = self.octets / elapsed / 1e6
        total = max(self.total, count)
        filled = self.WIDTH * count // total if total else 0
        left = (total - count) * elapsed / count if count else 0
        self.say(f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {count}/{total} messages"
                 f"  {rate:.1f} MB/s  ETA {int(left) // 60}:{int(left) % 60:02d}")

    def say(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write(f"\r\x1b[K{text}")
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
        if name == "add":
            sub.add_argument("--no-password", action="store_true",
                             help="no password here: it is checked by the passwd-file or LDAP passdb")
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
    command(boxes, "list", mailbox_list, "list USER's mailboxes (or the shared folders)").add_argument("user")

    acls = commands.add_parser("acl", help="set, delete and list mailbox ACLs (RFC 4314)").add_subparsers(
        dest="action", required=True)
    sub = command(acls, "set", acl_set, "give IDENTIFIER RIGHTS on MAILBOX (+RIGHTS adds, -RIGHTS removes:"
                  " put -- before a leading '-')")
    sub.add_argument("mailbox", help="USER/PATH or 'Shared Folders/PATH'")
    sub.add_argument("identifier", help="a user, group:NAME, anyone, or -one of those for negative rights")
    sub.add_argument("rights", help="letters of lrswipkxtea (c = k, d = xte)")
    sub = command(acls, "delete", acl_delete, "remove IDENTIFIER from MAILBOX's ACL")
    sub.add_argument("mailbox")
    sub.add_argument("identifier")
    command(acls, "list", acl_list, "show MAILBOX's ACL").add_argument("mailbox")

    groups = commands.add_parser("group", help="groups for ACLs (group:NAME)").add_subparsers(
        dest="action", required=True)
    sub = command(groups, "add", group_add, "add users to group NAME (made if new)")
    sub.add_argument("name")
    sub.add_argument("members", nargs="+")
    sub = command(groups, "delete", group_delete, "remove users from group NAME, or the whole group")
    sub.add_argument("name")
    sub.add_argument("members", nargs="*")
    command(groups, "members", group_members, "list the members of group NAME").add_argument("name")
    command(groups, "list", group_list, "list groups")

    quotas = commands.add_parser("quota", help="set and show quotas (roots user/NAME, shared/PATH)").add_subparsers(
        dest="action", required=True)
    sub = command(quotas, "set", quota_set, "set limits of ROOT: STORAGE=KiB MESSAGE=N MAILBOX=N, or =none")
    sub.add_argument("root")
    sub.add_argument("limits", nargs="+")
    command(quotas, "get", quota_get, "usage, limits and drift of ROOT").add_argument("root")
    command(quotas, "list", quota_list, "usage and limits of every root")

    sub = command(commands, "import", import_mail, "import an mbox file or maildir folder (a progress bar on a terminal)")
    sub.add_argument("source", help="an mbox file or a maildir folder")
    sub.add_argument("mailbox", help="USER/MAILBOX")
    sub.add_argument("--create", action="store_true", help="make the mailbox if it does not exist")
    command(commands, "reconstruct", reconstruct, "rebuild USER's index from the message files").add_argument("user")
    command(commands, "sweep-blobs", sweep_blobs,
            "remove body files of the [store] blobs folder that no message uses (a crash's; safe while servers run)")

    from cyrusmail.admin import archives, configure, expire, live
    from cyrusmail.admin import queue as queue_admin

    queue_admin.add_commands(commands, command)
    live.add_commands(commands, command)
    configure.add_commands(commands, command)
    archives.add_commands(commands, command)
    expire.add_commands(commands, command)
    return top


def main(argv: list[str] | None = None, out=sys.stdout, err=sys.stderr) -> int:
    args = parser().parse_args(argv)
    previous = os.umask(PRIVATE_UMASK)  # what it makes in the data folder is the server's alone
    try:
        return run(args, out, err)
    finally:
        os.umask(previous)


def run(args: argparse.Namespace, out, err) -> int:
    try:
        admin = Admin(args.config, out, err)
    except ConfigError as error:
        print(f"cyrusmail-admin: {error}", file=err)
        return EXIT_USAGE
    try:
        args.handler(admin, args)
    except ConfigError as error:  # config check: what the server would refuse to start with
        print(f"cyrusmail-admin: {error}", file=err)
        return EXIT_USAGE
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
