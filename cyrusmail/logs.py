"""What every protocol logs: connections and authentications, never secrets.

Every cyrusmail logger writes through one level filter, set from
``[server] log_level`` when the server starts (:func:`set_level`):
``debug`` adds each command's name and time, ``warn`` keeps only warnings
and errors (refused connections, failed logins), ``error`` only errors.
twistd's own few lines at start and stop are not ours and always appear.
"""

from __future__ import annotations

from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)

#: The level below which cyrusmail's events are dropped (``[server] log_level``).
LEVEL = LogLevelFilterPredicate(LogLevel.info)
_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn, "error": LogLevel.error}


def logger(namespace: str) -> Logger:
    """A logger whose events pass the ``log_level`` filter before reaching twistd's log."""
    return Logger(namespace=namespace, observer=FilteringLogObserver(globalLogPublisher, [LEVEL]))


def set_level(name: str) -> None:
    """Log ``name`` (debug, info, warn, error) and above from now on."""
    LEVEL.setLogLevelForNamespace("", _LEVELS[name])


def debugging() -> bool:
    """Whether debug lines are logged (to skip making lines that would be dropped)."""
    return LEVEL.logLevelForNamespace("cyrusmail") <= LogLevel.debug


log = logger("cyrusmail")


def peer_of(transport) -> str:
    peer = transport.getPeer() if transport is not None else None
    host = getattr(peer, "host", None)
    if host is None:
        return "local"
    port = getattr(peer, "port", None)
    return f"{host}:{port}" if port is not None else str(host)


def connection_opened(service: str, transport) -> None:
    log.info("{service}: connection from {peer}", service=service, peer=peer_of(transport))


def connection_closed(service: str, transport) -> None:
    log.info("{service}: connection from {peer} closed", service=service, peer=peer_of(transport))


def login_succeeded(service: str, transport, user: str, mechanism: str) -> None:
    log.info("{service}: {user} logged in from {peer} ({mechanism})",
             service=service, user=user, peer=peer_of(transport), mechanism=mechanism)


def logged_out(service: str, transport, user: str, how: str) -> None:
    log.info("{service}: {user} logged out from {peer} ({how})",
             service=service, user=user, peer=peer_of(transport), how=how)


def login_failed(service: str, transport, user: str, mechanism: str) -> None:
    # The name is logged (admins need it to see attacks); the password never.
    log.warn(  # noqa: G010 -- twisted.logger has warn(), not warning()
        "{service}: failed login for {user!r} from {peer} ({mechanism})",
             service=service, user=user[:64], peer=peer_of(transport), mechanism=mechanism)


def reopen_log_files() -> int:
    """Reopen twistd's log file (``--logfile``) after an outside tool moved it; how many were.

    twistd keeps its :class:`~twisted.python.logfile.LogFile` to itself, so
    it is found among the live objects; a SIGHUP is rare enough for that.
    """
    import gc

    from twisted.python.logfile import BaseLogFile

    files = [item for item in gc.get_objects() if isinstance(item, BaseLogFile) and not item.closed]
    for log_file in files:
        log_file.reopen()
    return len(files)
