"""The account: what one logged-in user may do, for every protocol alike.

The realm makes one ``Account`` per login. Protocols reach the store only
through it; rights and quotas are decided here, once (DESIGN.md):

- ``account.mailboxes`` is an :class:`AccountMailboxes`, an ``IMailboxList``
  over three namespaces: the user's own mailboxes, ``Other Users/NAME/...``
  (what other users share with them) and ``Shared Folders/...`` (the
  prefixes come from the config's ``[namespaces]``). It maps each name to
  (owner's tree, real name) and checks the RFC 4314 right of every call.
- Each opened mailbox is a :class:`GuardedMailbox`, an ``IMailbox`` that
  checks ``r`` to read, ``i`` to append, ``s``/``t``/``w`` per flag and
  ``e`` to expunge before calling the store's, and keeps ``\\Seen`` per
  reader on shared folders (a change of it gives the message a new modseq,
  so CONDSTORE and QRESYNC clients learn of it).
- Quota is enforced by the store inside the inserting transaction
  (OverQuota); the account reports roots, usage and warnings.

A mailbox the user may neither list (``l``) nor read (``r``) is answered
with MailboxNotFound, as if it did not exist (RFC 4314 section 6).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from zope.interface import Attribute, Interface, implementer

from cyrusmail import quota
from cyrusmail.acl import rights as R
from cyrusmail.acl.control import AccessControl
from cyrusmail.store import names
from cyrusmail.store.errors import (
    InvalidName,
    InvalidUserName,
    MailboxExists,
    MailboxNotFound,
    NoSuchQuotaRoot,
    NotSelectable,
    PermissionDenied,
    Refused,
    StoreError,
)
from cyrusmail.store.interfaces import IMailbox, IMailboxList
from cyrusmail.store.maildir.store import SHARED_OWNER
from cyrusmail.store.records import (
    NO_FLAGS,
    Changes,
    Flag,
    FlagChange,
    MailboxAttribute,
    MailboxListing,
    MailboxStatus,
    MailboxSummary,
    MessageRecord,
)

SEPARATOR = names.SEPARATOR
OTHER_USERS, SHARED_FOLDERS = "Other Users", "Shared Folders"


class IAccount(Interface):
    """A logged-in user, as every protocol sees them."""

    user = Attribute("The canonical user name (the avatar id).")
    is_admin = Attribute("True for the config's admins.")
    mailboxes = Attribute("The IMailboxList this user works on (rights checked on every call).")
    addresses = Attribute("The envelope addresses this user may send from (lower-case).")


# -- names --------------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """Where a name the user gives lives: the owner's tree and the name there.

    ``name`` is None for a namespace node (``Other Users``, ``Other Users/bob``,
    ``Shared Folders``), which holds mailboxes but is none itself.
    """

    owner: str
    name: str | None
    display: str

    @property
    def is_node(self) -> bool:
        return self.name is None


@functools.lru_cache(maxsize=256)  # few distinct rights sets, asked on every STORE; Flag arithmetic is slow
def _flag_mask(rights: frozenset[str]) -> Flag:
    """The system flags ``rights`` let a user set or clear (RFC 4314 section 4)."""
    mask = NO_FLAGS
    if "s" in rights:
        mask |= Flag.SEEN
    if "t" in rights:
        mask |= Flag.DELETED
    if "w" in rights:
        mask |= Flag.ANSWERED | Flag.FLAGGED | Flag.DRAFT
    return mask


_ALL_FLAGS = Flag.SEEN | Flag.DELETED | Flag.ANSWERED | Flag.FLAGGED | Flag.DRAFT


def _with_seen(record: MessageRecord, seen: bool) -> MessageRecord:
    flags = (record.flags | Flag.SEEN) if seen else (record.flags & ~Flag.SEEN)
    return record if flags == record.flags else dataclasses.replace(record, flags=flags)


# -- the mailbox list -------------------------------------------------------------------


@implementer(IMailboxList)
class AccountMailboxes:
    """One user's view of every mailbox they may reach, rights checked on each call."""

    separator = SEPARATOR

    def __init__(self, user: str, access: AccessControl, other_users: str = OTHER_USERS,
                 shared: str = SHARED_FOLDERS):
        self.user = user
        self.access = access
        self.personal = access.tree(user)
        self.other_users = other_users.rstrip(SEPARATOR)
        self.shared = shared.rstrip(SEPARATOR)

    # -- names ---------------------------------------------------------------------

    def resolve(self, display: str) -> Location:
        """Map a name as the user gives it to (owner, real name); MailboxNotFound if it cannot be."""
        try:
            for prefix, shared in ((self.other_users, False), (self.shared, True)):
                if display == prefix:
                    return Location(SHARED_OWNER if shared else "", None, display)
                if display.startswith(prefix + SEPARATOR):
                    rest = display[len(prefix) + 1:]
                    if shared:
                        name = names.check(rest)
                        return Location(SHARED_OWNER, name, f"{prefix}/{name}")
                    owner_text, _, sub = rest.partition(SEPARATOR)
                    owner = names.user_name(owner_text)
                    if not sub:
                        return Location(owner, None, f"{prefix}/{owner}")
                    name = names.check(sub)
                    return Location(owner, name, f"{prefix}/{owner}/{name}")
            return Location(self.user, names.check(display), names.canonical(display))
        except InvalidUserName:
            raise MailboxNotFound(f"Mailbox {display} does not exist") from None

    def display(self, owner: str, name: str) -> str:
        if owner == self.user:
            return name
        if owner == SHARED_OWNER:
            return f"{self.shared}/{name}"
        return f"{self.other_users}/{owner}/{name}"

    def tree(self, location: Location):
        return self.personal if location.owner == self.user else self.access.tree(location.owner)

    # -- the decision point ----------------------------------------------------------------

    def _rights(self, location: Location) -> frozenset[str]:
        if location.is_node:
            raise MailboxNotFound(f"{location.display} is a namespace, not a mailbox")
        try:
            acl = self.tree(location).acl(location.name)
        except MailboxNotFound:
            # worded as for a mailbox that exists but may not be seen (RFC 4314 section 6)
            raise MailboxNotFound(f"Mailbox {location.display} does not exist") from None
        return self.access.rights(self.user, location.owner, acl)

    def rights_of(self, display: str) -> frozenset[str]:
        """The rights this user holds on ``display`` (MailboxNotFound if it does not exist)."""
        return self._rights(self.resolve(display))

    def require(self, display: str, right: str, location: Location | None = None) -> frozenset[str]:
        """Every right held, once ``right`` is among them.

        PermissionDenied when the mailbox is visible (``l`` or ``r``) but the
        right is missing; MailboxNotFound when it is not, as if it did not exist.
        """
        location = location or self.resolve(display)
        held = self._rights(location)
        if right not in held:
            if held & R.VISIBLE:
                raise PermissionDenied(f"No {right!r} right on {location.display}")
            raise MailboxNotFound(f"Mailbox {location.display} does not exist")
        return held

    def _require_create(self, location: Location) -> str | None:
        """Check ``k`` on the nearest existing superior of a new name; that superior (or None).

        In a tree not the user's own every refusal is the same, naming only
        the new name: it tells nobody whether that user, a superior or the
        name itself exists (RFC 4314 section 6).
        """
        tree = self.tree(location)
        superior = next((name for name in reversed(names.superiors(location.name)) if tree.exists(name)), None)
        if superior is not None:
            allowed = "k" in self.access.rights(self.user, location.owner, tree.acl(superior))
        elif location.owner == self.user:
            allowed = True
        elif location.owner == SHARED_OWNER:
            allowed = self.access.is_admin(self.user)
        else:  # the top of another user's tree: their INBOX stands for it, as in Cyrus
            allowed = tree.exists(names.INBOX) and "k" in self.access.rights(
                self.user, location.owner, tree.acl(names.INBOX))
        if not allowed:
            raise self._no_create(location)
        return superior

    @staticmethod
    def _no_create(location: Location) -> PermissionDenied:
        return PermissionDenied(f"No right to create {location.display}")

    def _visible(self, location: Location) -> bool:
        try:
            return bool(self._rights(location) & R.VISIBLE)
        except MailboxNotFound:
            return False

    def _exists_error(self, location: Location, error: MailboxExists) -> StoreError:
        """What to say when a name is taken: that it is, only if the user may see it."""
        if location.owner != self.user and not self._visible(location):
            return self._no_create(location)
        return error

    # -- IMailboxList ------------------------------------------------------------------------

    def create(self, name: str, special_use: str | None = None) -> str:
        """Make ``name`` if the user may; its MAILBOXID."""
        location = self.resolve(name)
        if location.is_node:
            raise MailboxExists(f"{location.display} is a namespace and cannot be created")
        parent = self._require_create(location)
        tree = self.tree(location)
        new = [superior for superior in names.superiors(location.name) if not tree.exists(superior)]
        try:
            object_id = tree.create(location.name, special_use=special_use if location.owner == self.user else None)
        except MailboxExists as error:
            raise self._exists_error(location, error) from None
        if parent is not None:
            self.access.inherit(location.owner, parent, [*new, location.name])
        return object_id

    def may_create(self, name: str) -> bool:
        """Whether ``name`` does not exist and CREATE would make it (IMAP's [TRYCREATE], as Cyrus).

        False for a mailbox that exists but the user may not see, so the
        answer is the same as for one they could not create.
        """
        try:
            location = self.resolve(name)
            if location.is_node or self.tree(location).exists(location.name):
                return False
            self._require_create(location)
        except (MailboxNotFound, PermissionDenied, InvalidName):
            return False
        return True

    def delete(self, name: str) -> None:
        location = self.resolve(name)
        self.require(name, "x", location)
        self.tree(location).delete(location.name)

    def rename(self, old: str, new: str) -> None:
        source, target = self.resolve(old), self.resolve(new)
        self.require(old, "x", source)
        if target.is_node:
            raise MailboxExists(f"{target.display} is a namespace")
        if source.owner != target.owner:
            raise Refused("A mailbox cannot be renamed into another user's or the shared namespace")
        self._require_create(target)
        try:
            self.tree(source).rename(source.name, target.name)
        except MailboxExists as error:
            raise self._exists_error(target, error) from None

    def exists(self, name: str) -> bool:
        try:
            location = self.resolve(name)
        except (MailboxNotFound, InvalidName):
            return False
        if location.is_node:
            return any(self.list(location.display + SEPARATOR + "*"))
        try:
            return bool(self._rights(location) & R.VISIBLE)
        except MailboxNotFound:
            return False

    def list(self, pattern: str) -> list[MailboxListing]:
        matcher = names.pattern_regex(pattern)
        own = [listing for listing in self.personal.list(pattern) if not self._reserved(listing.name)]
        foreign = [listing for listing in self._foreign_listings(pattern) if matcher.match(listing.name)]
        return own + foreign

    def open(self, name: str) -> GuardedMailbox:
        location = self.resolve(name)
        if location.is_node:
            if self.exists(name):
                raise NotSelectable(f"{location.display} is not selectable")
            raise MailboxNotFound(f"Mailbox {location.display} does not exist")
        held = self._rights(location)
        if not held & (R.VISIBLE | {"i"}):
            raise MailboxNotFound(f"Mailbox {location.display} does not exist")
        inner = self.tree(location).open(location.name)
        return GuardedMailbox(self, location, inner)

    def status(self, name: str) -> MailboxStatus:
        return self.open(name).status()

    def statuses(self, wanted: Iterable[str], deleted: bool = False) -> dict[str, MailboxStatus]:
        """The status of those of ``wanted`` the user may read (``r``), for LIST-STATUS.

        One read of each owner's ACLs and one of their counts, however many
        names; on a shared folder the unseen count is the reader's own, so
        each of those is read as STATUS reads it.
        """
        by_owner: dict[str, list[Location]] = {}
        for display in wanted:
            try:
                location = self.resolve(display)
            except (MailboxNotFound, InvalidName):
                continue
            if not location.is_node:
                by_owner.setdefault(location.owner, []).append(location)
        found: dict[str, MailboxStatus] = {}
        for owner, locations in by_owner.items():
            tree = self.tree(Location(owner, None, ""))
            acls = tree.acls()
            readable = [location for location in locations if location.name in acls
                        and "r" in self.access.rights(self.user, owner, acls[location.name])]
            if owner == SHARED_OWNER:  # \Seen is per reader here
                for location in readable:
                    try:
                        mailbox = self.open(location.display)
                        found[location.display] = dataclasses.replace(
                            mailbox.status(), object_id=mailbox.object_id,
                            deleted=sum(1 for record in mailbox.messages() if record.flags & Flag.DELETED)
                            if deleted else None)
                    except StoreError:
                        continue
                continue
            counts = tree.statuses([location.name for location in readable], deleted)
            found.update((location.display, counts[location.name])
                         for location in readable if location.name in counts)
        return found

    def subscribe(self, name: str) -> None:
        self.personal.subscribe(self.resolve(name).display)

    def unsubscribe(self, name: str) -> None:
        try:
            name = self.resolve(name).display
        except MailboxNotFound:
            pass
        self.personal.unsubscribe(name)

    def subscriptions(self) -> list[str]:
        return self.personal.subscriptions()

    def special_use(self, name: str) -> str | None:
        location = self.resolve(name)
        if location.owner != self.user or location.is_node:
            return None
        return self.personal.special_use(location.name)

    # -- the other namespaces -------------------------------------------------------------------

    def _reserved(self, name: str) -> bool:
        """A personal name hidden by a namespace prefix."""
        return any(name == prefix or name.startswith(prefix + SEPARATOR)
                   for prefix in (self.other_users, self.shared))

    def _may_reach(self, pattern: str, prefix: str) -> bool:
        """Whether ``pattern`` can match anything at or under ``prefix``."""
        cut = min((i for i in (pattern.find("*"), pattern.find("%")) if i >= 0), default=len(pattern))
        literal = pattern[:cut]
        return (prefix + SEPARATOR).startswith(literal) or literal.startswith(prefix + SEPARATOR) \
            or literal == prefix

    def _foreign_listings(self, pattern: str) -> Iterable[MailboxListing]:
        """The visible (``l``) mailboxes of other users and the shared tree, with namespace nodes."""
        owners = []
        if self._may_reach(pattern, self.other_users):
            owners += self.access.owners_visible_to(self.user)
        if self._may_reach(pattern, self.shared):
            owners.append(SHARED_OWNER)
        subscribed = set(self.personal.subscriptions()) if owners else set()
        node = frozenset({MailboxAttribute.NOSELECT, MailboxAttribute.HAS_CHILDREN})
        tops_shown: set[str] = set()
        for owner in owners:
            tree = self.access.tree(owner)
            acls = tree.acls()
            visible = [listing for listing in tree.list("*")
                       if "l" in self.access.rights(self.user, owner, acls.get(listing.name))]
            if not visible:
                continue
            top = self.shared if owner == SHARED_OWNER else self.other_users
            if top not in tops_shown:
                tops_shown.add(top)
                yield MailboxListing(top, node)
            if owner != SHARED_OWNER:
                yield MailboxListing(f"{top}/{owner}", node)
            shown = {listing.name for listing in visible}
            parents = {names.parent(name) for name in shown}
            for listing in visible:
                display = self.display(owner, listing.name)
                attributes = set(listing.attributes) - {
                    MailboxAttribute.HAS_CHILDREN, MailboxAttribute.HAS_NO_CHILDREN, MailboxAttribute.SUBSCRIBED}
                attributes.add(MailboxAttribute.HAS_CHILDREN if listing.name in parents
                               else MailboxAttribute.HAS_NO_CHILDREN)
                if display in subscribed:
                    attributes.add(MailboxAttribute.SUBSCRIBED)
                yield MailboxListing(display, frozenset(attributes))


