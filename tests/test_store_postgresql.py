"""The store conformance suite bound to the PostgreSQL backend, on a throwaway server."""

from __future__ import annotations

import atexit
import hashlib
import os
import secrets
import select
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial import unittest

from cyrusmail.store.records import Flag, FlagChange
from tests import postgres_support
from tests.store_conformance import USER, StoreConformanceMixin, files_under, message
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


def blobs_folder(data: str) -> str:
    """The body folder of a data folder's store (inside it: the suite checks that nothing is made
    outside); made first, as [store] blobs wants an existing folder."""
    folder = Path(data) / "blobs"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return str(folder)


class PostgresFolderBlobsStoreTests(PostgresStoreTests):
    """The conformance suite again, bodies in files of a folder ([store] blobs = /folder)."""

    def make_store(self, path: str):
        from cyrusmail.store.postgresql import PostgresStore

        return PostgresStore(self.dsn_of(path), path, analyser=self.analyser, blobs=blobs_folder(path))

    def stored_bodies(self) -> dict:
        return {path: seen for path, seen in files_under(Path(blobs_folder(str(self.data)))).items()
                if path.parent.name != "tmp"}

    def subprocess_store_code(self) -> str:
        return (f"from cyrusmail.store.postgresql import PostgresStore\n"
                f"store = PostgresStore({self.dsn!r}, DATA, blobs=DATA + '/blobs')")


_S3_SERVER: dict[str, str] = {}


def s3_server() -> str:
    """The endpoint of a local S3 server (moto's, on the loopback) for this test run; SkipTest without it."""
    from tests.test_twistd import free_ports, listening

    try:
        import boto3  # noqa: F401 - what the store needs
        import moto.server  # noqa: F401 - what serves the tests
    except ImportError:
        raise unittest.SkipTest("[store] blobs = s3://... tests need boto3 and moto[server]") from None
    if "url" not in _S3_SERVER:
        (port,) = free_ports(1)
        process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        atexit.register(process.kill)
        deadline = time.monotonic() + 60  # a hang check only
        while not listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise unittest.SkipTest("moto's S3 server did not start")
            time.sleep(0.1)
        _S3_SERVER["url"] = f"http://127.0.0.1:{port}"
    return _S3_SERVER["url"]


class _S3Bucket:
    """A fresh bucket on the local S3 server, boto3 pointed at it through its environment."""

    def make_bucket(self) -> str:
        url = s3_server()  # first: SkipTest without boto3 and moto
        import boto3

        saved = dict(os.environ)
        self.addCleanup(lambda: (os.environ.clear(), os.environ.update(saved)))
        os.environ.update(AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
                          AWS_DEFAULT_REGION="us-east-1")
        bucket = f"cm-{secrets.token_hex(6)}"
        self.s3 = boto3.client("s3")
        self.s3.create_bucket(Bucket=bucket)
        return bucket

    def objects(self, bucket: str) -> dict[str, bytes]:
        return {item["Key"]: self.s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                for item in self.s3.list_objects_v2(Bucket=bucket).get("Contents", ())}


class PostgresS3BlobsStoreTests(_S3Bucket, PostgresStoreTests):
    """The conformance suite again, bodies as objects of an S3 bucket ([store] blobs = s3://...)."""

    def setUp(self):
        self.bucket = self.make_bucket()
        super().setUp()

    def s3_setting(self, path: str) -> str:
        return f"s3://{self.bucket}/{hashlib.sha256(path.encode()).hexdigest()[:8]}"

    def make_store(self, path: str):
        from cyrusmail.store.postgresql import PostgresStore

        return PostgresStore(self.dsn_of(path), path, analyser=self.analyser, blobs=self.s3_setting(path))

    def stored_bodies(self) -> dict:
        return {key: (key, 0, data) for key, data in self.objects(self.bucket).items()}

    def subprocess_store_code(self) -> str:
        return (f"from cyrusmail.store.postgresql import PostgresStore\n"
                f"store = PostgresStore({self.dsn!r}, DATA, blobs={self.s3_setting(str(self.data))!r})")


