"""The one place rights are decided: who holds what on which mailbox.

``AccessControl`` reads a mailbox's ACL from its owner's index and the
user's groups from the registry, and answers ``rights(...)``. Every check
of the account layer, the delivery target and the admin command goes
through it. Owners are user names, or ``SHARED_OWNER`` for the shared
folders (whose owners are the config's admins).

Defaults, as Cyrus: a personal mailbox whose ACL was never set gives its
owner every right and nobody else anything; once set, the owner still
keeps ``l k x a`` whatever it says. A shared folder's default ACL is
empty. Admins hold ``a`` everywhere and every right on shared folders.
"""

from __future__ import annotations

from collections.abc import Iterable

from cyrusmail.acl import rights as R
from cyrusmail.acl.registry import AccessRegistry
from cyrusmail.store.errors import InvalidIdentifier, PermissionDenied
from cyrusmail.store.maildir.store import SHARED_OWNER, MaildirMailboxList, MaildirStore


class AccessControl:
    """Rights decisions and ACL changes over one store and its registry."""

    def __init__(self, store: MaildirStore, registry: AccessRegistry, admins: Iterable[str]):
        self.store = store
        self.registry = registry
        self.admins = frozenset(admins)

    # -- trees -------------------------------------------------------------------

    def tree(self, owner: str) -> MaildirMailboxList:
        """The mailbox tree of ``owner`` (a user, or SHARED_OWNER)."""
        return self.store.shared_mailboxes() if owner == SHARED_OWNER else self.store.mailboxes(owner)

    def is_admin(self, user: str | None) -> bool:
        return user is not None and user in self.admins

    # -- deciding ----------------------------------------------------------------

    def default_acl(self, owner: str) -> dict[str, str]:
        """The ACL a mailbox has until one is set."""
        return {} if owner == SHARED_OWNER else {owner: R.text_of(R.ALL)}

    def rights(self, user: str | None, owner: str, acl: dict[str, str] | None) -> frozenset[str]:
        """The rights of ``user`` (None: an anonymous poster) on a mailbox of ``owner`` with ``acl``."""
        if user is not None and user == owner:
            if acl is None:
                return R.ALL
            return R.evaluate(acl, user, self.registry.groups_of(user)) | R.OWNER_IMPLICIT
        if owner == SHARED_OWNER and self.is_admin(user):
            return R.ALL
        entries = self.default_acl(owner) if acl is None else acl
        groups = self.registry.groups_of(user) if user is not None else frozenset()
        held = R.evaluate(entries, user, groups)
        return held | {"a"} if self.is_admin(user) else held

    def uses_groups(self, user: str | None, owner: str, acl: dict[str, str] | None) -> bool:
        """Whether :meth:`rights` reads ``user``'s groups from the registry for this ACL
        (not for an owner's mailbox with no ACL set, nor an admin on a shared folder)."""
        if user is not None and user == owner:
            return acl is not None
        return user is not None and not (owner == SHARED_OWNER and self.is_admin(user))

    def rights_of(self, user: str | None, owner: str, name: str) -> frozenset[str]:
        """The rights of ``user`` on ``owner``'s mailbox ``name`` (MailboxNotFound if none)."""
        return self.rights(user, owner, self.tree(owner).acl(name))

    # -- changing ------------------------------------------------------------------

    def acl(self, owner: str, name: str) -> dict[str, str]:
        """The ACL of a mailbox as GETACL shows it (the default made explicit)."""
        acl = self.tree(owner).acl(name)
        entries = self.default_acl(owner) if acl is None else acl
        return {identifier: R.text_of(R.parse(text)) for identifier, text in sorted(entries.items())}

    def set_rights(self, owner: str, name: str, identifier: str, modification: str) -> str:
        """SETACL: change what ``identifier`` holds; the rights it holds after, as text."""
        identifier = R.identifier(identifier)
        tree = self.tree(owner)
        current = tree.acl(name)
        entries = dict(self.default_acl(owner) if current is None else current)
        held = R.modify(R.parse(entries.get(identifier, "")), modification)
        if held:
            entries[identifier] = "".join(letter for letter in R.ORDER if letter in held)
            self.registry.add_grants(owner, [identifier])  # before the ACL names it
        else:
            entries.pop(identifier, None)
        tree.set_acl(name, entries)
        self._refresh_grants(owner)
        return R.text_of(held)

    def delete_identifier(self, owner: str, name: str, identifier: str) -> None:
        """DELETEACL: drop ``identifier``'s entry (its ``-`` entry is a separate one)."""
        identifier = R.identifier(identifier)
        tree = self.tree(owner)
        current = tree.acl(name)
        entries = dict(self.default_acl(owner) if current is None else current)
        entries.pop(identifier, None)
        tree.set_acl(name, entries)
        self._refresh_grants(owner)

    def inherit(self, owner: str, parent: str, children: Iterable[str]) -> None:
        """RFC 4314: a new mailbox SHOULD inherit its parent's ACL."""
        tree = self.tree(owner)
        acl = tree.acl(parent)
        if acl is not None:
            for child in children:
                tree.set_acl(child, acl)

    def forget_user(self, user: str) -> list[str]:
        """Remove ``user`` from every ACL of other trees (``user`` and ``-user``
        entries) and from every group, as ``user delete`` does, so that a new
        account of that name inherits no right; the mailboxes changed.
        """
        changed = []
        for owner in self.registry.owners_granting([user]):
            if owner == user:
                continue
            tree = self.tree(owner)
            for name, acl in tree.acls().items():
                if acl and (user in acl or "-" + user in acl):
                    tree.set_acl(name, {identifier: rights for identifier, rights in acl.items()
                                        if identifier.lstrip("-") != user})
                    changed.append(f"{owner}/{name}")
            self._refresh_grants(owner)
        self.registry.forget_user(user)
        return changed

    def _refresh_grants(self, owner: str) -> None:
        named = {identifier.lstrip("-") for acl in self.tree(owner).acls().values() if acl for identifier in acl}
        named.discard(owner)
        self.registry.replace_grants(owner, named)

    def list_rights(self, owner: str, identifier: str) -> tuple[str, list[str]]:
        """LISTRIGHTS: (rights always granted, the others that may be, one letter each)."""
        identifier = R.identifier(identifier)
        if identifier == owner:
            required = R.OWNER_IMPLICIT
        elif self.is_admin(identifier):
            required = R.ALL if owner == SHARED_OWNER else frozenset("a")
        else:
            required = frozenset()
        optional = [letter for letter in R.ORDER if letter not in required]
        if "k" not in required:
            optional.append("c")
        if not R.VIRTUAL["d"] <= required:
            optional.append("d")
        return "".join(letter for letter in R.ORDER if letter in required), optional

    # -- finding -------------------------------------------------------------------

    def owners_visible_to(self, user: str) -> list[str]:
        """Users whose ACLs name ``user``, ``anyone`` or one of ``user``'s groups (maybe stale)."""
        identifiers = [user, R.ANYONE, *(R.GROUP_PREFIX + group for group in self.registry.groups_of(user))]
        return [owner for owner in self.registry.owners_granting(identifiers)
                if owner not in (user, SHARED_OWNER)]

    # -- groups ----------------------------------------------------------------------

    def add_to_group(self, group: str, members: Iterable[str]) -> list[str]:
        group = R.group_name(group)
        members = [R.identifier(member) for member in members]
        if any(member == R.ANYONE or member.startswith(("-", R.GROUP_PREFIX)) for member in members):
            raise InvalidIdentifier("A group's members are users")
        self.registry.add_members(group, members)
        return members

    def require_admin(self, user: str) -> None:
        if not self.is_admin(user):
            raise PermissionDenied("Only administrators may do that")
