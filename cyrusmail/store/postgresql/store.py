"""IStore, IMailboxList and IMailbox on PostgreSQL, for several servers on one database.

Connections.  psycopg 3 connections are blocking; each thread that uses
the store (the reactor's, the store executor's workers) has its own,
made when first needed, in autocommit mode: a single read is a statement
of its own, and every change runs in an explicit transaction
(:meth:`PostgresStore.write`).  A transaction begun inside another (a job
of a group commit) is a savepoint of it.

UIDs and MODSEQs.  Every change to a mailbox's messages first locks that
mailbox's row (``SELECT ... FOR UPDATE``, mailboxes in id order so that
two writers never wait on each other in a ring) and takes its UIDs and its
new MODSEQ from the row; the lock is held until COMMIT.  So writers on any
number of servers are serialised per mailbox: UIDs and MODSEQs are never
given twice and are committed in ascending order.

Message bodies.  Staged in the data folder's ``tmp/`` as they arrive (as
the embedded store does), then stored once in ``blobs`` by their SHA-256;
a message row names its blob, and copies share it.  A blob's ``refs`` is
changed under its row lock and the row deleted at 0.  The bytes are in the
row or in a shared folder's files (``[store] blobs``: see
:mod:`cyrusmail.store.postgresql.blobs`).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from twisted.logger import Logger
from zope.interface import implementer

from cyrusmail.private_files import PRIVATE_FOLDER
from cyrusmail.store import names
from cyrusmail.store.errors import (
    HasChildren,
    InvalidName,
    MailboxExists,
    MailboxNotFound,
    NoSuchMessage,
    NotSelectable,
    OverQuota,
    Refused,
    UnknownUser,
)
from cyrusmail.store.executor import InlineExecutor
from cyrusmail.store.interfaces import IMailbox, IMailboxList, IStore
from cyrusmail.store.maildir import quota
from cyrusmail.store.maildir.index import new_mailbox_id
from cyrusmail.store.maildir.store import (
    _SORT_COLUMNS,
    EXPUNGED_HISTORY,
    NO_SORT_DATA,
    SHARED_OWNER,
    SORT_ROW_COLUMNS,
    STALE_TMP_AGE,
    Analyser,
    EmptyMailboxList,
    FlagTransform,
    MaildirMailbox,
    MaildirMailboxList,
    MaildirStore,
    Previewer,
    _keywords_text,
    _record,
    _sort_row,
    changed_record,
    default_analyser,
    default_previewer,
    default_sort_keyer,
    flag_changes,
    listings,
    new_guid,
    references_split,
)
from cyrusmail.store.postgresql.access import PostgresAccessRegistry
from cyrusmail.store.postgresql.blobs import DATABASE, body_store
from cyrusmail.store.postgresql.failures import PostgresLoginFailures
from cyrusmail.store.postgresql.queue import QUEUE_NEWS, PostgresSpool
from cyrusmail.store.postgresql.schema import MIGRATION_LOCK, MIGRATIONS
from cyrusmail.store.records import (
    Changes,
    Flag,
    FlagChange,
    MailboxListing,
    MailboxStatus,
    MailboxSummary,
    MessageRecord,
)

_RECORD_COLUMNS = "uid, size, internaldate, flags, keywords, modseq, guid, savedate, emailid"
#: What changes whenever a mailbox's messages, flags, life (UIDVALIDITY) or ACL may have (IMailbox.generation).
_GENERATION = "highestmodseq, uidvalidity, selectable, acl_version"
_MAILBOX_COLUMNS = "id, uidnext, highestmodseq, recent_uid, messages, unseen, size, uidvalidity, selectable"


_log = Logger()

#: Seconds between attempts to LISTEN again after the listening connection was lost.
RELISTEN_DELAY = 5.0

#: Connections kept free for the next POP3 maildrop lock (PostgresStore.maildrop_lock).
MAILDROP_IDLE = 4

#: Held (pg_advisory_lock) while a user's tree is made or removed, by any server.
USER_LOCK = 0x6379_7275_7573  # "cyrus"

#: The owner of mailboxes deleted with ``delete_mode = delayed``, kept for undelete (``kept_mailboxes``
#: says whose they were); no user's name starts with a dot.
KEPT_OWNER = ".deleted"

#: What a ``NOTIFY`` says to end a user's sessions (deleted, or kicked): ``ended USER REASON``.
SESSIONS_ENDED = "ended"


@dataclass
class KeptMailbox:
    """A deleted mailbox kept for undelete: its row's id, its name, when it was deleted, its messages."""

    mailbox_id: int
    name: str
    deleted: float
    messages: int


def _text(value):
    """``value`` as a PostgreSQL text column takes it: NUL is the one character it cannot hold,
    and a header may carry one (its sort keys and preview are kept without)."""
    return value.replace("\x00", "") if isinstance(value, str) else value


def _sort_values(data) -> tuple:
    return tuple(_text(value) for value in _sort_row(data))


