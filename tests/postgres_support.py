"""A throwaway PostgreSQL server for the tests, started once per test run.

Debian's ``postgresql`` package gives the binaries (``.ci/run`` installs it);
:func:`server` makes a cluster with ``initdb`` in a temporary folder, starts
``postgres`` on a free loopback port (no Unix socket, trust authentication
for loopback only, no fsync: the data is thrown away) and stops it when the
test process ends (:func:`stop`, called at exit and by the pytest session
fixture in ``conftest.py``).  PostgreSQL refuses to run as root, so a test
run as root runs the server as ``nobody``.

:func:`fresh_dsn` gives each test its own database schema, so that tests
never see each other's rows.  A test module that needs the server calls
:func:`skip_reason` and skips with it where the package is missing.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass

#: How long the server may take to start on a loaded machine (a hang check, not a timing).
START_TIMEOUT = 120.0


def binaries() -> str | None:
    """The folder holding Debian's ``initdb`` and ``postgres`` (the newest version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda path: int(path.split("/")[4]) if path.split("/")[4].isdigit() else 0)
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb and shutil.which("postgres") else None


def skip_reason() -> str | None:
    """Why PostgreSQL tests cannot run here, or None when they can."""
    if binaries() is None:
        return "PostgreSQL is not installed (Debian package postgresql; .ci/run installs it)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[test]')"
    return None


@dataclass
class Server:
    folder: str
    port: int
    process: subprocess.Popen

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=cyrusmail dbname=postgres"


_server: Server | None = None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_user() -> dict:
    """Popen arguments that run a command as an unprivileged user when we are root."""
    if os.geteuid() != 0:
        return {}
    nobody = pwd.getpwnam("nobody")
    return {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}


def server(durable: bool = False) -> Server:
    """The test run's PostgreSQL server, started at the first call.

    ``durable`` keeps PostgreSQL's fsync at commit (off by default: the tests
    throw the data away); the benchmarks want it on, as the embedded store's.
    """
    global _server
    if _server is not None and _server.process.poll() is None:
        return _server
    bin_dir = binaries()
    if bin_dir is None:
        raise RuntimeError(skip_reason())
    folder = tempfile.mkdtemp(prefix="cyrusmail-pg-")
    data = os.path.join(folder, "cluster")
    as_user = _as_user()
    if as_user:
        os.chown(folder, as_user["user"], as_user["group"])
    subprocess.run(
        [os.path.join(bin_dir, "initdb"), "-D", data, "-U", "cyrusmail", "--auth=trust", "-E", "UTF8",
         "--locale=C", "--no-sync"],
        check=True, capture_output=True, cwd=folder, **as_user,
    )
    port = _free_port()
    log = open(os.path.join(folder, "server.log"), "wb")  # noqa: SIM115 - the server writes it until stopped
    process = subprocess.Popen(
        [os.path.join(bin_dir, "postgres"), "-D", data, "-h", "127.0.0.1", "-p", str(port), "-k", "",
         *([] if durable else ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]),
         "-c", "max_connections=200", "-c", "shared_buffers=32MB"],
        stdout=log, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True, **as_user,
    )
    log.close()
    _server = Server(folder, port, process)
    atexit.register(stop)
    _wait_ready(_server)
    return _server


def _wait_ready(running: Server) -> None:
    import psycopg

    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if running.process.poll() is not None:
            with open(os.path.join(running.folder, "server.log"), errors="replace") as log:
                raise RuntimeError("postgres exited at start:\n" + log.read()[-2000:])
        try:
            psycopg.connect(running.dsn, connect_timeout=5).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def stop() -> None:
    """Stop the server (immediate shutdown) and remove its cluster."""
    global _server
    running, _server = _server, None
    if running is None:
        return
    if running.process.poll() is None:
        running.process.send_signal(signal.SIGQUIT)  # immediate shutdown: the data is thrown away
        try:
            running.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            running.process.kill()
            running.process.wait()
    shutil.rmtree(running.folder, ignore_errors=True)


def fresh_dsn() -> tuple[str, str]:
    """A connection string whose tables live in a new, empty schema of their own; (dsn, schema)."""
    import psycopg

    schema = "t_" + secrets.token_hex(6)
    running = server()
    with psycopg.connect(running.dsn, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    return f"{running.dsn} options='-c search_path={schema}'", schema


def drop_schema(schema: str) -> None:
    """Remove a schema made by :func:`fresh_dsn` with everything in it."""
    import psycopg

    if _server is None:
        return
    with psycopg.connect(_server.dsn, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
