"""The portal: checkers turn credentials into a user name, the realm into an Account."""

from __future__ import annotations

from twisted.cred.portal import IRealm, Portal
from zope.interface import implementer

from cyrusmail.account import Account, IAccount, own_addresses
from cyrusmail.auth.checkers import PasswordChecker
from cyrusmail.auth.userdb import UserDatabase
from cyrusmail.config import Config
from cyrusmail.store.interfaces import IStore


@implementer(IRealm)
class MailRealm:
    """Turns an avatar id into the one Account object every protocol uses."""

    def __init__(self, store: IStore, admins: list[str], local_domains: list[str],
                 special_use: dict[str, str]):
        self.store = store
        self.admins = frozenset(admins)
        self.local_domains = local_domains
        self.special_use = special_use

    def account(self, user: str) -> Account:
        self.store.provision(user, self.special_use)
        return Account(
            user=user,
            mailboxes=self.store.mailboxes(user),
            is_admin=user in self.admins,
            addresses=own_addresses(user, self.local_domains),
        )

    def requestAvatar(self, avatar_id, mind, *interfaces):
        if IAccount not in interfaces:
            raise NotImplementedError("cyrusmail only hands out IAccount avatars")
        user = avatar_id.decode("utf-8") if isinstance(avatar_id, bytes) else avatar_id
        return IAccount, self.account(user), lambda: None


def make_portal(config: Config, store: IStore, users: UserDatabase) -> Portal:
    realm = MailRealm(store, config.admins, config.domains, config.special_use_folders())
    return Portal(realm, [PasswordChecker(users, config.domains)])