# -- one mailbox ----------------------------------------------------------------------------------


@implementer(IMailbox)
class GuardedMailbox:
    """A store mailbox seen by one user: each call checks that user's rights first.

    Rights are read again whenever they may have changed, so a SETACL (or a
    change of groups) takes effect at once. On shared folders ``\\Seen`` is
    the reader's own (kept in the reader's index, as Cyrus keeps a seen
    state per user).
    """

    def __init__(self, view: AccountMailboxes, location: Location, inner):
        self.view = view
        self.location = location
        self.inner = inner
        self.name = location.display
        self.uid_validity = inner.uid_validity
        self.object_id = inner.object_id
        self.private_seen = location.owner == SHARED_OWNER
        # (owner's index generation, registry generation or None, rights) of the last read
        self._rights: tuple | None = None

    # -- rights ----------------------------------------------------------------------

    @property
    def rights(self) -> frozenset[str]:
        """What the user holds on this mailbox now."""
        return self._rights_now()[1]

    def _rights_now(self) -> tuple[object, frozenset[str]]:
        """(the owner's index generation, the rights held).

        The rights are kept from the last read while the owner's index
        (which holds the ACL) has not changed, nor the group registry when
        they depend on groups: a command asks several times, and one cheap
        look at the generations replaces reading and evaluating the ACL.
        """
        access = self.view.access
        generation = self.inner.generation()
        kept = self._rights
        if kept is not None and kept[0] == generation and (kept[1] is None or kept[1] == access.registry.generation()):
            return generation, kept[2]
        acl = self.inner.acl()
        groups = access.registry.generation() if access.uses_groups(self.view.user, self.location.owner, acl) else None
        held = access.rights(self.view.user, self.location.owner, acl)
        self._rights = (generation, groups, held)
        return generation, held

    @property
    def read_only(self) -> bool:
        """RFC 4314 5.2: SELECT answers READ-ONLY unless the user holds i, e, s, t or w."""
        return not self.rights & R.WRITE

    @property
    def flag_mask(self) -> Flag:
        """The system flags the user may change here (PERMANENTFLAGS); keywords need ``w``."""
        return _flag_mask(self.rights)

    def _require(self, *needed: str) -> frozenset[str]:
        return self._check(self.rights, needed)

    def _check(self, held: frozenset[str], needed: tuple[str, ...]) -> frozenset[str]:
        missing = [right for right in needed if right not in held]
        if missing:
            if not held & R.VISIBLE:  # opened with "i" alone: still not to be seen (RFC 4314 6)
                raise MailboxNotFound(f"Mailbox {self.name} does not exist")
            raise PermissionDenied(f"No {''.join(missing)!r} right on {self.name}")
        return held

    # -- \Seen per reader ------------------------------------------------------------------

    def _seen(self) -> frozenset[int] | None:
        return self.view.personal.private_seen(self.inner) if self.private_seen else None

    def _overlay(self, records: list[MessageRecord], seen: frozenset[int] | None = None) -> list[MessageRecord]:
        if not self.private_seen:
            return records
        seen = self._seen() if seen is None else seen
        return [_with_seen(record, record.uid in seen) for record in records]

    # -- reading -----------------------------------------------------------------------

    def status(self) -> MailboxStatus:
        self._require("r")
        status = self.inner.status()
        if not self.private_seen:
            return status
        seen = self._seen()
        present = sum(1 for record in self.inner.messages() if record.uid in seen) if seen else 0
        return dataclasses.replace(status, unseen=status.messages - present)

    def messages(self) -> list[MessageRecord]:
        self._require("r")
        return self._overlay(self.inner.messages())

    def summary(self) -> MailboxSummary:
        self._require("r")
        summary = self.inner.summary()
        if not self.private_seen:
            return summary
        seen = self._seen()
        first = next((uid for uid in summary.uids if uid not in seen), None)
        return dataclasses.replace(summary, first_unseen_uid=first)

    def record(self, uid: int) -> MessageRecord:
        self._require("r")
        return self._overlay([self.inner.record(uid)])[0]

    def records(self, uids: Iterable[int]) -> list[MessageRecord]:
        self._require("r")
        return self._overlay(self.inner.records(uids))

    def read(self, uid: int, start: int = 0, end: int | None = None) -> bytes:
        self._require("r")
        return self.inner.read(uid, start, end)

    def open_file(self, uid: int):
        self._require("r")
        return self.inner.open_file(uid)

    def mime_cache(self, uid: int) -> bytes | None:
        self._require("r")
        return self.inner.mime_cache(uid)

    def mime_caches(self, uids) -> dict[int, bytes]:
        self._require("r")
        return self.inner.mime_caches(uids)

    def previews(self, uids) -> dict[int, str]:
        self._require("r")
        return self.inner.previews(uids)

    def cache_may_contain(self, all_of: list[bytes], any_of: list[bytes] = ()) -> set[int]:
        self._require("r")
        return self.inner.cache_may_contain(all_of, any_of)

    def sort_rows(self, uids, columns) -> list:
        self._require("r")
        return self.inner.sort_rows(uids, columns)

    def changes_since(self, modseq: int) -> Changes:
        self._require("r")
        changes = self.inner.changes_since(modseq)
        if not self.private_seen:
            return changes
        return dataclasses.replace(changes, changed=self._overlay(changes.changed))

    def generation(self):
        """The owner's index generation, once ``r`` is held (as for changes_since)."""
        generation, held = self._rights_now()
        self._check(held, ("r",))
        return generation

    def expunged_since(self, modseq: int) -> list[int] | None:
        self._require("r")
        return self.inner.expunged_since(modseq)

    def claim_recent(self) -> frozenset[int]:
        self._require("r")
        return self.inner.claim_recent()

    def watch(self, listener: Callable[[], None]) -> None:
        self.inner.watch(listener)

    def unwatch(self, listener: Callable[[], None]) -> None:
        self.inner.unwatch(listener)

    # -- writing ---------------------------------------------------------------------------

    def _admit(self, held: frozenset[str]) -> Callable[[Flag, Iterable[str]], tuple[Flag, frozenset[str]]]:
        """RFC 4314 APPEND/COPY: keep only the flags the user may set; never fail for them."""
        mask = _flag_mask(held)
        keep_keywords = "w" in held

        def admit(flags: Flag, keywords: Iterable[str]) -> tuple[Flag, frozenset[str]]:
            return (flags or NO_FLAGS) & mask, frozenset(keywords) if keep_keywords else frozenset()
        return admit

    def append(self, message, flags: Flag | None = None, keywords: Iterable[str] = (),
               internal_date: float | None = None) -> int:
        (uid,) = self.append_many([(message, flags, keywords, internal_date)])
        return uid

    def append_many(self, items: list) -> list[int]:
        admit = self._admit(self._require("i"))
        admitted = []
        seen_positions = []
        for position, (message, flags, keywords, date) in enumerate(items):
            flags, keywords = admit(flags, keywords)
            if self.private_seen and flags & Flag.SEEN:
                seen_positions.append(position)
                flags &= ~Flag.SEEN
            admitted.append((message, flags, keywords, date))
        uids = self.inner.append_many(admitted)
        if seen_positions:
            self.view.personal.set_private_seen(self.inner, seen=[uids[i] for i in seen_positions])
        return uids

    def set_flags(self, uids, change: FlagChange, flags: Flag, keywords: Iterable[str] = (),
                  unchanged_since: int | None = None):
        """STORE, as far as the user's rights go (RFC 4314 section 4).

        Flags the user may not change are left as they are; the call fails
        (PermissionDenied) only when it asks to change nothing it may.
        Adding or removing the empty list changes nothing and needs no right.
        """
        if change is not FlagChange.REPLACE and not flags and not keywords:
            return [], []
        held = self.rights
        keywords = frozenset(keywords)
        mask = _flag_mask(held)
        may_keywords = "w" in held
        asked = _ALL_FLAGS if change is FlagChange.REPLACE else flags
        if not (asked & mask) and not (may_keywords and (keywords or change is FlagChange.REPLACE)):
            raise PermissionDenied(f"No right to change those flags on {self.name}")
        uids = list(uids)
        store_mask = mask & ~Flag.SEEN if self.private_seen else mask
        full = store_mask == _flag_mask(R.ALL) and may_keywords
        changed: dict[int, MessageRecord] = {}
        if full:
            records, refused = self.inner.set_flags(uids, change, flags, keywords, unchanged_since)
            changed.update((record.uid, record) for record in records)
        else:
            refused = self._set_some_flags(uids, change, flags, keywords, store_mask, may_keywords,
                                           unchanged_since, changed)
        if self.private_seen and "s" in held and (change is FlagChange.REPLACE or flags & Flag.SEEN):
            self._set_private_seen(uids, change, flags, set(refused), changed)
        return self._overlay(sorted(changed.values(), key=lambda record: record.uid)), refused

    def _set_some_flags(self, uids, change, flags, keywords, store_mask, may_keywords, unchanged_since,
                        changed) -> list[int]:
        """Change only the flags in ``store_mask`` (and keywords if allowed), leaving the rest."""
        if change is not FlagChange.REPLACE:
            bits = flags & store_mask
            words = keywords if may_keywords else frozenset()
            if not bits and not words:
                return []
            records, refused = self.inner.set_flags(uids, change, bits, words, unchanged_since)
            changed.update((record.uid, record) for record in records)
            return refused
        groups: dict[tuple[Flag, frozenset[str]], list[int]] = {}
        for record in self.inner.records(uids):
            target = (flags & store_mask) | (record.flags & ~store_mask)
            groups.setdefault((target, keywords if may_keywords else record.keywords), []).append(record.uid)
        refused: list[int] = []
        for (target, words), group in groups.items():
            records, group_refused = self.inner.set_flags(group, FlagChange.REPLACE, target, words, unchanged_since)
            changed.update((record.uid, record) for record in records)
            refused += group_refused
        return sorted(refused)

    def _set_private_seen(self, uids, change, flags, refused: set[int], changed) -> None:
        before = self._seen()
        wanted = change is FlagChange.ADD or (change is FlagChange.REPLACE and bool(flags & Flag.SEEN))
        records = [record for record in self.inner.records(uids) if record.uid not in refused]
        flipping = [record for record in records if (record.uid in before) != wanted]
        if not flipping:
            return
        flipped = [record.uid for record in flipping]
        if wanted:
            self.view.personal.set_private_seen(self.inner, seen=flipped)
        else:
            self.view.personal.set_private_seen(self.inner, unseen=flipped)
        # A new modseq for each, so that CONDSTORE clients of this reader (in other
        # sessions too) see the change; other readers see only the modseq move.
        for record in self.inner.touch(flipped):
            changed[record.uid] = record

    def _transfer(self, uids, target: GuardedMailbox, moving: bool) -> list[tuple[int, int]]:
        if not isinstance(target, GuardedMailbox):
            raise TypeError("copy and move take a mailbox opened through the same account")
        self._require("r", "t", "e") if moving else self._require("r")
        admit = target._admit(target._require("i"))
        source_seen = self._seen()
        target_keeps_seen = target.private_seen and bool(_flag_mask(target.rights) & Flag.SEEN)
        seen_in_target: set[int] = set()

        def transform(record: MessageRecord) -> tuple[Flag, frozenset[str]]:
            if source_seen is not None:
                record = _with_seen(record, record.uid in source_seen)
            flags, keywords = admit(record.flags, record.keywords)
            if target.private_seen and flags & Flag.SEEN:
                seen_in_target.add(record.uid)
                flags &= ~Flag.SEEN
            return flags, keywords

        pairs = (self.inner.move if moving else self.inner.copy)(uids, target.inner, transform)
        if target_keeps_seen and seen_in_target:
            self.view.personal.set_private_seen(
                target.inner, seen=[new for old, new in pairs if old in seen_in_target])
        return pairs

    def copy(self, uids, target: GuardedMailbox) -> list[tuple[int, int]]:
        """COPY: ``r`` here, ``i`` there; flags the user may not set there are dropped."""
        return self._transfer(uids, target, moving=False)

    def move(self, uids, target: GuardedMailbox) -> list[tuple[int, int]]:
        """MOVE (RFC 6851): as COPY, plus ``t`` and ``e`` here."""
        return self._transfer(uids, target, moving=True)

    def expunge(self, uids=None) -> list[int]:
        self._require("e")
        return self.inner.expunge(uids)

    # -- the same, off the reactor ------------------------------------------------------------
    #
    # Each runs the method above, rights checks included, in the queue of the
    # owner's index (see cyrusmail.store.executor); a Deferred of its result,
    # fired once it is durable.  Work that writes only the owner's index is
    # grouped with its neighbours; a reader's own \Seen on a shared folder is
    # kept in the reader's index, so that work runs alone.

    def later(self, work, *args, group: bool = True, messages=()):
        """``work(*args)`` in the owner's queue, grouped unless \\Seen is the reader's own here."""
        return self.inner.later(work, *args, group=group and not self.private_seen, messages=messages)

    def append_many_async(self, items: list):
        return self.later(self.append_many, items, messages=[item[0] for item in items])

    def set_flags_async(self, uids, change: FlagChange, flags: Flag, keywords: Iterable[str] = (),
                        unchanged_since: int | None = None):
        return self.later(self.set_flags, list(uids), change, flags, frozenset(keywords), unchanged_since)

    def copy_async(self, uids, target: GuardedMailbox):
        together = target.inner.index is self.inner.index and not target.private_seen
        return target.later(self.copy, list(uids), target, group=together and not self.private_seen)

    def move_async(self, uids, target: GuardedMailbox):
        together = target.inner.index is self.inner.index and not target.private_seen
        return self.later(self.move, list(uids), target, group=together)

    def expunge_async(self, uids=None):
        return self.later(self.expunge, None if uids is None else list(uids))


