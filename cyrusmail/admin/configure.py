"""``cyrusmail-admin config check|show``: the configuration as the server would take it.

``check`` validates the file exactly as ``twistd cyrusmail`` does before it
starts (:func:`cyrusmail.service.preflight`: every key, the protocols
enabled, the data folder, the certificate and key named) and exits 0, or 2
with the one line the server would have refused with.  Ports are not
tried: a running server holds them.

``show`` prints every section and key with its effective value, defaults
included, as a config file the server reads back the same; secrets
(``smarthost_password``) are shown as ``********``.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from cyrusmail import config as schema

#: Keys whose values are never printed.
SECRETS = frozenset({("queue", "smarthost_password")})
_DURATIONS = (schema.parse_duration, schema.parse_duration_or_off)


def check(admin, args) -> None:
    from cyrusmail.service import preflight

    preflight(admin.config)  # ConfigError: one line, exit 2
    services = ", ".join(admin.config.enabled_services()) or "none"
    admin.say(f"{admin.config.path}: OK (services: {services}; data: {admin.config.data})")


def show(admin, args) -> None:
    values = admin.config.values
    for number, section in enumerate([*schema.SCHEMA, *schema.FREE_SECTIONS]):
        if number:
            admin.say("")
        admin.say(f"[{section}]")
        keys = schema.SCHEMA.get(section)
        for key, value in values[section].items():
            parse = keys[key].parse if keys else schema.FREE_SECTIONS[section]
            shown = "********" if (section, key) in SECRETS and value else shown_value(value, parse)
            admin.say(f"{key} = {shown}".rstrip())


def shown_value(value, parse) -> str:
    """``value`` written as the config file would say it (its parser reads it back the same)."""
    if parse in _DURATIONS:
        return duration(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return ""
    if isinstance(value, tuple):  # host:port
        host, port = value
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(value, list):
        return " ".join(shown_value(item, None) for item in value)
    if isinstance(value, dict):  # NAME=VALUE pairs (gssapi_services)
        return " ".join(f"{name}={item}" for name, item in value.items())
    if isinstance(value, re.Pattern):
        return value.pattern
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network, Path)):
        return str(value)
    return str(value)


def duration(seconds: int) -> str:
    if seconds == 0:
        return "0"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def add_commands(commands, command) -> None:
    config = commands.add_parser("config", help="check the configuration, or show its effective values").add_subparsers(
        dest="action", required=True)
    command(config, "check", check, "validate the config as the server does at start (exit 0, or 2 and why)")
    command(config, "show", show, "print every key's effective value, defaults included (secrets masked)")
