"""The server's configuration: an INI file checked against one schema.

Every section and key cyrusmail knows is declared once, in ``SCHEMA``, with
its parser and default. Loading has no side effects: nothing is created on
disk here, so a refused configuration leaves no trace. An error names the
file, section, key and problem on one line.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import endpoints


class ConfigError(Exception):
    """A configuration the server refuses to start with."""

    def __init__(self, path: str, section: str | None, key: str | None, problem: str):
        where = f"[{section}]" if section else ""
        if key:
            where += f" {key}"
        super().__init__(f"{path}: {where}: {problem}" if where else f"{path}: {problem}")


# -- value parsers: text -> value, or ValueError saying what is wrong ---------


def parse_bool(text: str) -> bool:
    folded = text.strip().lower()
    if folded in ("yes", "true", "on", "1"):
        return True
    if folded in ("no", "false", "off", "0"):
        return False
    raise ValueError(f"expected yes or no, got {text!r}")


def parse_list(text: str) -> list[str]:
    return [item for item in re.split(r"[\s,]+", text.strip()) if item]


def parse_lower_list(text: str) -> list[str]:
    return [item.lower() for item in parse_list(text)]


def parse_text(text: str) -> str:
    return text.strip()


def parse_path(text: str) -> Path | None:
    text = text.strip()
    return Path(text) if text else None


def parse_required_path(text: str) -> Path:
    path = parse_path(text)
    if path is None:
        raise ValueError("a path is required")
    return path


def parse_positive_int(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise ValueError(f"expected a number above 0, got {value}")
    return value


def parse_count(text: str) -> int:
    """A whole number, 0 included (0 turns the feature off)."""
    if text.strip() == "0":
        return 0
    return parse_positive_int(text)


_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
    """``50M``, ``512k``, ``1048576`` -> octets."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmg]?)i?b?\s*", text.lower())
    if not match or int(match[1]) == 0:
        raise ValueError(f"expected a size such as 50M, got {text!r}")
    return int(match[1]) * _SIZE_UNITS[match[2]]


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """``30s``, ``5m``, ``2h``, ``5d`` -> seconds."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", text.lower())
    if not match or int(match[1]) == 0:
        raise ValueError(f"expected a duration such as 30s, 5m, 2h or 5d, got {text!r}")
    return int(match[1]) * _DURATION_UNITS[match[2]]


def default_workers() -> int:
    """The cores this process may run on: the default number of worker processes."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


#: Most worker processes a config may ask for.
MAX_WORKERS = 256


def parse_workers(text: str) -> int:
    value = parse_positive_int(text)
    if value > MAX_WORKERS:
        raise ValueError(f"expected at most {MAX_WORKERS} worker processes, got {value}")
    return value


def parse_percent(text: str) -> int:
    value = parse_positive_int(text.rstrip("% "))
    if value > 100:
        raise ValueError(f"expected a percentage up to 100, got {value}")
    return value


def parse_duration_or_off(text: str) -> int:
    """A duration as :func:`parse_duration`, or ``0`` (any unit) for off."""
    if re.fullmatch(r"\s*0+\s*[smhd]?\s*", text.lower()):
        return 0
    return parse_duration(text)


def parse_tls_mode(text: str) -> str:
    folded = text.strip().lower()
    if folded not in ("none", "starttls", "tls"):
        raise ValueError(f"expected none, starttls or tls, got {text!r}")
    return folded


LOG_LEVELS = ("debug", "info", "warn", "error")


def parse_log_level(text: str) -> str:
    folded = text.strip().lower()
    folded = "warn" if folded == "warning" else folded
    if folded not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {text!r}")
    return folded


def parse_delete_mode(text: str) -> str:
    folded = text.strip().lower()
    if folded not in ("immediate", "delayed"):
        raise ValueError(f"expected immediate or delayed, got {text!r}")
    return folded


def parse_hostport(text: str) -> tuple[str, int] | None:
    text = text.strip()
    if not text:
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, got {text!r}")
    return host.strip("[]"), int(port)


def parse_endpoints(text: str) -> list[str]:
    """One or more Twisted server endpoint strings, each checked."""
    descriptions = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if len(descriptions) == 1 and " " in descriptions[0]:
        descriptions = descriptions[0].split()
    if not descriptions:
        raise ValueError("at least one endpoint is required, e.g. tcp:1143:interface=127.0.0.1")
    for description in descriptions:
        check_endpoint(description)
    return descriptions


