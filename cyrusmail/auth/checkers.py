"""twisted.cred checkers: credentials in, avatar id (a user name) out.

:class:`PasswordChecker` checks a user name and password against the
configured passdb (:mod:`cyrusmail.auth.passdb`: built-in, passwd-file or
LDAP), then decides whom the login acts as (:mod:`cyrusmail.auth.masters`).
SCRAM (:mod:`cyrusmail.auth.scram`), bearer tokens
(:mod:`cyrusmail.auth.oauth`) and others plug into the same portal as
further checkers for their own credential interfaces.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import defer, threads
from zope.interface import implementer

from cyrusmail import logs
from cyrusmail.auth.cache import CredentialCache
from cyrusmail.auth.masters import Authorizer
from cyrusmail.auth.passdb import BuiltinPasswords, PasswordDatabase
from cyrusmail.auth.scram import ScramKeys
from cyrusmail.auth.userdb import UserDatabase, check_against
from cyrusmail.store.errors import UserExists


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


@implementer(ICredentialsChecker)
class PasswordChecker:
    """Checks a user name and password against the passdb.

    With a ``cache`` (:class:`~cyrusmail.auth.cache.CredentialCache`), a
    password verified lately for the same account and the same stored hash
    (or passdb token) is accepted without checking it again; only successes
    are remembered. ``authorizer`` handles master users. With a passdb
    other than the built-in one, an account that passes but has no mail
    account yet is made when ``create_on_login`` is set, else refused.
    With ``scram_iterations`` (built-in passdb), a user who has no SCRAM
    keys yet gets them at this successful login.
    """

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, users: UserDatabase, local_domains: list[str], hash_in_thread: bool = True,
                 verify: Callable[[str, str | None], bool] = check_against, cache: CredentialCache | None = None,
                 passdb: PasswordDatabase | None = None, authorizer: Authorizer | None = None,
                 create_on_login: bool = False, scram_iterations: int = 0):
        self.users = users
        self.local_domains = local_domains
        self.hash_in_thread = hash_in_thread
        self.passdb = passdb if passdb is not None else BuiltinPasswords(users, local_domains, verify)
        self.cache = cache
        self.authorizer = authorizer if authorizer is not None else Authorizer(users, local_domains)
        self.create_on_login = create_on_login
        self.scram_iterations = scram_iterations if self.passdb.keeps_scram_keys else 0

    @property
    def verify(self) -> Callable[[str, str | None], bool]:
        """The built-in passdb's check, ``(password, stored hash or None) -> bool``; tests count its calls."""
        return self.passdb.verify

    @verify.setter
    def verify(self, function: Callable[[str, str | None], bool]) -> None:
        self.passdb.verify = function

    def requestAvatarId(self, creds):
        password = _text(creds.password)
        client = getattr(creds, "client", "unknown")
        login, wanted = self.authorizer.split(_text(creds.username), getattr(creds, "authzid", ""))
        entry = self.passdb.lookup(login)
        cache = self.cache if entry is not None else None
        if cache is not None and cache.hit(entry[0], password, entry[1]):
            result = defer.succeed(entry[0])
        else:
            check = self.passdb.checker(login)

            def verify() -> str:
                account = check(password)
                if account is None:
                    raise error.UnauthorizedLogin("Invalid credentials")
                return account

            if self.hash_in_thread:  # scrypt takes ~50 ms, LDAP a round trip: keep the reactor free
                result = threads.deferToThread(verify)
            else:
                result = defer.maybeDeferred(verify)
            result.addCallback(self._verified, password, entry)
        result.addCallback(self._mail_account)
        return result.addCallback(self.authorizer, wanted, client)

    def _verified(self, account: str, password: str, entry: tuple[str, str] | None) -> defer.Deferred | str:
        """Back on the reactor thread, where the cache and the database live."""
        if self.cache is not None and entry is not None and entry[0] == account:
            self.cache.remember(account, password, entry[1])
        if not self.scram_iterations or entry is None or self.users.scram_keys(account) is not None:
            return account
        stored = entry[1]
        derive = threads.deferToThread if self.hash_in_thread else defer.maybeDeferred
        upgrade = derive(ScramKeys.derive, password, self.scram_iterations)

        def keep(keys: ScramKeys | None) -> str:
            if keys is not None and self.users.set_scram_keys(account, keys, stored):
                logs.log.info("auth: SCRAM keys made for {user} at login", user=account)
            return account

        return upgrade.addCallback(keep)

    def _mail_account(self, account: str) -> str:
        """The mail account for what the passdb accepted: the same, or made now (passwd-file, LDAP)."""
        if self.passdb.keeps_scram_keys:  # the built-in passdb: its accounts are the mail accounts
            return account
        name = self.users.resolve(account, self.local_domains)
        if name is not None:
            return name
        if not self.create_on_login:
            logs.log.warn("auth: {user} passed the {passdb} passdb but has no mail account"
                          " (cyrusmail-admin user add {user} --no-password, or [auth] create_on_login = yes)",
                          user=account, passdb=self.passdb.name)
            raise error.UnauthorizedLogin("no mail account")
        try:
            name = self.users.add(account, None)
        except UserExists:  # made meanwhile by another login
            return self.users.resolve(account, self.local_domains) or account
        logs.log.info("auth: mail account {user} made at its first login ({passdb} passdb)",
                      user=name, passdb=self.passdb.name)
        return name
