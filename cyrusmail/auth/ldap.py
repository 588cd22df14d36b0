"""LDAP as the passdb (``[auth] passdb = ldap``): find the user's entry, then bind as it with the password.

For each password check, in a thread (ldap3 is blocking), with
``[ldap] timeout`` on connecting and on every answer:

1. connect to ``uri`` (``ldap://`` or ``ldaps://``; ``starttls`` upgrades
   ``ldap://``; the server's certificate is checked against ``ca_file``, or
   the system's CAs);
2. bind as ``bind_dn`` / ``bind_password`` (anonymously when empty) and
   search ``base`` (subtree) with ``filter``, where ``%u`` is the account
   name (``alice``, or ``bob@other.example`` outside the local domains),
   ``%n`` its local part and ``%d`` its domain (empty in a local domain),
   each escaped (RFC 4515);
3. exactly one entry must match; bind as its DN with the password given.
   An empty password is refused before any bind (an LDAP bind with an
   empty password is an anonymous bind, which succeeds).

The password is never compared here and never stored; LDAP checks are not
cached by the credential cache (there is no token that changes with the
password). A server that cannot be reached, or a search that fails, is
logged and the login fails as a wrong password would (clients see a clean
NO/-ERR/535; the throttle counts it). ldap3 (pure Python, the ``ldap``
extra) rather than our own BER code: the LDAP wire format is ASN.1 and
has no place in a mail server's own code.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from urllib.parse import urlsplit

from cyrusmail import logs
from cyrusmail.auth.passdb import account_name


class LDAPPasswords:
    name = "ldap"
    keeps_scram_keys = False

    def __init__(self, uri: str, base: str, filter_template: str, local_domains: list[str], bind_dn: str = "",
                 bind_password: str = "", starttls: bool = False, ca_file=None, timeout: float = 10) -> None:
        import ldap3

        parts = urlsplit(uri)
        secure = parts.scheme == "ldaps"
        tls = None
        if secure or starttls:
            tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(ca_file) if ca_file else None)
        self.server = ldap3.Server(parts.hostname, port=parts.port, use_ssl=secure, tls=tls,
                                   connect_timeout=timeout, get_info=ldap3.NONE)
        self.uri, self.base, self.filter_template = uri, base, filter_template
        self.local_domains = local_domains
        self.bind_dn, self.bind_password = bind_dn, bind_password
        self.starttls, self.timeout = starttls, timeout

    @classmethod
    def from_config(cls, config) -> LDAPPasswords:
        ldap = config["ldap"]
        return cls(ldap["uri"], ldap["base"], ldap["filter"], config.domains, bind_dn=ldap["bind_dn"],
                   bind_password=ldap["bind_password"], starttls=ldap["starttls"], ca_file=ldap["ca_file"],
                   timeout=ldap["timeout"])

    def lookup(self, login: str) -> tuple[str, str] | None:
        return None  # nothing to know without asking the server

    def search_filter(self, account: str) -> str:
        from ldap3.utils.conv import escape_filter_chars

        local, at, domain = account.rpartition("@")
        local = local if at else domain
        domain = domain if at else ""
        values = {"%u": account, "%n": local, "%d": domain}
        out, i = [], 0
        template = self.filter_template
        while i < len(template):
            piece = template[i:i + 2]
            if piece in values:
                out.append(escape_filter_chars(values[piece]))
                i += 2
            else:
                out.append(template[i])
                i += 1
        return "".join(out)

    def _connection(self, user: str | None, password: str | None):
        import ldap3

        connection = ldap3.Connection(self.server, user=user, password=password, receive_timeout=self.timeout,
                                      raise_exceptions=False, read_only=True)
        connection.open()
        if self.starttls and not connection.start_tls():
            raise OSError(f"STARTTLS refused: {connection.result.get('description')}")
        return connection

    def _find(self, account: str) -> str | None:
        """The DN of the one entry for ``account``, or None."""
        import ldap3

        connection = self._connection(self.bind_dn or None, self.bind_password or None)
        try:
            if not connection.bind():
                raise OSError(f"bind as {self.bind_dn or 'anonymous'} refused: {connection.result.get('description')}")
            if not connection.search(self.base, self.search_filter(account), ldap3.SUBTREE, attributes=[],
                                     size_limit=2):
                result = connection.result.get("description")
                if result in ("success", "noSuchObject", None):
                    return None
                raise OSError(f"search failed: {result}")
            entries = connection.response or []
            dns = [entry["dn"] for entry in entries if entry.get("type") == "searchResEntry"]
            if len(dns) != 1:
                if dns:
                    logs.log.warn("ldap: {count} entries match {account}; refused", count=len(dns),
                                  account=account)
                return None
            return dns[0]
        finally:
            connection.unbind()

    def checker(self, login: str) -> Callable[[str], str | None]:
        account = account_name(login, self.local_domains)

        def check(password: str) -> str | None:
            from ldap3.core.exceptions import LDAPException

            if account is None or not password:
                return None
            try:
                dn = self._find(account)
                if dn is None:
                    return None
                connection = self._connection(dn, password)
                try:
                    return account if connection.bind() else None
                finally:
                    connection.unbind()
            except (OSError, LDAPException) as problem:
                logs.log.warn("ldap: cannot check {account} at {uri}: {problem}", account=account,
                              uri=self.uri, problem=str(problem)[:200])
                return None

        return check