# -- the account -----------------------------------------------------------------------------------


@implementer(IAccount)
class Account:
    """One logged-in user: their mailbox view, and the ACL and quota commands."""

    def __init__(self, user: str, mailboxes: AccountMailboxes, is_admin: bool, addresses: frozenset[str],
                 warning_percent: int = 90):
        self.user = user
        self.mailboxes = mailboxes
        self.is_admin = is_admin
        self.addresses = addresses
        self.warning_percent = warning_percent

    @property
    def access(self) -> AccessControl:
        return self.mailboxes.access

    # -- RFC 4314 ----------------------------------------------------------------------

    def rights(self, name: str) -> str:
        """MYRIGHTS: the user's rights on ``name`` as text (needs any of l r i k x a)."""
        location = self.mailboxes.resolve(name)
        held = self.mailboxes._rights(location)
        if not held & R.ANY:
            raise MailboxNotFound(f"Mailbox {location.display} does not exist")
        return R.text_of(held)

    def namespaces(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[tuple[str, str]]]:
        """NAMESPACE (RFC 2342): (personal, other users, shared), each [(prefix, separator)]."""
        view = self.mailboxes
        return ([("", SEPARATOR)], [(view.other_users + SEPARATOR, SEPARATOR)],
                [(view.shared + SEPARATOR, SEPARATOR)])

    def _administered(self, name: str) -> Location:
        location = self.mailboxes.resolve(name)
        self.mailboxes.require(name, "a", location)
        return location

    def acl(self, name: str) -> list[tuple[str, str]]:
        """GETACL: [(identifier, rights)] (needs ``a``)."""
        location = self._administered(name)
        return list(self.access.acl(location.owner, location.name).items())

    def set_acl(self, name: str, identifier: str, rights: str) -> str:
        """SETACL (``+rights`` adds, ``-rights`` removes, else replaces; needs ``a``); the result."""
        location = self._administered(name)
        return self.access.set_rights(location.owner, location.name, identifier, rights)

    def delete_acl(self, name: str, identifier: str) -> None:
        """DELETEACL (needs ``a``)."""
        location = self._administered(name)
        self.access.delete_identifier(location.owner, location.name, identifier)

    def list_rights(self, name: str, identifier: str) -> tuple[str, list[str]]:
        """LISTRIGHTS: (always granted, [each right that may be]) (needs ``a``)."""
        location = self._administered(name)
        return self.access.list_rights(location.owner, identifier)

    # -- RFC 9208 -------------------------------------------------------------------------

    def quota_roots(self, name: str) -> list[str]:
        """GETQUOTAROOT: the roots of ``name`` ([] or one); needs ``r`` or ``l``."""
        location = self.mailboxes.resolve(name)
        if not self.mailboxes._visible(location):
            raise MailboxNotFound(f"Mailbox {location.display} does not exist")
        return quota.roots_of(self.access.store, location.owner, location.name)

    def quota(self, root: str) -> quota.QuotaReport:
        """GETQUOTA: a root the user may see (their own, or one of a mailbox they can see)."""
        owner, prefix = quota.parse_root(root)
        if not self.is_admin and owner != self.user:
            tree = self.access.tree(owner)
            try:
                visible = prefix and bool(self.access.rights(self.user, owner, tree.acl(prefix)) & R.VISIBLE)
            except MailboxNotFound:
                visible = False
            if not visible:
                raise NoSuchQuotaRoot(f"No quota root {root!r}")
        return quota.report(self.access.store, root)

    def set_quota(self, root: str, limits: dict[str, int]) -> None:
        """SETQUOTA: replace the limits of ``root`` ({} removes it); admins only."""
        self.access.require_admin(self.user)
        quota.set_limits(self.access.store, root, limits)

    def quota_warnings(self) -> list[str]:
        """Lines for an IMAP ``[ALERT]`` at login when the user's root passes ``warning_percent``."""
        return quota.warnings(self.access.store, self.user, self.warning_percent)


def own_addresses(user: str, local_domains: list[str]) -> frozenset[str]:
    """``alice`` in ``example.org`` sends as ``alice@example.org``; ``bob@x`` as itself."""
    if "@" in user:
        return frozenset({user})
    return frozenset(f"{user}@{domain}" for domain in local_domains)
