"""Where Sieve scripts live: each user's scripts and vacation records, and the global scripts.

:class:`ScriptStore` is what ManageSieve and delivery ask of them; it
checks names and quotas, and a subclass keeps the rows.  :func:`scripts_of`
picks the subclass from the server's store, in this one place: the
embedded store's :class:`SieveScripts` (below), or on the PostgreSQL store
:class:`~cyrusmail.store.postgresql.sieve.PostgresSieveScripts` (tables that
every server on the database shares, so that a script uploaded through one
server filters the deliveries of all at once).

On the embedded store, each user's scripts are in
``users/USER/sieve.sqlite`` (0600, beside the user's index, so ``user
delete`` takes them along): a table of scripts by name (UTF-8 text as
uploaded, at most one marked active) and a table of vacation replies
sent (who was answered, under which handle, until when not again).
The database is opened for each use and closed again, so that every
server process and ``cyrusmail-admin`` see the same scripts; a user
without the file has no script, which costs delivery one stat.

Quotas (``[sieve] max_script_size``, ``max_scripts``) are checked here,
for ManageSieve's PUTSCRIPT and HAVESPACE alike.  Names follow RFC 5804
section 1.6: 1 to :data:`MAX_NAME_LENGTH` characters of UTF-8 with no
control characters and no line or paragraph separators.

Global scripts (RFC 6609 ``include :global``) are files ``NAME.sieve``
in the ``[sieve] global_scripts`` folder, which the administrator keeps.
"""

from __future__ import annotations

import contextlib
import sqlite3
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from cyrusmail import sqlite
from cyrusmail.store.errors import InvalidName

