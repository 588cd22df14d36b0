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
import resource
import signal
import sys
from typing import NoReturn

from OpenSSL.SSL import Error as SSLError
from twisted.application import internet, service
from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import IReactorFDSet, IReactorThreads
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage

# Imported here, not when the service starts: after twistd -u/-g the
# server's user may not be able to read the Python installation.
from cyrusmail import logs, startup, tls
from cyrusmail.auth import kerberos
from cyrusmail.auth.userdb import UserDatabase
from cyrusmail.config import Config, ConfigError, load
from cyrusmail.control import ControlService
from cyrusmail.portal import make_portal
from cyrusmail.private_files import PRIVATE_UMASK, make_private_folder
from cyrusmail.protocols import REGISTRY, ServerContext, builder_of
from cyrusmail.sessions import AdmissionFactory, Limits, SessionRegistry
from cyrusmail.store.executor import ThreadedExecutor
from cyrusmail.store.maildir import MaildirStore
from cyrusmail.trace import Tracer

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
            self.tls = preflight(self.config)
        except ConfigError as error:
            startup.refuse(str(error))


def preflight(config: Config) -> tls.ReloadableTLS | None:
    """What the server checks before it touches anything (``cyrusmail-admin config check`` too).

    The protocols enabled exist in this build, the data folder can be used
    or made, and a named certificate and key are readable and one pair; the
    certificate's TLS options, or None (the self-signed one is made later).
    ConfigError on the first problem.
    """
    check_available(config)
    check_keytab(config)
    config.path = os.path.abspath(config.path)  # for what the server runs later (expire), wherever it is
    # twistd may change folder (--rundir) before the data folder is opened.
    config.values["server"]["data"] = config.data.absolute()
    startup.check_data_folder(config)
    return named_tls(config)


def check_available(config: Config) -> None:
    """Refuse a config that enables a protocol this build does not have."""
    for name in config.enabled_services():
        if builder_of(name) is None:
            raise ConfigError(config.path, name, "enabled", f"this build of cyrusmail has no {name} server yet")


def check_keytab(config: Config) -> None:
    """Refuse an ``[auth] keytab`` that cannot serve the enabled protocols (read again at start, as the server's user)."""
    try:
        kerberos.acceptor_from_config(config)
    except kerberos.KerberosError as error:
        raise ConfigError(config.path, "auth", "keytab", str(error)) from None


def named_tls(config: Config) -> tls.ReloadableTLS | None:
    """The certificate and key the config names, loaded now (``twistd -u`` may not read the key later).

    None when the config names none: the self-signed one lives in the data folder.
    """
    if config["tls"]["certificate"] is None:
        return None
    try:
        return server_tls(config)
    except tls.TLSFileError as error:
        raise ConfigError(config.path, "tls", error.which, str(error)) from None


def server_tls(config: Config) -> tls.ReloadableTLS:
    """The config's certificate, else the self-signed one in ``DATA/tls/``, made on first start."""
    cert, key = config["tls"]["certificate"], config["tls"]["key"]
    if cert is None:
        cert, key = tls.self_signed_paths(config.data)
        if not cert.exists():
            tls.make_self_signed(config.hostname, cert, key)
            logs.log.info("cyrusmail: made a self-signed certificate for {host} in {path}",
                          host=config.hostname, path=str(cert))
    options = tls.ReloadableTLS(cert, key)
    logs.log.info("cyrusmail: TLS certificate {path}, SHA-256 fingerprint {fp}",
                  path=str(cert), fp=tls.fingerprint(options))
    return options


class SignalledService(service.Service):
    """Answers SIGTERM, SIGHUP and SIGUSR1 in the server's process (or its supervisor's)."""

    reactor = None

    def startService(self):
        super().startService()
        if self.reactor is not None:
            # The reactor and twistd install their handlers during startup; ours go after.
            self.reactor.callWhenRunning(self._install_signal_handlers)

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
        self.reactor.callFromThread(self._signalled, signum)  # nothing more in a signal handler

    def _signalled(self, signum: int) -> None:
        if signum == signal.SIGTERM:
            logs.log.info("cyrusmail: SIGTERM received, shutting down")
            try:
                self.reactor.stop()
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
        self.reload_tls()

    def reload_tls(self) -> None:
        """Read the TLS certificate and key again."""


class StoreService(SignalledService):
    """Holds the store and user database open while the server runs."""

    def __init__(self, context: ServerContext):
        self.context = context
        self.reactor = context.reactor

    def reload_tls(self) -> None:
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
        drained.addCallback(lambda _: self.context.store.executor.drain())  # what was asked is finished
        drained.addCallback(lambda _: self._close())
        return drained

    def _close(self) -> None:
        self.context.realm.close()
        self.context.store.close()
        self.context.users.close()
        logs.log.info("cyrusmail: store and index closed")