@implementer(IStore)
class PostgresStore:
    """Every user's mail in one PostgreSQL database (``dsn``); ``data`` stages arriving messages;
    ``blobs`` is where bodies are kept (``database``, or a shared folder's absolute path)."""

    #: ``[server] delete_mode = delayed``: a deleted mailbox is kept (:meth:`PostgresMailboxList.delete`)
    keep_deleted = False

    def __init__(self, dsn: str, data: Path | str, analyser: Analyser | None = None,
                 expunged_history: int = EXPUNGED_HISTORY, previewer: Previewer | None = None,
                 blobs: str = DATABASE):
        self.dsn = dsn
        self.blobs = body_store(blobs)
        self.root = Path(data).resolve()
        self.tmp_dir = self.root / "tmp"
        self.tmp_dir.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
        self.expunged_history = expunged_history
        self.analyser = analyser if analyser is not None else default_analyser()
        self.sort_keyer = default_sort_keyer()
        self.previewer = previewer if previewer is not None else default_previewer()
        self._local = threading.local()
        self._connections: list[psycopg.Connection] = []
        self._connections_lock = threading.Lock()
        #: connections holding POP3 maildrop locks (maildrop_lock), and those kept free for the next
        self._maildrop_connections: set[psycopg.Connection] = set()
        self._maildrop_pool: list[psycopg.Connection] = []
        self._watchers: dict[tuple[str, int], list[Callable[[], None]]] = {}
        self._owners: weakref.WeakValueDictionary[str, _Owner] = weakref.WeakValueDictionary()
        self._owners_lock = threading.Lock()
        #: mailbox id -> its generation at the last :meth:`poll_watched`
        self._watched_generations: dict[int, tuple] = {}
        #: told of every change made here (the worker processes' channel sets it)
        self.publish: Callable[[str, int], None] | None = None
        self.executor = InlineExecutor(self.index)
        self.migrate()
        (schema,) = self.db.execute("SELECT current_schema()").fetchone()
        #: where changes are announced to every server (NOTIFY), one per database schema
        self.channel = f"cyrusmail_{schema}"[:63]
        self.token = secrets.token_hex(6)  # this store's own announcements are not news to it
        self.listener: ChangeListener | None = None
        #: the queue runners of this process, woken when any server queues mail (NOTIFY)
        self.queue_watchers: list[Callable[[], None]] = []
        #: told (user, reason) when any server ends a user's sessions everywhere (NOTIFY)
        self.session_enders: list[Callable[[str, str], None]] = []
        with self.write() as db:
            db.execute("INSERT INTO users (name, provisioned) VALUES (%s, true) ON CONFLICT DO NOTHING",
                       (SHARED_OWNER,))

    # -- connections and transactions ---------------------------------------------------

    @property
    def db(self) -> psycopg.Connection:
        """This thread's connection."""
        connection = getattr(self._local, "connection", None)
        if connection is None or connection.closed:
            connection = psycopg.connect(self.dsn, autocommit=True)
            self._local.connection = connection
            with self._connections_lock:
                self._connections.append(connection)
        return connection

    @contextmanager
    def write(self) -> Iterator[psycopg.Connection]:
        """A transaction (a savepoint inside one this thread holds); what
        :meth:`after_commit` was asked runs once the outermost one is committed."""
        db = self.db
        if db.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            with db.transaction():
                yield db
            return
        self._local.committed = []
        try:
            with db.transaction():
                yield db
            committed = self._local.committed
        finally:
            self._local.committed = None
        for action in committed:
            action()

    @contextmanager
    def read(self) -> Iterator[psycopg.Connection]:
        """One snapshot for several reads (inside a transaction: that transaction's)."""
        db = self.db
        if db.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            yield db
            return
        with db.transaction():
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield db

    def migrate(self) -> None:
        """Apply the migrations this database lacks (see :mod:`cyrusmail.store.postgresql.schema`)."""
        with self.write() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            db.execute("CREATE TABLE IF NOT EXISTS schema_migrations"
                       " (version integer PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())")
            applied = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
            for version, script in MIGRATIONS:
                if version not in applied:
                    db.execute(script)
                    db.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))

    def index(self, key: str) -> _Owner:
        """The queue key of ``key``'s tree: what the executor groups its jobs in, and what
        tells two mailboxes of one tree (``a.index is b.index``)."""
        with self._owners_lock:
            owner = self._owners.get(key)
            if owner is None:
                owner = self._owners[key] = _Owner(self, key)
            return owner

    @contextmanager
    def group(self) -> Iterator[None]:
        """Several jobs in one transaction, each a savepoint of it (the executor's group commit)."""
        with self.write():
            yield

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run ``action`` once this thread's transaction is committed (at once outside one)."""
        committed = getattr(self._local, "committed", None)
        if committed is None:
            action()
        else:
            committed.append(action)

    # -- users ---------------------------------------------------------------------------

    def has_user(self, user: str) -> bool:
        if user == SHARED_OWNER:
            return True
        row = self.db.execute("SELECT provisioned FROM users WHERE name = %s", (names.user_name(user),)).fetchone()
        return bool(row and row[0])

    def shared_mailboxes(self) -> PostgresMailboxList:
        """The tree of shared folders (bulletin boards), owned by no user."""
        return PostgresMailboxList(self, SHARED_OWNER)

    def quota_roots(self) -> list[tuple[str, str]]:
        """Every (owner, root) with limits, users first and the shared tree last."""
        rows = self.db.execute("SELECT DISTINCT owner, root FROM quota_limits").fetchall()
        return sorted(rows, key=lambda row: (row[0] == SHARED_OWNER, row))

    @contextmanager
    def user_lock(self) -> Iterator[None]:
        """Held while a user's tree is made or removed, across every server on the database."""
        db = self.db
        db.execute("SELECT pg_advisory_lock(%s)", (USER_LOCK,))
        try:
            yield
        finally:
            db.execute("SELECT pg_advisory_unlock(%s)", (USER_LOCK,))

    def access_registry(self) -> PostgresAccessRegistry:
        """Groups and who shares with whom, in this database (:func:`cyrusmail.acl.registry.open_registry`)."""
        return PostgresAccessRegistry(self)

    def login_failures(self) -> PostgresLoginFailures:
        """The login throttle's failures per account, shared by every server (:mod:`.failures`)."""
        return PostgresLoginFailures(self)

    def maildrop_lock(self, user: str) -> Callable[[], None] | None:
        """Take ``user``'s POP3 maildrop lock for every server on the database (RFC 1939
        section 8; :class:`cyrusmail.pop3.locks.MaildropLocks`): what releases it, or None
        when a session on any server holds it.

        A session-level advisory lock (``pg_try_advisory_lock``), held by a connection
        of its own for as long as the POP3 session holds the maildrop: a server that
        dies, ``kill -9`` included, closes that connection and PostgreSQL releases it.
        Released connections are kept for the next lock (up to ``MAILDROP_IDLE``).
        """
        name = f"{self.channel}\0pop3\0{user}".encode()
        key = int.from_bytes(hashlib.sha256(name).digest()[:8], "big", signed=True)
        connection = self._maildrop_connection()
        if not connection.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
            self._maildrop_idle(connection)
            return None

        def release() -> None:
            try:
                connection.execute("SELECT pg_advisory_unlock(%s)", (key,))
            except psycopg.Error:  # the connection is gone, and the lock with it
                connection.close()
            self._maildrop_idle(connection)
        return release

    def _maildrop_connection(self) -> psycopg.Connection:
        with self._connections_lock:
            while self._maildrop_pool:
                connection = self._maildrop_pool.pop()
                if not connection.closed and connection.info.status == psycopg.pq.ConnStatus.OK:
                    return connection
                self._maildrop_connections.discard(connection)
        connection = psycopg.connect(self.dsn, autocommit=True)
        with self._connections_lock:
            self._maildrop_connections.add(connection)
        return connection

    def _maildrop_idle(self, connection: psycopg.Connection) -> None:
        with self._connections_lock:
            if not connection.closed and len(self._maildrop_pool) < MAILDROP_IDLE:
                self._maildrop_pool.append(connection)
                return
            self._maildrop_connections.discard(connection)
        connection.close()

    def end_sessions_everywhere(self, user: str, reason: str) -> None:
        """Have every server (this one too) end ``user``'s sessions, saying ``reason`` (a user
        deleted, or kicked by the administrator)."""
        self.db.execute("SELECT pg_notify(%s, %s)",
                        (self.channel, f"{self.token} {SESSIONS_ENDED} {user} {reason}"))

    def retire_user(self, user: str) -> None:
        """Remove ``user``'s tree at once (nothing is left to remove after: None)."""
        self.remove_user(user)

    def mailboxes(self, user: str) -> PostgresMailboxList | EmptyMailboxList:
        user = names.user_name(user)
        if not self.has_user(user):
            return EmptyMailboxList(user)
        return PostgresMailboxList(self, user)

    def provisioned(self, user: str, special_uses: dict[str, str] | None = None) -> bool:
        try:
            user = names.user_name(user)
            wanted = sorted({names.check(name) for name in (names.INBOX, *(special_uses or {}))})
        except InvalidName:
            return False
        if not self.has_user(user):
            return False
        (found,) = self.db.execute("SELECT count(*) FROM mailboxes WHERE owner = %s AND name = ANY(%s)",
                                   (user, wanted)).fetchone()
        return found == len(wanted)

    def provision(self, user: str, special_uses: dict[str, str] | None = None) -> None:
        user = names.user_name(user)
        with self.write() as db:
            db.execute("INSERT INTO users (name, provisioned) VALUES (%s, true)"
                       " ON CONFLICT (name) DO UPDATE SET provisioned = true", (user,))
        tree = PostgresMailboxList(self, user)
        for name, use in {names.INBOX: None, **(special_uses or {})}.items():
            if not tree.exists(name):
                try:
                    tree.create(name, special_use=use)
                except MailboxExists:  # another server provisioned it just now
                    continue
                tree.subscribe(name)

    def remove_user(self, user: str) -> None:
        """Delete every mailbox and message of ``user``; their UIDVALIDITYs stay spent."""
        user = names.user_name(user)
        with self.write() as db:
            db.execute("SELECT 1 FROM users WHERE name = %s FOR UPDATE", (user,))  # before any mailbox, as writers do
            ids = [row[0] for row in db.execute(
                "SELECT id FROM mailboxes WHERE owner = %s OR id IN (SELECT mailbox_id FROM kept_mailboxes"
                " WHERE owner = %s) ORDER BY id FOR UPDATE", (user, user))]
            self.release_blobs(db, "SELECT blob FROM messages WHERE mailbox_id = ANY(%s)", (ids,))
            db.execute("DELETE FROM mailboxes WHERE id = ANY(%s)", (ids,))
            db.execute("DELETE FROM subscriptions WHERE owner = %s", (user,))
            db.execute("DELETE FROM quota_limits WHERE owner = %s", (user,))
            db.execute("DELETE FROM private_seen WHERE reader = %s", (user,))
            db.execute("DELETE FROM sieve_scripts WHERE owner = %s", (user,))
            db.execute("DELETE FROM sieve_vacation WHERE owner = %s", (user,))
            db.execute("UPDATE users SET provisioned = false WHERE name = %s", (user,))
            for mailbox_id in ids:
                self.announce(user, mailbox_id)

    def kept_mailboxes(self, user: str) -> list[KeptMailbox]:
        """``user``'s deleted mailboxes still kept, oldest first."""
        return [KeptMailbox(*row) for row in self.db.execute(
            "SELECT k.mailbox_id, k.name, k.deleted, m.messages FROM kept_mailboxes AS k"
            " JOIN mailboxes AS m ON m.id = k.mailbox_id WHERE k.owner = %s ORDER BY k.deleted, k.mailbox_id",
            (names.user_name(user),))]

    def purge_kept(self, user: str, now: float, retention: float) -> int:
        """Remove ``user``'s deleted mailboxes kept longer than ``retention`` seconds; how many went."""
        with self.write() as db:
            ids = [row[0] for row in db.execute(
                "SELECT id FROM mailboxes WHERE id IN (SELECT mailbox_id FROM kept_mailboxes"
                " WHERE owner = %s AND deleted <= %s) ORDER BY id FOR UPDATE",
                (names.user_name(user), now - retention))]
            self.release_blobs(db, "SELECT blob FROM messages WHERE mailbox_id = ANY(%s)", (ids,))
            db.execute("DELETE FROM mailboxes WHERE id = ANY(%s)", (ids,))
        return len(ids)

    def next_uidvalidity(self, db: psycopg.Connection, user: str) -> int:
        """A UIDVALIDITY never given before in ``user``'s tree (inside a transaction)."""
        (value,) = db.execute(
            "UPDATE users SET uidvalidity = greatest(uidvalidity + 1, extract(epoch FROM clock_timestamp())::bigint)"
            " WHERE name = %s RETURNING uidvalidity", (user,)).fetchone()
        return value

    def release_blobs(self, db: psycopg.Connection, query: str, params: tuple) -> None:
        """Take one reference off the blob of each message ``query`` selects; drop blobs left unused
        (their files, if in a folder, once this transaction is committed)."""
        rows = db.execute(
            f"UPDATE blobs AS b SET refs = b.refs - c.n FROM (SELECT blob, count(*) AS n FROM ({query}) AS q"
            " GROUP BY blob) AS c WHERE b.sha = c.blob RETURNING b.sha, b.refs", params).fetchall()
        gone = [sha for sha, refs in rows if refs <= 0]
        if gone:
            db.execute("DELETE FROM blobs WHERE sha = ANY(%s) AND refs <= 0", (gone,))
            self.blobs.forget(self, gone)

    def sweep(self, max_age: float = STALE_TMP_AGE) -> tuple[int, int]:
        """Remove stale staging files (as :meth:`MaildirStore.sweep`), and body files that no
        row names (:meth:`FolderBlobs.sweep <cyrusmail.store.postgresql.blobs.FolderBlobs.sweep>`),
        both left by a crash; (files, 0)."""
        orphans = self.blobs.sweep(self, max_age)
        if orphans:
            _log.info("cyrusmail: removed {count} body files that no message used", count=orphans)
        files = 0
        cutoff = time.time() - max_age
        for entry in os.scandir(self.tmp_dir):
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    files += 1
            except FileNotFoundError:
                continue
        return files, 0

    def close(self) -> None:
        """Stop the store's threads (letting their work finish) and close every connection."""
        self.executor.stop()
        if self.listener is not None:
            self.listener.stop()
            self.listener = None
        with self._connections_lock:
            connections, self._connections = self._connections, []
            connections.extend(self._maildrop_connections)
            self._maildrop_connections, self._maildrop_pool = set(), []
        for connection in connections:
            connection.close()

    # -- change notification across servers (LISTEN/NOTIFY) --------------------------------

    def announce(self, owner: str, mailbox_id: int) -> None:
        """Tell the watchers of a mailbox, in this process and (NOTIFY) every other server,
        once the change is committed: a NOTIFY inside a transaction is sent at its COMMIT."""
        self.db.execute("SELECT pg_notify(%s, %s)", (self.channel, f"{self.token} {mailbox_id} {owner}"))
        self.after_commit(lambda: self.notify(owner, mailbox_id))

    def outbound_spool(self, lease: float) -> PostgresSpool:
        """The outbound queue's spool in this database, shared by every server (a new claimer)."""
        return PostgresSpool(self, lease)

    def listen(self, reactor) -> ChangeListener:
        """Hear the changes other servers announce, on the reactor (the server calls it)."""
        if self.listener is None:
            self.listener = ChangeListener(self, reactor)
            self.listener.start()
        return self.listener

    def heard(self, payload: str) -> None:
        """A change announced on the channel: tell this process's watchers of that mailbox."""
        token, _, rest = payload.partition(" ")
        if rest == QUEUE_NEWS:
            for wake in list(self.queue_watchers):
                wake()
            return
        kind, _, said = rest.partition(" ")
        if kind == SESSIONS_ENDED:
            user, _, reason = said.partition(" ")
            for end_sessions in list(self.session_enders):
                end_sessions(user, reason)
            return
        mailbox_id, _, owner = rest.partition(" ")
        if token != self.token and mailbox_id.isdigit():
            self.tell_watchers(owner, int(mailbox_id))

    # The same as the embedded store's: staging, work off the reactor, in-process watchers.
    stage = MaildirStore.stage
    run = MaildirStore.run
    watch = MaildirStore.watch
    unwatch = MaildirStore.unwatch
    notify = MaildirStore.notify
    _tell_and_publish = MaildirStore._tell_and_publish
    tell_watchers = MaildirStore.tell_watchers
    _tell = staticmethod(MaildirStore._tell)

    def poll_watched(self) -> int:
        """Wake the watchers of every watched mailbox whose generation moved since the last
        call (a change NOTIFY did not bring: its connection was down); one query, 1 look."""
        watched = {mailbox_id for _, mailbox_id in self._watchers}
        if not watched:
            self._watched_generations = {}
            return 0
        rows = self.db.execute(f"SELECT id, {_GENERATION} FROM mailboxes WHERE id = ANY(%s)",
                               (sorted(watched),)).fetchall()
        now = {row[0]: tuple(row[1:]) for row in rows}
        last, self._watched_generations = self._watched_generations, now
        for (user, mailbox_id), listeners in list(self._watchers.items()):
            if mailbox_id not in last or last[mailbox_id] != now.get(mailbox_id):
                self._tell(list(listeners))
        return 1