FILE_NAME = "sieve.sqlite"
MAX_NAME_LENGTH = 128
#: Vacation records kept per user; the oldest go first past it.
MAX_VACATION_RECORDS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scripts (
    name TEXT PRIMARY KEY,
    content TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS vacation (
    handle TEXT NOT NULL,
    sender TEXT NOT NULL,
    until REAL NOT NULL,
    PRIMARY KEY (handle, sender)
);
"""


class ScriptError(Exception):
    """A refused change; ``code`` is the ManageSieve response code (RFC 5804 section 1.3)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_name(name: str) -> str:
    """``name`` if it may name a script, else ScriptError."""
    if not name or len(name) > MAX_NAME_LENGTH:
        raise ScriptError("", f"A script name has 1 to {MAX_NAME_LENGTH} characters")
    for char in name:
        if unicodedata.category(char) == "Cc" or char in "\u2028\u2029":
            raise ScriptError("", "A script name may hold no control characters")
    return name


class ScriptStore:
    """Every user's scripts: the checks common to every store; a subclass keeps the rows."""

    #: what reading or writing the rows may raise besides ScriptError and OSError (delivery keeps the message)
    errors: tuple[type[Exception], ...] = ()

    def __init__(self, *, max_script_size: int = 32 * 1024, max_scripts: int = 10,
                 global_folder: Path | None = None) -> None:
        self.max_script_size = max_script_size
        self.max_scripts = max_scripts
        self.global_folder = global_folder

    def list(self, user: str) -> list[tuple[str, bool]]:
        """(name, active) of each of ``user``'s scripts, by name."""
        raise NotImplementedError

    def get(self, user: str, name: str) -> str | None:
        raise NotImplementedError

    def active(self, user: str) -> tuple[str, str] | None:
        """The active script's (name, text), or None."""
        raise NotImplementedError

    def put(self, user: str, name: str, content: str) -> None:
        """Store ``content`` (already checked) as ``name``, replacing a script of that name."""
        raise NotImplementedError

    def set_active(self, user: str, name: str) -> None:
        """Make ``name`` the active script; "" leaves none active."""
        raise NotImplementedError

    def delete(self, user: str, name: str) -> None:
        raise NotImplementedError

    def rename(self, user: str, old: str, new: str) -> None:
        raise NotImplementedError

    def vacation_due(self, user: str, handle: str, sender: str, now: float, period: float) -> bool:
        """Whether ``sender`` may get the reply of ``handle`` now (RFC 5230 section 4.2); if so, it is
        recorded as sent, in one transaction, so that two deliveries at once send one reply."""
        raise NotImplementedError

    def global_script(self, name: str) -> str | None:
        if self.global_folder is None:
            return None
        check_name(name)
        if "/" in name or name.startswith("."):
            return None
        try:
            return (self.global_folder / f"{name}.sieve").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    # -- quotas ---------------------------------------------------------------------

    def check_space(self, user: str, name: str, size: int) -> None:
        """HAVESPACE: ScriptError (QUOTA/MAXSIZE, QUOTA/MAXSCRIPTS) if ``name`` of ``size`` octets would not fit."""
        check_name(name)
        if size > self.max_script_size:
            raise ScriptError("QUOTA/MAXSIZE", f"A script may have at most {self.max_script_size} octets")
        names = {existing for existing, _ in self.list(user)}
        if name not in names and len(names) >= self.max_scripts:
            self.too_many()

    def too_many(self) -> NoReturn:
        """Refuse a script past ``max_scripts``."""
        raise ScriptError("QUOTA/MAXSCRIPTS", f"At most {self.max_scripts} scripts per user")


class SieveScripts(ScriptStore):
    """Every user's scripts on the embedded store (see the module docstring)."""

    errors = (sqlite3.Error,)

    def __init__(self, store, **quotas) -> None:
        super().__init__(**quotas)
        self.store = store

    def _path(self, user: str) -> Path:
        try:
            return self.store.user_dir(user) / FILE_NAME
        except InvalidName:
            raise ScriptError("NONEXISTENT", "No such user") from None

    @contextlib.contextmanager
    def _db(self, user: str, create: bool = False) -> Iterator[sqlite3.Connection | None]:
        path = self._path(user)
        if not create and not path.exists():
            yield None
            return
        if not path.parent.exists():
            raise ScriptError("NONEXISTENT", "No such user")
        db = sqlite.connect(path)
        try:
            db.executescript(_SCHEMA)
            yield db
        finally:
            db.close()

    # -- reading ------------------------------------------------------------------

    def list(self, user: str) -> list[tuple[str, bool]]:
        with self._db(user) as db:
            if db is None:
                return []
            return [(name, bool(active)) for name, active in
                    db.execute("SELECT name, active FROM scripts ORDER BY name")]

    def get(self, user: str, name: str) -> str | None:
        with self._db(user) as db:
            if db is None:
                return None
            row = db.execute("SELECT content FROM scripts WHERE name = ?", (name,)).fetchone()
            return None if row is None else row[0]

    def active(self, user: str) -> tuple[str, str] | None:
        with self._db(user) as db:
            if db is None:
                return None
            return db.execute("SELECT name, content FROM scripts WHERE active = 1").fetchone()

    # -- changing -----------------------------------------------------------------------

    def put(self, user: str, name: str, content: str) -> None:
        self.check_space(user, name, len(content.encode("utf-8")))
        with self._db(user, create=True) as db, sqlite.write(db):
            (count,) = db.execute("SELECT count(*) FROM scripts WHERE name != ?", (name,)).fetchone()
            if count >= self.max_scripts:
                self.too_many()
            db.execute("INSERT INTO scripts (name, content) VALUES (?, ?)"
                       " ON CONFLICT (name) DO UPDATE SET content = excluded.content", (name, content))

    def set_active(self, user: str, name: str) -> None:
        with self._db(user, create=True) as db, sqlite.write(db):
            if name and db.execute("SELECT 1 FROM scripts WHERE name = ?", (name,)).fetchone() is None:
                raise ScriptError("NONEXISTENT", f"There is no script named {name}")
            db.execute("UPDATE scripts SET active = (name = ?)", (name,))

    def delete(self, user: str, name: str) -> None:
        with self._db(user) as db:
            row = None if db is None else db.execute("SELECT active FROM scripts WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise ScriptError("NONEXISTENT", f"There is no script named {name}")
            if row[0]:
                raise ScriptError("ACTIVE", "The active script cannot be deleted; deactivate it first")
            with sqlite.write(db):
                db.execute("DELETE FROM scripts WHERE name = ?", (name,))

    def rename(self, user: str, old: str, new: str) -> None:
        check_name(new)
        with self._db(user) as db:
            if db is None or db.execute("SELECT 1 FROM scripts WHERE name = ?", (old,)).fetchone() is None:
                raise ScriptError("NONEXISTENT", f"There is no script named {old}")
            with sqlite.write(db):
                if db.execute("SELECT 1 FROM scripts WHERE name = ?", (new,)).fetchone() is not None:
                    raise ScriptError("ALREADYEXISTS", f"A script named {new} exists already")
                db.execute("UPDATE scripts SET name = ? WHERE name = ?", (new, old))

    # -- vacation (RFC 5230 section 4.2) ---------------------------------------------------

    def vacation_due(self, user: str, handle: str, sender: str, now: float, period: float) -> bool:
        sender = sender.lower()
        with self._db(user, create=True) as db, sqlite.write(db):
            row = db.execute("SELECT until FROM vacation WHERE handle = ? AND sender = ?",
                             (handle, sender)).fetchone()
            if row is not None and row[0] > now:
                return False
            db.execute("INSERT INTO vacation (handle, sender, until) VALUES (?, ?, ?)"
                       " ON CONFLICT (handle, sender) DO UPDATE SET until = excluded.until",
                       (handle, sender, now + period))
            db.execute("DELETE FROM vacation WHERE until <= ?", (now,))
            db.execute("DELETE FROM vacation WHERE rowid IN (SELECT rowid FROM vacation ORDER BY until DESC"
                       " LIMIT -1 OFFSET ?)", (MAX_VACATION_RECORDS,))
            return True


def scripts_of(context) -> ScriptStore:
    """The server's one :class:`ScriptStore`, for its store, with the config's quotas (kept in ``context.extras``)."""
    scripts = context.extras.get("sieve.scripts")
    if scripts is None:
        settings = context.config["sieve"]
        quotas = {"max_script_size": settings["max_script_size"], "max_scripts": settings["max_scripts"],
                  "global_folder": settings["global_scripts"]}
        if hasattr(context.store, "user_dir"):  # the embedded store: a file in each user's folder
            scripts = SieveScripts(context.store, **quotas)
        else:
            from cyrusmail.store.postgresql.sieve import PostgresSieveScripts

            scripts = PostgresSieveScripts(context.store, **quotas)
        context.extras["sieve.scripts"] = scripts
    return scripts
