"""The store conformance suite bound to the PostgreSQL backend, on a throwaway server."""

from __future__ import annotations

import threading

from twisted.trial import unittest

from cyrusmail.store.records import Flag, FlagChange
from tests import postgres_support
from tests.store_conformance import USER, StoreConformanceMixin, message
from tests.test_store_maildir import _TempFolders, summary_analyser

SKIP = postgres_support.skip_reason()


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


class ConcurrentWritersTests(_TempFolders, unittest.TestCase):
    """Several store instances on one database stand for several servers: their
    UIDs and MODSEQs never repeat and never go backwards."""

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