class S3BlobsTests(_S3Bucket, _TempFolders, unittest.TestCase):
    """[store] blobs = s3://...: an object per body, there before the COMMIT that uses it,
    deleted with the last reference; reads are ranged GETs."""

    skip = SKIP

    def setUp(self):
        from cyrusmail.store.postgresql import PostgresStore

        super().setUp()
        self.bucket = self.make_bucket()
        self.dsn, schema = postgres_support.fresh_dsn()
        self.addCleanup(postgres_support.drop_schema, schema)
        self.store = PostgresStore(self.dsn, self.mktemp(), analyser=None, blobs=f"s3://{self.bucket}/mail")
        self.addCleanup(self.store.close)
        self.store.provision(USER, {})
        self.tree = self.store.mailboxes(USER)
        self.inbox = self.tree.open("INBOX")

    def test_the_object_is_there_before_the_commit_and_goes_with_the_last_reference(self):
        sha = hashlib.sha256(message(1)).hexdigest()
        with self.store.write():
            uid = self.inbox.append(message(1))
            self.assertEqual(self.objects(self.bucket), {f"mail/{sha[:2]}/{sha[2:4]}/{sha}": message(1)})
        self.tree.create("Work")
        self.inbox.copy([uid], self.tree.open("Work"))
        self.assertEqual(self.store.db.execute("SELECT data, size, refs FROM blobs").fetchall(),
                         [(None, len(message(1)), 2)])
        self.inbox.set_flags([uid], FlagChange.ADD, Flag.DELETED)
        self.inbox.expunge()
        self.assertEqual(len(self.objects(self.bucket)), 1, "deleted while a copy used it")
        self.tree.delete("Work")
        self.assertEqual(self.objects(self.bucket), {})

    def test_reads_whole_or_in_part(self):
        body = message(2) * 3000  # several reads of the buffer
        uid = self.inbox.append(body)
        self.assertEqual(self.inbox.read(uid), body)
        self.assertEqual(self.inbox.read(uid, 10, 5000), body[10:5000])
        self.assertEqual(self.inbox.read(uid, len(body) + 5), b"")
        with self.inbox.open_file(uid) as source:
            source.seek(len(body) - 7)
            self.assertEqual(source.read(), body[-7:])

    def test_a_failed_transaction_leaves_no_row_and_the_sweep_takes_its_object(self):
        with self.assertRaises(ZeroDivisionError), self.store.write():
            self.inbox.append(message(3))
            1 / 0  # noqa: B018 - any failure before the COMMIT
        self.assertEqual(self.store.db.execute("SELECT count(*) FROM blobs").fetchone(), (0,))
        self.assertEqual(len(self.objects(self.bucket)), 1)
        self.store.sweep()
        self.assertEqual(len(self.objects(self.bucket)), 1, "an object younger than an hour was swept")
        self.s3.put_object(Bucket=self.bucket, Key="mail/README", Body=b"not ours")
        self.store.blobs.sweep(self.store, -3600)  # as if they were two hours old
        self.assertEqual(self.objects(self.bucket), {"mail/README": b"not ours"})


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
class FolderBlobsTests(_TempFolders, unittest.TestCase):
    """[store] blobs = a folder: a file per body, durable before the COMMIT that uses it,
    removed only after the last reference's delete is committed."""

    skip = SKIP

    def setUp(self):
        super().setUp()
        self.dsn, schema = postgres_support.fresh_dsn()
        self.addCleanup(postgres_support.drop_schema, schema)
        self.folder = Path(blobs_folder(self.mktemp()))
        self.stores = [self.open_store(), self.open_store()]  # two servers sharing the folder
        self.store = self.stores[0]
        self.store.provision(USER, {})
        self.tree = self.store.mailboxes(USER)
        self.inbox = self.tree.open("INBOX")

    def open_store(self):
        from cyrusmail.store.postgresql import PostgresStore

        store = PostgresStore(self.dsn, self.mktemp(), analyser=None, blobs=str(self.folder))
        self.addCleanup(store.close)
        return store

    def body_files(self) -> dict[str, bytes]:
        return {path.name: seen[2] for path, seen in files_under(self.folder).items() if path.parent.name != "tmp"}

    def rows(self, store=None) -> list[tuple]:
        return (store or self.store).db.execute("SELECT sha, data, size, refs FROM blobs ORDER BY sha").fetchall()

    def test_a_body_is_a_private_file_named_by_its_hash_and_the_row_keeps_no_bytes(self):
        import hashlib

        uid = self.inbox.append(message(1))
        sha = hashlib.sha256(message(1)).hexdigest()
        path = self.folder / sha[:2] / sha[2:4] / sha
        self.assertEqual(path.read_bytes(), message(1))
        self.assertEqual(self.rows(), [(sha, None, len(message(1)), 1)])
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
        for folder in (path.parent, path.parent.parent, self.folder / "tmp"):
            self.assertEqual(stat.S_IMODE(folder.stat().st_mode), 0o700, folder)
        self.assertEqual(os.listdir(self.folder / "tmp"), [])
        self.assertEqual(self.stores[1].mailboxes(USER).open("INBOX").read(uid), message(1))

    def test_reads_stream_from_the_file_whole_or_in_part(self):
        uid = self.inbox.append(message(7))
        with self.inbox.open_file(uid) as source:
            self.assertTrue(hasattr(source, "fileno"), "the body was loaded into memory, not opened")
            source.seek(3)
            self.assertEqual(source.read(5), message(7)[3:8])
        self.assertEqual(self.inbox.read(uid, 2, 9), message(7)[2:9])
        self.assertEqual(self.inbox.read(uid, 4), message(7)[4:])

    def test_the_file_is_there_before_the_transaction_commits(self):
        other = self.stores[1]
        with self.store.write():
            self.inbox.append(message(2))
            self.assertEqual(list(self.body_files().values()), [message(2)])
            self.assertEqual(self.rows(other), [], "the row is visible before the COMMIT")
        self.assertEqual(len(self.rows(other)), 1)

    def test_a_failed_transaction_leaves_no_row_and_the_sweep_takes_its_file(self):
        with self.assertRaises(ZeroDivisionError), self.store.write():
            self.inbox.append(message(3))
            1 / 0  # noqa: B018 - any failure before the COMMIT
        self.assertEqual(self.rows(), [])
        self.assertEqual(self.inbox.messages(), [])
        self.assertEqual(list(self.body_files().values()), [message(3)])  # an orphan: never a row without a file
        self.store.sweep()
        self.assertEqual(len(self.body_files()), 1, "a file younger than an hour was swept")
        self.age_files()
        self.store.sweep()
        self.assertEqual(self.body_files(), {})

    def age_files(self) -> None:
        """Make every file in the folder two hours old (as the sweep sees them)."""
        old = time.time() - 7200
        for path in files_under(self.folder):
            os.utime(path, (old, old))

    def test_the_sweep_keeps_old_files_that_a_row_names_and_files_not_named_as_bodies(self):
        uid = self.inbox.append(message(4))
        (body,) = self.body_files()
        strangers = [self.folder / "README", self.folder / body[:2] / body[2:4] / "notes.txt",
                     self.folder / body[:2] / body[2:4] / ("f" * 64)]  # a hash in the wrong fan-out folder
        for path in strangers:
            path.write_bytes(b"not ours")
        self.age_files()
        self.stores[1].sweep()
        self.assertEqual(self.inbox.read(uid), message(4))
        self.assertTrue(all(path.exists() for path in strangers))

    def test_copies_share_one_file_which_goes_with_the_last_reference(self):
        self.tree.create("Work")
        work = self.tree.open("Work")
        uid = self.inbox.append(message(5))
        self.inbox.copy([uid], work)
        again = self.inbox.append(message(5))  # the same bytes appended again
        self.assertEqual(len(self.body_files()), 1)
        self.assertEqual([row[3] for row in self.rows()], [3])
        self.inbox.set_flags([uid, again], FlagChange.ADD, Flag.DELETED)
        self.inbox.expunge()
        self.assertEqual(list(self.body_files().values()), [message(5)], "removed while a copy used it")
        self.assertEqual(work.read(work.messages()[0].uid), message(5))
        self.tree.delete("Work")
        self.assertEqual((self.body_files(), self.rows()), ({}, []))

    def test_an_append_of_the_same_body_while_its_last_reference_goes_keeps_the_file(self):
        """The expunge of the last reference is not committed yet when another server appends the
        same bytes: that append (holding the body's lock) waits for the row; the removal after
        the COMMIT waits for the lock, then sees the new row and keeps the file."""
        uid = self.inbox.append(message(6))
        self.tree.create("Work")
        other = self.stores[1].mailboxes(USER).open("Work")
        self.inbox.set_flags([uid], FlagChange.ADD, Flag.DELETED)
        appended: list = []

        def append():
            try:
                appended.append(other.append(message(6)))
            except Exception as error:  # noqa: BLE001 - reported below
                appended.append(error)

        thread = threading.Thread(target=append)
        with self.store.write():
            self.inbox.expunge()  # the last reference's row deleted, not committed
            thread.start()
            self.wait_for_a_lock_wait()  # the append, on the deleted row
        thread.join(timeout=300)  # a hang check only
        (again,) = appended
        self.assertEqual(other.read(again), message(6))
        self.assertEqual(len(self.body_files()), 1)

    def wait_for_a_lock_wait(self) -> None:
        """Until a connection waits for a lock."""
        deadline = time.monotonic() + 60  # a hang check only
        with psycopg.connect(self.dsn, autocommit=True) as watcher:
            while not watcher.execute("SELECT 1 FROM pg_locks WHERE NOT granted").fetchone():
                self.assertLess(time.monotonic(), deadline, "the append never waited")
                time.sleep(0.05)

    def test_bodies_stored_in_the_table_before_a_switch_to_a_folder_are_still_read(self):
        from cyrusmail.store.postgresql import PostgresStore

        before = PostgresStore(self.dsn, self.mktemp(), analyser=None)  # blobs = database
        self.addCleanup(before.close)
        uid = before.mailboxes(USER).open("INBOX").append(message(8))
        self.assertEqual(self.inbox.read(uid, 1, 6), message(8)[1:6])
        with self.inbox.open_file(uid) as source:
            self.assertEqual(source.read(), message(8))
        self.inbox.set_flags([uid], FlagChange.ADD, Flag.DELETED)
        self.inbox.expunge()
        self.assertEqual(self.rows(), [])

    def test_a_body_in_a_folder_read_with_blobs_database_is_an_error_not_an_expunge(self):
        from cyrusmail.store.postgresql import PostgresStore

        uid = self.inbox.append(message(9))
        after = PostgresStore(self.dsn, self.mktemp(), analyser=None)
        self.addCleanup(after.close)
        with self.assertRaisesRegex(RuntimeError, "is in a \\[store\\] blobs folder"):
            after.mailboxes(USER).open("INBOX").read(uid)
