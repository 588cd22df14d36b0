"""LIST-STATUS (RFC 5819) reads every count from the index in one batch.

The transcript ``imap_transcripts/list_status.txt`` shows what is answered;
this checks how (on either store): the number of SQL statements a LIST ... RETURN (STATUS ...)
runs does not grow with the number of mailboxes, and no message file is read.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.helpers import statements_run
from tests.imap_support import Client, deliver, session_context


class BatchTests(TestCase):
    def statements_for(self, mailboxes: int) -> int:
        context = session_context(self)
        client = Client(context, Clock())
        client.login()
        for number in range(mailboxes):
            client.command(f"c CREATE Box{number}")
            deliver(context, "alice", f"Box{number}", f"Message {number}")
        with statements_run(context.store, "alice") as statements:
            answer = client.command('l LIST "" Box* RETURN (STATUS (MESSAGES UNSEEN SIZE DELETED MAILBOXID))')
        self.assertEqual(len(answer), 2 * mailboxes + 1, answer)
        self.assertEqual(sum(line.startswith("* STATUS ") and "MESSAGES 1 UNSEEN 1" in line for line in answer),
                         mailboxes)
        return len(statements)

    def test_statements_do_not_grow_with_the_mailboxes(self) -> None:
        self.assertEqual(self.statements_for(3), self.statements_for(40))

    def test_no_message_file_is_opened(self) -> None:
        context = session_context(self)
        client = Client(context, Clock())
        client.login()
        deliver(context, "alice", "INBOX", "Hello")
        if hasattr(context.store, "dsn"):  # the PostgreSQL store: any read of a body would fail
            context.store.db.execute("ALTER TABLE blobs RENAME TO blobs_lost")
        else:
            folder = context.store.user_dir("alice") / "mail"
            for path in folder.rglob("*.*"):
                if path.name != "mailbox.json":
                    path.unlink()  # any read of a message file would fail
        answer = client.command('l LIST "" INBOX RETURN (STATUS (MESSAGES SIZE UNSEEN))')
        self.assertRegex(answer[1], r'^\* STATUS "INBOX" \(MESSAGES 1 SIZE \d+ UNSEEN 1\)$')


class CapabilityTests(TestCase):
    def test_advertised(self) -> None:
        client = Client(session_context(self), Clock())
        client.login()
        (line,) = client.command("c CAPABILITY")[:1]
        self.assertIn(" LIST-STATUS", line)
        self.assertIn(" STATUS=SIZE", line)
