"""``twistd cyrusmail``: build the running server from the config.

The config is loaded and checked while options are parsed; a bad one stops
twistd with one line on standard error and exit status 2, before anything
touches the disk. ``makeService`` then opens the store and the user
database, makes the TLS certificate if needed, and adds one listening
service per endpoint of every enabled protocol in the registry.
"""

from __future__ import annotations

import resource
import signal
import sys

from OpenSSL.SSL import Error as SSLError
from twisted.application import internet, service
from twisted.internet import endpoints
from twisted.internet.error import ReactorNotRunning
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage

from cyrusmail import logs
from cyrusmail.config import Config, ConfigError, load
from cyrusmail.protocols import REGISTRY, ServerContext, builder_of
from cyrusmail.sessions import AdmissionFactory, Limits, SessionRegistry

DEFAULT_CONFIG = "etc/cyrusmail.conf"
#: Open files one session may need: its socket, and its user's index (database, WAL, shared memory).
FILES_PER_SESSION = 4
#: Open files for everything else: listeners, the user and ACL databases, the queue, logs.
FILES_RESERVED = 256


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
            # The reactor and twistd install their handlers during startup; ours go after.
            reactor.callWhenRunning(self._install_signal_handlers)

    def _install_signal_handlers(self) -> None:
        """SIGTERM stops cleanly, SIGHUP reloads, SIGUSR1 is ignored.

        twistd re-raises SIGTERM after a clean stop (exit 143); an orderly
        shutdown on request is a success, so ours stops plainly (exit 0).
        SIGHUP and SIGUSR1 would end the process silently by default.  With
        ``--logfile`` twistd has already taken SIGUSR1 to rotate its log
        file itself; that is left as it is.
        """
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_signal)
        if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGUSR1, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.context.reactor.callFromThread(self._signalled, signum)  # nothing more in a signal handler

    def _signalled(self, signum: int) -> None:
        if signum == signal.SIGTERM:
            logs.log.info("cyrusmail: SIGTERM received, shutting down")
            try:
                self.context.reactor.stop()
            except ReactorNotRunning:  # a second SIGTERM while stopping
                pass
        elif signum == signal.SIGHUP:
            self.reload()
        else:
            logs.log.info("cyrusmail: SIGUSR1 ignored (it rotates the log file when twistd runs with --logfile)")

    def reload(self) -> None:
        """SIGHUP: reopen twistd's log file (after an outside rotation) and re-read the TLS files.

        Nothing else is reloaded: other config changes need a restart.
        """
        try:
            reopened = logs.reopen_log_files()
        except OSError as error:
            logs.log.error("cyrusmail: SIGHUP: cannot reopen the log file: {error}", error=str(error))
        else:
            logs.log.info("cyrusmail: SIGHUP received, reopened {n} log files", n=reopened)
        reload_tls = getattr(self.context.tls, "reload", None)
        if reload_tls is None:
            return
        try:
            fingerprint = reload_tls()
        except (OSError, ValueError, TypeError, SSLError) as error:
            logs.log.error("cyrusmail: SIGHUP: kept the old TLS certificate: {error}", error=str(error) or repr(error))
        else:
            logs.log.info("cyrusmail: TLS certificate reloaded, SHA-256 fingerprint {fp}", fp=fingerprint)

    def stopService(self):
        """Say goodbye to every session (the listeners are already closing), then close the store."""
        super().stopService()
        sessions = self.context.sessions
        if len(sessions):
            logs.log.info("cyrusmail: ending {n} sessions", n=len(sessions))
        drained = sessions.end_all("Server shutting down")
        drained.addCallback(lambda _: self._close())
        return drained

    def _close(self) -> None:
        self.context.realm.close()
        self.context.store.close()
        self.context.users.close()
        logs.log.info("cyrusmail: store and index closed")


def open_context(config: Config, reactor=None) -> ServerContext:
    """Open the store, user database, portal and TLS for ``config``."""
    from cyrusmail import tls
    from cyrusmail.auth.userdb import UserDatabase
    from cyrusmail.portal import make_portal
    from cyrusmail.store.maildir import MaildirStore

    config.data.mkdir(parents=True, exist_ok=True)
    store = MaildirStore(config.data)
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
        tls=tls.ReloadableTLS(cert, key), reactor=reactor,
        sessions=SessionRegistry(Limits.from_config(config), reactor, users.exists),
    )


def with_backlog(description: str, backlog: int) -> str:
    """The endpoint ``description`` with ``backlog=N`` added, unless it names its own."""
    if ":backlog=" in description:
        return description
    return f"{description}:backlog={backlog}"


def makeService(options: Options) -> service.MultiService:
    from twisted.internet import reactor

    ensure_file_limit(options.config)
    return build_service(options.config, reactor)


def ensure_file_limit(config: Config) -> None:
    """Raise the soft limit on open files to what ``max_connections`` needs, as far as the hard limit allows.

    ``ulimit -n`` is often 1024; past it every new connection would fail.
    """
    wanted = FILES_PER_SESSION * config["server"]["max_connections"] + FILES_RESERVED
    before, after = raise_file_limit(wanted)
    if after != before:
        logs.log.info("cyrusmail: open file limit raised from {before} to {after}", before=before, after=after)
    if after < wanted:
        logs.log.warn(
            "cyrusmail: max_connections = {n} may need {wanted} open files but the limit is {limit};"
            " raise the hard limit (ulimit -Hn, systemd LimitNOFILE=) or lower max_connections",
            n=config["server"]["max_connections"], wanted=wanted, limit=after)


def raise_file_limit(wanted: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE toward ``wanted``, never past the hard limit: (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft, soft
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return soft, target
    return soft, soft


def build_service(config: Config, reactor) -> service.MultiService:
    """The store, one listener per endpoint of each enabled service, and the control socket."""
    from cyrusmail.control import ControlService

    context = open_context(config, reactor)
    top = service.MultiService()
    StoreService(context).setServiceParent(top)
    backlog = config["server"]["listen_backlog"]
    for name in config.enabled_services():
        factory = AdmissionFactory(builder_of(name)(context, name), context.sessions, name)
        if REGISTRY[name].implicit_tls:
            factory = TLSMemoryBIOFactory(context.tls, False, factory)
        for description in config[name]["listen"]:
            listener = internet.StreamServerEndpointService(
                endpoints.serverFromString(reactor, with_backlog(description, backlog)), factory
            )
            listener._raiseSynchronously = True  # a port in use stops the start, loudly
            listener.setName(f"{name} {description}")
            listener.setServiceParent(top)
            logs.log.info("cyrusmail: {service} listening on {endpoint}", service=name, endpoint=description)
    ControlService(config.data, context.sessions, reactor).setServiceParent(top)
    for starter in context.extras.get("services", []):
        starter.setServiceParent(top)
    return top
