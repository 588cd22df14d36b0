"""Quota roots (RFC 9208): naming, reports, limits, and a check against the files.

Root names:

- ``user/NAME`` covers every mailbox of user NAME (``user/alice@example.org``);
- ``shared/PATH`` covers the shared folder PATH and everything below it
  (``shared/news`` covers ``Shared Folders/news/...``); a deeper root wins.

A root exists while it has at least one limit. Resources: ``STORAGE``
(KiB, the sum of message sizes rounded up), ``MESSAGE`` and ``MAILBOX``
(selectable mailboxes). Limits and usage live in the tree's index and are
enforced there, inside the transaction that inserts
(:mod:`cyrusmail.store.maildir.quota`); this module only reads and sets them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cyrusmail.store import names
from cyrusmail.store.errors import (
    InvalidName,
    InvalidUserName,
    MailboxNotFound,
    NoSuchQuotaRoot,
    NotSelectable,
)
from cyrusmail.store.maildir.quota import (
    MAILBOX,
    MESSAGE,
    RESOURCES,
    STORAGE,
    Usage,
    root_of,
)
from cyrusmail.store.maildir.store import SHARED_OWNER, MaildirStore

USER_PREFIX, SHARED_PREFIX = "user/", "shared/"

__all__ = ["MAILBOX", "MESSAGE", "RESOURCES", "STORAGE", "QuotaReport", "Usage", "parse_root", "root_name"]


@dataclass(frozen=True)
class QuotaReport:
    """One root's resources: {resource: (usage, limit)}, in the resources' units."""

    root: str
    resources: dict[str, tuple[int, int]] = field(default_factory=dict)

    def percent(self, resource: str) -> int:
        usage, limit = self.resources[resource]
        if limit == 0:
            return 100 if usage else 0
        return usage * 100 // limit


def root_name(owner: str, prefix: str) -> str:
    """``user/alice`` for a user's tree, ``shared/news`` for a shared prefix."""
    if owner == SHARED_OWNER:
        return SHARED_PREFIX + prefix
    return USER_PREFIX + owner if not prefix else f"{USER_PREFIX}{owner}/{prefix}"


def parse_root(root: str) -> tuple[str, str]:
    """(owner, prefix within the owner's tree) of a root name, or NoSuchQuotaRoot."""
    try:
        if root.startswith(USER_PREFIX):
            user, _, rest = root[len(USER_PREFIX):].partition("/")
            if rest:  # only whole users are roots
                raise NoSuchQuotaRoot(f"No quota root {root!r}: a user root is user/NAME")
            return names.user_name(user), ""
        if root.startswith(SHARED_PREFIX) and root != SHARED_PREFIX:
            return SHARED_OWNER, names.check(root[len(SHARED_PREFIX):])
    except (InvalidName, InvalidUserName):
        pass
    raise NoSuchQuotaRoot(f"No quota root {root!r}: use user/NAME or shared/PATH")


def _tree(store: MaildirStore, owner: str):
    if owner == SHARED_OWNER:
        return store.shared_mailboxes()
    if not store.has_user(owner):
        raise NoSuchQuotaRoot(f"No quota root {root_name(owner, '')!r}: no such user")
    return store.mailboxes(owner)


def report(store: MaildirStore, root: str) -> QuotaReport:
    """GETQUOTA: usage and limit of each resource ``root`` limits."""
    owner, prefix = parse_root(root)
    tree = _tree(store, owner)
    limits = tree.quota_limits().get(prefix)
    if not limits:
        raise NoSuchQuotaRoot(f"No quota root {root!r}")
    usage = tree.quota_usage(prefix)
    return QuotaReport(root, {resource: (usage.of(resource), limits[resource])
                              for resource in RESOURCES if resource in limits})


def set_limits(store: MaildirStore, root: str, limits: dict[str, int]) -> None:
    """SETQUOTA: replace the limits of ``root`` ({} removes it). ValueError for a bad resource."""
    owner, prefix = parse_root(root)
    for resource in limits:
        if resource.upper() not in RESOURCES:
            raise ValueError(f"unknown quota resource {resource!r} (known: {', '.join(RESOURCES)})")
    try:
        _tree(store, owner).set_quota_limits(prefix, {resource.upper(): value for resource, value in limits.items()})
    except MailboxNotFound:
        raise NoSuchQuotaRoot(f"No quota root {root!r}: no such shared folder") from None


def roots_of(store: MaildirStore, owner: str, name: str) -> list[str]:
    """GETQUOTAROOT: the roots governing mailbox ``name`` of ``owner`` ([] or one)."""
    prefix = _tree(store, owner).quota_root_of(name)
    return [] if prefix is None else [root_name(owner, prefix)]


def all_roots(store: MaildirStore) -> list[str]:
    """Every root with limits, users first."""
    listed = getattr(store, "quota_roots", None)
    if listed is not None:  # a database store lists them in one query
        return [root_name(owner, prefix) for owner, prefix in listed()]
    found = []
    for folder in sorted(store.users_dir.iterdir()):
        if folder.name.startswith(".") or not (folder / "index.sqlite").exists():
            continue
        found += [root_name(folder.name, prefix) for prefix in sorted(store.mailboxes(folder.name).quota_limits())]
    if (store.root / "shared" / "index.sqlite").exists():
        found += [root_name(SHARED_OWNER, prefix) for prefix in sorted(store.shared_mailboxes().quota_limits())]
    return found


def recount(store: MaildirStore, root: str) -> Usage:
    """What the message files of ``root``'s mailboxes add up to, ignoring the index's counters.

    ``cyrusmail-admin quota get`` compares it with the usage the index
    reports; any difference is drift (and ``reconstruct`` repairs it).
    """
    owner, prefix = parse_root(root)
    tree = _tree(store, owner)
    roots = set(tree.quota_limits()) | {prefix}
    size = messages = mailboxes = 0
    for listing in tree.list("*"):
        if root_of(listing.name, roots) != prefix:
            continue
        try:
            mailbox = tree.open(listing.name)
        except (NotSelectable, MailboxNotFound):
            continue
        mailboxes += 1
        for path in mailbox.folder.iterdir():
            if _is_message_file(path.name):
                size += path.stat().st_size
                messages += 1
    return Usage(size, messages, mailboxes)


def warnings(store: MaildirStore, user: str, percent: int) -> list[str]:
    """One line per resource of ``user``'s root at or past ``percent`` of its limit (IMAP [ALERT])."""
    try:
        quota = report(store, root_name(user, ""))
    except NoSuchQuotaRoot:
        return []
    lines = []
    for resource in quota.resources:
        used = quota.percent(resource)
        if used >= percent:
            usage, limit = quota.resources[resource]
            unit = " KiB" if resource == STORAGE else ""
            lines.append(f"Your mailbox is {used}% full: {resource} {usage}{unit} of {limit}{unit}")
    return lines



def _is_message_file(name: str) -> bool:
    """``<uid>.<guid>``, as the store names a message (not mailbox.json, not a half copy)."""
    uid, dot, guid = name.partition(".")
    return bool(dot and uid.isdigit() and guid) and all(c in "0123456789abcdef" for c in guid)
