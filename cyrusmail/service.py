"""``twistd cyrusmail``: build the running server from the config.

Starting follows :mod:`cyrusmail.startup`: the config, the named
certificate and the data folder are checked while options are parsed,
every port is bound in ``makeService``, and the data folder is locked and
opened when the service starts (after ``twistd -u/-g`` has switched user).
Any failure on the way is one line on standard error and exit status 2;
one found before the data folder is made leaves nothing on disk. Then there
is one listening service per endpoint of every enabled protocol in the
registry.
"""

from __future__ import annotations

import os
import signal
import sys

from twisted.application import internet, service
from twisted.internet import ssl
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage

# Imported here, not when the service starts: after twistd -u/-g the
# server's user may not be able to read the Python installation.
from cyrusmail import logs, startup, tls
from cyrusmail.auth.userdb import UserDatabase
from cyrusmail.config import Config, ConfigError, load
from cyrusmail.portal import make_portal
from cyrusmail.private_files import PRIVATE_UMASK, make_private_folder
from cyrusmail.protocols import REGISTRY, ServerContext, builder_of
from cyrusmail.store.maildir import MaildirStore

DEFAULT_CONFIG = "etc/cyrusmail.conf"


class Options(usage.Options):
    synopsis = "[--config PATH]"
    longdesc = "Serve IMAP, POP3, submission and LMTP from one sealed mail store."
    optParameters = [["config", "c", DEFAULT_CONFIG, "The configuration file (INI)."]]  # noqa: RUF012

    def postOptions(self) -> None:
        try:
            self.config = load(self["config"])
            check_available(self.config)
            # twistd may change folder (--rundir) before the data folder is opened.
            self.config.values["server"]["data"] = self.config.data.absolute()
            startup.check_data_folder(self.config)
            self.tls = named_tls(self.config)
        except ConfigError as error:
            startup.refuse(str(error))


def check_available(config: Config) -> None:
    """Refuse a config that enables a protocol this build does not have."""
    for name in config.enabled_services():
        if builder_of(name) is None:
            raise ConfigError(config.path, name, "enabled", f"this build of cyrusmail has no {name} server yet")


def named_tls(config: Config) -> ssl.CertificateOptions | None:
    """The certificate and key the config names, loaded now (``twistd -u`` may not read the key later).

    None when the config names none: the self-signed one lives in the data folder.
    """
    if config["tls"]["certificate"] is None:
        return None
    try:
        return server_tls(config)
    except tls.TLSFileError as error:
        raise ConfigError(config.path, "tls", error.which, str(error)) from None


def server_tls(config: Config) -> ssl.CertificateOptions:
    """The config's certificate, else the self-signed one in ``DATA/tls/``, made on first start."""
    cert, key = config["tls"]["certificate"], config["tls"]["key"]
    if cert is None:
        cert, key = tls.self_signed_paths(config.data)
        if not cert.exists():
            tls.make_self_signed(config.hostname, cert, key)
            logs.log.info("cyrusmail: made a self-signed certificate for {host} in {path}",
                          host=config.hostname, path=str(cert))
    options = tls.context_factory(cert, key)
    logs.log.info("cyrusmail: TLS certificate {path}, SHA-256 fingerprint {fp}",
                  path=str(cert), fp=tls.fingerprint(options))
    return options


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


def open_context(config: Config, reactor=None, tls_options: ssl.CertificateOptions | None = None) -> ServerContext:
    """Open the store, user database, portal and TLS for ``config``."""
    make_private_folder(config.data)
    store = MaildirStore(config.data, index_cache=config["server"]["index_cache"])
    files, trees = store.sweep()  # what a crash left: no staging of this server is live yet
    logs.log.info("cyrusmail: at start, removed {files} stale files from {tmp} and {trees} half-deleted user tree(s)",
                  files=files, tmp=str(store.tmp_dir), trees=trees)
    users = UserDatabase(config.data / "users.sqlite")
    if tls_options is None:
        tls_options = server_tls(config)
    portal = make_portal(config, store, users, reactor)
    return ServerContext(
        config=config, store=store, users=users, portal=portal, realm=portal.realm,
        tls=tls_options, reactor=reactor,
    )


class ServerService(service.MultiService):
    """The whole server: its ports are bound when it is made, its data opened when it starts."""

    def __init__(self, config: Config, reactor, bound: dict[tuple[str, str], startup.BoundEndpoint],
                 tls_options: ssl.CertificateOptions | None, daemon: bool = False, pid_file: str | None = None):
        super().__init__()
        self.config, self.reactor, self.bound, self.tls_options = config, reactor, bound, tls_options
        self.daemon, self.pid_file = daemon, pid_file

    def startService(self):
        try:
            os.umask(PRIVATE_UMASK)
            self.lock_fd = startup.take_data_folder(self.config.data)  # held until the process exits
            context = open_context(self.config, self.reactor, self.tls_options)
            factories = {name: self.factory(context, name) for name in self.config.enabled_services()}
        except Exception as error:  # noqa: BLE001 -- every start-up failure is one line; the log has the traceback
            if isinstance(error, startup.StartupError):
                logs.log.error("cyrusmail: {problem}", problem=str(error))
            else:
                logs.log.failure("cyrusmail: the start failed")
            startup.close_all(self.bound.values())
            if self.daemon:  # twistd passes an exception to the process that started it, which exits 1
                raise startup.StartupError(startup.one_line(error)) from None
            startup.remove_own_pid_file(self.pid_file)  # twistd removes it only for an exception
            # twistd has made sys.stderr a log file by now; the person starting it reads the real one.
            startup.refuse(startup.one_line(error), sys.__stderr__)
        StoreService(context).setServiceParent(self)
        for name, factory in factories.items():
            for description in self.config[name]["listen"]:
                listener = internet.StreamServerEndpointService(self.bound[name, description], factory)
                listener.setName(f"{name} {description}")
                listener.setServiceParent(self)
                logs.log.info("cyrusmail: {service} listening on {endpoint}", service=name, endpoint=description)
        for starter in context.extras.get("services", []):
            starter.setServiceParent(self)
        super().startService()

    @staticmethod
    def factory(context: ServerContext, name: str):
        factory = builder_of(name)(context, name)
        if REGISTRY[name].implicit_tls:
            factory = TLSMemoryBIOFactory(context.tls, False, factory)
        return factory


def makeService(options: Options) -> service.MultiService:
    from twisted.internet import reactor

    try:
        bound = startup.bind_all(reactor, options.config)
    except startup.StartupError as error:
        startup.refuse(str(error))
    twistd = getattr(options, "parent", None) or {}
    return ServerService(options.config, reactor, bound, options.tls,
                         daemon=not twistd.get("nodaemon", True), pid_file=twistd.get("pidfile"))