class ChangeListener:
    """The LISTEN side: a connection of its own, read by the reactor when it has news.

    Its descriptor is added to the reactor as a reader; each notification
    on the store's channel becomes :meth:`PostgresStore.heard` on the
    reactor thread.  A lost connection is logged and listened again after
    :data:`RELISTEN_DELAY` (meanwhile IDLE's poll still finds the changes).
    """

    def __init__(self, store: PostgresStore, reactor):
        self.store = store
        self.reactor = reactor
        self.connection: psycopg.Connection | None = None
        self.retry = None
        self.stopped = False

    def start(self) -> None:
        self.retry = None
        try:
            self.connection = psycopg.connect(self.store.dsn, autocommit=True)
            self.connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.store.channel)))
        except psycopg.Error as error:
            self._lost(error)
            return
        self.reactor.addReader(self)

    def fileno(self) -> int:
        return self.connection.pgconn.socket if self.connection is not None and not self.connection.closed else -1

    def logPrefix(self) -> str:
        return "cyrusmail-postgresql-listen"

    def doRead(self) -> None:
        pgconn = self.connection.pgconn
        try:
            pgconn.consume_input()
        except psycopg.Error as error:
            self.reactor.removeReader(self)
            self._lost(error)
            return
        while (notice := pgconn.notifies()) is not None:
            self.store.heard(notice.extra.decode("utf-8", "replace"))
        if pgconn.status != psycopg.pq.ConnStatus.OK:  # the server ended it (restart, terminate)
            self.reactor.removeReader(self)
            self._lost(pgconn.get_error_message() or "the connection was closed")

    def connectionLost(self, reason) -> None:
        self._lost(reason.value if hasattr(reason, "value") else reason)

    def _lost(self, error) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None
        if self.stopped or self.retry is not None:
            return
        _log.warn("cyrusmail: PostgreSQL change notifications lost ({error}); listening again in {delay} s",
                  error=str(error).strip().splitlines()[0] if str(error).strip() else repr(error), delay=RELISTEN_DELAY)
        self.retry = self.reactor.callLater(RELISTEN_DELAY, self.start)

    def stop(self) -> None:
        self.stopped = True
        if self.retry is not None and self.retry.active():
            self.retry.cancel()
        if self.connection is not None:
            self.reactor.removeReader(self)
            self.connection.close()
            self.connection = None


class _Owner:
    """One tree's key for the store executor: its group commit is one transaction."""

    def __init__(self, store: PostgresStore, name: str):
        self.store = store
        self.name = name

    def group(self):
        return self.store.group()