def check_endpoint(description: str) -> None:
    """Refuse what Twisted could not listen on, without listening."""
    kind = description.split(":", 1)[0].lower()
    if kind not in ("tcp", "tcp6", "unix"):
        raise ValueError(
            f"endpoint {description!r}: use tcp:PORT[:interface=ADDR], tcp6:... or unix:PATH"
            " (TLS is set by the service, not the endpoint)"
        )
    bad_port = ValueError(f"endpoint {description!r}: the port must be a number from 0 to 65535")
    try:
        endpoint = endpoints.serverFromString(None, description)  # builds, never listens
    except (ValueError, TypeError, KeyError, IndexError) as error:
        if kind != "unix" and not _port_text(description).isdigit():
            raise bad_port from None
        raise ValueError(f"endpoint {description!r}: {error or 'malformed'}") from None
    port = getattr(endpoint, "_port", None)
    if kind != "unix" and not (isinstance(port, int) and 0 <= port < 65536):
        raise bad_port
    if kind == "unix" and not getattr(endpoint, "_address", None):
        raise ValueError(f"endpoint {description!r}: a socket path is required")


def _port_text(description: str) -> str:
    """The port of a ``tcp:PORT:...`` or ``tcp:port=PORT:...`` description, as written."""
    fields = description.split(":")[1:]
    for field_text in fields:
        if field_text.startswith("port="):
            return field_text[len("port="):]
    return fields[0] if fields and "=" not in fields[0] else ""


