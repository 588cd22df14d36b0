"""The registry of protocol servers, and what each is given to build its factory.

Each protocol issue adds one entry to ``REGISTRY``; the service builder
starts whatever the config enables. A builder is named by import path so
that a protocol's code is imported only when it is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.interfaces import IProtocolFactory

from cyrusmail.metrics import Metrics
from cyrusmail.sessions import SessionRegistry


@dataclass(frozen=True)
class ProtocolSpec:
    """How to build the factory of one config service section."""

    builder: str  # "module:function", called as function(context, service_name)
    implicit_tls: bool = False


REGISTRY: dict[str, ProtocolSpec] = {
    "imap": ProtocolSpec("cyrusmail.imap.server:make_factory"),
    "imaps": ProtocolSpec("cyrusmail.imap.server:make_factory", implicit_tls=True),
    "pop3": ProtocolSpec("cyrusmail.pop3.server:make_factory"),
    "pop3s": ProtocolSpec("cyrusmail.pop3.server:make_factory", implicit_tls=True),
    "submission": ProtocolSpec("cyrusmail.smtp.server:make_submission_factory"),
    "submissions": ProtocolSpec("cyrusmail.smtp.server:make_submission_factory", implicit_tls=True),
    "lmtp": ProtocolSpec("cyrusmail.smtp.server:make_lmtp_factory"),
    "managesieve": ProtocolSpec("cyrusmail.managesieve.server:make_factory"),
}


def builder_of(service: str) -> Callable[[ServerContext, str], IProtocolFactory] | None:
    """The factory builder of ``service``, or None when this build lacks it."""
    module_name, _, function = REGISTRY[service].builder.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            return None
        raise
    return getattr(module, function, None)


@dataclass
class ServerContext:
    """Everything a protocol factory needs, made once at start."""

    config: Any  # cyrusmail.config.Config
    store: Any  # IStore
    users: Any  # UserDatabase
    portal: Any  # twisted.cred Portal handing out IAccount
    realm: Any  # MailRealm, for delivery to users by name
    tls: Any = None  # twisted.internet.ssl.CertificateOptions
    sessions: SessionRegistry = field(default_factory=SessionRegistry)  # live sessions, connection caps
    reactor: Any = None
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. the outbound queue
    metrics: Metrics = field(default_factory=Metrics)  # what /metrics serves

    def __post_init__(self) -> None:
        self.metrics.state.watch(sessions=lambda: self.sessions, queue=lambda: self.extras.get("queue"))


def set_no_delay(transport) -> None:
    """Small replies go out at once (clients send a literal's CRLF apart)."""
    target = getattr(transport, "transport", transport)
    for candidate in (transport, target):
        set_nodelay = getattr(candidate, "setTcpNoDelay", None)
        if set_nodelay is not None:
            try:
                set_nodelay(True)
            except OSError:  # not a TCP socket (unix socket)
                return
            return
