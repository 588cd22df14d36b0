"""The store conformance suite bound to the PostgreSQL backend, on a throwaway server."""

from __future__ import annotations

import select
import threading
import time

from twisted.internet.task import Clock
from twisted.trial import unittest

from cyrusmail.store.records import Flag, FlagChange
from tests import postgres_support
from tests.store_conformance import USER, StoreConformanceMixin, message
from tests.test_store_maildir import _TempFolders, summary_analyser

SKIP = postgres_support.skip_reason()
if SKIP is None:
    import psycopg

    from cyrusmail.store.postgresql.store import RELISTEN_DELAY


class PostgresStoreTests(_TempFolders, StoreConformanceMixin, unittest.TestCase):
    """The conformance suite with no MIME analyser."""

    skip = SKIP

    def setUp(self):
        self.schemas: dict[str, str] = {}  # data folder -> the DSN of its own empty schema
        super().setUp()
        self.dsn = self.dsn_of(str(self.data))

    def dsn_of(self, path: str) -> str:
        """One database schema per data folder, as the embedded store has one index per folder."""
        if path not in self.schemas:
            self.schemas[path], schema = postgres_support.fresh_dsn()
            self.addCleanup(postgres_support.drop_schema, schema)
        return self.schemas[path]

    def make_store(self, path: str):
        from cyrusmail.store.postgresql import PostgresStore

        return PostgresStore(self.dsn_of(path), path, analyser=self.analyser)

    def stored_bodies(self) -> dict:
        """Message bytes live in the blobs table, each under the SHA-256 of its content."""
        rows = self.store.db.execute("SELECT sha, data FROM blobs").fetchall()
        return {sha: (sha, 0, bytes(data)) for sha, data in rows}

    def subprocess_store_code(self) -> str:
        return f"from cyrusmail.store.postgresql import PostgresStore\nstore = PostgresStore({self.dsn!r}, DATA)"


class PostgresStoreWithAnalyserTests(PostgresStoreTests):
    """The conformance suite again, with a MIME analyser filling the cache slot."""

    analyser = staticmethod(summary_analyser)
    state_machine_examples = 10


class _TwoServers(_TempFolders):
    """Two store instances on one database, as two servers would have."""

    skip = SKIP

    def setUp(self):
        super().setUp()
        self.dsn, schema = postgres_support.fresh_dsn()
        self.addCleanup(postgres_support.drop_schema, schema)
        self.servers = [self.open_store() for _ in range(2)]
        self.servers[0].provision(USER, {})

    def open_store(self):
        from cyrusmail.store.postgresql import PostgresStore

        store = PostgresStore(self.dsn, self.mktemp(), analyser=None)
        self.addCleanup(store.close)
        return store

    def run_threads(self, work, count: int) -> list:
        """``work(n)`` on ``count`` threads at once; their results (a failure fails the test)."""
        results: list = [None] * count
        failures: list = []

        def run(n):
            try:
                results[n] = work(n)
            except Exception as error:  # noqa: BLE001 - reported below
                failures.append(error)

        threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)  # a hang check only
        self.assertEqual(failures, [])
        return results



class ConcurrentWritersTests(_TwoServers, unittest.TestCase):
    """Writers on several servers: UIDs and MODSEQs never repeat and never go backwards."""

    def test_appends_through_two_servers_get_distinct_ascending_uids_and_modseqs(self):
        per_thread = 15

        def deliver(n):
            inbox = self.servers[n % 2].mailboxes(USER).open("INBOX")
            return [inbox.append(message(n * 100 + i)) for i in range(per_thread)]

        results = self.run_threads(deliver, 4)
        uids = [uid for result in results for uid in result]
        self.assertEqual(sorted(uids), list(range(1, 4 * per_thread + 1)))
        for result in results:
            self.assertEqual(result, sorted(result))
        records = self.servers[1].mailboxes(USER).open("INBOX").messages()
        modseqs = [record.modseq for record in records]
        self.assertEqual(modseqs, sorted(set(modseqs)), "a later UID got an earlier or equal MODSEQ")
        status = self.servers[0].mailboxes(USER).status("INBOX")
        self.assertEqual((status.messages, status.uid_next, status.highest_modseq),
                         (len(uids), len(uids) + 1, modseqs[-1]))

    def test_flag_changes_and_appends_from_two_servers_never_reuse_a_modseq(self):
        inbox = self.servers[0].mailboxes(USER).open("INBOX")
        first = [inbox.append(message(n)) for n in range(5)]
        seen: list[tuple[int, int]] = []  # (modseq, uid) of every change made

        def work(n):
            mailbox = self.servers[n % 2].mailboxes(USER).open("INBOX")
            for i in range(10):
                if n % 2:
                    changed, _ = mailbox.set_flags(first, FlagChange.REPLACE, Flag(0), [f"k{n}x{i}"])
                    seen.extend((record.modseq, record.uid) for record in changed)
                else:
                    uid = mailbox.append(message(1000 * n + i))
                    seen.append((mailbox.record(uid).modseq, uid))

        self.run_threads(work, 4)
        by_modseq: dict[int, set[int]] = {}
        for modseq, uid in seen:
            by_modseq.setdefault(modseq, set()).add(uid)
        flag_changes = 2 * 10  # each set_flags changes all five messages under one modseq
        appends = 2 * 10
        self.assertEqual(len(by_modseq), flag_changes + appends, "two writers were given one MODSEQ")
        self.assertEqual(inbox.status().highest_modseq, max(by_modseq))


