"""Master users: support staff logging in as another user with their own password, as Dovecot's.

Two ways to ask, both checked against the master's own password:

* the login name ``user*master`` (the separator is ``[auth]
  master_separator``), for LOGIN, USER/PASS, PLAIN, LOGIN and every
  mechanism that sends a name;
* SASL's authorization identity: PLAIN's authzid (``user NUL master NUL
  password``) or SCRAM's ``a=user``.

Only the accounts named in ``[auth] master_users`` may; anyone else asking
fails as a wrong password would. A name that is an account itself (``*`` is
allowed in local parts) is never split. Every such login is logged:
``master X logged in as Y``.
"""

from __future__ import annotations

from twisted.cred.error import UnauthorizedLogin

from cyrusmail import logs


class Authorizer:
    """Decides whom an authenticated account acts as.

    ``users`` is the account list (:class:`~cyrusmail.auth.userdb.UserDatabase`).
    """

    def __init__(self, users, local_domains: list[str], masters: list[str] = (), separator: str = "*") -> None:
        self.users = users
        self.local_domains = local_domains
        self.masters = frozenset(masters)
        self.separator = separator

    def split(self, login: str, authzid: str = "") -> tuple[str, str]:
        """(who proves, whom they ask to be: empty for themselves) from a login name and an authzid."""
        if authzid or not self.masters or not self.separator or self.separator not in login:
            return login, authzid
        if self.users.resolve(login, self.local_domains) is not None:
            return login, ""
        target, _, master = login.rpartition(self.separator)
        if not target or self.users.resolve(master, self.local_domains) not in self.masters:
            return login, ""
        return master, target

    def __call__(self, account: str, authzid: str, client: str = "unknown") -> str:
        """The account ``account`` acts as when it asked for ``authzid``; UnauthorizedLogin if it may not."""
        if not authzid:
            return account
        target = self.users.resolve(authzid, self.local_domains)
        if target == account:
            return account
        if account not in self.masters:
            logs.log.warn("auth: {account} asked to log in as {target!r} from {client}, and is not a master user",
                          account=account, target=authzid[:64], client=client)
            raise UnauthorizedLogin("not a master user")
        if target is None:
            logs.log.warn("auth: master {account} asked to log in as unknown user {target!r} from {client}",
                          account=account, target=authzid[:64], client=client)
            raise UnauthorizedLogin("no such user")
        logs.log.info("auth: master {account} logged in as {target} from {client}",
                      account=account, target=target, client=client)
        return target
