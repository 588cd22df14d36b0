"""The account: what one logged-in user may do, for every protocol alike.

The realm makes one ``Account`` per login. Protocols reach the store only
through it; rights and quotas are decided here, once (DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from zope.interface import Attribute, Interface, implementer

from cyrusmail.store.interfaces import IMailboxList


class IAccount(Interface):
    """A logged-in user, as every protocol sees them."""

    user = Attribute("The canonical user name (the avatar id).")
    is_admin = Attribute("True for the config's admins.")
    mailboxes = Attribute("The IMailboxList this user works on.")
    addresses = Attribute("The envelope addresses this user may send from (lower-case).")


@implementer(IAccount)
@dataclass(frozen=True)
class Account:
    user: str
    mailboxes: IMailboxList
    is_admin: bool
    addresses: frozenset[str]


def own_addresses(user: str, local_domains: list[str]) -> frozenset[str]:
    """``alice`` in ``example.org`` sends as ``alice@example.org``; ``bob@x`` as itself."""
    if "@" in user:
        return frozenset({user})
    return frozenset(f"{user}@{domain}" for domain in local_domains)