class _Reactor(Clock):
    """A clock that also holds readers, read by the test when their descriptor is readable."""

    def __init__(self):
        super().__init__()
        self.readers: set = set()

    def addReader(self, reader):
        self.readers.add(reader)

    def removeReader(self, reader):
        self.readers.discard(reader)


class ChangeNotificationTests(_TwoServers, unittest.TestCase):
    """LISTEN/NOTIFY: a watcher on one server hears a change made through another, at once."""

    def setUp(self):
        super().setUp()
        self.reactor = _Reactor()
        self.listener = self.servers[1].listen(self.reactor)
        self.inbox = self.servers[1].mailboxes(USER).open("INBOX")
        self.calls: list[int] = []
        self.inbox.watch(lambda: self.calls.append(1))

    def hear(self, count: int) -> None:
        """Read notifications as they arrive until the watcher was called ``count`` times."""
        deadline = time.monotonic() + 60  # a hang check only
        while len(self.calls) < count:
            self.assertIn(self.listener, self.reactor.readers)
            readable, _, _ = select.select([self.listener], [], [], max(0.0, deadline - time.monotonic()))
            self.assertTrue(readable, f"no notification came; the watcher was called {len(self.calls)} times")
            self.listener.doRead()

    def test_an_append_through_another_server_is_heard(self):
        self.servers[0].mailboxes(USER).open("INBOX").append(message(1))
        self.hear(1)
        self.assertEqual(self.calls, [1])

    def test_flag_changes_expunges_and_a_deleted_mailbox_are_heard(self):
        other = self.servers[0].mailboxes(USER)
        other.create("Work")
        work_calls: list[int] = []
        self.servers[1].mailboxes(USER).open("Work").watch(lambda: work_calls.append(1))
        uid = other.open("INBOX").append(message(1))
        other.open("INBOX").set_flags([uid], FlagChange.ADD, Flag.DELETED)
        other.open("INBOX").expunge()
        self.hear(3)
        other.delete("Work")
        self.calls, watched_inbox = work_calls, self.calls
        self.hear(1)
        self.assertEqual((len(watched_inbox), work_calls), (3, [1]))

    def test_a_servers_own_changes_are_told_once(self):
        self.inbox.append(message(1))  # told at once in this process: its own NOTIFY is not news
        self.assertEqual(self.calls, [1])
        self.servers[0].mailboxes(USER).open("INBOX").append(message(2))
        self.hear(2)  # the own NOTIFY came first on the connection, and was skipped
        self.assertEqual(self.calls, [1, 1])

    def test_a_lost_listening_connection_listens_again(self):
        with psycopg.connect(self.dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (self.listener.connection.info.backend_pid,))
        deadline = time.monotonic() + 60  # a hang check only
        while self.listener in self.reactor.readers:  # the server's goodbye, then the end of the connection
            readable, _, _ = select.select([self.listener], [], [], max(0.0, deadline - time.monotonic()))
            self.assertTrue(readable, "the listener never saw its connection end")
            self.listener.doRead()
        self.reactor.advance(RELISTEN_DELAY)
        self.assertIn(self.listener, self.reactor.readers)
        self.servers[0].mailboxes(USER).open("INBOX").append(message(1))
        self.hear(1)


class NulInHeadersTests(_TwoServers, unittest.TestCase):
    """A NUL in a header reaches the sort keys and the preview: PostgreSQL text cannot hold it."""

    def test_a_message_with_nul_in_its_subject_is_stored_sorted_and_previewed(self):
        from cyrusmail.store.postgresql import PostgresStore

        store = PostgresStore(self.dsn, self.mktemp())  # the real MIME layer: sort keys at delivery
        self.addCleanup(store.close)
        inbox = store.mailboxes(USER).open("INBOX")
        data = b"From: a\x00b@example.org\r\nSubject: he\x00llo\r\n\r\nbody\x00text\r\n"
        uid = inbox.append(data)
        self.assertEqual(inbox.read(uid), data)  # the bytes themselves are kept whole (bytea)
        self.assertEqual(inbox.sort_rows([uid], ["subject"]), [(uid, "HELLO")])
        self.assertIn(uid, inbox.previews([uid]))


