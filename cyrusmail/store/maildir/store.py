"""The embedded maildir-style backend of IStore, IMailboxList and IMailbox."""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import secrets
import shutil
import sqlite3
import struct
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from twisted.internet import defer
from zope.interface import implementer

from cyrusmail import logs
from cyrusmail.private_files import PRIVATE_FOLDER, create_private
from cyrusmail.store import names
from cyrusmail.store.errors import (
    HasChildren,
    InvalidName,
    MailboxExists,
    MailboxNotFound,
    NoSuchMessage,
    NotSelectable,
    Refused,
    UnknownUser,
)
from cyrusmail.store.executor import InlineExecutor
from cyrusmail.store.interfaces import IMailbox, IMailboxList, IStagedMessage, IStore
from cyrusmail.store.maildir import quota
from cyrusmail.store.maildir.files import (
    fsync_dir,
    link_or_copy,
    unlink_quietly,
    write_json_atomically,
)
from cyrusmail.store.maildir.index import IndexBusy, UserIndex, new_mailbox_id
from cyrusmail.store.records import (
    NO_FLAGS,
    NO_SORT_DATA,
    Changes,
    Flag,
    FlagChange,
    MailboxAttribute,
    MailboxListing,
    MailboxStatus,
    MailboxSummary,
    MessageRecord,
    SortData,
)

_log = logs.logger(__name__)

#: Expunged UIDs remembered per mailbox for QRESYNC by default (see :meth:`MaildirMailbox.expunged_since`).
EXPUNGED_HISTORY = 100_000

#: Turns a message's bytes into the MIME cache kept in the index.
Analyser = Callable[[bytes], bytes | None]
#: Turns a MIME cache into the message's SORT and THREAD keys (None: it cannot).
SortKeyer = Callable[[bytes], SortData | None]
#: Makes a message's RFC 8970 preview from its bytes (or a map of its file) and its MIME cache.
Previewer = Callable[[bytes, bytes], str | None]

_CHUNK = 500  # UIDs per SQL IN (...) clause

#: The owner key of the shared-folder tree; no user name can take this form.
SHARED_OWNER = ".shared"

#: How many indexes the store keeps open beyond those in use (each holds three
#: file descriptors: the database, its WAL and its shared-memory file).
DEFAULT_INDEX_CACHE = 64

#: A file in ``tmp/`` untouched for this long belongs to no live staging: the
#: sweep at server start removes it (an APPEND literal or SMTP DATA in progress
#: writes to its file as the bytes arrive).
STALE_TMP_AGE = 3600

#: Turns a source message's record into the (flags, keywords) its copy gets.
FlagTransform = Callable[[MessageRecord], tuple[Flag, Iterable[str]]]
#: A record's columns; a save date or EMAILID an index of schema 1 lacks reads as
#: the internal date (RFC 8514) or the message's own guid.
#: Where a user's deleted mailboxes wait for undelete (``delete_mode = delayed``), in their folder.
DELETED_FOLDER = "deleted"
_RECORD_COLUMNS = ("uid, size, internaldate, flags, keywords, modseq, guid,"
                   " coalesce(savedate, internaldate), coalesce(emailid, guid)")


def default_analyser() -> Analyser | None:
    """The MIME parser's cache maker, when the MIME layer is installed."""
    try:
        from cyrusmail.mime import parse
    except ImportError:
        return None
    return lambda data: parse(data).to_bytes()


def default_sort_keyer() -> SortKeyer | None:
    """The MIME layer's maker of SORT and THREAD keys, when it is installed."""
    try:
        from cyrusmail.mime import MessageInfo
        from cyrusmail.mime.sortkeys import sort_data
    except ImportError:
        return None

    def keys(cache: bytes) -> SortData | None:
        try:
            header = MessageInfo(cache).header_bytes()
        except (ValueError, struct.error):
            return None  # not a blob this version reads
        return sort_data(header)

    return keys


_SORT_COLUMNS = ("sent, subject, reply, from_key, to_key, cc_key, display_from, display_to,"
                 " message_id, refs")


SORT_ROW_COLUMNS = {
    "internal_date": "m.internaldate",
    "size": "m.size",
    "date": "coalesce(s.sent, m.internaldate)",
    "sent": "s.sent",
    "subject": "s.subject",
    "reply": "s.reply",
    "from_": "s.from_key",
    "to": "s.to_key",
    "cc": "s.cc_key",
    "display_from": "s.display_from",
    "display_to": "s.display_to",
    "message_id": "s.message_id",
    "references": "s.refs",
}
"""What :meth:`MaildirMailbox.sort_rows` can read, and from where."""


def references_split(rows: list[tuple], columns: Sequence[str]) -> list[tuple]:
    """Sort rows with their ``references`` column (stored as text) made a tuple again."""
    if "references" not in columns:
        return rows
    at = 1 + list(columns).index("references")
    return [(*row[:at], tuple(row[at].split()), *row[at + 1:]) for row in rows]


def _sort_row(data: SortData) -> tuple:
    return (data.sent, data.subject, int(data.reply), data.from_, data.to, data.cc,
            data.display_from, data.display_to, data.message_id, " ".join(data.references))


def default_previewer() -> Previewer | None:
    """The MIME layer's preview maker, when it is installed."""
    try:
        from cyrusmail.mime.preview import preview_from_cache
    except ImportError:
        return None
    return preview_from_cache


def new_guid() -> str:
    """A message id unique for ever: 128 random bits in hex."""
    return secrets.token_hex(16)


def message_file_name(uid: int, guid: str) -> str:
    return f"{uid}.{guid}"


_FLAG_VALUES = tuple(Flag(bits) for bits in range(int(Flag.SEEN | Flag.ANSWERED | Flag.FLAGGED
                                                     | Flag.DELETED | Flag.DRAFT) + 1))
_NO_KEYWORDS: frozenset[str] = frozenset()
#: Words :meth:`MaildirMailbox.cache_may_contain` tests at most (SQLite allows
#: an expression 1000 deep).
_MAX_PREFILTER_WORDS = 64


def _record(row: tuple) -> MessageRecord:
    """An index row as a record (hot: SELECT builds one per message)."""
    uid, size, internaldate, flags, keywords, modseq, guid, savedate, emailid = row
    return MessageRecord(uid, size, internaldate, _FLAG_VALUES[flags],
                         frozenset(keywords.split()) if keywords else _NO_KEYWORDS, modseq, guid,
                         savedate, emailid)


def _select_by_uid(db: sqlite3.Connection, query: str, mailbox_id: int, uids: Iterable[int],
                   column: str = "uid") -> list[tuple]:
    """Rows of ``query`` (ending in ``WHERE mailbox_id = ? AND``) for those UIDs
    (in ``column``: a join names its table).

    A run of consecutive UIDs (``FETCH 1:*``) is one range scan; anything
    else goes in IN lists of at most 500.
    """
    rows: list[tuple] = []
    for batch in _chunks(uids):
        low, high = min(batch), max(batch)
        if high - low + 1 == len(batch) and len(set(batch)) == len(batch):  # exactly low..high
            rows += db.execute(f"{query} {column} BETWEEN ? AND ?", (mailbox_id, low, high)).fetchall()
        else:
            marks = ",".join("?" * len(batch))
            rows += db.execute(f"{query} {column} IN ({marks})", (mailbox_id, *batch)).fetchall()
    return rows


def _chunks(uids: Iterable[int]) -> Iterable[list[int]]:
    batch: list[int] = []
    for uid in uids:
        batch.append(uid)
        if len(batch) == _CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


def _keywords_text(keywords: Iterable[str]) -> str:
    return " ".join(_dedupe_keywords(keywords))


def _dedupe_keywords(keywords: Iterable[str]) -> list[str]:
    """Keywords compare case-insensitively; the first spelling wins."""
    seen: dict[str, str] = {}
    for keyword in keywords:
        seen.setdefault(keyword.lower(), keyword)
    return sorted(seen.values())


def flag_changes(records: Iterable[MessageRecord], change: FlagChange, flags: Flag, keywords: frozenset[str],
                 unchanged_since: int | None) -> tuple[list[tuple[MessageRecord, Flag, str]], list[int]]:
    """What a STORE does to ``records``: (record, its new flags, its new keywords as text) of each
    that changes, and the UIDs ``unchanged_since`` refuses (modified after it)."""
    changing, refused = [], []
    for record in records:
        if unchanged_since is not None and record.modseq > unchanged_since:
            refused.append(record.uid)
            continue
        new_flags, new_keywords = _apply_flags(record, change, flags, keywords)
        if new_flags != record.flags or frozenset(new_keywords) != record.keywords:
            changing.append((record, new_flags, " ".join(new_keywords)))
    return changing, refused


def changed_record(record: MessageRecord, flags: Flag, keywords: str, modseq: int) -> MessageRecord:
    """``record`` with new flags, keywords (text) and modseq."""
    return _record((record.uid, record.size, record.internal_date, int(flags), keywords, modseq,
                    record.guid, record.save_date, record.email_id))