@implementer(IMailboxList)
class PostgresMailboxList:
    """One user's mailbox names: their rows in ``mailboxes`` and ``subscriptions``."""

    separator = names.SEPARATOR

    def __init__(self, store: PostgresStore, user: str):
        self.store = store
        self.user = user
        self.index = store.index(user)

    def _row(self, db: psycopg.Connection, name: str) -> tuple | None:
        return db.execute(
            "SELECT id, selectable, uidvalidity, special_use, objectid FROM mailboxes WHERE owner = %s AND name = %s",
            (self.user, name)).fetchone()

    def _has_children(self, db: psycopg.Connection, name: str) -> bool:
        prefix = name + names.SEPARATOR
        return db.execute("SELECT 1 FROM mailboxes WHERE owner = %s AND left(name, %s) = %s LIMIT 1",
                          (self.user, len(prefix), prefix)).fetchone() is not None

    def _user_row(self, db: psycopg.Connection) -> None:
        """Lock the owner's row: changes of one tree's names are serialised (UnknownUser once removed)."""
        row = db.execute("SELECT provisioned FROM users WHERE name = %s FOR UPDATE", (self.user,)).fetchone()
        if row is None or not row[0]:
            raise UnknownUser(f"No user {self.user}")

    def _make(self, db: psycopg.Connection, name: str, special_use: str | None) -> str:
        objectid = new_mailbox_id()
        db.execute("INSERT INTO mailboxes (owner, name, uidvalidity, special_use, objectid) VALUES (%s, %s, %s, %s, %s)",
                   (self.user, name, self.store.next_uidvalidity(db, self.user), special_use, objectid))
        return objectid

    def create(self, name: str, special_use: str | None = None) -> str:
        name = names.check(name)
        with self.store.write() as db:
            self._user_row(db)
            row = self._row(db, name)
            if row is not None and row[1]:
                raise MailboxExists(f"Mailbox {name} already exists")
            missing = [superior for superior in names.superiors(name) if self._row(db, superior) is None]
            self._check_new_mailboxes(db, [*missing, name])
            for superior in missing:
                self._make(db, superior, None)
            if row is None:
                return self._make(db, name, special_use)
            objectid = new_mailbox_id()  # a \Noselect node becomes a mailbox again, a new one
            db.execute("UPDATE mailboxes SET selectable = true, uidvalidity = %s, special_use = %s, objectid = %s,"
                       " uidnext = 1, highestmodseq = 1, recent_uid = 0 WHERE id = %s",
                       (self.store.next_uidvalidity(db, self.user), special_use, objectid, row[0]))
            return objectid

    def delete(self, name: str) -> None:
        name = names.check(name)
        if name == names.INBOX:
            raise Refused("INBOX cannot be deleted")
        with self.store.write() as db:
            self._user_row(db)
            row = self._row(db, name)
            if row is None:
                raise MailboxNotFound(f"Mailbox {name} does not exist")
            mailbox_id, selectable = row[0], row[1]
            db.execute("SELECT 1 FROM mailboxes WHERE id = %s FOR UPDATE", (mailbox_id,))
            if selectable and self.store.keep_deleted and self.user != SHARED_OWNER:
                self._keep(db, mailbox_id, name)
                return
            self.store.release_blobs(db, "SELECT blob FROM messages WHERE mailbox_id = %s", (mailbox_id,))
            if self._has_children(db, name):
                if not selectable:
                    raise HasChildren(f"Mailbox {name} has inferior hierarchical names")
                for table in ("messages", "expunged", "expunged_floor"):
                    db.execute(f"DELETE FROM {table} WHERE mailbox_id = %s", (mailbox_id,))
                db.execute("UPDATE mailboxes SET selectable = false, special_use = NULL, messages = 0, unseen = 0,"
                           " size = 0 WHERE id = %s", (mailbox_id,))
            else:
                db.execute("DELETE FROM mailboxes WHERE id = %s", (mailbox_id,))
                self._prune_empty_nodes(db, name)
            self.store.announce(self.user, mailbox_id)

    def _keep(self, db: psycopg.Connection, mailbox_id: int, name: str) -> None:
        """Keep mailbox ``name`` (being deleted in ``db``'s transaction) for undelete: its row moves,
        messages, flags and ACL with it, to :data:`KEPT_OWNER`; a \\Noselect node takes its place
        when it has children."""
        subscribed = db.execute("SELECT 1 FROM subscriptions WHERE owner = %s AND name = %s",
                                (self.user, name)).fetchone() is not None
        db.execute("UPDATE mailboxes SET owner = %s, name = %s WHERE id = %s",
                   (KEPT_OWNER, str(mailbox_id), mailbox_id))
        db.execute("INSERT INTO kept_mailboxes (mailbox_id, owner, name, deleted, subscribed)"
                   " VALUES (%s, %s, %s, %s, %s)", (mailbox_id, self.user, name, time.time(), subscribed))
        if self._has_children(db, name):
            self._make(db, name, None)
            db.execute("UPDATE mailboxes SET selectable = false WHERE owner = %s AND name = %s", (self.user, name))
        else:
            self._prune_empty_nodes(db, name)
        self.store.announce(self.user, mailbox_id)

    def undelete(self, mailbox_id: int, name: str) -> str:
        """Put the kept mailbox ``mailbox_id`` back as ``name`` (which must not be a mailbox), as it was:
        UIDVALIDITY, UIDs, flags, ACL; its subscription too. The name."""
        name = names.check(name)
        with self.store.write() as db:
            self._user_row(db)
            kept = db.execute("SELECT subscribed FROM kept_mailboxes WHERE mailbox_id = %s AND owner = %s FOR UPDATE",
                              (mailbox_id, self.user)).fetchone()
            if kept is None:
                raise MailboxNotFound(f"No deleted mailbox {name} is kept")
            row = self._row(db, name)
            if row is not None and row[1]:
                raise MailboxExists(f"Mailbox {name} already exists")
            missing = [superior for superior in names.superiors(name) if self._row(db, superior) is None]
            self._check_new_mailboxes(db, missing)
            for superior in missing:
                self._make(db, superior, None)
            if row is not None:  # a \Noselect node: the mailbox takes its place
                db.execute("DELETE FROM mailboxes WHERE id = %s", (row[0],))
            db.execute("SELECT 1 FROM mailboxes WHERE id = %s FOR UPDATE", (mailbox_id,))
            db.execute("UPDATE mailboxes SET owner = %s, name = %s WHERE id = %s", (self.user, name, mailbox_id))
            db.execute("DELETE FROM kept_mailboxes WHERE mailbox_id = %s", (mailbox_id,))
            if kept[0]:
                db.execute("INSERT INTO subscriptions (owner, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                           (self.user, name))
            self.store.announce(self.user, mailbox_id)
        return name

    def _prune_empty_nodes(self, db: psycopg.Connection, name: str) -> None:
        for superior in reversed(names.superiors(name)):
            row = self._row(db, superior)
            if row is None or row[1] or self._has_children(db, superior):
                return
            db.execute("DELETE FROM mailboxes WHERE id = %s", (row[0],))

    def check_restorable(self, name: str) -> None:
        """As :meth:`MaildirMailboxList.check_restorable`: ``name`` is free for a restore."""
        with self.store.read() as db:
            self._check_restorable(db, names.check(name))

    _check_restorable = MaildirMailboxList._check_restorable

    def _used(self, db: psycopg.Connection, mailbox_id: int) -> bool:
        return bool(db.execute("SELECT uidnext > 1 FROM mailboxes WHERE id = %s", (mailbox_id,)).fetchone()[0])

    def restore(self, name: str, uidvalidity: int, uidnext: int, highestmodseq: int, special_use: str | None,
                items: list[tuple]) -> None:
        """Make ``name`` again as an archive holds it, in one transaction: as
        :meth:`MaildirMailboxList.restore` (the same UIDVALIDITY and UIDs, every
        message a modseq above the archive's HIGHESTMODSEQ, no quota checked)."""
        name = names.check(name)
        keyer = self.store.sort_keyer
        bodies = [self.store.blobs.prepare(message.path) for _, message, *_ in items]
        try:
            with self.store.write() as db:
                self._user_row(db)
                row = self._check_restorable(db, name)
                for superior in names.superiors(name):
                    if self._row(db, superior) is None:
                        self._make(db, superior, None)
                if special_use is not None and db.execute(
                        "SELECT 1 FROM mailboxes WHERE owner = %s AND special_use = %s AND name <> %s",
                        (self.user, special_use, name)).fetchone():
                    special_use = None  # another mailbox has taken that use meanwhile
                if row is None:
                    (mailbox_id,) = db.execute(
                        "INSERT INTO mailboxes (owner, name, uidvalidity, special_use, objectid)"
                        " VALUES (%s, %s, %s, %s, %s) RETURNING id",
                        (self.user, name, uidvalidity, special_use, new_mailbox_id())).fetchone()
                else:
                    mailbox_id = row[0]
                    self.store.release_blobs(db, "SELECT blob FROM messages WHERE mailbox_id = %s", (mailbox_id,))
                    for table in ("messages", "expunged", "expunged_floor"):
                        db.execute(f"DELETE FROM {table} WHERE mailbox_id = %s", (mailbox_id,))
                    db.execute("UPDATE mailboxes SET selectable = true, uidvalidity = %s,"
                               " special_use = coalesce(%s, special_use), objectid = %s WHERE id = %s",
                               (uidvalidity, special_use, new_mailbox_id(), mailbox_id))
                # next_uidvalidity never gives this one again in the user's tree
                db.execute("UPDATE users SET uidvalidity = greatest(uidvalidity, %s) WHERE name = %s",
                           (uidvalidity, self.user))
                for body in sorted(bodies, key=lambda body: body.sha):
                    self.store.blobs.add(db, body)  # in one order, as appends take them
                modseq, saved = highestmodseq + 1, time.time()
                unseen = size = 0
                for (uid, message, flags, keywords, date), body in zip(items, bodies, strict=True):
                    guid = new_guid()
                    db.execute(
                        "INSERT INTO messages (mailbox_id, uid, guid, blob, size, internaldate, flags, keywords,"
                        " modseq, savedate, emailid) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        (mailbox_id, uid, guid, body.sha, message.size, date, int(flags), _keywords_text(keywords),
                         modseq, saved, guid))
                    cache = message.mime_cache()
                    if cache is not None:
                        db.execute("INSERT INTO mime (mailbox_id, uid, cache, preview) VALUES (%s, %s, %s, %s)",
                                   (mailbox_id, uid, cache, _text(message.preview())))
                        data = None if keyer is None else keyer(cache) or NO_SORT_DATA
                        if data is not None:
                            db.execute(f"INSERT INTO sortdata (mailbox_id, uid, {_SORT_COLUMNS})"
                                       " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                                       (mailbox_id, uid, *_sort_values(data)))
                    unseen += not flags & Flag.SEEN
                    size += message.size
                top = max(uidnext, max((item[0] for item in items), default=0) + 1)
                db.execute("UPDATE mailboxes SET uidnext = %s, highestmodseq = %s, recent_uid = %s, messages = %s,"
                           " unseen = %s, size = %s WHERE id = %s",
                           (top, modseq, top - 1, len(items), unseen, size, mailbox_id))
                self.store.announce(self.user, mailbox_id)
        finally:
            for body in bodies:
                self.store.blobs.discard(body)

    def rename(self, old: str, new: str) -> None:
        old, new = names.check(old), names.check(new)
        if old == names.INBOX:
            self._rename_inbox(new)
            return
        if new == old or new.startswith(old + names.SEPARATOR):
            raise Refused("Cannot rename a mailbox to itself or below itself")
        with self.store.write() as db:
            self._user_row(db)
            if self._row(db, old) is None:
                raise MailboxNotFound(f"Mailbox {old} does not exist")
            if self._row(db, new) is not None:
                raise MailboxExists(f"Mailbox {new} already exists")
            roots_before = list(self._limits(db))
            prefix = old + names.SEPARATOR
            rows = db.execute("SELECT id, name FROM mailboxes WHERE owner = %s AND (name = %s OR left(name, %s) = %s)"
                              " ORDER BY length(name) DESC", (self.user, old, len(prefix), prefix)).fetchall()
            for mailbox_id, name in rows:
                target = new + name[len(old):]
                if self._row(db, target) is not None:
                    raise MailboxExists(f"Mailbox {target} already exists")
                db.execute("UPDATE mailboxes SET name = %s WHERE id = %s", (target, mailbox_id))
            for root in list(roots_before):  # quota roots at or below the mailbox follow it
                if root == old or root.startswith(prefix):
                    db.execute("UPDATE quota_limits SET root = %s WHERE owner = %s AND root = %s",
                               (new + root[len(old):], self.user, root))
            self._check_moved(db, [(name, new + name[len(old):]) for _, name in rows], roots_before, old, new)
            made = [superior for superior in names.superiors(new) if self._row(db, superior) is None]
            self._check_new_mailboxes(db, made)
            for superior in made:
                self._make(db, superior, None)
            self._prune_empty_nodes(db, old)

    _rename_inbox = MaildirMailboxList._rename_inbox  # INBOX's messages move; it stays, empty

    def exists(self, name: str) -> bool:
        try:
            name = names.check(name)
        except InvalidName:
            return False
        return self._row(self.store.db, name) is not None

    def list(self, pattern: str) -> list[MailboxListing]:
        with self.store.read() as db:
            rows = db.execute("SELECT name, selectable, special_use FROM mailboxes WHERE owner = %s",
                              (self.user,)).fetchall()
            subscribed = set(self.subscriptions())
        return listings(rows, pattern, subscribed)

    def open(self, name: str) -> PostgresMailbox:
        name = names.check(name)
        row = self._row(self.store.db, name)
        if row is None:
            raise MailboxNotFound(f"Mailbox {name} does not exist")
        if not row[1]:
            raise NotSelectable(f"Mailbox {name} is not selectable")
        return PostgresMailbox(self, row[0], name, row[2], row[4])

    def status(self, name: str) -> MailboxStatus:
        return self.open(name).status()

    def statuses(self, wanted: Iterable[str], deleted: bool = False) -> dict[str, MailboxStatus]:
        wanted = list(dict.fromkeys(wanted))
        deleted_count = ("(SELECT count(*) FROM messages WHERE mailbox_id = m.id AND flags & 8 != 0)"
                         if deleted else "NULL::bigint")
        rows = self.store.db.execute(
            "SELECT m.name, m.messages, (SELECT count(*) FROM messages WHERE mailbox_id = m.id"
            " AND uid > m.recent_uid), m.uidnext, m.uidvalidity, m.unseen, m.highestmodseq, m.size,"
            f" m.objectid, {deleted_count} FROM mailboxes AS m"
            " WHERE m.owner = %s AND m.selectable AND m.name = ANY(%s)", (self.user, wanted)).fetchall()
        return {row[0]: MailboxStatus(*row[1:]) for row in rows}

    def subscribe(self, name: str) -> None:
        name = names.check(name)
        with self.store.write() as db:
            self._user_row(db)
            db.execute("INSERT INTO subscriptions (owner, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                       (self.user, name))

    def unsubscribe(self, name: str) -> None:
        name = names.check(name)
        self.store.db.execute("DELETE FROM subscriptions WHERE owner = %s AND name = %s", (self.user, name))

    def subscriptions(self) -> list[str]:
        return [row[0] for row in self.store.db.execute(
            "SELECT name FROM subscriptions WHERE owner = %s ORDER BY name", (self.user,))]

    def special_use(self, name: str) -> str | None:
        row = self._row(self.store.db, names.check(name))
        return row[3] if row else None

    # -- ACLs ------------------------------------------------------------------------------------

    def _mailbox_id(self, db: psycopg.Connection, name: str) -> int:
        row = self._row(db, names.check(name))
        if row is None:
            raise MailboxNotFound(f"Mailbox {name} does not exist")
        return row[0]

    def acl(self, name: str) -> dict[str, str] | None:
        """The ACL of ``name`` as {identifier: rights}, or None if it was never set."""
        with self.store.read() as db:
            row = db.execute("SELECT entries FROM acls WHERE mailbox_id = %s", (self._mailbox_id(db, name),)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_acl(self, name: str, entries: dict[str, str] | None) -> None:
        """Replace the ACL of ``name`` (None: back to the default)."""
        with self.store.write() as db:
            mailbox_id = self._mailbox_id(db, name)
            db.execute("UPDATE mailboxes SET acl_version = acl_version + 1 WHERE id = %s", (mailbox_id,))
            if entries is None:
                db.execute("DELETE FROM acls WHERE mailbox_id = %s", (mailbox_id,))
            else:
                db.execute("INSERT INTO acls (mailbox_id, entries) VALUES (%s, %s)"
                           " ON CONFLICT (mailbox_id) DO UPDATE SET entries = excluded.entries",
                           (mailbox_id, json.dumps(entries, sort_keys=True)))

    def acls(self) -> dict[str, dict[str, str] | None]:
        """Every mailbox name (\\Noselect nodes too) with its ACL or None, in one read."""
        rows = self.store.db.execute("SELECT m.name, a.entries FROM mailboxes AS m LEFT JOIN acls AS a"
                                     " ON a.mailbox_id = m.id WHERE m.owner = %s", (self.user,)).fetchall()
        return {name: None if entries is None else json.loads(entries) for name, entries in rows}

    # -- quotas (the rules of cyrusmail.store.maildir.quota, over this owner's rows) --------------

    def _limits(self, db: psycopg.Connection) -> dict[str, dict[str, int]]:
        found: dict[str, dict[str, int]] = {}
        for root, resource, value in db.execute("SELECT root, resource, value FROM quota_limits WHERE owner = %s",
                                                (self.user,)):
            found.setdefault(root, {})[resource] = value
        return found

    def _usage(self, db: psycopg.Connection, root: str, roots) -> quota.Usage:
        """What ``root`` holds now, less what deeper roots of ``roots`` cover."""
        roots = set(roots) | {root}
        size = messages = mailboxes = 0
        for name, box_size, box_messages, selectable in db.execute(
                "SELECT name, size, messages, selectable FROM mailboxes WHERE owner = %s", (self.user,)):
            if quota.root_of(name, roots) == root:
                size, messages, mailboxes = size + box_size, messages + box_messages, mailboxes + selectable
        return quota.Usage(size, messages, mailboxes)

    def _lock_quota(self, db: psycopg.Connection) -> dict[str, dict[str, int]]:
        """This tree's limits; if it has any, the owner's row locked first, so that the
        checks of concurrent writers (on any server) are serialised and usage stays exact."""
        limits = self._limits(db)
        if limits:
            db.execute("SELECT 1 FROM users WHERE name = %s FOR UPDATE", (self.user,))
            limits = self._limits(db)
        return limits

    def _check_new_mailboxes(self, db: psycopg.Connection, made: list[str]) -> None:
        limits = self._lock_quota(db)
        per_root: dict[str, int] = {}
        for name in made:
            root = quota.root_of(name, limits)
            if root is not None and quota.MAILBOX in limits[root]:
                per_root[root] = per_root.get(root, 0) + 1
        for root, count in per_root.items():
            if self._usage(db, root, limits).mailboxes + count > limits[root][quota.MAILBOX]:
                raise _over(root, quota.MAILBOX, permanent=False)

    def _check_moved(self, db: psycopg.Connection, moved: list[tuple[str, str]], roots_before: list[str],
                     old: str, new: str) -> None:
        """After a rename: refuse if a root that gained mailboxes from another root is now over."""
        limits = self._lock_quota(db)

        def followed(root: str | None) -> str | None:
            return new + root[len(old):] if root is not None and quota.covers(old, root) and root != "" else root

        gaining = {quota.root_of(after, limits) for before, after in moved
                   if quota.root_of(after, limits) is not None
                   and followed(quota.root_of(before, roots_before)) != quota.root_of(after, limits)}
        for root in gaining:
            now = self._usage(db, root, limits)
            for resource, limit in limits[root].items():
                if (now.storage_bytes > limit * quota.KIB) if resource == quota.STORAGE else now.of(resource) > limit:
                    raise _over(root, resource, permanent=False)

    def _check_insert(self, db: psycopg.Connection, name: str, sizes: list[int],
                      credit: tuple[str, int] | None) -> None:
        """Refuse adding messages of ``sizes`` to mailbox ``name`` past a limit (``credit``:
        the name and bytes of messages of this tree a MOVE removes in the same transaction)."""
        limits = self._lock_quota(db)
        root = quota.root_of(name, limits)
        if root is None:
            return
        storage, message = limits[root].get(quota.STORAGE), limits[root].get(quota.MESSAGE)
        if storage is not None and any(size > storage * quota.KIB for size in sizes):
            raise _over(root, quota.STORAGE, permanent=True)
        if message is not None and message < 1:
            raise _over(root, quota.MESSAGE, permanent=True)
        now = self._usage(db, root, limits)
        added_bytes, added_messages = sum(sizes), len(sizes)
        if credit is not None and quota.root_of(credit[0], limits) == root:
            added_bytes -= credit[1]
            added_messages -= len(sizes)
        if storage is not None and added_bytes > 0 and now.storage_bytes + added_bytes > storage * quota.KIB:
            raise _over(root, quota.STORAGE, permanent=False)
        if message is not None and added_messages > 0 and now.messages + added_messages > message:
            raise _over(root, quota.MESSAGE, permanent=False)

    def quota_limits(self) -> dict[str, dict[str, int]]:
        """Every quota root of this tree ('' is the whole tree) with its limits."""
        return self._limits(self.store.db)

    def set_quota_limits(self, root: str, limits: dict[str, int]) -> None:
        """Replace the limits of ``root`` ('' or a mailbox name); {} removes the root."""
        if root:
            root = names.check(root)
        for resource, value in limits.items():
            if resource not in quota.RESOURCES or value < 0:
                raise ValueError(f"bad quota limit {resource}={value}")
        with self.store.write() as db:
            self._user_row(db)
            if root and self._row(db, root) is None:
                raise MailboxNotFound(f"Mailbox {root} does not exist")
            db.execute("DELETE FROM quota_limits WHERE owner = %s AND root = %s", (self.user, root))
            for resource, value in limits.items():
                db.execute("INSERT INTO quota_limits (owner, root, resource, value) VALUES (%s, %s, %s, %s)",
                           (self.user, root, resource, value))

    def quota_usage(self, root: str) -> quota.Usage:
        with self.store.read() as db:
            return self._usage(db, root, self._limits(db))

    def quota_root_of(self, name: str) -> str | None:
        return quota.root_of(names.check(name), self.quota_limits())

    # -- private \\Seen on other trees' mailboxes --------------------------------------------

    def private_seen(self, mailbox: PostgresMailbox) -> frozenset[int]:
        """The UIDs of ``mailbox`` (another tree's) this user has seen."""
        rows = self.store.db.execute(
            "SELECT uid FROM private_seen WHERE reader = %s AND mailbox_id = %s AND uidvalidity = %s",
            (self.user, mailbox.id, mailbox.uid_validity)).fetchall()
        return frozenset(row[0] for row in rows)

    def set_private_seen(self, mailbox: PostgresMailbox, seen: Iterable[int] = (), unseen: Iterable[int] = ()) -> None:
        """Mark UIDs of ``mailbox`` seen or unseen for this user alone."""
        key = (self.user, mailbox.id)
        with self.store.write() as db, db.cursor() as cursor:
            cursor.execute("DELETE FROM private_seen WHERE reader = %s AND mailbox_id = %s AND uidvalidity != %s",
                           (*key, mailbox.uid_validity))
            cursor.executemany("INSERT INTO private_seen (reader, mailbox_id, uidvalidity, uid) VALUES (%s, %s, %s, %s)"
                               " ON CONFLICT DO NOTHING", [(*key, mailbox.uid_validity, uid) for uid in seen])
            cursor.executemany("DELETE FROM private_seen WHERE reader = %s AND mailbox_id = %s AND uid = %s",
                               [(*key, uid) for uid in unseen])


def _over(root: str, resource: str, permanent: bool) -> OverQuota:
    where = f"quota root {root!r}" if root else "the account's quota"
    return OverQuota(f"Over {where}: {resource} limit reached", permanent=permanent)


@implementer(IMailbox)
class PostgresMailbox:
    """One mailbox: its row in ``mailboxes`` and its messages' rows."""

    def __init__(self, tree: PostgresMailboxList, mailbox_id: int, name: str, uid_validity: int, object_id: str):
        self.tree = tree
        self.store = tree.store
        self.index = tree.index
        self.id = mailbox_id
        self.name = name
        self.uid_validity = uid_validity
        self.object_id = object_id

    # -- reading ----------------------------------------------------------------------------

    def _counts(self, db: psycopg.Connection, lock: str = "") -> tuple:
        """``uidnext, highestmodseq, recent_uid, messages, unseen, size, uidvalidity`` of this
        mailbox (``lock``: a locking clause), or MailboxNotFound once it is gone."""
        row = db.execute(f"SELECT {_MAILBOX_COLUMNS} FROM mailboxes WHERE id = %s {lock}", (self.id,)).fetchone()
        if row is None or not row[8] or row[7] != self.uid_validity:
            raise MailboxNotFound(f"Mailbox {self.name} no longer exists")
        return row[1:8]

    @contextmanager
    def _snapshot(self) -> Iterator[psycopg.Connection]:
        with self.store.read() as db:
            self._counts(db)
            yield db

    def acl(self) -> dict[str, str] | None:
        """This mailbox's ACL ({identifier: rights}), or None if never set; follows renames."""
        with self._snapshot() as db:
            row = db.execute("SELECT entries FROM acls WHERE mailbox_id = %s", (self.id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def status(self) -> MailboxStatus:
        with self._snapshot() as db:
            uidnext, highestmodseq, recent_uid, messages, unseen, size, uidvalidity = self._counts(db)
            (recent,) = db.execute("SELECT count(*) FROM messages WHERE mailbox_id = %s AND uid > %s",
                                   (self.id, recent_uid)).fetchone()
        return MailboxStatus(messages=messages, recent=recent, uid_next=uidnext, uid_validity=uidvalidity,
                             unseen=unseen, highest_modseq=highestmodseq, size=size)

    def messages(self) -> list[MessageRecord]:
        with self._snapshot() as db:
            rows = db.execute(f"SELECT {_RECORD_COLUMNS} FROM messages WHERE mailbox_id = %s ORDER BY uid",
                              (self.id,)).fetchall()
        return [_record(row) for row in rows]

    def summary(self) -> MailboxSummary:
        with self._snapshot() as db:
            rows = db.execute("SELECT uid, modseq FROM messages WHERE mailbox_id = %s ORDER BY uid", (self.id,)).fetchall()
            keywords = db.execute("SELECT DISTINCT keywords FROM messages WHERE mailbox_id = %s AND keywords != ''",
                                  (self.id,)).fetchall()
            (first_unseen,) = db.execute("SELECT min(uid) FROM messages WHERE mailbox_id = %s AND flags & %s = 0",
                                         (self.id, int(Flag.SEEN))).fetchone()
        uids, modseqs = (list(column) for column in zip(*rows)) if rows else ([], [])
        return MailboxSummary(uids, modseqs, frozenset(k for (text,) in keywords for k in text.split()), first_unseen)

    def record(self, uid: int) -> MessageRecord:
        with self._snapshot() as db:
            row = db.execute(f"SELECT {_RECORD_COLUMNS} FROM messages WHERE mailbox_id = %s AND uid = %s",
                             (self.id, uid)).fetchone()
        if row is None:
            raise NoSuchMessage(f"No message with UID {uid}")
        return _record(row)

    def records(self, uids: Iterable[int]) -> list[MessageRecord]:
        """The records of those ``uids`` still present, ascending."""
        with self._snapshot() as db:
            rows = db.execute(f"SELECT {_RECORD_COLUMNS} FROM messages WHERE mailbox_id = %s AND uid = ANY(%s)"
                              " ORDER BY uid", (self.id, list(uids))).fetchall()
        return [_record(row) for row in rows]

    def read(self, uid: int, start: int = 0, end: int | None = None) -> bytes:
        with self._snapshot() as db:
            data = self.store.blobs.read(db, self.id, uid, start, None if end is None else max(0, end - start))
        if data is None:
            raise NoSuchMessage(f"No message with UID {uid}")
        return data

    def open_file(self, uid: int):
        """The body as a binary file: streamed from the shared folder's file, if there."""
        with self._snapshot() as db:
            source = self.store.blobs.open(db, self.id, uid)
        if source is None:
            raise NoSuchMessage(f"No message with UID {uid}")
        return source

    def mime_caches(self, uids: Iterable[int]) -> dict[int, bytes]:
        with self._snapshot() as db:
            rows = db.execute("SELECT uid, cache FROM mime WHERE mailbox_id = %s AND uid = ANY(%s)",
                              (self.id, list(uids))).fetchall()
        return {uid: bytes(cache) for uid, cache in rows}

    def mime_cache(self, uid: int) -> bytes | None:
        with self._snapshot() as db:
            row = db.execute("SELECT cache FROM mime WHERE mailbox_id = %s AND uid = %s", (self.id, uid)).fetchone()
        if row is not None:
            return bytes(row[0])
        analyser = self.store.analyser
        if analyser is None:
            return None
        cache = analyser(self.read(uid))
        if cache is not None:
            self.store.db.execute(
                "INSERT INTO mime (mailbox_id, uid, cache) SELECT %s, %s, %s WHERE EXISTS"
                " (SELECT 1 FROM messages WHERE mailbox_id = %s AND uid = %s) ON CONFLICT DO NOTHING",
                (self.id, uid, cache, self.id, uid))
        return cache

    def cache_may_contain(self, all_of: list[bytes], any_of: list[bytes] = ()) -> set[int]:
        """UIDs whose cache holds every word of ``all_of`` (ASCII, any case) or any of ``any_of``, or no cache."""
        all_of = list(dict.fromkeys(word.lower() for word in all_of))
        with self._snapshot() as db:
            rows = db.execute("SELECT m.uid, c.cache FROM messages AS m LEFT JOIN mime AS c ON c.mailbox_id = m.mailbox_id"
                              " AND c.uid = m.uid WHERE m.mailbox_id = %s", (self.id,)).fetchall()
        found = set()
        for uid, cache in rows:
            if cache is None:
                found.add(uid)
                continue
            cache = bytes(cache)
            lowered = cache.lower()
            if all(word in lowered for word in all_of) or any(word in cache for word in any_of):
                found.add(uid)
        return found

    def sort_rows(self, uids: Iterable[int], columns: Sequence[str]) -> list[tuple]:
        """As :meth:`MaildirMailbox.sort_rows`: keys made from the MIME cache when missing, then kept."""
        uids = list(uids)
        select = ", ".join(SORT_ROW_COLUMNS[column] for column in columns)
        join = "FROM messages AS m {} JOIN sortdata AS s ON s.mailbox_id = m.mailbox_id AND s.uid = m.uid"
        with self._snapshot() as db:
            missing = db.execute(f"SELECT m.uid {join.format('LEFT')} WHERE s.uid IS NULL AND m.mailbox_id = %s"
                                 " AND m.uid = ANY(%s)", (self.id, uids)).fetchall()
        if missing:
            self._make_sort_data([uid for (uid,) in missing])
        with self._snapshot() as db:
            rows = db.execute(f"SELECT m.uid, {select} {join.format('')} WHERE m.mailbox_id = %s AND m.uid = ANY(%s)"
                              " ORDER BY m.uid", (self.id, uids)).fetchall()
        return references_split(rows, columns)

    def _make_sort_data(self, uids: list[int]) -> None:
        keyer = self.store.sort_keyer
        caches = self.mime_caches(uids)
        rows = []
        for record in self.records(uids):
            cache = caches.get(record.uid)
            if cache is None:
                try:
                    cache = self.mime_cache(record.uid)
                except NoSuchMessage:
                    continue
            data = keyer(cache) if keyer is not None and cache is not None else None
            rows.append((self.id, record.uid, *_sort_values(NO_SORT_DATA if data is None else data), self.id, record.uid))
        if rows:
            with self.store.write() as db, db.cursor() as cursor:
                cursor.executemany(
                    f"INSERT INTO sortdata (mailbox_id, uid, {_SORT_COLUMNS})"
                    " SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s WHERE EXISTS"
                    " (SELECT 1 FROM messages WHERE mailbox_id = %s AND uid = %s) ON CONFLICT DO NOTHING", rows)

    def previews(self, uids: Iterable[int]) -> dict[int, str]:
        """UID -> RFC 8970 preview for those of ``uids`` with a MIME cache; made once, then kept."""
        uids = list(uids)
        found = self._stored_previews(uids)
        previewer = self.store.previewer
        missing = [uid for uid in uids if uid not in found]
        if not missing or previewer is None:
            return found
        made: dict[int, str] = {}
        for record in self.records(missing):
            cache = self.mime_cache(record.uid)
            text = None if cache is None else previewer(self.read(record.uid), cache)
            if text is not None:
                made[record.uid] = text
        if made:
            with self.store.write() as db, db.cursor() as cursor:
                cursor.executemany("UPDATE mime SET preview = %s WHERE mailbox_id = %s AND uid = %s",
                                   [(_text(text), self.id, uid) for uid, text in made.items()])
        return found | made

    def _stored_previews(self, uids: Iterable[int]) -> dict[int, str]:
        with self._snapshot() as db:
            rows = db.execute("SELECT uid, preview FROM mime WHERE mailbox_id = %s AND uid = ANY(%s)"
                              " AND preview IS NOT NULL", (self.id, list(uids))).fetchall()
        return dict(rows)

    # -- changing -----------------------------------------------------------------------------

    # Bytes or a staged message in, entries for _insert out: as the embedded store does.
    append = MaildirMailbox.append
    append_many = MaildirMailbox.append_many

    def _lock(self, db: psycopg.Connection, *others: PostgresMailbox) -> tuple:
        """Lock this mailbox's row (and ``others``', all in id order); this one's counts."""
        db.execute("SELECT id FROM mailboxes WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
                   (sorted({self.id, *(other.id for other in others)}),))
        for other in others:
            other._counts(db)
        return self._counts(db)

    def _insert(self, entries: list[tuple], source: PostgresMailbox | None = None,
                credit: int | None = None) -> list[int]:
        """Store and index messages in one transaction; their UIDs.

        Each entry is ``(file, size, flags, keywords, internal date, MIME
        cache, EMAILID, preview)`` as :meth:`MaildirMailbox.append_many` makes
        them, the new message's bytes read from the file; or a copy's, with
        ``None`` for the file and the blob of its original (in ``source``,
        locked with this mailbox) added.  Quota limits are checked in the
        transaction, ``credit`` being the bytes a MOVE from ``source`` frees.
        """
        if not entries:
            return []
        keyer = self.store.sort_keyer
        sort_rows = [None if keyer is None or entry[5] is None else keyer(entry[5]) or NO_SORT_DATA
                     for entry in entries]
        bodies = [self.store.blobs.prepare(entry[0]) if entry[0] is not None else None for entry in entries]
        try:
            uids = self._insert_rows(entries, sort_rows, bodies, source, credit)
        finally:
            for body in bodies:
                if body is not None:
                    self.store.blobs.discard(body)
        self._changed()
        return uids

    def _insert_rows(self, entries: list[tuple], sort_rows: list, bodies: list, source: PostgresMailbox | None,
                     credit: int | None) -> list[int]:
        """:meth:`_insert`'s transaction, each new body ready in ``bodies`` (None: a copy's)."""
        with self.store.write() as db:
            limits = self.tree._lock_quota(db)  # the owner's row before any mailbox's
            uidnext, highestmodseq, *_ = self._lock(db, *([source] if source is not None else []))
            if limits:
                moved = (source.name, credit) if credit is not None and source.tree.user == self.tree.user else None
                self.tree._check_insert(db, self.name, [entry[1] for entry in entries], moved)
            modseq, saved = highestmodseq + 1, time.time()
            unseen = size = 0
            for body in sorted((body for body in bodies if body is not None), key=lambda body: body.sha):
                self.store.blobs.add(db, body)  # in one order: two appends never lock in a ring
            for offset, (_, length, flags, keywords, date, cache, email_id, preview, *copied) in enumerate(entries):
                uid, guid = uidnext + offset, new_guid()
                if bodies[offset] is not None:
                    blob = bodies[offset].sha
                else:
                    blob = copied[0]
                    db.execute("UPDATE blobs SET refs = refs + 1 WHERE sha = %s", (blob,))
                db.execute(
                    "INSERT INTO messages (mailbox_id, uid, guid, blob, size, internaldate, flags, keywords, modseq,"
                    " savedate, emailid) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (self.id, uid, guid, blob, length, date, int(flags), keywords, modseq, saved, email_id or guid))
                if cache is not None:
                    db.execute("INSERT INTO mime (mailbox_id, uid, cache, preview) VALUES (%s, %s, %s, %s)",
                               (self.id, uid, cache, _text(preview)))
                if sort_rows[offset] is not None:
                    db.execute(f"INSERT INTO sortdata (mailbox_id, uid, {_SORT_COLUMNS})"
                               " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                               (self.id, uid, *_sort_values(sort_rows[offset])))
                unseen += not flags & Flag.SEEN
                size += length
            db.execute("UPDATE mailboxes SET uidnext = %s, highestmodseq = %s, messages = messages + %s,"
                       " unseen = unseen + %s, size = size + %s WHERE id = %s",
                       (uidnext + len(entries), modseq, len(entries), unseen, size, self.id))
        return list(range(uidnext, uidnext + len(entries)))

    def _changed(self) -> None:
        self.store.announce(self.tree.user, self.id)

    def set_flags(self, uids: Iterable[int], change: FlagChange, flags: Flag,
                  keywords: Iterable[str] = (), unchanged_since: int | None = None):
        changed: list[MessageRecord] = []
        with self.store.write() as db:
            _, highestmodseq, *_ = self._lock(db)
            modseq, unseen = highestmodseq + 1, 0
            changing, refused = flag_changes(self.records(uids), change, flags, frozenset(keywords), unchanged_since)
            for record, new_flags, text in changing:
                db.execute("UPDATE messages SET flags = %s, keywords = %s, modseq = %s WHERE mailbox_id = %s AND uid = %s",
                           (int(new_flags), text, modseq, self.id, record.uid))
                unseen += bool(record.flags & Flag.SEEN) - bool(new_flags & Flag.SEEN)
                changed.append(changed_record(record, new_flags, text, modseq))
            if changed:
                db.execute("UPDATE mailboxes SET highestmodseq = %s, unseen = unseen + %s WHERE id = %s",
                           (modseq, unseen, self.id))
        if changed:
            self._changed()
        return changed, refused

    def copy(self, uids: Iterable[int], target: PostgresMailbox,
             transform: FlagTransform | None = None) -> list[tuple[int, int]]:
        """Copy keeping dates, and flags (or what ``transform`` makes of each record)."""
        with self.store.write():
            return self._copy(uids, target, transform, moving=False)

    def _copy(self, uids: Iterable[int], target: PostgresMailbox, transform: FlagTransform | None,
              moving: bool) -> list[tuple[int, int]]:
        """Copy inside the caller's transaction, both mailboxes locked first (the target's owner before)."""
        db = self.store.db
        target.tree._lock_quota(db)
        target._lock(db, self)
        records = self.records(uids)
        if not records:
            return []
        listed = [record.uid for record in records]
        blobs = dict(db.execute("SELECT uid, blob FROM messages WHERE mailbox_id = %s AND uid = ANY(%s)",
                                (self.id, listed)).fetchall())
        caches = self.mime_caches(listed)
        previews = self._stored_previews(listed)
        entries = []
        for record in records:
            flags, keywords = (record.flags, record.keywords) if transform is None else transform(record)
            entries.append((None, record.size, flags, _keywords_text(keywords), record.internal_date,
                            caches.get(record.uid), record.email_id, previews.get(record.uid), blobs[record.uid]))
        credit = sum(record.size for record in records) if moving else None
        new_uids = target._insert(entries, source=self, credit=credit)
        return list(zip(listed, new_uids))

    def move(self, uids: Iterable[int], target: PostgresMailbox,
             transform: FlagTransform | None = None) -> list[tuple[int, int]]:
        """Copy then expunge here, in one transaction."""
        with self.store.write():
            pairs = self._copy(uids, target, transform, moving=True)
            self._remove([old for old, _ in pairs])
        return pairs

    def expunge(self, uids: Iterable[int] | None = None) -> list[int]:
        return self._remove(uids, deleted_only=True)

    def _remove(self, uids: Iterable[int] | None, deleted_only: bool = False) -> list[int]:
        uids = None if uids is None else list(uids)
        if uids is not None and not uids:
            return []
        with self.store.write() as db:
            _, highestmodseq, *_ = self._lock(db)
            modseq = highestmodseq + 1
            condition = "flags & 8 != 0" if deleted_only else "true"
            if uids is None:
                rows = db.execute(f"SELECT uid, size, flags FROM messages WHERE mailbox_id = %s AND {condition}"
                                  " ORDER BY uid", (self.id,)).fetchall()
            else:
                rows = db.execute(f"SELECT uid, size, flags FROM messages WHERE mailbox_id = %s AND {condition}"
                                  " AND uid = ANY(%s) ORDER BY uid", (self.id, uids)).fetchall()
            removed = [row[0] for row in rows]
            if removed:
                self.store.release_blobs(db, "SELECT blob FROM messages WHERE mailbox_id = %s AND uid = ANY(%s)",
                               (self.id, removed))
                db.execute("DELETE FROM messages WHERE mailbox_id = %s AND uid = ANY(%s)", (self.id, removed))
                with db.cursor() as cursor:
                    cursor.executemany("INSERT INTO expunged (mailbox_id, uid, modseq) VALUES (%s, %s, %s)"
                                       " ON CONFLICT (mailbox_id, uid) DO UPDATE SET modseq = excluded.modseq",
                                       [(self.id, uid, modseq) for uid in removed])
                db.execute("UPDATE mailboxes SET highestmodseq = %s, messages = messages - %s, size = size - %s,"
                           " unseen = unseen - %s WHERE id = %s",
                           (modseq, len(rows), sum(row[1] for row in rows),
                            sum(1 for row in rows if not row[2] & Flag.SEEN), self.id))
                self._bound_history(db, len(removed))
        if removed:
            self._changed()
        return removed

    def touch(self, uids: Iterable[int]) -> list[MessageRecord]:
        """Give these messages a new modseq without changing them (a reader's own
        \\Seen on a shared folder changed: see GuardedMailbox); their records."""
        uids = list(uids)
        if not uids:
            return []
        with self.store.write() as db:
            _, highestmodseq, *_ = self._lock(db)
            updated = db.execute("UPDATE messages SET modseq = %s WHERE mailbox_id = %s AND uid = ANY(%s)",
                                 (highestmodseq + 1, self.id, uids)).rowcount
            if updated:
                db.execute("UPDATE mailboxes SET highestmodseq = %s WHERE id = %s", (highestmodseq + 1, self.id))
            records = self.records(uids)
        if records:
            self._changed()
        return records

    def _bound_history(self, db: psycopg.Connection, added: int) -> None:
        """Keep at most the store's ``expunged_history`` expunged UIDs, raising the floor (as the embedded store)."""
        row = db.execute("SELECT floor, rows FROM expunged_floor WHERE mailbox_id = %s", (self.id,)).fetchone()
        if row is None:
            (kept,) = db.execute("SELECT count(*) FROM expunged WHERE mailbox_id = %s", (self.id,)).fetchone()
            floor = 0
        else:
            floor, kept = row[0], row[1] + added
        excess = kept - self.store.expunged_history
        if excess > 0:
            (cut,) = db.execute("SELECT modseq FROM expunged WHERE mailbox_id = %s ORDER BY modseq LIMIT 1 OFFSET %s",
                                (self.id, excess - 1)).fetchone()
            kept -= db.execute("DELETE FROM expunged WHERE mailbox_id = %s AND modseq <= %s", (self.id, cut)).rowcount
            floor = max(floor, cut)
        db.execute("INSERT INTO expunged_floor (mailbox_id, floor, rows) VALUES (%s, %s, %s)"
                   " ON CONFLICT (mailbox_id) DO UPDATE SET floor = excluded.floor, rows = excluded.rows",
                   (self.id, floor, kept))

    def _expunged_after(self, db: psycopg.Connection, modseq: int) -> list[int] | None:
        row = db.execute("SELECT floor FROM expunged_floor WHERE mailbox_id = %s", (self.id,)).fetchone()
        if row is not None and modseq < row[0]:
            return None
        return [uid for (uid,) in db.execute(
            "SELECT uid FROM expunged WHERE mailbox_id = %s AND modseq > %s ORDER BY uid", (self.id, modseq))]

    def generation(self) -> tuple | None:
        """Differs from an earlier value whenever the messages, flags or ACL of this mailbox
        may have changed, through any server (None once it is gone); one indexed read."""
        row = self.store.db.execute(f"SELECT {_GENERATION} FROM mailboxes WHERE id = %s AND owner != %s",
                                    (self.id, KEPT_OWNER)).fetchone()
        return None if row is None else tuple(row)

    def expunged_since(self, modseq: int) -> list[int] | None:
        with self._snapshot() as db:
            return self._expunged_after(db, modseq)

    def changes_since(self, modseq: int) -> Changes:
        with self._snapshot() as db:
            _, highestmodseq, *_ = self._counts(db)
            changed = db.execute(f"SELECT {_RECORD_COLUMNS} FROM messages WHERE mailbox_id = %s AND modseq > %s"
                                 " ORDER BY uid", (self.id, modseq)).fetchall()
            expunged = self._expunged_after(db, modseq)
        return Changes([_record(row) for row in changed], expunged or [], highestmodseq, expunged is not None)

    def claim_recent(self) -> frozenset[int]:
        """Claim the messages no session has claimed yet; nothing while a writer holds the mailbox."""
        try:
            with self.store.write() as db:
                uidnext, _, recent_uid, *_ = self._counts(db, "FOR UPDATE NOWAIT")
                rows = db.execute("SELECT uid FROM messages WHERE mailbox_id = %s AND uid > %s",
                                  (self.id, recent_uid)).fetchall()
                if uidnext - 1 > recent_uid:
                    db.execute("UPDATE mailboxes SET recent_uid = %s WHERE id = %s", (uidnext - 1, self.id))
        except pg_errors.LockNotAvailable:
            return frozenset()
        return frozenset(row[0] for row in rows)

    # -- the same, off the reactor (see PostgresStore.run) -----------------------------------

    later = MaildirMailbox.later
    append_many_async = MaildirMailbox.append_many_async
    append_async = MaildirMailbox.append_async
    set_flags_async = MaildirMailbox.set_flags_async
    expunge_async = MaildirMailbox.expunge_async

    def copy_async(self, uids: Iterable[int], target: PostgresMailbox, transform: FlagTransform | None = None):
        return target.later(self.copy, list(uids), target, transform, group=target.index is self.index)

    def move_async(self, uids: Iterable[int], target: PostgresMailbox, transform: FlagTransform | None = None):
        return self.later(self.move, list(uids), target, transform, group=target.index is self.index)

    def watch(self, listener: Callable[[], None]) -> None:
        self.store.watch(self.tree.user, self.id, listener)

    def unwatch(self, listener: Callable[[], None]) -> None:
        self.store.unwatch(self.tree.user, self.id, listener)


__all__ = ["PostgresMailbox", "PostgresMailboxList", "PostgresStore"]
