"""Kerberos 5 logins: the GSSAPI SASL mechanism (RFC 4752) on MIT krb5, through python-gssapi.

The pieces, in the order a login meets them:

* :class:`Acceptor` holds what the server needs to accept Kerberos tickets:
  one acceptor credential per SASL service name (``imap``, ``pop``,
  ``smtp``: RFC 4752 section 3.1 and the IANA service-name registry) from
  the keytab ``[auth] keytab``, and the replay cache ``DATA/krb5.rcache``
  (MIT's ``file2`` type: locked, shared by every process on the data
  folder, entries kept for the clock skew, 5 minutes).  An acceptor name
  with no host part accepts a ticket for any host name the keytab has a key
  for (``imap/mail.example.org``, ``imap/localhost``...), never one for
  another service.  It is made once at start; a keytab that cannot be read,
  is not a keytab, or has no key for a service is a start failure.
* :class:`GSSAPIMechanism` is one SASL exchange: the client's AP-REQ is
  accepted (the replay cache refuses a token seen before), then the server
  offers only "no security layer" with a maximum size of 0 (TLS protects
  the connection; RFC 4752 section 3.3), wrapped with integrity, and the
  client's wrapped answer must choose exactly that; its authorization
  identity must be empty or the user the principal maps to.
* :class:`PrincipalRule` maps the principal to a user name
  (``[auth] gssapi_realms``: ``alice@EXAMPLE.ORG`` logs in as ``alice``;
  ``[auth] gssapi_principal_map``: a regular expression with the user name
  in its group ``user`` or its first group).  Anything else is refused.
* The exchange ends in :class:`KerberosCredentials`, which go through the
  portal like a password, so the login throttle counts them under the
  client's address and the mapped user (or, when the token itself was
  refused, the address alone); :class:`KerberosChecker` then checks that
  the user exists.

Accepting a ticket reads the keytab and appends to the replay cache: about
0.4 ms on a local disk, measured, so it runs on the reactor; the KDC is
never contacted.  Principals are checked characters (ASCII letters, digits,
``.``, ``_``, ``-``, one optional ``/instance``, ``@REALM``) before they are
logged or written into a Received header.

python-gssapi is optional (``pip install cyrusmail[gssapi]``, which builds
against MIT krb5's ``libkrb5-dev``): without it and without a keytab in the
config the server works as before and GSSAPI is not offered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from twisted.cred import error
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ICredentials
from twisted.internet import defer
from zope.interface import Attribute, implementer

from cyrusmail import logs
from cyrusmail.sasl import Challenge, Channel, SASLError, Verify

try:
    import gssapi
    import gssapi.raw as gss
except ImportError:  # the server works without it; GSSAPI is then not offered
    gssapi = gss = None

#: RFC 4752's service names, by the protocol sections that use them.
SERVICE_NAMES = {"imap": "imap", "pop3": "pop", "submission": "smtp"}
#: The implicit-TLS sections use the name of their plain kin.
PROTOCOL_OF = {"imap": "imap", "imaps": "imap", "pop3": "pop3", "pop3s": "pop3",
               "submission": "submission", "submissions": "submission"}
#: The replay cache, in the data folder.
RCACHE_FILE = "krb5.rcache"
#: RFC 4752 section 3.3: the "no security layer" bit.
NO_SECURITY_LAYER = 1
#: Kerberos needs one accept round; a context that wants more than this is refused.
MAX_TOKEN_ROUNDS = 3
#: An authorization identity, as a PLAIN one (RFC 4616 section 2).
MAX_AUTHZID_OCTETS = 255

_NAME_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
_PRINCIPAL = re.compile(rf"(?P<primary>{_NAME_PART})(?:/(?P<instance>{_NAME_PART}))?@(?P<realm>[A-Za-z0-9][A-Za-z0-9.-]{{0,127}})")


class KerberosError(Exception):
    """The keytab or the GSSAPI library cannot serve: one line for the person starting the server."""


def available() -> bool:
    """Whether python-gssapi is installed."""
    return gss is not None


def parse_principal(text: str) -> re.Match | None:
    """The parts of a principal of checked characters, or None for anything else."""
    return _PRINCIPAL.fullmatch(text)


@dataclass(frozen=True)
class PrincipalRule:
    """Which principals may log in, and as which user (see the module docstring)."""

    realms: frozenset[str] = frozenset()
    pattern: re.Pattern | None = None

    def user_of(self, principal: str) -> str | None:
        parts = parse_principal(principal)
        if parts is None:
            return None
        if parts["realm"] in self.realms and parts["instance"] is None:
            return parts["primary"]
        if self.pattern is not None:
            match = self.pattern.fullmatch(principal)
            if match is not None:
                user = match.groupdict().get("user") or (match.group(1) if match.re.groups else None)
                return user or None
        return None


def _reason(problem: Exception) -> str:
    """A GSS-API error as one short line: the mechanism's own words (\"Request is a replay\")."""
    if gss is not None and isinstance(problem, gss.GSSError):
        minor = [text for text in problem.get_all_statuses(problem.min_code, False) if text] if problem.min_code else []
        major = [text for text in problem.get_all_statuses(problem.maj_code, True) if text]
        words = " ".join(minor or major) or "GSS-API failure"
    else:
        words = str(problem) or type(problem).__name__
    return " ".join(words.split())[:200]