def open_store(config: Config):
    """The store ``[store] backend`` names; a StartupError saying why it cannot be opened."""
    if config["store"]["backend"] != "postgresql":
        store = MaildirStore(config.data, index_cache=config["server"]["index_cache"],
                             expunged_history=config["server"]["expunged_history"])
        store.keep_deleted = config["server"]["delete_mode"] == "delayed"
        return store
    try:
        import psycopg

        from cyrusmail.store.postgresql import PostgresStore
    except ImportError:
        raise startup.StartupError("[store] backend = postgresql needs psycopg: "
                                   "pip install 'cyrusmail[postgresql]'") from None
    blobs = config["store"]["blobs"]
    if blobs.startswith("s3://"):
        _check_s3(blobs)
    elif blobs != "database" and not (os.path.isdir(blobs) and os.access(blobs, os.W_OK | os.X_OK)):
        raise startup.StartupError(f"[store] blobs: {blobs} is not a folder this server can write to")
    try:
        store = PostgresStore(config["store"]["dsn"], config.data, blobs=blobs,
                              expunged_history=config["server"]["expunged_history"])
    except psycopg.Error as error:
        raise startup.StartupError(f"[store] dsn: cannot open the PostgreSQL store: {startup.one_line(error)}") from None
    store.keep_deleted = config["server"]["delete_mode"] == "delayed"
    return store


def _check_s3(blobs: str) -> None:
    """A StartupError unless boto3 is there and the bucket of ``blobs`` answers."""
    try:
        from cyrusmail.store.postgresql.blobs import S3Blobs

        S3Blobs(blobs).check()
    except ImportError:
        raise startup.StartupError("[store] blobs = s3://... needs boto3: pip install 'cyrusmail[s3]'") from None
    except Exception as error:  # noqa: BLE001 - botocore's many errors, each said in one line
        raise startup.StartupError(f"[store] blobs: cannot reach {blobs}: {startup.one_line(error)}") from None


def open_users(config: Config, store) -> UserDatabase:
    """The user database: ``users.sqlite`` in the data folder, or the PostgreSQL store's (shared by every server)."""
    if config["store"]["backend"] == "postgresql":
        from cyrusmail.store.postgresql.users import PostgresUserDatabase

        return PostgresUserDatabase(store, scram_iterations=config["auth"]["scram_iterations"])
    return UserDatabase(config.data / "users.sqlite", scram_iterations=config["auth"]["scram_iterations"])


def open_context(config: Config, reactor=None, tls_options: tls.ReloadableTLS | None = None,
                 sweep: bool = True) -> ServerContext:
    """Open the store, user database, portal and TLS for ``config``.

    ``sweep`` removes what a crash left (only when no other process of this server runs).
    """
    make_private_folder(config.data)
    store = open_store(config)
    if sweep:
        files, trees = store.sweep()  # what a crash left: no staging of this server is live yet
        logs.log.info("cyrusmail: at start, removed {files} stale files from {tmp} and {trees}"
                      " half-deleted user tree(s)", files=files, tmp=str(store.tmp_dir), trees=trees)
    if IReactorThreads.providedBy(reactor):  # else (a test's Clock) store work runs where it is asked
        store.executor = ThreadedExecutor(reactor, store.index, config["server"]["store_threads"])
    if hasattr(store, "listen") and IReactorFDSet.providedBy(reactor):
        store.listen(reactor)  # changes made through other servers (PostgreSQL NOTIFY)
    users = open_users(config, store)
    if tls_options is None:
        tls_options = server_tls(config)
    portal = make_portal(config, store, users, reactor)
    sessions = SessionRegistry(Limits.from_config(config), reactor, users.exists)
    sessions.tracer = Tracer(config.data / "rawlog", config["server"]["rawlog_users"],
                             config["server"]["rawlog_max_size"])
    context = ServerContext(
        config=config, store=store, users=users, portal=portal, realm=portal.realm,
        tls=tls_options, reactor=reactor, sessions=sessions,
    )
    context.metrics.state.watch(quota_users=lambda: quota_gauges(store, config["metrics"]["quota_users"]))
    if hasattr(store, "session_enders"):  # a user deleted or kicked through another server (PostgreSQL NOTIFY)
        store.session_enders.append(lambda user, reason: context.sessions.kick(user, reason))
    return context


def quota_gauges(store: MaildirStore, users: list[str]):
    """(user, STORAGE used KiB, its limit or None) of each user named in ``[metrics] quota_users``."""
    from cyrusmail.store.errors import StoreError

    for user in users:
        try:
            tree = store.mailboxes(user)
            used = tree.quota_usage("").of("STORAGE")
            limit = tree.quota_limits().get("", {}).get("STORAGE")
        except StoreError:
            continue  # no such user (any more)
        yield user, used, limit


