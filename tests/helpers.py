"""Shared test fixtures: a real server context over a temporary data folder."""

from __future__ import annotations

import configparser
import contextlib
import functools
import os
import stat
import unittest
from pathlib import Path

from cyrusmail.config import SERVICES, Config, from_parser
from cyrusmail.protocols import ServerContext

#: ``CYRUSMAIL_TEST_STORE=postgresql``: every context :func:`make_config` makes is on the PostgreSQL
#: store (a fresh schema of the test server), so the protocol tests run against that backend too.
ON_POSTGRESQL = os.environ.get("CYRUSMAIL_TEST_STORE") == "postgresql"
#: With it, ``CYRUSMAIL_TEST_BLOBS=folder``: message bodies in a folder's files ([store] blobs), not a table.
BLOBS_IN_FOLDER = os.environ.get("CYRUSMAIL_TEST_BLOBS") == "folder"


def embedded_store_only(test):
    """For a test that looks into the embedded store's files or SQLite index: skipped on PostgreSQL."""

    @functools.wraps(test)
    def run(self, *args, **kwargs):
        if ON_POSTGRESQL:
            raise unittest.SkipTest("looks into the embedded store's files; CYRUSMAIL_TEST_STORE=postgresql")
        return test(self, *args, **kwargs)

    return run


def another_store(store):
    """A second store on the same mail as ``store`` (another process's), of the same backend."""
    if hasattr(store, "dsn"):
        from cyrusmail.store.postgresql import PostgresStore

        return PostgresStore(store.dsn, store.root, analyser=None, blobs=store.blobs.setting)
    from cyrusmail.store.maildir import MaildirStore

    return MaildirStore(store.root, analyser=None)


def workers_under_test() -> int:
    """Worker processes of the real-twistd tests: 1 (one process), or ``CYRUSMAIL_TEST_WORKERS``."""
    return int(os.environ.get("CYRUSMAIL_TEST_WORKERS", "1"))


def make_config(data: str | Path, **sections: dict[str, str]) -> Config:
    """A validated config with every service disabled unless ``sections`` says otherwise.

    ``make_config(tmp, server={"admins": "root"}, imap={"enabled": "yes", "listen": "tcp:0"})``
    """
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read_dict({
        "server": {"data": str(data), "hostname": "mail.example.org", "domains": "example.org"},
        **{name: {"enabled": "no"} for name in SERVICES},
    })
    parser.read_dict(sections)
    if ON_POSTGRESQL and "store" not in sections:  # the protocol tests again, on the PostgreSQL store
        from tests import postgres_support

        parser.read_dict({"store": {"backend": "postgresql", "dsn": postgres_support.fresh_dsn()[0]}})
        if BLOBS_IN_FOLDER:
            blobs = Path(data) / "blobs"  # inside the data folder: the test's cleanup removes it
            blobs.mkdir(mode=0o700, parents=True, exist_ok=True)
            parser.read_dict({"store": {"blobs": str(blobs.resolve())}})
    return from_parser("test.conf", parser)


def make_context(data: str | Path, reactor=None, **sections: dict[str, str]) -> ServerContext:
    """Open a real store, user database, portal and TLS certificate under ``data``."""
    from cyrusmail.service import open_context

    context = open_context(make_config(data, **sections), reactor)
    return context


def add_user(context: ServerContext, name: str, password: str = "secret") -> str:
    """Add a user and make their INBOX and special-use folders."""
    user = context.users.add(name, password)
    context.realm.account(user)
    return user


def modes_not_private(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (itself included) that is not 0600, or folder not 0700: path -> mode."""
    wrong = {}
    for path in [folder, *folder.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode != (0o700 if path.is_dir() else 0o600):
            wrong[str(path.relative_to(folder))] = oct(mode)
    return wrong


@contextlib.contextmanager
def statements_run(store, user: str):
    """The SQL statements run meanwhile on ``user``'s index (the embedded store), or on the
    PostgreSQL store's connections (every statement of every user: the tests look for tables)."""
    seen: list[str] = []
    if not hasattr(store, "dsn"):
        db = store.index(user).db
        db.set_trace_callback(seen.append)
        try:
            yield seen
        finally:
            db.set_trace_callback(None)
        return
    import psycopg

    execute = psycopg.Cursor.execute

    def traced(cursor, query, *args, **kwargs):
        seen.append(query if isinstance(query, str) else query.as_string(cursor))
        return execute(cursor, query, *args, **kwargs)

    psycopg.Cursor.execute = traced
    try:
        yield seen
    finally:
        psycopg.Cursor.execute = execute