class Acceptor:
    """The server's Kerberos keys and replay cache, and the rule for principals.

    ``services`` maps each protocol section that may offer GSSAPI (``imap``,
    ``pop3``, ``submission``) to its service name.  Raises
    :class:`KerberosError` when the library is missing or the keytab gives no
    key for one of the services.  ``rcache`` None (the check made before the
    data folder exists) leaves MIT's default, unused.
    """

    def __init__(self, keytab: Path, services: dict[str, str], rule: PrincipalRule, rcache: Path | None = None):
        if gss is None:
            raise KerberosError("GSSAPI needs the python gssapi package (pip install 'cyrusmail[gssapi]')")
        self.keytab = keytab
        self.rule = rule
        self.rcache = rcache
        store = {b"keytab": str(keytab).encode()}
        if rcache is not None:
            store[b"rcache"] = b"file2:" + str(rcache).encode()
        self.services = dict(services)
        self._credentials = {}
        for service in sorted(set(services.values())):
            try:
                with open(keytab, "rb"):  # a clearer word than the library's for a missing or unreadable file
                    pass
                name = gss.import_name(service.encode(), gss.NameType.hostbased_service)
                self._credentials[service] = gss.acquire_cred_from(
                    store, name, mechs=[gss.MechType.kerberos], usage="accept").creds
            except OSError as problem:
                raise KerberosError(f"cannot read {keytab}: {problem.strerror}") from None
            except gss.GSSError as problem:
                raise KerberosError(f"{keytab}: no usable key for service {service}: {_reason(problem)}") from None

    def offers(self, section: str) -> bool:
        """Whether the protocol of config section ``section`` (``imaps``, ``pop3``...) has a service name."""
        return PROTOCOL_OF.get(section) in self.services

    def credentials_for(self, section: str):
        """The acceptor credential of the protocol of config section ``section``."""
        return self._credentials[self.services[PROTOCOL_OF[section]]]

    def mechanism(self, section: str, client: str) -> GSSAPIMechanism:
        """A fresh exchange for a connection to ``section`` from ``client``."""
        checks = {IKerberosPrincipal: KerberosChecker(None, [], self)}
        return GSSAPIMechanism(Channel(client=client, service=section, checks=checks))


