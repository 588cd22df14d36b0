"""Where passwords are checked (Dovecot's passdb): the built-in database, a passwd-file, or LDAP.

``[auth] passdb`` chooses one. Whichever it is, the accounts that have mail
(delivery, ACLs, quotas, ``cyrusmail-admin user list``) are those of the
built-in user list in ``users.sqlite``; with a passwd-file or LDAP an
account there has no password of its own, and is made at its first login
when ``[auth] create_on_login`` allows it (else ``cyrusmail-admin user add
NAME --no-password`` makes it beforehand, so that mail can arrive first).

Each passdb answers two questions for :class:`~cyrusmail.auth.checkers.PasswordChecker`:

* :meth:`PasswordDatabase.lookup` (on the reactor thread, no network): the
  account a login names and a token that changes whenever its password
  does, for the credential cache; None when it cannot tell;
* :meth:`PasswordDatabase.checker` (on the reactor thread) gives a function
  that the checker runs in a thread: password in, account name or None out.
  It costs about the same for an unknown user as for a known one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from cyrusmail.auth.userdb import UserDatabase, check_against
from cyrusmail.store.errors import InvalidUserName
from cyrusmail.store.names import user_name


class PasswordDatabase(Protocol):
    #: ``builtin``, ``passwd-file`` or ``ldap``.
    name: str
    #: Whether SCRAM keys exist for its accounts (only the built-in one keeps them).
    keeps_scram_keys: bool

    def lookup(self, login: str) -> tuple[str, str] | None: ...

    def checker(self, login: str) -> Callable[[str], str | None]: ...


def account_name(login: str, local_domains: list[str]) -> str | None:
    """The canonical account name a login gives, without asking any database: ``Alice@Example.org`` -> ``alice``."""
    try:
        name = user_name(login)
    except InvalidUserName:
        return None
    local, at, domain = name.rpartition("@")
    return local if at and domain in local_domains else name


class BuiltinPasswords:
    """Passwords as scrypt hashes in ``users.sqlite``.

    ``verify(password, stored)`` is the check itself (tests count its calls).
    """

    name = "builtin"
    keeps_scram_keys = True

    def __init__(self, users: UserDatabase, local_domains: list[str],
                 verify: Callable[[str, str | None], bool] = check_against) -> None:
        self.users = users
        self.local_domains = local_domains
        self.verify = verify

    def lookup(self, login: str) -> tuple[str, str] | None:
        name = self.users.resolve(login, self.local_domains)
        stored = self.users.password_hash(name) if name else None
        return (name, stored) if stored else None

    def checker(self, login: str) -> Callable[[str], str | None]:
        name = self.users.resolve(login, self.local_domains)
        stored = self.users.password_hash(name) if name else None
        verify = self.verify

        def check(password: str) -> str | None:
            return name if verify(password, stored) else None

        return check
