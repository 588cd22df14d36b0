"""The portal: checkers turn credentials into a user name, the realm into an Account."""

from __future__ import annotations

from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from zope.interface import implementer

from cyrusmail.account import (
    OTHER_USERS,
    SHARED_FOLDERS,
    Account,
    AccountMailboxes,
    IAccount,
    own_addresses,
)
from cyrusmail.acl.control import AccessControl
from cyrusmail.acl.delivery import delivery_target
from cyrusmail.acl.registry import open_registry
from cyrusmail.auth import kerberos
from cyrusmail.auth.cache import CredentialCache
from cyrusmail.auth.checkers import PasswordChecker
from cyrusmail.auth.masters import Authorizer
from cyrusmail.auth.passdb import BuiltinPasswords
from cyrusmail.auth.scram import ScramChecker
from cyrusmail.auth.throttle import LoginThrottle, ThrottledPortal, account_key
from cyrusmail.auth.userdb import UserDatabase
from cyrusmail.config import Config
from cyrusmail.sasl import RefusalChecker
from cyrusmail.store.errors import UnknownUser
from cyrusmail.store.interfaces import IStore
from cyrusmail.store.maildir.store import SHARED_OWNER


@implementer(IRealm)
class MailRealm:
    """Turns an avatar id into the one Account object every protocol uses."""

    #: Pass as ``recipient`` to :meth:`delivery_target` for a shared folder.
    SHARED = SHARED_OWNER

    def __init__(self, store: IStore, admins: list[str], local_domains: list[str],
                 special_use: dict[str, str], other_users: str = OTHER_USERS, shared: str = SHARED_FOLDERS,
                 warning_percent: int = 90, users: UserDatabase | None = None):
        self.store = store
        self.users = users
        self.admins = frozenset(admins)
        self.local_domains = local_domains
        self.special_use = special_use
        self.other_users, self.shared = other_users, shared
        self.warning_percent = warning_percent
        self.access = AccessControl(store, open_registry(store), self.admins)

    def _provision(self, user: str, recheck: bool = True) -> None:
        """Make ``user``'s INBOX and special-use folders if missing.

        With ``recheck`` (a login, a delivery), only if ``user`` is still in
        the user database, checked under the store's user lock: one racing
        ``cyrusmail-admin user delete`` cannot bring the deleted tree back
        (UnknownUser instead). A tree that is already whole (every login but
        the first) is left alone without the lock: nothing is made then,
        and a deletion moves the tree away before it removes the user.
        """
        if self.store.provisioned(user, self.special_use):
            return
        if not recheck or self.users is None:
            self.store.provision(user, self.special_use)
            return
        with self.store.user_lock():
            if not self.users.exists(user):
                raise UnknownUser(f"No user {user}")
            self.store.provision(user, self.special_use)

    def account(self, user: str, recheck: bool = False) -> Account:
        """The Account of ``user``, whose folders are made if missing (see :meth:`_provision`)."""
        self._provision(user, recheck)
        return Account(
            user=user,
            mailboxes=AccountMailboxes(user, self.access, self.other_users, self.shared),
            is_admin=user in self.admins,
            addresses=own_addresses(user, self.local_domains),
            warning_percent=self.warning_percent,
        )

    def delivery_target(self, recipient: str, folder: str | None = None, poster: str | None = None):
        """The mailbox a delivery to ``recipient`` (+``folder``) goes to; see cyrusmail.acl.delivery."""
        if recipient != SHARED_OWNER:
            self._provision(recipient)
        return delivery_target(self.access, recipient, folder, poster)

    def close(self) -> None:
        self.access.registry.close()

    def requestAvatar(self, avatar_id, mind, *interfaces):
        if IAccount not in interfaces:
            raise NotImplementedError("cyrusmail only hands out IAccount avatars")
        user = avatar_id.decode("utf-8") if isinstance(avatar_id, bytes) else avatar_id
        try:
            account = self.account(user, recheck=True)
        except UnknownUser:  # deleted since its password was checked: a failed login
            raise UnauthorizedLogin(f"No user {user}") from None
        return IAccount, account, lambda: None


def make_passdb(config: Config, users: UserDatabase):
    """The passdb ``[auth] passdb`` names (:mod:`cyrusmail.auth.passdb`)."""
    kind = config["auth"]["passdb"]
    if kind == "passwd-file":
        from cyrusmail.auth.passwdfile import PasswdFile

        section = config["passwd_file"]
        return PasswdFile(section["path"], config.domains, allow_plain=section["allow_plain"])
    if kind == "ldap":
        from cyrusmail.auth.ldap import LDAPPasswords

        return LDAPPasswords.from_config(config)
    return BuiltinPasswords(users, config.domains)


def make_portal(config: Config, store: IStore, users: UserDatabase, reactor=None) -> ThrottledPortal:
    """The portal every protocol logs in through, throttled on ``reactor``'s clock.

    Its checkers: passwords (always), SCRAM (built-in passdb with
    ``scram_iterations``), bearer tokens (an ``[oauth]`` issuer); each SASL
    mechanism is offered only where its checker is (:mod:`cyrusmail.sasl`).
    """
    if reactor is None:
        from twisted.internet import reactor
    namespaces = config["namespaces"]
    realm = MailRealm(store, config.admins, config.domains, config.special_use_folders(),
                      other_users=namespaces["other_users"], shared=namespaces["shared"],
                      warning_percent=config["quota"]["warning_percent"], users=users)
    server, auth = config["server"], config["auth"]
    shared = store.login_failures() if hasattr(store, "login_failures") else None  # several servers: PostgreSQL
    throttle = LoginThrottle(reactor, maximum=server["login_delay_max"], shared=shared)
    cache = CredentialCache(reactor, server["auth_cache_ttl"], server["auth_cache_size"])
    authorizer = Authorizer(users, config.domains, auth["master_users"], auth["master_separator"])
    passdb = make_passdb(config, users)
    scram_iterations = auth["scram_iterations"] if users.keeps_scram_keys else 0
    checkers = [PasswordChecker(users, config.domains, cache=cache, passdb=passdb, authorizer=authorizer,
                                create_on_login=auth["create_on_login"], scram_iterations=scram_iterations)]
    if passdb.keeps_scram_keys and scram_iterations:
        checkers.append(ScramChecker(users, config.domains, scram_iterations, authorizer))
    acceptor = kerberos.acceptor_from_config(config, config.data / kerberos.RCACHE_FILE)
    if acceptor is not None:  # GSSAPI is offered where this checker is
        checkers.append(kerberos.KerberosChecker(users, config.domains, acceptor))
    checkers.append(RefusalChecker())  # malformed SASL exchanges count in the throttle
    if config["oauth"]["issuer"]:
        from cyrusmail.auth.oauth import make_token_checker

        checkers.append(make_token_checker(config, reactor, authorizer))
    return ThrottledPortal(realm, checkers, throttle,
                           lambda login: account_key(users, config.domains, authorizer.split(login)[0]))