class GSSAPIMechanism:
    """One GSSAPI exchange (RFC 4752 section 3.1), server side.

    ``step`` returns a :class:`~cyrusmail.sasl.Challenge` while the exchange
    goes on, and :class:`KerberosCredentials` (in a :class:`~cyrusmail.sasl.Verify`,
    for the portal) when it is over, whether it
    succeeded or not: a refused token is a failed login for the throttle, as
    a wrong password is (its ``refusal`` says why).  Only what the client
    gets wrong in the SASL framing itself (a non-empty answer where an empty
    one is due, an exchange already over) raises
    :class:`~cyrusmail.sasl.SASLError`.
    """

    name = "GSSAPI"

    @classmethod
    def offered(cls, channel: Channel) -> bool:
        """Where the portal has a key for the protocol, inside TLS or on loopback: no security layer is offered."""
        acceptor = acceptor_of(channel.checks)
        return channel.private and acceptor is not None and acceptor.offers(channel.service)

    def __init__(self, channel: Channel):
        acceptor = acceptor_of(channel.checks)
        self._acceptor_credentials = acceptor.credentials_for(channel.service)
        self.rule = acceptor.rule
        self.client = channel.client
        self._context = None
        self._rounds = 0
        self._state = "token"  # -> "confirm" (sent the last context token) -> "layer" -> "done"
        self.principal = ""

    def step(self, response: bytes | None) -> Challenge | Verify:
        outcome = self._step(response)
        return Verify(outcome) if isinstance(outcome, KerberosCredentials) else outcome

    def _step(self, response: bytes | None) -> Challenge | KerberosCredentials:
        if self._state == "done":
            raise SASLError("the GSSAPI exchange is already over")
        if self._state == "token":
            if response is None:  # client-first mechanism, no initial response: ask for the token
                return Challenge(b"")
            return self._accept(response)
        if self._state == "confirm":
            if response:
                return self._refuse("expected an empty response after the last context token")
            return self._offer_layers()
        return self._choose_layer(response or b"")

    # -- the steps ------------------------------------------------------------------

    def _accept(self, token: bytes) -> Challenge | KerberosCredentials:
        self._rounds += 1
        if not token:
            return self._refuse("empty GSSAPI token")
        if self._rounds > MAX_TOKEN_ROUNDS:
            return self._refuse("too many context tokens")
        try:
            result = gss.accept_sec_context(token, self._acceptor_credentials, self._context)
        except gss.GSSError as problem:
            return self._refuse(_reason(problem))
        self._context = result.context
        if result.more_steps:
            return Challenge(result.token or b"")
        if result.mech != gss.MechType.kerberos:
            return self._refuse("not a Kerberos 5 context")
        if gss.RequirementFlag.integrity not in result.flags:
            return self._refuse("the context offers no integrity protection")
        principal = gss.display_name(result.initiator_name, name_type=False).name.decode("utf-8", "replace")
        if parse_principal(principal) is None:
            return self._refuse("principal name has characters this server does not accept")
        self.principal = principal
        if result.token:  # mutual authentication: the AP-REP, answered with an empty response
            self._state = "confirm"
            return Challenge(result.token)
        return self._offer_layers()

    def _offer_layers(self) -> Challenge | KerberosCredentials:
        offer = bytes([NO_SECURITY_LAYER, 0, 0, 0])  # no layer, maximum size 0
        try:
            wrapped = gss.wrap(self._context, offer, confidential=False).message
        except gss.GSSError as problem:
            return self._refuse(_reason(problem))
        self._state = "layer"
        return Challenge(wrapped)

    def _choose_layer(self, message: bytes) -> KerberosCredentials:
        try:
            choice = gss.unwrap(self._context, message).message
        except gss.GSSError as problem:
            return self._refuse(f"cannot unwrap the security layer choice: {_reason(problem)}")
        if len(choice) < 4:
            return self._refuse("security layer choice shorter than 4 octets")
        if choice[0] != NO_SECURITY_LAYER:
            return self._refuse(f"security layer {choice[0]} was not offered")
        if choice[1:4] != b"\0\0\0":
            return self._refuse("a maximum message size without a security layer")
        authzid = choice[4:]
        if len(authzid) > MAX_AUTHZID_OCTETS:
            return self._refuse("authorization identity too long")
        try:
            wanted = authzid.decode("utf-8")
        except UnicodeDecodeError:
            return self._refuse("authorization identity is not UTF-8")
        if any(ch in wanted for ch in "\x00\r\n"):
            return self._refuse("authorization identity contains NUL, CR or LF")
        self._state = "done"
        return KerberosCredentials(self.principal, self.rule.user_of(self.principal), wanted, self.client)

    def _refuse(self, reason: str) -> KerberosCredentials:
        self._state = "done"
        self._context = None
        return KerberosCredentials(self.principal, None, "", self.client, refusal=reason)