def _apply_flags(
    record: MessageRecord, change: FlagChange, flags: Flag, keywords: frozenset[str]
) -> tuple[Flag, list[str]]:
    if change is FlagChange.REPLACE:
        return flags, _dedupe_keywords(keywords)
    if change is FlagChange.ADD:
        return record.flags | flags, _dedupe_keywords([*record.keywords, *keywords])
    folded = {keyword.lower() for keyword in keywords}
    return record.flags & ~flags, sorted(k for k in record.keywords if k.lower() not in folded)


@implementer(IStagedMessage)
class StagedMessage:
    """A message written to ``tmp/`` once and linked into every mailbox it goes to.

    Written on one thread; then finished and analysed by whichever threads
    deliver it (one message, several recipients): those two are locked.
    """

    def __init__(self, path: Path, analyser: Analyser | None, previewer: Previewer | None = None):
        self.path = path
        self._lock = threading.Lock()
        self.size = 0
        self._analyser = analyser
        self._previewer = previewer
        self._file = create_private(path)  # open until finish()
        self._finished = False
        self._mime: bytes | None = None
        self._preview: str | None = None
        self._analysed = False

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self.size += len(data)

    def finish(self) -> None:
        with self._lock:
            if not self._finished:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
                self._finished = True

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        unlink_quietly(self.path)

    def read(self) -> bytes:
        return self.path.read_bytes()

    def mime_cache(self) -> bytes | None:
        """The parse result, made once however many mailboxes receive the message,
        with its preview from the same read of the file."""
        with self._lock:
            if not self._analysed:
                self._analysed = True
                if self._analyser is not None:
                    data = self.path.read_bytes()
                    self._mime = self._analyser(data)
                    if self._mime is not None and self._previewer is not None:
                        self._preview = self._previewer(data, self._mime)
        return self._mime

    def prepare(self) -> None:
        """Finish and analyse: all a delivery needs before it takes the index."""
        self.finish()
        self.mime_cache()

    def preview(self) -> str | None:
        """The RFC 8970 preview, made with the MIME cache (None without one)."""
        self.mime_cache()
        return self._preview


def _unlink_all(paths: Iterable[Path]) -> None:
    for path in paths:
        unlink_quietly(path)


def _prepare_all(staged: list[StagedMessage]) -> None:
    for message in staged:
        message.prepare()


def _analyse_file(path: Path, size: int, analyser: Analyser) -> bytes | None:
    """Run ``analyser`` over the message's bytes, as the Analyser type promises."""
    return analyser(path.read_bytes())