class ServerService(service.MultiService):
    """The whole server: its ports are bound when it is made, its data opened when it starts."""

    def __init__(self, config: Config, reactor, bound: dict[tuple[str, str], startup.BoundEndpoint],
                 tls_options: tls.ReloadableTLS | None, daemon: bool = False, pid_file: str | None = None):
        super().__init__()
        self.config, self.reactor, self.bound, self.tls_options = config, reactor, bound, tls_options
        self.daemon, self.pid_file = daemon, pid_file
        #: the bound ports of [metrics] listen (none unless enabled), served by :meth:`serve_metrics`
        self.metrics_bound: dict[tuple[str, str], startup.BoundEndpoint] = {}

    #: What says goodbye to the sessions and closes the store at the end.
    store_service = StoreService
    #: Whether this process answers ``DATA/control.sock`` (a worker's supervisor does).
    control_socket = True

    def startService(self):
        try:
            context, factories = self.open()
        except Exception as error:  # noqa: BLE001 -- every start-up failure is one line; the log has the traceback
            self.start_failed(error)
            return
        self.serve(context, factories)
        super().startService()

    def open(self) -> tuple[ServerContext, dict]:
        """Lock and open the data folder; the context and each enabled service's factory."""
        os.umask(PRIVATE_UMASK)
        self.lock_fd = startup.take_data_folder(self.config.data)  # held until the process exits
        context = open_context(self.config, self.reactor, self.tls_options)
        return context, {name: self.factory(context, name) for name in self.config.enabled_services()}

    def start_failed(self, error: Exception) -> NoReturn:
        """Say why in one line (exit status 2), having closed every port."""
        if isinstance(error, startup.StartupError):
            logs.log.error("cyrusmail: {problem}", problem=str(error))
        else:
            logs.log.failure("cyrusmail: the start failed")
        startup.close_all([*self.bound.values(), *self.metrics_bound.values()])
        if self.daemon:  # twistd passes an exception to the process that started it, which exits 1
            raise startup.StartupError(startup.one_line(error)) from None
        startup.remove_own_pid_file(self.pid_file)  # twistd removes it only for an exception
        # twistd has made sys.stderr a log file by now; the person starting it reads the real one.
        startup.refuse(startup.one_line(error), sys.__stderr__)

    def serve(self, context: ServerContext, factories: dict) -> None:
        """The store's service, a listener per endpoint, the control socket and the services the protocols asked for."""
        self.store_service(context).setServiceParent(self)
        for name, factory in factories.items():
            for description in self.config[name]["listen"]:
                listener = internet.StreamServerEndpointService(self.bound[name, description], factory)
                listener.setName(f"{name} {description}")
                listener.setServiceParent(self)
                logs.log.info("cyrusmail: {service} listening on {endpoint}", service=name, endpoint=description)
        if self.control_socket:  # the process the administrator talks to: one server, not each worker
            self.control_service(context).setServiceParent(self)
            self.schedule_expire()
        self.serve_metrics(context.metrics.exposition)
        from cyrusmail.delivery import spool

        if spool.shared(self.config):  # every server sends the shared queue's mail, whatever it serves
            from cyrusmail.delivery.queue import queue_of

            queue_of(context)
        for starter in context.extras.get("services", []):
            starter.setServiceParent(self)

    def control_service(self, context: ServerContext) -> ControlService:
        return ControlService(self.config.data, context.sessions, self.reactor, context)

    def schedule_expire(self) -> None:
        """Run ``cyrusmail-admin expire`` every ``[server] expire_interval`` (:mod:`cyrusmail.admin.expire`)."""
        from cyrusmail.admin.expire import ExpireService

        interval = self.config["server"]["expire_interval"]
        if interval:
            ExpireService(self.reactor, os.path.abspath(self.config.path), interval).setServiceParent(self)

    def serve_metrics(self, source) -> None:
        """Serve ``GET /metrics`` on each bound ``[metrics] listen`` port, from ``source()``.

        One process: its own figures.  A supervisor of several worker
        processes passes a source that asks each worker for its figures
        (the control command ``metrics``) and joins them with
        :func:`cyrusmail.metrics.merge_expositions`.
        """
        from cyrusmail.metrics import site

        for (_, description), endpoint in self.metrics_bound.items():
            listener = internet.StreamServerEndpointService(endpoint, site(source))
            listener.setName(f"metrics {description}")
            listener.setServiceParent(self)
            logs.log.info("cyrusmail: metrics served on {endpoint} at /metrics", endpoint=description)

    @staticmethod
    def factory(context: ServerContext, name: str):
        factory = AdmissionFactory(builder_of(name)(context, name), context.sessions, name)
        if REGISTRY[name].implicit_tls:
            factory = TLSMemoryBIOFactory(context.tls, False, factory)
        return factory


def makeService(options: Options) -> service.MultiService:
    """The server: one process, or with ``[server] workers`` above 1 a supervisor of worker processes."""
    from twisted.internet import reactor

    ensure_file_limit(options.config)
    logs.set_level(options.config["server"]["log_level"])
    try:
        bound = startup.bind_all(reactor, options.config)
    except startup.StartupError as error:
        startup.refuse(str(error))
    try:
        metrics = startup.bind_all(reactor, options.config, ["metrics"] if options.config["metrics"]["enabled"] else [])
    except startup.StartupError as error:
        startup.close_all(bound.values())
        startup.refuse(str(error))
    twistd = getattr(options, "parent", None) or {}
    kind = ServerService
    if options.config["server"]["workers"] > 1:
        from cyrusmail.workers.supervisor import SupervisorService as kind
    server = kind(options.config, reactor, bound, options.tls,
                  daemon=not twistd.get("nodaemon", True), pid_file=twistd.get("pidfile"))
    server.metrics_bound = metrics
    return server


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

