"""Access control (RFC 4314): rights, identifiers, groups, and the one decision point.

``rights_of(account, name)`` and ``require(account, name, right)`` are the
public questions; :mod:`cyrusmail.acl.control` answers them from each
mailbox's ACL (kept in its owner's index) and the registry of groups.
"""

from __future__ import annotations

from cyrusmail.store.errors import PermissionDenied


def rights_of(account, name: str) -> frozenset[str]:
    """The rights ``account`` holds on its mailbox ``name`` (as the account names it)."""
    return account.mailboxes.rights_of(name)


def require(account, name: str, right: str) -> None:
    """PermissionDenied unless ``account`` holds ``right`` on ``name``.

    A mailbox the account may neither list nor read raises MailboxNotFound
    instead, so that the answer does not reveal that it exists.
    """
    account.mailboxes.require(name, right)


__all__ = ["PermissionDenied", "require", "rights_of"]
