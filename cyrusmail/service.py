"""``twistd cyrusmail``: build the running server from the config.

The config is loaded and checked while options are parsed; a bad one stops
twistd with one line on standard error and exit status 2, before anything
touches the disk. ``makeService`` then opens the store and the user
database, makes the TLS certificate if needed, and adds one listening
service per endpoint of every enabled protocol in the registry.
"""

from __future__ import annotations

import signal
import sys

from twisted.application import internet, service
from twisted.internet import endpoints
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage

from cyrusmail import logs
from cyrusmail.config import Config, ConfigError, load
from cyrusmail.protocols import REGISTRY, ServerContext, builder_of

DEFAULT_CONFIG = "etc/cyrusmail.conf"


class Options(usage.Options):
    synopsis = "[--config PATH]"
    longdesc = "Serve IMAP, POP3, submission and LMTP from one sealed mail store."
    optParameters = [["config", "c", DEFAULT_CONFIG, "The configuration file (INI)."]]  # noqa: RUF012

    def postOptions(self) -> None:
        try:
            self.config = load(self["config"])
            check_available(self.config)
        except ConfigError as error:
            sys.stderr.write(f"cyrusmail: {error}\n")
            sys.stderr.flush()
            raise SystemExit(2) from None


def check_available(config: Config) -> None:
    """Refuse a config that enables a protocol this build does not have."""
    for name in config.enabled_services():
        if builder_of(name) is None:
            raise ConfigError(config.path, name, "enabled", f"this build of cyrusmail has no {name} server yet")


class StoreService(service.Service):
    """Holds the store and user database open while the server runs."""

    def __init__(self, context: ServerContext):
        self.context = context

    def startService(self):
        super().startService()
        reactor = self.context.reactor
        if reactor is not None:
            # twistd re-raises SIGTERM after a clean stop (exit 143); an
            # orderly shutdown on request is a success, so stop plainly.
            # The reactor installs its own handlers during startup; ours goes after.
            reactor.callWhenRunning(signal.signal, signal.SIGTERM, self._stop_on_request)

    def _stop_on_request(self, signum, frame) -> None:
        logs.log.info("cyrusmail: SIGTERM received, shutting down")
        self.context.reactor.callFromThread(self.context.reactor.stop)

    def stopService(self):
        self.context.realm.close()
        self.context.store.close()
        self.context.users.close()
        logs.log.info("cyrusmail: store and index closed")
        return super().stopService()


def open_context(config: Config, reactor=None) -> ServerContext:
    """Open the store, user database, portal and TLS for ``config``."""
    from cyrusmail import tls
    from cyrusmail.auth.userdb import UserDatabase
    from cyrusmail.portal import make_portal
    from cyrusmail.store.maildir import MaildirStore

    config.data.mkdir(parents=True, exist_ok=True)
    store = MaildirStore(config.data, expunged_history=config["server"]["expunged_history"])
    users = UserDatabase(config.data / "users.sqlite")
    cert, key = config["tls"]["certificate"], config["tls"]["key"]
    if cert is None:
        cert, key = tls.self_signed_paths(config.data)
        if not cert.exists():
            tls.make_self_signed(config.hostname, cert, key)
            logs.log.info("cyrusmail: made a self-signed certificate for {host} in {path}",
                          host=config.hostname, path=str(cert))
    logs.log.info("cyrusmail: TLS certificate {path}, SHA-256 fingerprint {fp}",
                  path=str(cert), fp=tls.fingerprint(cert))
    portal = make_portal(config, store, users)
    return ServerContext(
        config=config, store=store, users=users, portal=portal, realm=portal.realm,
        tls=tls.context_factory(cert, key), reactor=reactor,
    )


def makeService(options: Options) -> service.MultiService:
    from twisted.internet import reactor

    config: Config = options.config
    context = open_context(config, reactor)
    top = service.MultiService()
    StoreService(context).setServiceParent(top)
    for name in config.enabled_services():
        factory = builder_of(name)(context, name)
        if REGISTRY[name].implicit_tls:
            factory = TLSMemoryBIOFactory(context.tls, False, factory)
        for description in config[name]["listen"]:
            listener = internet.StreamServerEndpointService(
                endpoints.serverFromString(reactor, description), factory
            )
            listener._raiseSynchronously = True  # a port in use stops the start, loudly
            listener.setName(f"{name} {description}")
            listener.setServiceParent(top)
            logs.log.info("cyrusmail: {service} listening on {endpoint}", service=name, endpoint=description)
    for starter in context.extras.get("services", []):
        starter.setServiceParent(top)
    return top