class MaildropLockTests(_TwoServers, unittest.TestCase):
    """RFC 1939 section 8 across servers: one POP3 session per maildrop, whichever server it is on."""

    def test_a_maildrop_locked_through_one_server_is_refused_on_the_other(self):
        from cyrusmail.pop3.locks import MaildropLocks

        first, second = (MaildropLocks.for_store(store) for store in self.servers)
        held = first.acquire("alice")
        self.assertIsNotNone(held)
        self.assertIsNone(second.acquire("alice"))
        bob = second.acquire("bob")  # another maildrop is another lock
        self.assertIsNotNone(bob)
        held.release()
        again = second.acquire("alice")
        self.assertIsNotNone(again)
        self.assertIsNone(first.acquire("alice"))
        again.release()
        bob.release()

    def test_a_server_that_goes_away_releases_its_maildrop_locks(self):
        from cyrusmail.pop3.locks import MaildropLocks

        self.assertIsNotNone(MaildropLocks.for_store(self.servers[0]).acquire("alice"))
        locks = MaildropLocks.for_store(self.servers[1])
        self.assertIsNone(locks.acquire("alice"))
        self.servers[0].close()  # its connections end, as a killed process's do
        deadline = time.monotonic() + 60  # a hang check only: the server ends the backend when it notices
        lock = locks.acquire("alice")
        while lock is None and time.monotonic() < deadline:
            time.sleep(0.05)
            lock = locks.acquire("alice")
        self.assertIsNotNone(lock)
        lock.release()

    def test_another_database_schema_is_another_set_of_maildrops(self):
        from cyrusmail.pop3.locks import MaildropLocks
        from cyrusmail.store.postgresql import PostgresStore

        dsn, schema = postgres_support.fresh_dsn()
        self.addCleanup(postgres_support.drop_schema, schema)
        elsewhere = PostgresStore(dsn, self.mktemp(), analyser=None)
        self.addCleanup(elsewhere.close)
        self.assertIsNotNone(MaildropLocks.for_store(self.servers[0]).acquire("alice"))
        self.assertIsNotNone(MaildropLocks.for_store(elsewhere).acquire("alice"))


class SharedLoginFailuresTests(_TwoServers, unittest.TestCase):
    """The login throttles of two servers on one database count each other's failures per account."""

    def setUp(self):
        super().setUp()
        from cyrusmail.auth.throttle import LoginThrottle

        self.clock = Clock()  # one time for both servers, as their clocks would agree
        self.throttles = [LoginThrottle(self.clock, shared=store.login_failures()) for store in self.servers]

    def guess(self, n: int, address: str, right: bool = False) -> list:
        """An attempt for alice through server ``n``; the list gets True once its check has started."""
        from twisted.cred.error import UnauthorizedLogin
        from twisted.internet import defer

        started: list = []

        def verify():
            started.append(True)
            return defer.succeed("alice") if right else defer.fail(UnauthorizedLogin("wrong"))

        self.throttles[n].attempt(address, "alice", verify).addErrback(lambda failure: failure.trap(UnauthorizedLogin))
        return started

    def test_failures_through_one_server_delay_guesses_through_the_other(self):
        self.assertEqual(self.guess(0, "192.0.2.1"), [True])
        self.clock.advance(1)
        self.assertEqual(self.guess(0, "192.0.2.1"), [True])  # two failures now: 2 s until the next check
        elsewhere = self.guess(1, "198.51.100.7")  # another address, another server: the same account
        self.assertEqual(elsewhere, [])
        self.clock.advance(1.5)
        self.assertEqual(elsewhere, [])
        self.clock.advance(0.5)
        self.assertEqual(elsewhere, [True])
        (failures, updated), = self.servers[0].db.execute("SELECT failures, updated FROM login_failures").fetchall()
        self.assertEqual(updated, 3.0)
        self.assertAlmostEqual(failures, 3 - 3 / 60)  # as the throttle counts: one forgotten a minute

    def test_a_success_clears_the_shared_failures(self):
        self.guess(0, "192.0.2.1")
        self.clock.advance(1)
        self.assertEqual(self.guess(1, "192.0.2.1", right=True), [True])
        self.assertEqual(self.servers[0].db.execute("SELECT count(*) FROM login_failures").fetchone()[0], 0)
        self.assertEqual(self.guess(0, "198.51.100.7", right=True), [True])  # no delay left anywhere
