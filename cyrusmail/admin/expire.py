"""``cyrusmail-admin expire``: old mail out of Trash and Junk, and deleted mailboxes past their retention.

Rules are the ``[expire]`` section: each key a mailbox name or a special
use (``trash``, ``junk``, ... without the backslash), compared without
regard to case, and its value an age::

    [expire]
    trash = 30d
    junk = 14d
    Lists/Old = 90d

A message goes when it has been in the mailbox longer than that: its save
date (RFC 8514: when it was delivered, appended, copied or moved there),
else its internal date. It goes whatever its flags, at once (no
``\\Deleted`` step); sessions that have the mailbox selected are told as
for any expunge. Shared folders are covered by name. Deleted mailboxes
kept for undelete (``delete_mode = delayed``) are removed once older than
``[server] delete_retention``.

The server runs this command every ``[server] expire_interval`` (a day; ``0``
turns it off) as a child process, so a long run never holds up a session;
with worker processes the supervisor runs it. ``--dry-run`` says what
would go and changes nothing.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from twisted.application import service
from twisted.internet import protocol, task

from cyrusmail import logs

#: Messages removed per transaction: a big Trash is emptied in steps, never one huge write.
BATCH = 500


def rule_for(rules: dict[str, int], name: str, special_use: str | None) -> int | None:
    """The age past which messages of mailbox ``name`` go, or None."""
    folded = {key.lower(): age for key, age in rules.items()}
    if name.lower() in folded:
        return folded[name.lower()]
    if special_use:
        return folded.get(special_use.lstrip("\\").lower())
    return None


def duration(seconds: int) -> str:
    from cyrusmail.admin.configure import duration as written

    return written(seconds)


def expire_tree(tree, owner_shown: str, rules: dict[str, int], now: float, dry_run: bool, say) -> int:
    """Apply ``rules`` to every mailbox of ``tree``; the messages removed (or that would be)."""
    total = 0
    for listing in tree.list("*"):
        age = rule_for(rules, listing.name, listing.special_use)
        if age is None or any(attribute.value == "noselect" for attribute in listing.attributes):
            continue
        mailbox = tree.open(listing.name)
        old = [record.uid for record in mailbox.messages()
               if (record.save_date or record.internal_date) <= now - age]
        if not old:
            continue
        if not dry_run:
            for start in range(0, len(old), BATCH):
                mailbox.remove(old[start:start + BATCH])
        total += len(old)
        say(f"{owner_shown}/{listing.name}: {len(old)} messages older than {duration(age)}"
            f" {'would be ' if dry_run else ''}removed")
    return total


def expire(admin, args) -> None:
    from cyrusmail.store.maildir.archive import kept_mailboxes, purge_kept

    rules = admin.config["expire"]
    retention = admin.config["server"]["delete_retention"]
    now = time.time()
    messages = purged = 0
    for user in admin.users.names():
        tree = admin.store.mailboxes(user)
        messages += expire_tree(tree, user, rules, now, args.dry_run, admin.say)
        in_database = hasattr(admin.store, "kept_mailboxes")  # the PostgreSQL store keeps them in its tables
        if args.dry_run:
            kept = admin.store.kept_mailboxes(user) if in_database else kept_mailboxes(admin.store, user)
            purged += sum(entry.deleted <= now - retention for entry in kept)
        elif in_database:
            purged += admin.store.purge_kept(user, now, retention)
        else:
            purged += purge_kept(admin.store, user, now, retention)
    if rules:
        shared = admin.config["namespaces"]["shared"].rstrip("/")
        messages += expire_tree(admin.store.shared_mailboxes(), shared, rules, now, args.dry_run, admin.say)
    if args.dry_run:
        admin.say(f"{messages} messages would expire, {purged} deleted mailboxes past retention would be removed")
    else:
        admin.say(f"{messages} messages expired, {purged} deleted mailboxes past retention removed")


def add_commands(commands, command) -> None:
    sub = command(commands, "expire", expire,
                  "remove mail older than the [expire] rules, and deleted mailboxes past retention")
    sub.add_argument("--dry-run", action="store_true", help="say what would go, change nothing")


# -- in the server ---------------------------------------------------------------------


class ExpireRun(protocol.ProcessProtocol):
    """One ``cyrusmail-admin expire`` child: its output logged line by line (bounded)."""

    MAX_LINE = 1000

    def __init__(self, ended) -> None:
        self.buffer = b""
        self.ended = ended

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        self.buffer = self.buffer[-self.MAX_LINE:]
        for line in lines:
            logs.log.info("expire: {line}", line=line[:self.MAX_LINE].decode("utf-8", "replace"))

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        code = getattr(reason.value, "exitCode", None)
        if code:
            logs.log.warn("expire: cyrusmail-admin expire exited with status {code}", code=code)
        self.ended()


#: The child's program: cyrusmail-admin from the package this server runs, wherever the current folder is.
BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from cyrusmail.admin.main import main; sys.exit(main(sys.argv[2:]))"


class ExpireService(service.Service):
    """Runs ``cyrusmail-admin expire`` on the server's config every ``interval`` seconds (first after one)."""

    def __init__(self, reactor, config_path: str, interval: int) -> None:
        self.reactor, self.config_path, self.interval = reactor, config_path, interval
        self.loop: task.LoopingCall | None = None
        self.child = False

    def startService(self) -> None:
        super().startService()
        self.loop = task.LoopingCall(self.run)
        self.loop.clock = self.reactor
        self.loop.start(self.interval, now=False)

    def run(self) -> None:
        if self.child:
            logs.log.warn("expire: the last run has not finished; this one is skipped")
            return
        package = str(Path(__file__).resolve().parents[2])
        argv = [sys.executable, "-c", BOOT, package, "--config", self.config_path, "expire"]
        self.child = True
        self.reactor.spawnProcess(ExpireRun(self._ended), sys.executable, argv, env=dict(os.environ))

    def _ended(self) -> None:
        self.child = False

    def stopService(self):
        super().stopService()
        if self.loop is not None and self.loop.running:
            self.loop.stop()
