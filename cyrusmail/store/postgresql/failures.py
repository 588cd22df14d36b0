"""The login throttle's failures per account, in the PostgreSQL store's database (migration 7).

Every server's throttle (:class:`cyrusmail.auth.throttle.LoginThrottle`) reads an
account's row when an attempt arrives and adds each failure to it, so that
guessing one account's password through several servers meets the delay of
every failure, wherever it was made. A row decays as the throttle's own counts
do (one failure forgotten every ``forget`` seconds) and goes once all are.
When the database cannot be reached, the throttle goes on with its own counts.
"""

from __future__ import annotations

import psycopg
from twisted.logger import Logger

_log = Logger()


class PostgresLoginFailures:
    """``login_failures`` through ``store``'s connections (a :class:`PostgresStore`)."""

    def __init__(self, store):
        self.store = store

    def recent(self, account: str) -> tuple[float, float] | None:
        """(failures as of ``updated``, ``updated``) of ``account``, or None."""
        try:
            return self.store.db.execute("SELECT failures, updated FROM login_failures WHERE account = %s",
                                         (account,)).fetchone()
        except psycopg.Error as error:
            _log.warn("login throttle: cannot read shared failures: {error}", error=str(error))
            return None

    def failed(self, account: str, now: float, forget: float) -> None:
        """One more failure of ``account`` at ``now``; rows whose failures are all forgotten go."""
        try:
            with self.store.write() as db:
                db.execute(
                    "INSERT INTO login_failures AS f (account, failures, updated, until)"
                    " VALUES (%(account)s, 1, %(now)s, %(now)s + %(forget)s)"
                    " ON CONFLICT (account) DO UPDATE SET"
                    " failures = greatest(0, f.failures - greatest(0, %(now)s - f.updated) / %(forget)s) + 1,"
                    " updated = %(now)s,"
                    " until = %(now)s + (greatest(0, f.failures - greatest(0, %(now)s - f.updated) / %(forget)s) + 1)"
                    " * %(forget)s",
                    {"account": account, "now": now, "forget": forget})
                db.execute("DELETE FROM login_failures WHERE until < %s", (now,))
        except psycopg.Error as error:
            _log.warn("login throttle: cannot record a shared failure: {error}", error=str(error))

    def succeeded(self, account: str) -> None:
        """``account`` logged in: its failures are cleared, as the throttle clears its own."""
        try:
            self.store.db.execute("DELETE FROM login_failures WHERE account = %s", (account,))
        except psycopg.Error as error:
            _log.warn("login throttle: cannot clear shared failures: {error}", error=str(error))