def is_loopback_endpoint(description: str) -> bool:
    """Whether only this machine can connect: a unix socket, or TCP on a loopback address."""
    if description.split(":", 1)[0].lower() == "unix":
        return True
    interface = getattr(endpoints.serverFromString(None, description), "_interface", "")
    if interface.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(interface)  # "" or "::" (every interface) is refused below
    except ValueError:
        return False  # a host name: it may name a public address
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def parse_networks(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``127.0.0.0/8 ::1 192.0.2.10`` -> networks (a bare address is a network of one)."""
    networks = []
    for item in parse_list(text):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"expected addresses or networks such as 127.0.0.0/8 or ::1, got {item!r}") from None
    return networks


def parse_regex(text: str) -> re.Pattern | None:
    """A regular expression with at least one group, or None for an empty value."""
    text = text.strip()
    if not text:
        return None
    try:
        pattern = re.compile(text)
    except re.error as error:
        raise ValueError(f"not a regular expression: {error}") from None
    if not pattern.groups:
        raise ValueError("the expression needs a group for the user name, e.g. ^([a-z]+)@EXAMPLE\\.ORG$")
    return pattern


#: The protocols that may offer GSSAPI, and their RFC 4752 service names.
GSSAPI_SERVICES = {"imap": "imap", "pop3": "pop", "submission": "smtp"}


def parse_gssapi_services(text: str) -> dict[str, str]:
    """``imap=imap pop3=pop submission=smtp``: the Kerberos service name per protocol."""
    services = dict(GSSAPI_SERVICES)
    for item in parse_list(text):
        protocol, sep, name = item.partition("=")
        if not sep or protocol not in GSSAPI_SERVICES or not re.fullmatch(r"[A-Za-z0-9._-]+", name):
            raise ValueError(f"expected PROTOCOL=NAME pairs with PROTOCOL one of imap, pop3, submission, got {item!r}")
        services[protocol] = name
    return services


def parse_choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        folded = text.strip().lower()
        if folded not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}")
        return folded

    return parse


def parse_scram_iterations(text: str) -> int:
    """0 (no SCRAM) or at least RFC 7677's 4096."""
    value = parse_count(text)
    if 0 < value < 4096:
        raise ValueError(f"expected 0 (SCRAM off) or at least 4096 (RFC 7677), got {value}")
    return value


def parse_separator(text: str) -> str:
    text = text.strip()
    if len(text) != 1 or text.isalnum() or text in "@.":
        raise ValueError(f"expected one character that is not a letter, digit, @ or ., got {text!r}")
    return text


def parse_url(text: str) -> str:
    text = text.strip()
    if text and not re.fullmatch(r"(https?|ldaps?)://[^\s/?#]+(/[^\s]*)?", text):
        raise ValueError(f"expected a URL such as https://host/path or ldap://host, got {text!r}")
    return text


def parse_special_use(text: str) -> str:
    from cyrusmail.store.records import SPECIAL_USES

    for item in text.split():
        name, sep, use = item.partition(":")
        if not sep or not name or use.lower() not in SPECIAL_USES:
            raise ValueError(
                f"expected NAME:USE pairs with USE one of {', '.join(sorted(SPECIAL_USES))}, got {item!r}"
            )
    return " ".join(f"{item.partition(':')[0]}:{item.partition(':')[2].lower()}" for item in text.split())


STORE_BACKENDS = ("embedded", "postgresql")


def parse_blobs(text: str) -> str:
    """``database``, an absolute folder (checked to be a writable folder as the server starts),
    or ``s3://bucket/prefix`` (an S3-compatible store; checked to answer as the server starts)."""
    text = text.strip()
    if text.lower() == "database":
        return "database"
    if text.startswith("s3://"):
        if not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?", text):
            raise ValueError(f"expected s3://BUCKET or s3://BUCKET/PREFIX, got {text!r}")
        return text.rstrip("/")
    if not os.path.isabs(text):
        raise ValueError(f"expected database, an absolute path to a shared folder or s3://BUCKET/PREFIX, got {text!r}")
    return os.path.normpath(text)


def parse_store_backend(text: str) -> str:
    backend = text.strip().lower()
    if backend not in STORE_BACKENDS:
        raise ValueError(f"expected one of {', '.join(STORE_BACKENDS)}, got {text!r}")
    return backend


# -- the schema ---------------------------------------------------------------

REQUIRED = object()


@dataclass(frozen=True)
class Key:
    parse: Callable[[str], Any]
    default: Any = REQUIRED


def _service(port: int, enabled: bool = True) -> dict[str, Key]:
    return {
        "enabled": Key(parse_bool, enabled),
        "listen": Key(parse_endpoints, [f"tcp:{port}:interface=127.0.0.1"]),
    }


#: Service sections, in the order they start; each names its protocol.
SERVICES = ("imap", "imaps", "pop3", "pop3s", "submission", "submissions", "lmtp", "managesieve")

SCHEMA: dict[str, dict[str, Key]] = {
    "server": {
        "data": Key(parse_required_path),
        "hostname": Key(parse_text, ""),
        "admins": Key(parse_lower_list, []),
        "domains": Key(parse_lower_list, []),
        "max_message_size": Key(parse_size, 50 * 1024**2),
        "special_use": Key(parse_special_use, "Drafts:drafts Sent:sent Trash:trash Junk:junk Archive:archive"),
        "allow_plaintext_on_loopback": Key(parse_bool, True),
        "check_header_from": Key(parse_bool, True),
        "expunged_history": Key(parse_positive_int, 100_000),
        "index_cache": Key(parse_positive_int, 64),
        "store_threads": Key(parse_positive_int, 4),
        "login_delay_max": Key(parse_duration, 15),
        # The cache of verified passwords (cyrusmail.auth.cache); 0 for either turns it off.
        "auth_cache_ttl": Key(parse_duration_or_off, 300),
        "auth_cache_size": Key(parse_count, 10_000),
        # Connection caps (cyrusmail.sessions.Limits) and the listen queue of every listener.
        "max_connections": Key(parse_positive_int, 1000),
        "max_connections_per_address": Key(parse_positive_int, 100),
        "max_unauthenticated": Key(parse_positive_int, 500),
        "max_unauthenticated_per_address": Key(parse_positive_int, 20),
        "limit_exempt": Key(parse_networks, parse_networks("127.0.0.0/8 ::1")),
        "listen_backlog": Key(parse_positive_int, 511),
        # Processes serving connections (cyrusmail.workers); 1 = one process, no supervisor.
        "workers": Key(parse_workers, min(default_workers(), MAX_WORKERS)),
        # How often IDLE looks for changes made by other programs (cyrusmail-admin).
        "idle_check_interval": Key(parse_duration, 5),
        # What is logged (cyrusmail.logs), and the protocol trace of chosen users (cyrusmail.trace).
        "log_level": Key(parse_log_level, "info"),
        "rawlog_users": Key(parse_lower_list, []),
        "rawlog_max_size": Key(parse_size, 10 * 1024**2),
        # Deleted mailboxes kept for undelete (cyrusmail.store.maildir.archive), as Cyrus's delete_mode.
        "delete_mode": Key(parse_delete_mode, "immediate"),
        "delete_retention": Key(parse_duration, 7 * 86400),
        # How often the server runs ``cyrusmail-admin expire`` ([expire] rules, deleted mailboxes past retention).
        "expire_interval": Key(parse_duration_or_off, 86400),
    },
    "imap": _service(1143),
    "imaps": _service(1993),
    "pop3": _service(1110),
    "pop3s": _service(1995),
    "submission": _service(1587),
    "submissions": _service(1465),
    "lmtp": {**_service(2003), "allow_remote": Key(parse_bool, False)},
    "managesieve": _service(4190),
    "tls": {
        "certificate": Key(parse_path, None),
        "key": Key(parse_path, None),
    },
    "queue": {
        "smarthost": Key(parse_hostport, None),
        "smarthost_tls": Key(parse_tls_mode, "none"),
        "smarthost_user": Key(parse_text, ""),
        "smarthost_password": Key(parse_text, ""),
        "retry_initial": Key(parse_duration, 300),
        "retry_max": Key(parse_duration, 3600),
        "give_up": Key(parse_duration, 5 * 86400),
        # The PostgreSQL store's shared queue: how long an attempt's claim lasts unrenewed (takeover after a crash).
        "lease": Key(parse_duration, 300),
    },
    "namespaces": {
        "other_users": Key(parse_text, "Other Users"),
        "shared": Key(parse_text, "Shared Folders"),
    },
    "quota": {
        "warning_percent": Key(parse_percent, 90),
    },
    # Sieve filtering at delivery and its scripts' quotas (cyrusmail.sieve; README: Sieve).
    "sieve": {
        "enabled": Key(parse_bool, True),
        "max_script_size": Key(parse_size, 32 * 1024),
        "max_scripts": Key(parse_positive_int, 10),
        "max_actions": Key(parse_positive_int, 32),
        "max_redirects": Key(parse_count, 4),
        "global_scripts": Key(parse_path, None),
    },
    # The Prometheus endpoint (cyrusmail.metrics); off unless enabled, and loopback only unless allow_remote.
    "metrics": {
        "enabled": Key(parse_bool, False),
        "listen": Key(parse_endpoints, ["tcp:9143:interface=127.0.0.1"]),
        "allow_remote": Key(parse_bool, False),
        "quota_users": Key(parse_lower_list, []),
    },
    "auth": {
        # Kerberos 5 (GSSAPI, RFC 4752): offered only with a keytab; see cyrusmail.auth.kerberos.
        "keytab": Key(parse_path, None),
        "gssapi_realms": Key(parse_list, []),
        "gssapi_principal_map": Key(parse_regex, None),
        "gssapi_services": Key(parse_gssapi_services, dict(GSSAPI_SERVICES)),
        # Where passwords are checked (cyrusmail.auth.passdb) and who may act as others (cyrusmail.auth.masters).
        "passdb": Key(parse_choice("builtin", "passwd-file", "ldap"), "builtin"),
        "create_on_login": Key(parse_bool, False),
        "master_users": Key(parse_lower_list, []),
        "master_separator": Key(parse_separator, "*"),
        "scram_iterations": Key(parse_scram_iterations, 65536),
    },
    "passwd_file": {
        "path": Key(parse_path, None),
        "allow_plain": Key(parse_bool, False),
    },
    "ldap": {
        "uri": Key(parse_url, ""),
        "starttls": Key(parse_bool, False),
        "ca_file": Key(parse_path, None),
        "bind_dn": Key(parse_text, ""),
        "bind_password": Key(parse_text, ""),
        "base": Key(parse_text, ""),
        "filter": Key(parse_text, "(&(objectClass=posixAccount)(uid=%u))"),
        "timeout": Key(parse_duration, 10),
    },
    "oauth": {
        # Bearer tokens (OAUTHBEARER, XOAUTH2): cyrusmail.auth.oauth.
        "issuer": Key(parse_text, ""),
        "audience": Key(parse_text, ""),
        "jwt_key": Key(parse_path, None),
        "jwks": Key(parse_path, None),
        "algorithms": Key(parse_list, ["RS256", "ES256", "EdDSA"]),
        "user_claim": Key(parse_text, "email"),
        "introspection_url": Key(parse_url, ""),
        "client_id": Key(parse_text, ""),
        "client_secret": Key(parse_text, ""),
        "timeout": Key(parse_duration, 10),
        "cache_ttl": Key(parse_duration_or_off, 60),
        "single_use": Key(parse_bool, False),
    },
    # Where mail is kept (cyrusmail.store): the embedded maildir+SQLite store in
    # [server] data, or one PostgreSQL database several servers share.
    "store": {
        "backend": Key(parse_store_backend, "embedded"),
        "dsn": Key(parse_text, ""),
        "blobs": Key(parse_blobs, "database"),
    },
}


#: Sections whose keys the administrator chooses: each value is parsed by the one parser given.
#: ``[expire] Trash = 30d``: a mailbox name, or a special use (trash, junk, ...), and an age.
FREE_SECTIONS: dict[str, Callable[[str], Any]] = {"expire": parse_duration}


@dataclass
class Config:
    """A validated configuration: ``config.section("imap")["enabled"]``."""

    path: str
    values: dict[str, dict[str, Any]] = field(default_factory=dict)

    def section(self, name: str) -> dict[str, Any]:
        return self.values[name]

    def __getitem__(self, name: str) -> dict[str, Any]:
        return self.values[name]

    @property
    def data(self) -> Path:
        return self.values["server"]["data"]

    @property
    def hostname(self) -> str:
        return self.values["server"]["hostname"]

    @property
    def domains(self) -> list[str]:
        return self.values["server"]["domains"]

    @property
    def admins(self) -> list[str]:
        return self.values["server"]["admins"]

    def enabled_services(self) -> list[str]:
        return [name for name in SERVICES if self.values[name]["enabled"]]

    def special_use_folders(self) -> dict[str, str]:
        """Folder name -> special use, made for each new user."""
        return dict(item.split(":", 1) for item in self.values["server"]["special_use"].split())




def load(path: str | Path) -> Config:
    """Read and check ``path``; ConfigError on the first problem found."""
    path = str(path)
    parser = configparser.ConfigParser(interpolation=None, default_section="\x00unused")
    parser.optionxform = str  # keys are case-sensitive and reported as written
    try:
        with open(path, encoding="utf-8") as source:
            parser.read_file(source)
    except OSError as error:
        raise ConfigError(path, None, None, f"cannot read: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, None, None, "is not UTF-8 text") from None
    except configparser.Error as error:
        raise ConfigError(path, None, None, " ".join(str(error).split())) from None
    return from_parser(path, parser)


def from_parser(path: str, parser: configparser.ConfigParser) -> Config:
    values: dict[str, dict[str, Any]] = {}
    for section in parser.sections():
        if section not in SCHEMA and section not in FREE_SECTIONS:
            raise ConfigError(path, section, None,
                              f"unknown section (known: {', '.join([*SCHEMA, *FREE_SECTIONS])})")
    for section, parse in FREE_SECTIONS.items():
        values[section] = {}
        for key, text in (parser[section].items() if parser.has_section(section) else ()):
            try:
                values[section][key] = parse(text)
            except ValueError as error:
                raise ConfigError(path, section, key, str(error)) from None
    for section, keys in SCHEMA.items():
        given = parser[section] if parser.has_section(section) else {}
        for key in given:
            if key not in keys:
                raise ConfigError(path, section, key, f"unknown key (known: {', '.join(keys)})")
        values[section] = {}
        for key, spec in keys.items():
            if key in given:
                try:
                    values[section][key] = spec.parse(given[key])
                except ValueError as error:
                    raise ConfigError(path, section, key, str(error)) from None
            elif spec.default is REQUIRED:
                raise ConfigError(path, section, key, "is required")
            else:
                values[section][key] = spec.default
    config = Config(path, values)
    _fill_defaults(config)
    _check_together(config)
    return config


def _fill_defaults(config: Config) -> None:
    server = config.values["server"]
    if not server["hostname"]:
        server["hostname"] = socket.getfqdn() or "localhost"
    if not server["domains"]:
        server["domains"] = [server["hostname"].lower()]


def _check_together(config: Config) -> None:
    store = config.values["store"]
    if store["backend"] == "postgresql" and not store["dsn"]:
        raise ConfigError(config.path, "store", "dsn", "is required with backend = postgresql")
    tls = config.values["tls"]
    if (tls["certificate"] is None) != (tls["key"] is None):
        missing = "key" if tls["key"] is None else "certificate"
        raise ConfigError(config.path, "tls", missing, "certificate and key must be named together")
    seen: dict[str, str] = {}
    for service in config.enabled_services():
        for description in config.values[service]["listen"]:
            if description in seen:
                raise ConfigError(
                    config.path, service, "listen", f"{description!r} is also used by [{seen[description]}]"
                )
            seen[description] = service
    lmtp = config.values["lmtp"]
    if lmtp["enabled"] and not lmtp["allow_remote"]:
        for description in lmtp["listen"]:
            if not is_loopback_endpoint(description):
                raise ConfigError(
                    config.path, "lmtp", "listen",
                    f"{description!r} can be reached from other machines, and LMTP has no AUTH:"
                    " listen on 127.0.0.1, ::1 or a unix socket, or set allow_remote = yes",
                )
    metrics = config.values["metrics"]
    for description in metrics["listen"] if metrics["enabled"] else ():
        if not metrics["allow_remote"] and not is_loopback_endpoint(description):
            raise ConfigError(
                config.path, "metrics", "listen",
                f"{description!r} can be reached from other machines: listen on 127.0.0.1, ::1 or a"
                " unix socket, or set allow_remote = yes (and let only Prometheus reach it)",
            )
        if description in seen:
            raise ConfigError(config.path, "metrics", "listen",
                              f"{description!r} is also used by [{seen[description]}]")
    _check_auth(config)
    queue = config.values["queue"]
    if queue["retry_initial"] > queue["retry_max"]:
        raise ConfigError(config.path, "queue", "retry_initial", "is longer than retry_max")


def _check_auth(config: Config) -> None:
    """The passdb named has what it needs; a bearer-token setup names an issuer and one way to check tokens; a keytab, who may log in."""
    passdb = config.values["auth"]["passdb"]
    if passdb == "passwd-file" and config.values["passwd_file"]["path"] is None:
        raise ConfigError(config.path, "passwd_file", "path", "is required with [auth] passdb = passwd-file")
    ldap = config.values["ldap"]
    if passdb == "ldap":
        for key in ("uri", "base"):
            if not ldap[key]:
                raise ConfigError(config.path, "ldap", key, "is required with [auth] passdb = ldap")
        if "%u" not in ldap["filter"] and "%n" not in ldap["filter"]:
            raise ConfigError(config.path, "ldap", "filter", "must hold %u (or %n), where the user name goes")
        if ldap["starttls"] and ldap["uri"].startswith("ldaps:"):
            raise ConfigError(config.path, "ldap", "starttls", "an ldaps:// URI is TLS already")
    oauth = config.values["oauth"]
    ways = [key for key in ("jwt_key", "jwks", "introspection_url") if oauth[key]]
    if len(ways) > 1:
        raise ConfigError(config.path, "oauth", ways[1], f"name one of jwt_key, jwks and introspection_url, not {ways[0]} too")
    if ways and not oauth["issuer"]:
        raise ConfigError(config.path, "oauth", "issuer", "is required to accept bearer tokens")
    if oauth["issuer"] and not ways:
        raise ConfigError(config.path, "oauth", "issuer", "name how tokens are checked: jwt_key, jwks or introspection_url")
    if oauth["introspection_url"] and not oauth["client_id"]:
        raise ConfigError(config.path, "oauth", "client_id", "is required with introspection_url")
    auth = config.values["auth"]
    if auth["keytab"] is not None and not auth["gssapi_realms"] and auth["gssapi_principal_map"] is None:
        raise ConfigError(config.path, "auth", "gssapi_realms",
                          "name the realms whose principals may log in (or set gssapi_principal_map)")