def _preview_file(path: Path, cache: bytes, previewer: Previewer) -> str | None:
    """The preview of a stored message, reading only the pages it looks at."""
    try:
        with open(path, "rb") as source:
            if os.fstat(source.fileno()).st_size == 0:
                return previewer(b"", cache)
            with mmap.mmap(source.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                return previewer(mapped, cache)
    except FileNotFoundError:
        return None  # expunged meanwhile


@implementer(IStore)
class MaildirStore:
    """Every user's mail under one data folder."""

    def __init__(self, data: Path | str, analyser: Analyser | None = None,
                 index_cache: int = DEFAULT_INDEX_CACHE,
                 expunged_history: int = EXPUNGED_HISTORY, previewer: Previewer | None = None):
        self.root = Path(data).resolve()
        #: how many expunged UIDs each mailbox remembers (with their modseqs)
        self.expunged_history = expunged_history
        self.users_dir = self.root / "users"
        self.tmp_dir = self.root / "tmp"
        self.users_dir.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
        self.tmp_dir.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
        self.analyser = analyser if analyser is not None else default_analyser()
        self.sort_keyer = default_sort_keyer()
        self.previewer = previewer if previewer is not None else default_previewer()
        self.index_cache = index_cache
        # Every open index, found again while anything uses it (a session's
        # tree or selected mailbox, an IDLE watcher); the most recent
        # ``index_cache`` are also held here, the rest close once unused.
        self._open: weakref.WeakValueDictionary[str, UserIndex] = weakref.WeakValueDictionary()
        self._recent: OrderedDict[str, UserIndex] = OrderedDict()
        self._indexes_lock = threading.RLock()  # worker threads open indexes too
        self._watchers: dict[tuple[str, int], list[Callable[[], None]]] = {}
        #: where write jobs run (see :mod:`cyrusmail.store.executor`): at once,
        #: until the server gives the store a thread pool
        self.executor = InlineExecutor(self.index)
        #: ``[server] delete_mode = delayed``: a deleted mailbox is kept in the user's ``deleted/``
        #: folder (an unpacked archive, :mod:`cyrusmail.store.maildir.archive`) for ``undelete``
        self.keep_deleted = False
        #: told ``(user, mailbox_id)`` after each change, for the server's other processes (cyrusmail.workers)
        self.publish: Callable[[str, int], None] | None = None
        #: user -> their index's generation at the last :meth:`poll_watched`
        self._watched_generations: dict[str, int] = {}

    # -- users -------------------------------------------------------------

    def user_dir(self, user: str) -> Path:
        """The folder of ``user``: a checked name, always inside ``users/``."""
        if user == SHARED_OWNER:
            return self.root / "shared"
        user = names.user_name(user)  # never holds "/" nor starts with ".": one folder directly in users/
        path = self.users_dir / user  # not resolve()d: a lstat per component, three times per login
        if path.parent != self.users_dir:
            raise InvalidName(f"Invalid user name {user!r}")
        return path

    def has_user(self, user: str) -> bool:
        """Whether ``user`` has a mailbox tree (made by :meth:`provision`)."""
        return user == SHARED_OWNER or (self.user_dir(user) / "index.sqlite").exists()

    def index(self, user: str, create: bool = False) -> UserIndex:
        """The index of ``user``, or of the shared tree for SHARED_OWNER.

        UnknownUser when ``user`` has no tree and ``create`` is False: looking
        at a user's mailboxes never makes them. An index moved away since it
        was opened (the user was deleted by ``cyrusmail-admin`` in another
        process) is not handed out again.
        """
        key = user if user == SHARED_OWNER else names.user_name(user)
        with self._indexes_lock:
            return self._index(key, create)

    def _index(self, key: str, create: bool) -> UserIndex:
        index = self._open.get(key)
        if index is not None and not index.is_current():
            self._forget(key)
            index = None
        if index is None:
            folder = self.user_dir(key)
            path = folder / "index.sqlite"
            if create or key == SHARED_OWNER:
                for made in (folder, folder / "mail"):
                    made.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
            elif not path.exists():
                raise UnknownUser(f"No user {key}")
            try:
                index = UserIndex(path, create=create or key == SHARED_OWNER)
            except sqlite3.OperationalError:
                if path.exists():
                    raise
                raise UnknownUser(f"No user {key}") from None  # removed just now
            self._open[key] = index
            self._carry_uidvalidity(key, index)
        self._recent[key] = index
        self._recent.move_to_end(key)
        while len(self._recent) > self.index_cache:
            self._recent.popitem(last=False)  # closes it, unless a session still uses it
        return index

    def _forget(self, key: str) -> UserIndex | None:
        """Drop ``key``'s index from the caches (whoever still holds it keeps it open)."""
        with self._indexes_lock:
            self._recent.pop(key, None)
            return self._open.pop(key, None)

    def open_indexes(self) -> int:
        """How many indexes this store has open now."""
        return len(self._open)

    @contextmanager
    def user_lock(self) -> Iterator[None]:
        """Held while a user's tree is made or removed, across processes.

        The server holds it to check the user database and provision at
        login and delivery, ``cyrusmail-admin user delete`` to delete the user
        and move their tree away: a login racing a deletion cannot make the
        deleted user's tree again.
        """
        with open(self.users_dir / ".lock", "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _uidvalidity_mark(self, user: str) -> Path:
        """Where a removed user's last UIDVALIDITY is kept (user names never start with '.')."""
        return self.users_dir / f".uidvalidity-{user}"

    def _carry_uidvalidity(self, user: str, index: UserIndex) -> None:
        """Start a re-created user's UIDVALIDITYs above those of the removed one."""
        mark = self._uidvalidity_mark(user)
        if not mark.exists():
            return
        floor = json.loads(mark.read_text(encoding="utf-8"))["uidvalidity"]
        with index.write() as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('uidvalidity', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
                (floor,),
            )

    def mailboxes(self, user: str) -> MaildirMailboxList | EmptyMailboxList:
        """The tree of ``user``; an empty one that refuses changes if ``user`` has none."""
        user = names.user_name(user)
        try:
            return MaildirMailboxList(self, user)
        except UnknownUser:
            return EmptyMailboxList(user)

    def shared_mailboxes(self) -> MaildirMailboxList:
        """The tree of shared folders (bulletin boards), owned by no user."""
        return MaildirMailboxList(self, SHARED_OWNER)

    def provisioned(self, user: str, special_uses: dict[str, str] | None = None) -> bool:
        """Whether :meth:`provision` would make nothing: ``user``'s tree holds INBOX and each folder.

        One stat and one read of an index already open; makes nothing, so it
        needs no :meth:`user_lock`.
        """
        try:
            wanted = {names.check(name) for name in (names.INBOX, *(special_uses or {}))}
            index = self.index(user)
        except (UnknownUser, InvalidName):
            return False
        marks = ", ".join("?" * len(wanted))
        (found,) = index.db.execute(f"SELECT count(*) FROM mailboxes WHERE name IN ({marks})", sorted(wanted)).fetchone()
        return found == len(wanted)

    def provision(self, user: str, special_uses: dict[str, str] | None = None) -> None:
        self.index(user, create=True)
        tree = self.mailboxes(user)
        if not tree.exists(names.INBOX):
            tree.create(names.INBOX)
            tree.subscribe(names.INBOX)
        for name, use in (special_uses or {}).items():
            if not tree.exists(name):
                tree.create(name, special_use=use)
                tree.subscribe(name)

    def remove_user(self, user: str) -> None:
        doomed = self.retire_user(user)
        if doomed is not None:
            shutil.rmtree(doomed, ignore_errors=True)

    def retire_user(self, user: str) -> Path | None:
        """Move ``user``'s tree out of reach at once; the folder left to remove (or None).

        Quick, so that it can run under :meth:`user_lock`; the slow removal of
        the files comes after (:meth:`remove_user` does both).
        """
        user = names.user_name(user)
        folder = self.user_dir(user)
        if (folder / "index.sqlite").exists():
            # A client may still cache the old mailboxes: their UIDVALIDITYs stay spent.
            row = self.index(user).db.execute("SELECT value FROM meta WHERE key = 'uidvalidity'").fetchone()
            if row is not None:
                write_json_atomically(self._uidvalidity_mark(user), {"uidvalidity": row[0]})
        index = self._forget(user)
        if index is not None:
            index.close()
        if not folder.exists():
            return None
        doomed = folder.with_name(f".deleted-{user}-{secrets.token_hex(4)}")
        os.rename(folder, doomed)
        fsync_dir(self.users_dir)
        return doomed

    def sweep(self, max_age: float = STALE_TMP_AGE) -> tuple[int, int]:
        """Remove what no live work can own; (files, trees) removed.

        Files in ``tmp/`` not written to for ``max_age`` seconds, left by a
        crash mid-delivery (a connection that is lost removes its own), and
        trees of deleted users a crash left behind. Called when the server
        starts, when none of its own staging is live; the age spares the
        files of a ``cyrusmail-admin import`` running at that moment.
        """
        files = trees = 0
        cutoff = time.time() - max_age
        for entry in os.scandir(self.tmp_dir):
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    files += 1
            except FileNotFoundError:
                continue
        for entry in os.scandir(self.users_dir):
            if entry.name.startswith(".deleted-") and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
                trees += 1
        return files, trees

    def stage(self) -> StagedMessage:
        return StagedMessage(self.tmp_dir / f"{time.time_ns()}.{secrets.token_hex(8)}", self.analyser,
                             self.previewer)

    def close(self) -> None:
        """Stop the store's threads (letting their work finish) and close every index."""
        self.executor.stop()
        for index in list(self._open.values()):
            index.close()
        self._open.clear()
        self._recent.clear()

    # -- work off the reactor (see cyrusmail.store.executor) -------------------

    def run(self, owner: str, work: Callable, *args, group: bool = False, messages: Iterable = ()) -> defer.Deferred:
        """``work(*args)`` in the queue of ``owner``'s index; a Deferred of its result.

        ``group``: ``work`` writes only that index, and may be committed with
        the jobs queued beside it.  ``messages``: staged messages to finish
        and analyse first, in parallel with other work, before the job queues.
        """
        staged = [message for message in messages if isinstance(message, StagedMessage)]
        if not staged:
            return self.executor.submit(owner, work, *args, group=group)
        ready = self.executor.prepare(_prepare_all, staged)
        return ready.addCallback(lambda _: self.executor.submit(owner, work, *args, group=group))

    # -- change notification -------------------------------------------------

    def watch(self, user: str, mailbox_id: int, listener: Callable[[], None]) -> None:
        self._watchers.setdefault((user, mailbox_id), []).append(listener)

    def unwatch(self, user: str, mailbox_id: int, listener: Callable[[], None]) -> None:
        listeners = self._watchers.get((user, mailbox_id), [])
        if listener in listeners:
            listeners.remove(listener)
        if not listeners:
            self._watchers.pop((user, mailbox_id), None)

    def poll_watched(self) -> int:
        """Wake the watchers of every user whose index changed since the last
        call, by anyone (another process, a worker, ``cyrusmail-admin``); how
        many users' indexes were looked at.

        One look at each watched user's index generation, however many
        watchers (IDLE sessions) that user has: a change made in this
        process was told at once by :meth:`notify`, so this is for the
        others.  A user seen for the first time is woken too (the watcher
        itself checks whether anything changed for it).
        """
        by_user: dict[str, list[Callable[[], None]]] = {}
        for (user, _), listeners in self._watchers.items():
            by_user.setdefault(user, []).extend(listeners)
        last, self._watched_generations = self._watched_generations, {}
        for user, listeners in by_user.items():
            index = self._open.get(user)
            if index is None:
                continue
            generation = index.generation()
            self._watched_generations[user] = generation
            if last.get(user) != generation:
                self._tell(listeners)
        return len(by_user)

    def notify(self, user: str, mailbox_id: int) -> None:
        """Tell every watcher and ``publish`` the change, on the reactor thread; it
        is committed, so a failing watcher is only logged."""
        self.executor.call_home(self._tell_and_publish, user, mailbox_id)

    def _tell_and_publish(self, user: str, mailbox_id: int) -> None:
        self.tell_watchers(user, mailbox_id)
        if self.publish is not None:
            self.publish(user, mailbox_id)

    def tell_watchers(self, user: str, mailbox_id: int) -> None:
        """Tell this process's watchers of a change (made here, or by another worker process)."""
        self._tell(list(self._watchers.get((user, mailbox_id), ())))

    @staticmethod
    def _tell(listeners: list[Callable[[], None]]) -> None:
        for listener in listeners:
            try:
                listener()
            except Exception:  # noqa: BLE001 - any listener's bug must stay its own
                _log.failure("Mailbox watcher {listener!r} failed", listener=listener)


@implementer(IMailboxList)
class MaildirMailboxList:
    """One user's mailbox names, held in their index."""

    separator = names.SEPARATOR

    def __init__(self, store: MaildirStore, user: str):
        self.store = store
        self.user = user
        self.index = store.index(user)
        self.mail_dir = store.user_dir(user) / "mail"

    # -- helpers -----------------------------------------------------------

    def _row(self, db: sqlite3.Connection, name: str) -> tuple | None:
        return db.execute(
            "SELECT id, selectable, uidvalidity, special_use, objectid FROM mailboxes WHERE name = ?", (name,)
        ).fetchone()

    def _has_children(self, db: sqlite3.Connection, name: str) -> bool:
        prefix = name + names.SEPARATOR
        return (
            db.execute(
                "SELECT 1 FROM mailboxes WHERE substr(name, 1, ?) = ? LIMIT 1", (len(prefix), prefix)
            ).fetchone()
            is not None
        )

    def _folder(self, mailbox_id: int) -> Path:
        return self.mail_dir / str(mailbox_id)

    def _write_header(self, mailbox_id: int, name: str, uidvalidity: int, special_use: str | None,
                      objectid: str | None) -> None:
        write_json_atomically(
            self._folder(mailbox_id) / "mailbox.json",
            {"name": name, "uidvalidity": uidvalidity, "special_use": special_use, "objectid": objectid},
        )

    def _make(self, db: sqlite3.Connection, name: str, special_use: str | None) -> str:
        uidvalidity = self.index.next_uidvalidity(db)
        objectid = new_mailbox_id()
        cursor = db.execute(
            "INSERT INTO mailboxes (name, uidvalidity, special_use, objectid) VALUES (?, ?, ?, ?)",
            (name, uidvalidity, special_use, objectid),
        )
        mailbox_id = cursor.lastrowid
        # never parents=True: a tree moved away (user deleted) must not come back as a stray folder
        self._folder(mailbox_id).mkdir(mode=PRIVATE_FOLDER, exist_ok=True)
        self._write_header(mailbox_id, name, uidvalidity, special_use, objectid)
        return objectid

    # -- IMailboxList --------------------------------------------------------

    def create(self, name: str, special_use: str | None = None) -> str:
        """Make ``name`` (and missing superiors); its new MAILBOXID."""
        name = names.check(name)
        with self.index.write() as db:
            row = self._row(db, name)
            if row is not None and row[1]:
                raise MailboxExists(f"Mailbox {name} already exists")
            quota.check_new_mailboxes(
                db, [superior for superior in names.superiors(name) if self._row(db, superior) is None] + [name]
            )
            for superior in names.superiors(name):
                if self._row(db, superior) is None:
                    self._make(db, superior, None)
            if row is not None:  # a \Noselect node becomes a mailbox again, a new one
                uidvalidity, objectid = self.index.next_uidvalidity(db), new_mailbox_id()
                db.execute(
                    "UPDATE mailboxes SET selectable = 1, uidvalidity = ?, special_use = ?, objectid = ? WHERE id = ?",
                    (uidvalidity, special_use, objectid, row[0]),
                )
                self._folder(row[0]).mkdir(mode=PRIVATE_FOLDER, exist_ok=True)
                self._write_header(row[0], name, uidvalidity, special_use, objectid)
            else:
                objectid = self._make(db, name, special_use)
        fsync_dir(self.mail_dir)
        return objectid

    def check_restorable(self, name: str) -> None:
        """Refused unless ``name`` is free for a restore: no such mailbox, a \\Noselect node, or one empty
        and never used (no message, no expunge): INBOX and the folders of a user just added."""
        name = names.check(name)
        with self.index.read() as db:
            self._check_restorable(db, name)

    def _check_restorable(self, db, name: str) -> tuple | None:
        row = self._row(db, name)
        if row is not None and row[1] and self._used(db, row[0]):
            raise Refused(f"Mailbox {name} already exists and is not new and empty:"
                          " delete or rename it first, or restore it under another name")
        return row

    def _used(self, db: sqlite3.Connection, mailbox_id: int) -> bool:
        """Whether the mailbox ever held a message (its UIDNEXT moved)."""
        return bool(db.execute("SELECT uidnext > 1 FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()[0])

    def restore(self, name: str, uidvalidity: int, uidnext: int, highestmodseq: int, special_use: str | None,
                items: list[tuple]) -> None:
        """Make ``name`` again as an archive holds it (:mod:`cyrusmail.store.maildir.archive`), in one
        durable transaction.

        Each item is ``(uid, staged message, flags, keywords, internal
        date)``. The mailbox keeps its UIDVALIDITY and UIDs, so clients
        that knew it need not fetch it again; every message gets a modseq
        above the archive's HIGHESTMODSEQ, so CONDSTORE clients refetch
        their flags. No quota is checked: a restore is the administrator's.
        """
        name = names.check(name)
        keyer = self.store.sort_keyer
        linked: list[Path] = []
        try:
            with self.index.write() as db:
                row = self._check_restorable(db, name)
                for superior in names.superiors(name):
                    if self._row(db, superior) is None:
                        self._make(db, superior, None)
                if special_use is not None and db.execute(
                        "SELECT 1 FROM mailboxes WHERE special_use = ? AND name != ?", (special_use, name)).fetchone():
                    special_use = None  # another mailbox has taken that use meanwhile
                objectid = new_mailbox_id()
                if row is None:
                    mailbox_id = db.execute(
                        "INSERT INTO mailboxes (name, uidvalidity, special_use, objectid) VALUES (?, ?, ?, ?)",
                        (name, uidvalidity, special_use, objectid)).lastrowid
                else:
                    mailbox_id = row[0]
                    for table in ("messages", "mime", "expunged", "expunged_floor"):
                        db.execute(f"DELETE FROM {table} WHERE mailbox_id = ?", (mailbox_id,))
                    db.execute("UPDATE mailboxes SET selectable = 1, uidvalidity = ?, special_use = ?, objectid = ?"
                               " WHERE id = ?", (uidvalidity, special_use or row[3], objectid, mailbox_id))
                db.execute("INSERT INTO meta (key, value) VALUES ('uidvalidity', ?)"
                           " ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)", (uidvalidity,))
                folder = self._folder(mailbox_id)
                folder.mkdir(mode=PRIVATE_FOLDER, exist_ok=True)
                modseq = highestmodseq + 1
                saved = time.time()
                for uid, message, flags, keywords, date in items:
                    guid = new_guid()
                    dest = folder / message_file_name(uid, guid)
                    link_or_copy(message.path, dest)
                    linked.append(dest)
                    db.execute(
                        "INSERT INTO messages (mailbox_id, uid, guid, size, internaldate, flags, keywords, modseq,"
                        " savedate) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (mailbox_id, uid, guid, message.size, date, int(flags), _keywords_text(keywords), modseq,
                         saved))
                    cache = message.mime_cache()
                    if cache is not None:
                        db.execute("INSERT INTO mime (mailbox_id, uid, cache, preview) VALUES (?, ?, ?, ?)",
                                   (mailbox_id, uid, cache, message.preview()))
                        data = None if keyer is None else keyer(cache) or NO_SORT_DATA
                        if data is not None:
                            db.execute(f"INSERT INTO sortdata (mailbox_id, uid, {_SORT_COLUMNS})"
                                       " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (mailbox_id, uid, *_sort_row(data)))
                top = max((item[0] for item in items), default=0)
                db.execute("UPDATE mailboxes SET uidnext = ?, highestmodseq = ?, recent_uid = ? WHERE id = ?",
                           (max(uidnext, top + 1), modseq, max(uidnext, top + 1) - 1, mailbox_id))
                self._write_header(mailbox_id, name, uidvalidity, special_use or (row[3] if row else None), objectid)
                fsync_dir(folder)
        except BaseException:
            for path in linked:
                unlink_quietly(path)
            raise
        fsync_dir(self.mail_dir)
        self.store.notify(self.user, mailbox_id)

    def delete(self, name: str) -> None:
        name = names.check(name)
        if name == names.INBOX:
            raise Refused("INBOX cannot be deleted")
        with self.index.write() as db:
            row = self._row(db, name)
            if row is None:
                raise MailboxNotFound(f"Mailbox {name} does not exist")
            mailbox_id, selectable = row[0], row[1]
            if selectable and self.store.keep_deleted:
                self._keep(db, row, name)
            if self._has_children(db, name):
                if not selectable:
                    raise HasChildren(f"Mailbox {name} has inferior hierarchical names")
                db.execute("UPDATE mailboxes SET selectable = 0, special_use = NULL WHERE id = ?", (mailbox_id,))
            else:
                db.execute("DELETE FROM mailboxes WHERE id = ?", (mailbox_id,))
                self._prune_empty_nodes(db, name)
            for table in ("messages", "mime", "expunged", "expunged_floor"):
                db.execute(f"DELETE FROM {table} WHERE mailbox_id = ?", (mailbox_id,))
            for table in ("acls",):
                db.execute(f"DELETE FROM {table} WHERE mailbox_id = ?", (mailbox_id,))
        shutil.rmtree(self._folder(mailbox_id), ignore_errors=True)
        self.store.notify(self.user, mailbox_id)

    def _keep(self, db: sqlite3.Connection, row: tuple, name: str) -> None:
        """Keep mailbox ``name`` (being deleted in ``db``'s transaction) for undelete: its files hard-linked
        into ``deleted/SECONDS-ID/`` with a manifest of UIDs, flags and keywords."""
        from cyrusmail.store.maildir.archive import (
            FolderWriter,
            Snapshot,
            write_archive,
        )

        mailbox_id, _, uidvalidity, special_use, _ = row
        uidnext, highestmodseq = db.execute("SELECT uidnext, highestmodseq FROM mailboxes WHERE id = ?",
                                            (mailbox_id,)).fetchone()
        records = [_record(found) for found in db.execute(
            f"SELECT {_RECORD_COLUMNS} FROM messages WHERE mailbox_id = ? ORDER BY uid", (mailbox_id,))]
        subscribed = db.execute("SELECT 1 FROM subscriptions WHERE name = ?", (name,)).fetchone() is not None
        acl = db.execute("SELECT entries FROM acls WHERE mailbox_id = ?", (mailbox_id,)).fetchone()
        kept = self.store.user_dir(self.user) / DELETED_FOLDER
        kept.mkdir(mode=PRIVATE_FOLDER, exist_ok=True)
        writer = FolderWriter(kept / f"{int(time.time())}-{mailbox_id}-{secrets.token_hex(4)}")
        write_archive(self.user, [Snapshot(name, uidvalidity, uidnext, highestmodseq, special_use, subscribed,
                                           None if acl is None else json.loads(acl[0]), records,
                                           self._folder(mailbox_id))], writer)
        fsync_dir(kept)

    def _prune_empty_nodes(self, db: sqlite3.Connection, name: str) -> None:
        """Remove \\Noselect superiors left with no children."""
        for superior in reversed(names.superiors(name)):
            row = self._row(db, superior)
            if row is None or row[1] or self._has_children(db, superior):
                return
            db.execute("DELETE FROM mailboxes WHERE id = ?", (row[0],))

    def rename(self, old: str, new: str) -> None:
        old, new = names.check(old), names.check(new)
        if old == names.INBOX:
            self._rename_inbox(new)
            return
        if new == old or new.startswith(old + names.SEPARATOR):
            raise Refused("Cannot rename a mailbox to itself or below itself")
        renamed: list[tuple[int, str, int, str | None, str | None]] = []
        with self.index.write() as db:
            roots_before = list(quota.limits(db))
            if self._row(db, old) is None:
                raise MailboxNotFound(f"Mailbox {old} does not exist")
            if self._row(db, new) is not None:
                raise MailboxExists(f"Mailbox {new} already exists")
            prefix = old + names.SEPARATOR
            rows = db.execute(
                "SELECT id, name, uidvalidity, special_use, objectid FROM mailboxes"
                " WHERE name = ? OR substr(name, 1, ?) = ? ORDER BY length(name) DESC",
                (old, len(prefix), prefix),
            ).fetchall()
            for mailbox_id, name, uidvalidity, special_use, objectid in rows:
                target = new + name[len(old):]
                if self._row(db, target) is not None:
                    raise MailboxExists(f"Mailbox {target} already exists")
                db.execute("UPDATE mailboxes SET name = ? WHERE id = ?", (target, mailbox_id))
                renamed.append((mailbox_id, target, uidvalidity, special_use, objectid))
            made = [superior for superior in names.superiors(new) if self._row(db, superior) is None]
            quota.rename_roots(db, old, new)
            quota.check_moved(db, [(name, new + name[len(old):]) for _, name, *_ in rows], roots_before, old, new)
            quota.check_new_mailboxes(db, made)  # before any folder is made for them
            for superior in made:
                self._make(db, superior, None)
            self._prune_empty_nodes(db, old)
        for mailbox_id, target, uidvalidity, special_use, objectid in renamed:
            self._write_header(mailbox_id, target, uidvalidity, special_use, objectid)

    def _rename_inbox(self, new: str) -> None:
        """RFC 3501 6.3.5: INBOX's messages move to ``new``; INBOX stays, empty."""
        self.create(new)
        inbox, target = self.open(names.INBOX), self.open(new)
        uids = [record.uid for record in inbox.messages()]
        inbox.move(uids, target)

    def exists(self, name: str) -> bool:
        try:
            name = names.check(name)
        except InvalidName:
            return False
        return self._row(self.index.db, name) is not None

    def list(self, pattern: str) -> list[MailboxListing]:
        rows = self.index.db.execute("SELECT name, selectable, special_use FROM mailboxes").fetchall()
        return listings(rows, pattern, set(self.subscriptions()))

    def open(self, name: str) -> MaildirMailbox:
        name = names.check(name)
        row = self._row(self.index.db, name)
        if row is None:
            raise MailboxNotFound(f"Mailbox {name} does not exist")
        if not row[1]:
            raise NotSelectable(f"Mailbox {name} is not selectable")
        return MaildirMailbox(self, row[0], name, row[2], row[4])

    def status(self, name: str) -> MailboxStatus:
        return self.open(name).status()

    def statuses(self, wanted: Iterable[str], deleted: bool = False) -> dict[str, MailboxStatus]:
        """The status of each selectable mailbox of ``wanted``, in one read of the index.

        For LIST-STATUS (RFC 5819): one query per 500 names, whatever their
        number; names that are no mailbox are left out. ``deleted`` adds the
        count of \\Deleted messages (a scan of each mailbox's rows in the index).
        """
        wanted = list(dict.fromkeys(wanted))
        deleted_count = "(SELECT count(*) FROM messages WHERE mailbox_id = m.id AND flags & 8)" if deleted else "NULL"
        found: dict[str, MailboxStatus] = {}
        with self.index.read() as db:
            for start in range(0, len(wanted), _CHUNK):
                batch = wanted[start:start + _CHUNK]
                rows = db.execute(
                    "SELECT m.name, m.messages, (SELECT count(*) FROM messages WHERE mailbox_id = m.id"
                    " AND uid > m.recent_uid), m.uidnext, m.uidvalidity, m.unseen, m.highestmodseq, m.size,"
                    f" m.objectid, {deleted_count} FROM mailboxes AS m"
                    f" WHERE m.selectable AND m.name IN ({','.join('?' * len(batch))})", batch,
                ).fetchall()
                found.update((row[0], MailboxStatus(*row[1:])) for row in rows)
        return found

    def subscribe(self, name: str) -> None:
        name = names.check(name)
        with self.index.write() as db:
            db.execute("INSERT OR IGNORE INTO subscriptions (name) VALUES (?)", (name,))

    def unsubscribe(self, name: str) -> None:
        name = names.check(name)
        with self.index.write() as db:
            db.execute("DELETE FROM subscriptions WHERE name = ?", (name,))

    def subscriptions(self) -> list[str]:
        return [row[0] for row in self.index.db.execute("SELECT name FROM subscriptions ORDER BY name")]

    def special_use(self, name: str) -> str | None:
        row = self._row(self.index.db, names.check(name))
        return row[3] if row else None

    # -- ACLs (IMailboxAccess) -----------------------------------------------------

    def _mailbox_id(self, db: sqlite3.Connection, name: str) -> int:
        row = self._row(db, names.check(name))
        if row is None:
            raise MailboxNotFound(f"Mailbox {name} does not exist")
        return row[0]

    def acl(self, name: str) -> dict[str, str] | None:
        """The ACL of ``name`` as {identifier: rights}, or None if it was never set."""
        db = self.index.db
        row = db.execute("SELECT entries FROM acls WHERE mailbox_id = ?", (self._mailbox_id(db, name),)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_acl(self, name: str, entries: dict[str, str] | None) -> None:
        """Replace the ACL of ``name`` (None: back to the default)."""
        with self.index.write() as db:
            mailbox_id = self._mailbox_id(db, name)
            if entries is None:
                db.execute("DELETE FROM acls WHERE mailbox_id = ?", (mailbox_id,))
            else:
                db.execute("INSERT OR REPLACE INTO acls (mailbox_id, entries) VALUES (?, ?)",
                           (mailbox_id, json.dumps(entries, sort_keys=True)))

    def acls(self) -> dict[str, dict[str, str] | None]:
        """Every mailbox name (\\Noselect nodes too) with its ACL or None, in one read."""
        rows = self.index.db.execute(
            "SELECT m.name, a.entries FROM mailboxes m LEFT JOIN acls a ON a.mailbox_id = m.id"
        ).fetchall()
        return {name: None if entries is None else json.loads(entries) for name, entries in rows}

    # -- quota (IMailboxAccess) ------------------------------------------------------

    def quota_limits(self) -> dict[str, dict[str, int]]:
        """Every quota root of this tree ('' is the whole tree) with its limits."""
        return quota.limits(self.index.db)

    def set_quota_limits(self, root: str, limits: dict[str, int]) -> None:
        """Replace the limits of ``root`` ('' or a mailbox name); {} removes the root."""
        if root:
            root = names.check(root)
        for resource, value in limits.items():
            if resource not in quota.RESOURCES or value < 0:
                raise ValueError(f"bad quota limit {resource}={value}")
        with self.index.write() as db:
            if root and self._row(db, root) is None:
                raise MailboxNotFound(f"Mailbox {root} does not exist")
            quota.set_limits(db, root, limits)

    def quota_usage(self, root: str) -> quota.Usage:
        """What ``root`` holds now, from the index's counters."""
        with self.index.read() as db:
            return quota.usage(db, root)

    def quota_root_of(self, name: str) -> str | None:
        """The root ``name`` counts towards, or None."""
        return quota.root_of(names.check(name), self.quota_limits())

    # -- private \Seen on other trees' mailboxes --------------------------------------

    def private_seen(self, mailbox: MaildirMailbox) -> frozenset[int]:
        """The UIDs of ``mailbox`` (another tree's) this user has seen."""
        rows = self.index.db.execute(
            "SELECT uid FROM private_seen WHERE owner = ? AND mailbox_id = ? AND uidvalidity = ?",
            (mailbox.tree.user, mailbox.id, mailbox.uid_validity),
        ).fetchall()
        return frozenset(row[0] for row in rows)

    def set_private_seen(self, mailbox: MaildirMailbox, seen: Iterable[int] = (), unseen: Iterable[int] = ()) -> None:
        """Mark UIDs of ``mailbox`` seen or unseen for this user alone."""
        key = (mailbox.tree.user, mailbox.id)
        with self.index.write() as db:
            db.execute("DELETE FROM private_seen WHERE owner = ? AND mailbox_id = ? AND uidvalidity != ?",
                       (*key, mailbox.uid_validity))
            db.executemany("INSERT OR IGNORE INTO private_seen (owner, mailbox_id, uidvalidity, uid)"
                           " VALUES (?, ?, ?, ?)", [(*key, mailbox.uid_validity, uid) for uid in seen])
            db.executemany("DELETE FROM private_seen WHERE owner = ? AND mailbox_id = ? AND uid = ?",
                           [(*key, uid) for uid in unseen])


@implementer(IMailboxList)
class EmptyMailboxList:
    """The tree of a user who has none: no mailboxes, and nothing can be made in it.

    What ``store.mailboxes`` gives for a name with no account (or one
    deleted), so that naming ``Other Users/NAME/...`` answers as for a user
    who shares nothing, and creates nothing on disk.
    """

    separator = names.SEPARATOR

    def __init__(self, user: str):
        self.user = user

    def _missing(self, name: str):
        raise MailboxNotFound(f"Mailbox {name} does not exist")

    def _refuse(self, *args, **kwargs):
        raise UnknownUser(f"No user {self.user}")

    create = subscribe = unsubscribe = set_private_seen = _refuse

    def exists(self, name: str) -> bool:
        return False

    def list(self, pattern: str) -> list[MailboxListing]:
        return []

    def subscriptions(self) -> list[str]:
        return []

    def acls(self) -> dict[str, dict[str, str] | None]:
        return {}

    def quota_limits(self) -> dict[str, dict[str, int]]:
        return {}

    def private_seen(self, mailbox) -> frozenset[int]:
        return frozenset()

    def open(self, name: str):
        self._missing(name)

    def status(self, name: str) -> MailboxStatus:
        self._missing(name)

    def statuses(self, wanted: Iterable[str], deleted: bool = False) -> dict[str, MailboxStatus]:
        return {}

    def delete(self, name: str) -> None:
        self._missing(name)

    def rename(self, old: str, new: str) -> None:
        self._missing(old)

    def special_use(self, name: str) -> str | None:
        return None

    def acl(self, name: str) -> dict[str, str] | None:
        self._missing(name)

    def set_acl(self, name: str, entries: dict[str, str] | None) -> None:
        self._missing(name)

    def set_quota_limits(self, root: str, limits: dict[str, int]) -> None:
        self._refuse()

    def quota_usage(self, root: str):
        self._missing(root)

    def quota_root_of(self, name: str) -> str | None:
        self._missing(name)


def _sort_key(name: str) -> tuple[int, str]:
    return (0 if name == names.INBOX or name.startswith("INBOX/") else 1, name)


def listings(rows: Iterable[tuple], pattern: str, subscribed: set[str]) -> list[MailboxListing]:
    """The listing of every ``(name, selectable, special use)`` of a tree that matches ``pattern``
    (INBOX and its inferiors first, then by name)."""
    matcher = names.pattern_regex(pattern)
    rows = list(rows)
    parents = {names.parent(row[0]) for row in rows}
    found = []
    for name, selectable, special_use in sorted(rows, key=lambda row: _sort_key(row[0])):
        if not matcher.match(name):
            continue
        attributes = {MailboxAttribute.HAS_CHILDREN if name in parents else MailboxAttribute.HAS_NO_CHILDREN}
        if not selectable:
            attributes.add(MailboxAttribute.NOSELECT)
        if name in subscribed:
            attributes.add(MailboxAttribute.SUBSCRIBED)
        found.append(MailboxListing(name, frozenset(attributes), special_use))
    return found


@implementer(IMailbox)
class MaildirMailbox:
    """One mailbox: its folder of message files and its rows in the index."""

    def __init__(self, tree: MaildirMailboxList, mailbox_id: int, name: str, uid_validity: int,
                 object_id: str | None = None):
        self.tree = tree
        self.store = tree.store
        self.index = tree.index
        self.id = mailbox_id
        self.name = name
        self.uid_validity = uid_validity
        self.object_id = object_id  # MAILBOXID (RFC 8474)
        self.folder = tree._folder(mailbox_id)

    # -- reading -------------------------------------------------------------

    def acl(self) -> dict[str, str] | None:
        """This mailbox's ACL ({identifier: rights}), or None if never set; follows renames."""
        self._counts(self.index.db)
        row = self.index.db.execute("SELECT entries FROM acls WHERE mailbox_id = ?", (self.id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def _counts(self, db: sqlite3.Connection) -> tuple:
        row = db.execute(
            "SELECT uidnext, highestmodseq, recent_uid, messages, unseen, size, uidvalidity, selectable"
            " FROM mailboxes WHERE id = ?",
            (self.id,),
        ).fetchone()
        if row is None or not row[7] or row[6] != self.uid_validity:
            raise MailboxNotFound(f"Mailbox {self.name} no longer exists")
        return row

    def status(self) -> MailboxStatus:
        with self.index.read() as db:
            uidnext, highestmodseq, recent_uid, messages, unseen, size, uidvalidity, _ = self._counts(db)
            (recent,) = db.execute(
                "SELECT count(*) FROM messages WHERE mailbox_id = ? AND uid > ?", (self.id, recent_uid)
            ).fetchone()
        return MailboxStatus(
            messages=messages,
            recent=recent,
            uid_next=uidnext,
            uid_validity=uidvalidity,
            unseen=unseen,
            highest_modseq=highestmodseq,
            size=size,
        )

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """The index, in one read snapshot, once this handle's mailbox is known to be there.

        A mailbox deleted and created again may keep its id; its new UIDs
        must not be read through a handle holding the old UIDVALIDITY.
        """
        db = self.index.db
        if db.in_transaction:
            self._counts(db)
            yield db
        else:
            with self.index.read() as db:
                self._counts(db)
                yield db

    def messages(self) -> list[MessageRecord]:
        with self._snapshot() as db:
            rows = db.execute(
                f"SELECT {_RECORD_COLUMNS} FROM messages WHERE mailbox_id = ? ORDER BY uid", (self.id,)
            ).fetchall()
        return [_record(row) for row in rows]

    def summary(self) -> MailboxSummary:
        with self._snapshot() as db:
            rows = db.execute(
                "SELECT uid, modseq FROM messages WHERE mailbox_id = ? ORDER BY uid", (self.id,)
            ).fetchall()
            keywords = db.execute(
                "SELECT DISTINCT keywords FROM messages WHERE mailbox_id = ? AND keywords != ''", (self.id,)
            ).fetchall()
            (first_unseen,) = db.execute(
                "SELECT min(uid) FROM messages WHERE mailbox_id = ? AND flags & ? = 0", (self.id, int(Flag.SEEN))
            ).fetchone()
        uids, modseqs = (list(column) for column in zip(*rows)) if rows else ([], [])
        in_use = frozenset(keyword for (text,) in keywords for keyword in text.split())
        return MailboxSummary(uids, modseqs, in_use, first_unseen)

    def record(self, uid: int) -> MessageRecord:
        with self._snapshot() as db:
            row = db.execute(
                f"SELECT {_RECORD_COLUMNS} FROM messages WHERE mailbox_id = ? AND uid = ?", (self.id, uid)
            ).fetchone()
        if row is None:
            raise NoSuchMessage(f"No message with UID {uid}")
        return _record(row)

    def records(self, uids: Iterable[int]) -> list[MessageRecord]:
        """The records of those ``uids`` still present, ascending."""
        with self._snapshot() as db:
            found = _select_by_uid(db, f"SELECT {_RECORD_COLUMNS} FROM messages WHERE mailbox_id = ? AND",
                                   self.id, uids)
        return sorted((_record(row) for row in found), key=lambda record: record.uid)

    def path(self, record: MessageRecord) -> Path:
        return self.folder / message_file_name(record.uid, record.guid)

    def open_file(self, uid: int):
        return open(self.path(self.record(uid)), "rb")

    def read(self, uid: int, start: int = 0, end: int | None = None) -> bytes:
        with self.open_file(uid) as source:
            if start:
                source.seek(start)
            return source.read() if end is None else source.read(max(0, end - start))

    def mime_caches(self, uids: Iterable[int]) -> dict[int, bytes]:
        """The cached parse results of many messages in one read (FETCH, SEARCH)."""
        with self._snapshot() as db:
            return dict(_select_by_uid(db, "SELECT uid, cache FROM mime WHERE mailbox_id = ? AND", self.id, uids))

    def cache_may_contain(self, all_of: list[bytes], any_of: list[bytes] = ()) -> set[int]:
        """UIDs whose MIME cache holds every one of ``all_of`` (ASCII, any case) or any of
        ``any_of`` (as given), or that have no cache.

        A prefilter run inside SQLite: SEARCH then checks only these messages.
        ``instr`` works on the whole blob (LIKE would stop at its first NUL).
        Only the first :data:`_MAX_PREFILTER_WORDS` distinct words of ``all_of``
        are tested (fewer words give more candidates, never fewer): a SEARCH of
        thousands of SUBJECT keys would otherwise pass SQLite's expression depth limit.
        """
        all_of = list(dict.fromkeys(word.lower() for word in all_of))[:_MAX_PREFILTER_WORDS]
        every = " AND ".join("instr(lower(c.cache), ?) > 0" for _ in all_of) or "1"
        some = "".join(" OR instr(c.cache, ?) > 0" for _ in any_of)
        with self._snapshot() as db:
            rows = db.execute(
                "SELECT m.uid FROM messages AS m LEFT JOIN mime AS c ON c.mailbox_id = m.mailbox_id"
                f" AND c.uid = m.uid WHERE m.mailbox_id = ? AND (c.cache IS NULL OR ({every}){some})",
                (self.id, *(word.lower().decode("ascii") for word in all_of), *any_of),
            ).fetchall()
        return {row[0] for row in rows}

    def sort_rows(self, uids: Iterable[int], columns: Sequence[str]) -> list[tuple]:
        """``(uid, *values of columns)`` for those ``uids`` still present, ascending UID.

        ``columns`` are names from :data:`SORT_ROW_COLUMNS`: the SORT and THREAD
        keys of :class:`SortData`, ``internal_date``, ``size``, and ``date``
        (``sent``, or the internal date when the message has none).  A message
        without keys in the index (delivered before they existed, or with their
        rules changed since) gets them now, from its MIME cache (parsed from the
        file once if it has none either), and they are kept.
        """
        uids = list(uids)
        select = ", ".join(SORT_ROW_COLUMNS[column] for column in columns)
        join = "FROM messages AS m {} JOIN sortdata AS s ON s.mailbox_id = m.mailbox_id AND s.uid = m.uid"
        with self._snapshot() as db:
            missing = _select_by_uid(db, f"SELECT m.uid {join.format('LEFT')} WHERE s.uid IS NULL AND m.mailbox_id = ? AND",
                                     self.id, uids, column="m.uid")
        if missing:
            self._make_sort_data([uid for (uid,) in missing])
        with self._snapshot() as db:
            rows = _select_by_uid(db, f"SELECT m.uid, {select} {join.format('')} WHERE m.mailbox_id = ? AND",
                                  self.id, uids, column="m.uid")
        rows.sort()
        return references_split(rows, columns)

    def _make_sort_data(self, uids: list[int]) -> None:
        """Keys from the MIME cache for messages without (the empty keys if it cannot say)."""
        keyer = self.store.sort_keyer
        caches = self.mime_caches(uids)
        rows = []
        for record in self.records(uids):
            cache = caches.get(record.uid)
            if cache is None:
                try:
                    cache = self.mime_cache(record.uid)
                except (NoSuchMessage, OSError):
                    continue  # expunged meanwhile
            data = keyer(cache) if keyer is not None and cache is not None else None
            rows.append((self.id, record.uid, *_sort_row(NO_SORT_DATA if data is None else data)))
        if rows:
            with self.index.write(durable=False) as db:  # made again if a crash loses them
                db.executemany(
                    f"INSERT OR IGNORE INTO sortdata (mailbox_id, uid, {_SORT_COLUMNS})"
                    " SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS"
                    " (SELECT 1 FROM messages WHERE mailbox_id = ?1 AND uid = ?2)", rows)

    def mime_cache(self, uid: int) -> bytes | None:
        with self._snapshot() as db:
            row = db.execute("SELECT cache FROM mime WHERE mailbox_id = ? AND uid = ?", (self.id, uid)).fetchone()
        if row is not None:
            return row[0]
        analyser = self.store.analyser
        if analyser is None:
            return None
        record = self.record(uid)
        cache = _analyse_file(self.path(record), record.size, analyser)
        if cache is not None:  # an index from before the MIME layer: fill the slot now
            with self.index.write() as db:
                db.execute("INSERT OR REPLACE INTO mime (mailbox_id, uid, cache) VALUES (?, ?, ?)",
                           (self.id, uid, cache))
        return cache

    def previews(self, uids: Iterable[int]) -> dict[int, str]:
        """UID -> RFC 8970 preview, for those of ``uids`` present that have a MIME cache.

        Made at delivery with the cache; a message stored before previews
        were kept gets its preview made now, from a map of its file (only
        the pages of its first text part are read), and kept, so no message
        is read for a preview twice.
        """
        uids = list(uids)
        with self._snapshot() as db:
            rows = _select_by_uid(db, "SELECT uid, preview FROM mime WHERE mailbox_id = ? AND", self.id, uids)
        found = {uid: text for uid, text in rows if text is not None}
        previewer = self.store.previewer
        missing = [uid for uid in uids if uid not in found]
        if not missing or previewer is None:
            return found
        made: dict[int, str] = {}
        for record in self.records(missing):
            cache = self.mime_cache(record.uid)
            text = None if cache is None else _preview_file(self.path(record), cache, previewer)
            if text is not None:
                made[record.uid] = text
        if made:
            with self.index.write() as db:
                db.executemany("UPDATE mime SET preview = ? WHERE mailbox_id = ? AND uid = ?",
                               [(text, self.id, uid) for uid, text in made.items()])
        return found | made

    def _stored_previews(self, uids: Iterable[int]) -> dict[int, str]:
        with self._snapshot() as db:
            rows = _select_by_uid(db, "SELECT uid, preview FROM mime WHERE mailbox_id = ? AND", self.id, uids)
        return {uid: text for uid, text in rows if text is not None}

    # -- appending -----------------------------------------------------------

    def append(self, message, flags: Flag | None = None, keywords: Iterable[str] = (),
               internal_date: float | None = None) -> int:
        (uid,) = self.append_many([(message, flags, keywords, internal_date)])
        return uid

    def append_many(self, items: list) -> list[int]:
        staged_here: list[StagedMessage] = []
        entries = []
        try:
            for message, flags, keywords, internal_date in items:
                if isinstance(message, (bytes, bytearray, memoryview)):
                    staged = self.store.stage()
                    staged.write(bytes(message))
                    staged.finish()
                    staged_here.append(staged)
                    message = staged
                else:  # its bytes must be durable and final before a mailbox links to them
                    message.finish()
                entries.append(
                    (message.path, message.size, flags or NO_FLAGS, _keywords_text(keywords),
                     time.time() if internal_date is None else internal_date, message.mime_cache(),
                     None, message.preview())
                )
            return self._insert(entries)
        finally:
            for staged in staged_here:
                staged.discard()

    def _insert(self, entries: list[tuple], credit: tuple[int, list[int]] | None = None) -> list[int]:
        """Link files in and index them in one durable transaction; their UIDs.

        Each entry is ``(file, size, flags, keywords, internal date, MIME
        cache, EMAILID, preview)``: the EMAILID is a copy's original's (None
        for a new message, which is its own). Every message gets now as its
        save date (RFC 8514: a copy's is when it was copied). The quota
        limits are checked in that transaction (OverQuota), with ``credit``
        naming messages of this index a MOVE removes next.
        """
        if not entries:  # nothing changes, so neither does HIGHESTMODSEQ
            return []
        keyer = self.store.sort_keyer
        # No cache: the keys are made when first needed; a cache the keyer cannot read: empty keys.
        sort_rows = [None if keyer is None or entry[5] is None else keyer(entry[5]) or NO_SORT_DATA
                     for entry in entries]
        linked: list[Path] = []
        try:
            with self.index.write() as db:
                uidnext, highestmodseq, *_ = self._counts(db)
                quota.check_insert(db, self.id, [entry[1] for entry in entries], credit)
                modseq = highestmodseq + 1
                saved = time.time()
                uids = []
                for offset, (source, size, flags, keywords, date, cache, email_id, preview) in enumerate(entries):
                    uid, guid = uidnext + offset, new_guid()
                    dest = self.folder / message_file_name(uid, guid)
                    link_or_copy(source, dest)
                    linked.append(dest)
                    db.execute(
                        "INSERT INTO messages (mailbox_id, uid, guid, size, internaldate, flags, keywords, modseq,"
                        " savedate, emailid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (self.id, uid, guid, size, date, int(flags), keywords, modseq, saved, email_id),
                    )
                    if cache is not None:
                        db.execute("INSERT INTO mime (mailbox_id, uid, cache, preview) VALUES (?, ?, ?, ?)",
                                   (self.id, uid, cache, preview))
                    if sort_rows[offset] is not None:
                        db.execute(f"INSERT INTO sortdata (mailbox_id, uid, {_SORT_COLUMNS})"
                                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                   (self.id, uid, *_sort_row(sort_rows[offset])))
                    uids.append(uid)
                db.execute(
                    "UPDATE mailboxes SET uidnext = ?, highestmodseq = ? WHERE id = ?",
                    (uidnext + len(entries), modseq, self.id),
                )
                self.index.sync_folder(self.folder)
        except BaseException:
            _unlink_all(linked)
            raise
        self.index.on_rollback(lambda: _unlink_all(linked))
        self._changed()
        return uids

    def _changed(self) -> None:
        """Tell this process's watchers of the change, once it is committed."""
        self.index.after_commit(lambda: self.store.notify(self.tree.user, self.id))

    # -- changing ------------------------------------------------------------

    def set_flags(self, uids: Iterable[int], change: FlagChange, flags: Flag,
                  keywords: Iterable[str] = (), unchanged_since: int | None = None):
        changed: list[MessageRecord] = []
        with self.index.write() as db:
            _, highestmodseq, *_ = self._counts(db)
            modseq = highestmodseq + 1
            changing, refused = flag_changes(self.records(uids), change, flags, frozenset(keywords), unchanged_since)
            for record, new_flags, text in changing:
                db.execute(
                    "UPDATE messages SET flags = ?, keywords = ?, modseq = ? WHERE mailbox_id = ? AND uid = ?",
                    (int(new_flags), text, modseq, self.id, record.uid),
                )
                changed.append(changed_record(record, new_flags, text, modseq))
            if changed:
                db.execute("UPDATE mailboxes SET highestmodseq = ? WHERE id = ?", (modseq, self.id))
        if changed:
            self._changed()
        return changed, refused

    def copy(self, uids: Iterable[int], target: MaildirMailbox,
             transform: FlagTransform | None = None) -> list[tuple[int, int]]:
        """Copy keeping dates, and flags (or what ``transform`` makes of each record)."""
        return self._copy(uids, target, transform, moving=False)

    def _copy(self, uids: Iterable[int], target: MaildirMailbox, transform: FlagTransform | None,
              moving: bool) -> list[tuple[int, int]]:
        records = self.records(uids)
        if not records:
            return []
        entries = []
        previews = self._stored_previews(record.uid for record in records)
        for record in records:
            flags, keywords = (record.flags, record.keywords) if transform is None else transform(record)
            entries.append((self.path(record), record.size, flags, _keywords_text(keywords),
                            record.internal_date, self.mime_cache(record.uid), record.email_id,
                            previews.get(record.uid)))
        credit = (self.id, [record.uid for record in records]) if moving and target.index is self.index else None
        new_uids = target._insert(entries, credit)
        return [(record.uid, uid) for record, uid in zip(records, new_uids)]

    def move(self, uids: Iterable[int], target: MaildirMailbox,
             transform: FlagTransform | None = None) -> list[tuple[int, int]]:
        pairs = self._copy(uids, target, transform, moving=True)
        self._remove([old for old, _ in pairs])
        return pairs

    def expunge(self, uids: Iterable[int] | None = None) -> list[int]:
        return self._remove(uids, deleted_only=True)

    def remove(self, uids: Iterable[int]) -> list[int]:
        """Remove ``uids`` whatever their flags, in one transaction (``cyrusmail-admin expire``); their UIDs."""
        return self._remove(uids)

    # -- the same, off the reactor (see MaildirStore.run) -------------------------

    def later(self, work: Callable, *args, group: bool = False, messages: Iterable = ()) -> defer.Deferred:
        """``work(*args)`` in the queue of this mailbox's index (grouped if ``group``)."""
        return self.store.run(self.tree.user, work, *args, group=group, messages=messages)

    def append_many_async(self, items: list) -> defer.Deferred:
        """:meth:`append_many`, committed with the appends queued beside it; a Deferred of the UIDs."""
        return self.later(self.append_many, items, group=True, messages=[item[0] for item in items])

    def append_async(self, message, flags: Flag | None = None, keywords: Iterable[str] = (),
                     internal_date: float | None = None) -> defer.Deferred:
        """:meth:`append` off the reactor; a Deferred of the UID, fired once it is durable."""
        deferred = self.append_many_async([(message, flags, keywords, internal_date)])
        return deferred.addCallback(lambda uids: uids[0])

    def set_flags_async(self, uids: Iterable[int], change: FlagChange, flags: Flag, keywords: Iterable[str] = (),
                        unchanged_since: int | None = None) -> defer.Deferred:
        return self.later(self.set_flags, list(uids), change, flags, frozenset(keywords), unchanged_since,
                          group=True)

    def copy_async(self, uids: Iterable[int], target: MaildirMailbox,
                   transform: FlagTransform | None = None) -> defer.Deferred:
        return target.later(self.copy, list(uids), target, transform, group=target.index is self.index)

    def move_async(self, uids: Iterable[int], target: MaildirMailbox,
                   transform: FlagTransform | None = None) -> defer.Deferred:
        return self.later(self.move, list(uids), target, transform, group=target.index is self.index)

    def expunge_async(self, uids: Iterable[int] | None = None) -> defer.Deferred:
        return self.later(self.expunge, None if uids is None else list(uids), group=True)

    def _remove(self, uids: Iterable[int] | None, deleted_only: bool = False) -> list[int]:
        """Remove ``uids`` (every \\Deleted one if None) in one transaction; their UIDs.

        With ``deleted_only`` the \\Deleted test is made inside the transaction,
        so a flag cleared by another session just before is honoured.
        """
        uids = None if uids is None else list(uids)
        if uids is not None and not uids:
            return []
        removed: list[MessageRecord] = []
        with self.index.write() as db:
            _, highestmodseq, *_ = self._counts(db)
            modseq = highestmodseq + 1
            if uids is None:
                candidates = [_record(row) for row in db.execute(
                    f"SELECT {_RECORD_COLUMNS} FROM messages WHERE mailbox_id = ? AND flags & ? ORDER BY uid",
                    (self.id, int(Flag.DELETED)),
                )]
            else:
                candidates = self.records(uids)
            for record in candidates:
                if deleted_only and not record.flags & Flag.DELETED:
                    continue
                db.execute("DELETE FROM messages WHERE mailbox_id = ? AND uid = ?", (self.id, record.uid))
                db.execute("DELETE FROM mime WHERE mailbox_id = ? AND uid = ?", (self.id, record.uid))
                db.execute("INSERT OR REPLACE INTO expunged (mailbox_id, uid, modseq) VALUES (?, ?, ?)",
                           (self.id, record.uid, modseq))
                removed.append(record)
            if removed:
                db.execute("UPDATE mailboxes SET highestmodseq = ? WHERE id = ?", (modseq, self.id))
                self._bound_history(db, len(removed))
        if removed:
            self.index.after_commit(lambda: _unlink_all(self.path(record) for record in removed))
            self._changed()
        return [record.uid for record in removed]

    def touch(self, uids: Iterable[int]) -> list[MessageRecord]:
        """Give these messages a new modseq without changing them (a reader's
        own \\Seen on a shared folder changed: see GuardedMailbox); their records."""
        uids = list(uids)
        if not uids:
            return []
        with self.index.write() as db:
            _, highestmodseq, *_ = self._counts(db)
            modseq = highestmodseq + 1
            for batch in _chunks(uids):
                db.execute(f"UPDATE messages SET modseq = ? WHERE mailbox_id = ? AND uid IN ({','.join('?' * len(batch))})",
                           (modseq, self.id, *batch))
            db.execute("UPDATE mailboxes SET highestmodseq = ? WHERE id = ?", (modseq, self.id))
            records = self.records(uids)
        if records:
            self._changed()
        return records

    # -- the expunge history (QRESYNC) ------------------------------------------

    def _bound_history(self, db: sqlite3.Connection, added: int) -> None:
        """Count ``added`` new rows of ``expunged``; past the store's
        ``expunged_history`` drop the oldest whole modseqs and raise the floor."""
        row = db.execute("SELECT floor, rows FROM expunged_floor WHERE mailbox_id = ?", (self.id,)).fetchone()
        if row is None:  # first expunge since this table came (or an index from before it): count once
            (kept,) = db.execute("SELECT count(*) FROM expunged WHERE mailbox_id = ?", (self.id,)).fetchone()
            floor = 0
        else:
            floor, kept = row[0], row[1] + added
        excess = kept - self.store.expunged_history
        if excess > 0:
            (cut,) = db.execute(
                "SELECT modseq FROM expunged WHERE mailbox_id = ? ORDER BY modseq LIMIT 1 OFFSET ?",
                (self.id, excess - 1),
            ).fetchone()
            kept -= db.execute("DELETE FROM expunged WHERE mailbox_id = ? AND modseq <= ?", (self.id, cut)).rowcount
            floor = max(floor, cut)
        db.execute("INSERT OR REPLACE INTO expunged_floor (mailbox_id, floor, rows) VALUES (?, ?, ?)",
                   (self.id, floor, kept))

    def _expunged_after(self, db: sqlite3.Connection, modseq: int) -> list[int] | None:
        row = db.execute("SELECT floor FROM expunged_floor WHERE mailbox_id = ?", (self.id,)).fetchone()
        if row is not None and modseq < row[0]:
            return None
        return [uid for (uid,) in db.execute(
            "SELECT uid FROM expunged WHERE mailbox_id = ? AND modseq > ? ORDER BY uid", (self.id, modseq))]

    def expunged_since(self, modseq: int) -> list[int] | None:
        """The UIDs expunged after ``modseq``, ascending; None when the history
        no longer reaches back that far (more than ``expunged_history`` were expunged since)."""
        with self._snapshot() as db:
            return self._expunged_after(db, modseq)

    # -- watching ------------------------------------------------------------

    def generation(self) -> tuple[int, int]:
        """The index's generation (:meth:`UserIndex.generation`): the whole
        user's index, so a change to any of their mailboxes moves it."""
        return self.index.generation()

    def changes_since(self, modseq: int) -> Changes:
        with self.index.read() as db:
            _, highestmodseq, *_ = self._counts(db)
            changed = db.execute(
                f"SELECT {_RECORD_COLUMNS} FROM messages WHERE mailbox_id = ? AND modseq > ? ORDER BY uid",
                (self.id, modseq),
            ).fetchall()
            expunged = self._expunged_after(db, modseq)
        complete = expunged is not None
        return Changes([_record(row) for row in changed], expunged or [], highestmodseq, complete)

    def claim_recent(self) -> frozenset[int]:
        """Claim the messages no session has claimed yet.

        Called on the reactor thread as sessions learn of new messages, so it
        never waits for a writer: while one holds the index (a delivery
        being committed) it claims nothing, and a later call claims them.
        """
        try:
            with self.index.write(durable=False, wait=False) as db:
                uidnext, _, recent_uid, *_ = self._counts(db)
                rows = db.execute(
                    "SELECT uid FROM messages WHERE mailbox_id = ? AND uid > ?", (self.id, recent_uid)
                ).fetchall()
                if uidnext - 1 > recent_uid:
                    db.execute("UPDATE mailboxes SET recent_uid = ? WHERE id = ?", (uidnext - 1, self.id))
        except IndexBusy:
            return frozenset()
        return frozenset(row[0] for row in rows)

    def watch(self, listener: Callable[[], None]) -> None:
        self.store.watch(self.tree.user, self.id, listener)

    def unwatch(self, listener: Callable[[], None]) -> None:
        self.store.unwatch(self.tree.user, self.id, listener)
