"""twisted.cred checkers: credentials in, avatar id (a user name) out.

Only username/password is here now; SCRAM, GSSAPI or OAuth bearer checkers
plug into the same portal as further checkers for their own credential
interfaces, with no change elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import defer, threads
from zope.interface import implementer

from cyrusmail.auth.cache import CredentialCache
from cyrusmail.auth.userdb import UserDatabase, check_against


@implementer(ICredentialsChecker)
class PasswordChecker:
    """Checks a user name and password against the user database's scrypt hashes.

    With a ``cache`` (:class:`~cyrusmail.auth.cache.CredentialCache`), a
    password verified lately for the same account and the same stored hash
    is accepted without scrypt; only successes are remembered.
    """

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, users: UserDatabase, local_domains: list[str], hash_in_thread: bool = True,
                 verify: Callable[[str, str | None], bool] = check_against, cache: CredentialCache | None = None):
        self.users = users
        self.local_domains = local_domains
        self.hash_in_thread = hash_in_thread
        self.verify = verify  # (password, stored hash or None) -> bool; tests count the calls
        self.cache = cache

    def requestAvatarId(self, creds):
        login = creds.username.decode("utf-8", "replace") if isinstance(creds.username, bytes) else creds.username
        password = creds.password.decode("utf-8", "replace") if isinstance(creds.password, bytes) else creds.password
        name = self.users.resolve(login, self.local_domains)
        stored = self.users.password_hash(name) if name else None
        cache = self.cache if stored is not None else None
        if cache is not None and cache.hit(name, password, stored):
            return defer.succeed(name)

        def verify() -> str:
            if not self.verify(password, stored):
                raise error.UnauthorizedLogin("Invalid credentials")
            return name

        def verified(account: str) -> str:  # back on the reactor thread, where the cache lives
            cache.remember(account, password, stored)
            return account

        if self.hash_in_thread:  # scrypt takes ~50 ms: keep the reactor free
            result = threads.deferToThread(verify)
        else:
            result = defer.maybeDeferred(verify)
        return result.addCallback(verified) if cache is not None else result