# -- the portal's side ------------------------------------------------------------------


class IKerberosPrincipal(ICredentials):
    """A client that proved a Kerberos principal (or tried to; see ``refusal``)."""

    principal = Attribute("the principal, 'alice@EXAMPLE.ORG' ('' if the token was refused)")
    user = Attribute("the user name the rule maps it to, or None")
    authzid = Attribute("the authorization identity the client asked for, '' for none")
    client = Attribute("the client's address, for the login throttle")
    refusal = Attribute("why the exchange failed, '' when it did not")


@implementer(IKerberosPrincipal)
@dataclass(frozen=True)
class KerberosCredentials:
    principal: str
    user: str | None
    authzid: str
    client: str
    refusal: str = ""

    @property
    def username(self) -> str:
        """The name the throttle counts the attempt under: the mapped user, else the principal."""
        return self.user or self.principal


@implementer(ICredentialsChecker)
class KerberosChecker:
    """Turns a proved principal into a user of the database, or refuses (UnauthorizedLogin)."""

    credentialInterfaces = (IKerberosPrincipal,)

    def __init__(self, users, local_domains: list[str], acceptor: Acceptor | None = None):
        self.users = users
        self.local_domains = local_domains
        self.acceptor = acceptor  # what the GSSAPI mechanism accepts tickets with

    def requestAvatarId(self, credentials: KerberosCredentials) -> defer.Deferred:
        problem = self._problem(credentials)
        if problem is None:
            return defer.succeed(self.users.resolve(credentials.user, self.local_domains))
        logs.log.info("gssapi: refused {principal} from {client}: {problem}",
                      principal=credentials.principal or "(no principal)", client=credentials.client,
                      problem=problem)
        return defer.fail(error.UnauthorizedLogin(problem))

    def _problem(self, credentials: KerberosCredentials) -> str | None:
        if credentials.refusal:
            return credentials.refusal
        if credentials.user is None:
            return "the principal maps to no user ([auth] gssapi_realms, gssapi_principal_map)"
        name = self.users.resolve(credentials.user, self.local_domains)
        if name is None:
            return f"no user {credentials.user}"
        if credentials.authzid and self.users.resolve(credentials.authzid, self.local_domains) != name:
            return f"may not act as {credentials.authzid[:64]!r}"
        return None


def acceptor_of(checks) -> Acceptor | None:
    """The Acceptor of the Kerberos checker among ``checks`` (by interface), or None when GSSAPI is not configured."""
    return getattr(checks.get(IKerberosPrincipal), "acceptor", None)


def acceptor_from_config(config, rcache: Path | None = None) -> Acceptor | None:
    """The Acceptor ``[auth]`` describes for the enabled protocols, or None when it names no keytab.

    KerberosError when the keytab cannot serve (see :class:`Acceptor`).
    """
    auth = config["auth"]
    if auth["keytab"] is None:
        return None
    enabled = {PROTOCOL_OF[name] for name in config.enabled_services() if name in PROTOCOL_OF}
    services = {protocol: name for protocol, name in auth["gssapi_services"].items() if protocol in enabled}
    rule = PrincipalRule(frozenset(auth["gssapi_realms"]), auth["gssapi_principal_map"])
    return Acceptor(auth["keytab"], services, rule, rcache)
