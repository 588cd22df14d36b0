"""The store's executors and grouped commits (cyrusmail.store.executor, UserIndex.group).

Jobs are run through the same code the server's thread pool uses; where
threads matter, a plain threading.Thread plays the other writer.
"""

from __future__ import annotations

import threading

from twisted.trial import unittest

from cyrusmail.store import executor as executor_module
from cyrusmail.store.errors import OverQuota
from cyrusmail.store.executor import InlineExecutor, Job, run_jobs
from cyrusmail.store.maildir import MaildirStore, quota
from cyrusmail.store.maildir import index as index_module
from cyrusmail.store.maildir.index import UserIndex

MESSAGE = b"Subject: hi\r\n\r\nHello.\r\n"


class GroupCommitTests(unittest.TestCase):
    def setUp(self) -> None:
        self.store = MaildirStore(self.mktemp(), analyser=None)
        self.addCleanup(self.store.close)
        self.store.provision("alice")
        self.store.provision("bob")
        self.inbox = self.store.mailboxes("alice").open("INBOX")

    def run_group(self, *works) -> list[tuple[bool, object]]:
        return run_jobs(self.store.index, "alice", [Job(work, (), True) for work in works])

    def test_a_group_reads_through_a_writer_opened_on_demand(self) -> None:
        fresh = UserIndex(self.store.user_dir("alice") / "index.sqlite", create=False)
        self.addCleanup(fresh.close)
        with fresh.group():
            self.assertEqual(fresh.db.execute("SELECT count(*) FROM mailboxes").fetchone()[0] > 0, True)

    def test_jobs_of_a_group_share_one_commit_and_one_folder_fsync(self) -> None:
        synced = []
        self.patch(index_module, "fsync_dir", synced.append)
        outcomes = self.run_group(*[lambda: self.inbox.append(MESSAGE)] * 5)
        self.assertEqual(outcomes, [(True, uid) for uid in range(1, 6)])
        self.assertEqual(synced, [self.inbox.folder])
        self.assertEqual([record.uid for record in self.inbox.messages()], [1, 2, 3, 4, 5])

    def test_a_failing_job_undoes_only_its_own_writes(self) -> None:
        self.store.mailboxes("alice").set_quota_limits("", {quota.MESSAGE: 2})
        outcomes = self.run_group(lambda: self.inbox.append(MESSAGE), lambda: self.inbox.append_many(
            [(MESSAGE, None, (), None)] * 2), lambda: self.inbox.append(MESSAGE))
        self.assertEqual(outcomes[0], (True, 1))
        self.assertFalse(outcomes[1][0])
        self.assertIsInstance(outcomes[1][1].value, OverQuota)
        self.assertEqual(outcomes[2], (True, 2))
        self.assertEqual(len(list(self.inbox.folder.glob("[0-9]*"))), 2)  # the refused job's files are gone

    def test_a_failed_commit_fails_every_job_and_removes_their_files(self) -> None:
        def broken_disk(folder) -> None:
            raise OSError(5, "Input/output error")

        self.patch(index_module, "fsync_dir", broken_disk)
        outcomes = self.run_group(lambda: self.inbox.append(MESSAGE), lambda: self.inbox.append(MESSAGE))
        self.assertEqual([succeeded for succeeded, _ in outcomes], [False, False])
        self.assertEqual(self.inbox.messages(), [])
        self.assertEqual([path.name for path in self.inbox.folder.iterdir()], ["mailbox.json"])

    def test_watchers_hear_of_a_change_only_once_it_is_committed(self) -> None:
        heard = []
        self.inbox.watch(lambda: heard.append(len(self.store.index("alice").db.execute(
            "SELECT uid FROM messages").fetchall())))

        def append_and_listen():
            self.inbox.append(MESSAGE)
            return list(heard)

        [(succeeded, heard_inside)] = self.run_group(append_and_listen)
        self.assertTrue(succeeded)
        self.assertEqual(heard_inside, [])
        self.assertEqual(heard, [1])

    def test_a_job_in_a_group_may_not_write_another_index(self) -> None:
        bob = self.store.mailboxes("bob").open("INBOX")
        [(succeeded, failure)] = self.run_group(lambda: bob.append(MESSAGE))
        self.assertFalse(succeeded)
        self.assertIsInstance(failure.value, RuntimeError)
        self.assertEqual(bob.messages(), [])


class ThreadTests(unittest.TestCase):
    def setUp(self) -> None:
        self.store = MaildirStore(self.mktemp(), analyser=None)
        self.addCleanup(self.store.close)
        self.store.provision("alice")
        self.inbox = self.store.mailboxes("alice").open("INBOX")

    def in_thread(self, work) -> None:
        thread = threading.Thread(target=work)
        thread.start()
        thread.join(60)

    def test_reads_go_on_while_another_thread_holds_the_writer(self) -> None:
        self.inbox.append(MESSAGE)
        inside, leave = threading.Event(), threading.Event()

        def write_slowly() -> None:
            with self.store.index("alice").write() as db:
                db.execute("UPDATE messages SET flags = 1")
                inside.set()
                leave.wait(60)

        writer = threading.Thread(target=write_slowly)
        writer.start()
        self.addCleanup(writer.join, 60)
        self.addCleanup(leave.set)
        inside.wait(60)
        self.assertEqual([record.flags for record in self.inbox.messages()], [0])  # the last commit, at once
        self.assertEqual(self.inbox.claim_recent(), frozenset())  # never waits for the writer
        leave.set()
        writer.join(60)
        self.assertEqual([int(record.flags) for record in self.inbox.messages()], [1])
        self.assertEqual(self.inbox.claim_recent(), frozenset({1}))  # claimed once the writer is done

    def test_a_workers_read_connections_close_with_its_job(self) -> None:
        index = self.store.index("alice")
        before = len(index._connections)

        def job() -> None:
            with executor_module._job_scope():
                self.assertEqual(len(self.inbox.messages()), 0)
                self.assertIsNotNone(index._readers.db)
            self.assertIsNone(index._readers.db)

        self.in_thread(job)
        self.assertEqual(len(index._connections), before)

    def test_inline_executor_answers_at_once(self) -> None:
        executor = InlineExecutor(self.store.index)
        self.assertEqual(self.successResultOf(executor.submit("alice", lambda: 7, group=True)), 7)
        self.assertEqual(self.successResultOf(self.inbox.append_async(MESSAGE)), 1)
