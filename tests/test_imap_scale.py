"""Many sessions on one server: what each command reads, IDLE's one shared
poll, and the UID maps sessions share.

Changes "made elsewhere" come through a second store on the same data folder
(its own SQLite connections), as another worker process or
``cyrusmail-admin`` would make them.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from cyrusmail.acl.registry import open_registry
from cyrusmail.imap.server import IMAPServer
from cyrusmail.store.maildir.store import MaildirStore
from cyrusmail.store.records import Flag, FlagChange
from tests.helpers import another_store, statements_run
from tests.imap_support import Client, deliver, message, session_context


class ScaleCase(TestCase):
    def setUp(self) -> None:
        self.context = session_context(self)
        self.clock = Clock()

    def client(self, user: str = "alice") -> Client:
        client = Client(self.context, self.clock)
        client.login(user)
        self.addCleanup(client.server.connectionLost, None)
        return client

    def elsewhere(self) -> MaildirStore:
        """The same data folder (or database) through other connections (another process)."""
        store = another_store(self.context.store)
        self.addCleanup(store.close)
        return store

    def statements(self, user: str = "alice"):
        """The SQL statements run on ``user``'s index meanwhile."""
        return statements_run(self.context.store, user)


class PollTests(ScaleCase):
    """A command's closing poll reads the change log only when the index changed."""

    def test_noop_on_an_unchanged_mailbox_reads_no_changes(self) -> None:
        deliver(self.context, "alice", "INBOX")
        alice = self.client()
        alice.command("s SELECT INBOX")
        with self.statements() as seen:
            self.assertEqual(alice.command("n NOOP"), ["n OK NOOP completed"])
        self.assertFalse([statement for statement in seen if "messages" in statement], seen)

    def test_fetch_reads_the_acl_once_while_nothing_changes(self) -> None:
        deliver(self.context, "alice", "INBOX")
        alice = self.client()
        alice.command("s SELECT INBOX")
        with self.statements() as seen:
            alice.command("f1 FETCH 1 (FLAGS)")
            alice.command("f2 FETCH 1 (UID)")
        self.assertFalse([statement for statement in seen if "FROM acls" in statement], seen)

    def test_a_change_made_elsewhere_is_told_at_the_next_command(self) -> None:
        deliver(self.context, "alice", "INBOX")
        deliver(self.context, "alice", "INBOX")
        alice = self.client()
        alice.command("s SELECT INBOX")
        inbox = self.elsewhere().mailboxes("alice").open("INBOX")
        inbox.set_flags([1], FlagChange.ADD, Flag.FLAGGED)
        self.assertIn("* 1 FETCH (FLAGS (\\Flagged \\Recent))", alice.command("n1 NOOP"))
        inbox.append(message("Three"))
        self.assertEqual(alice.command("n2 NOOP")[:2], ["* 3 EXISTS", "* 3 RECENT"])
        inbox.set_flags([2], FlagChange.ADD, Flag.DELETED)
        inbox.expunge()
        self.assertEqual(alice.command("n3 NOOP"), ["* 2 EXPUNGE", "n3 OK NOOP completed"])

    def test_an_own_change_held_back_is_told_when_it_may_be(self) -> None:
        deliver(self.context, "alice", "INBOX")
        deliver(self.context, "alice", "INBOX")
        alice, bob_of_alice = self.client(), self.client()
        alice.command("s SELECT INBOX")
        bob_of_alice.command("s SELECT INBOX")
        bob_of_alice.command("d STORE 1 +FLAGS.SILENT (\\Deleted)")
        bob_of_alice.command("e EXPUNGE")
        answer = alice.command("f FETCH 2 (UID)")  # no EXPUNGE while message numbers are in use
        self.assertNotIn("* 1 EXPUNGE", answer)
        self.assertEqual(alice.command("n NOOP"), ["* 1 EXPUNGE", "n OK NOOP completed"])

    def test_losing_a_group_elsewhere_takes_effect_at_once(self) -> None:
        bob = self.context.realm.account("bob")
        bob.set_acl("INBOX", "group:staff", "lr")
        deliver(self.context, "bob", "INBOX")
        self.context.realm.access.registry.add_members("staff", ["alice"])
        alice = self.client()
        alice.command('s SELECT "Other Users/bob/INBOX"')
        self.assertEqual(alice.command("f1 FETCH 1 (FLAGS)")[-1], "f1 OK FETCH completed")
        registry = open_registry(self.elsewhere())  # another process's: its own file or connections
        self.addCleanup(registry.close)
        registry.remove_members("staff", ["alice"])
        # bob's INBOX may no longer be seen: as if it was deleted
        self.assertEqual(alice.command("f2 FETCH 1 (FLAGS)"), ["* BYE Selected mailbox no longer exists"])


class IdleTests(ScaleCase):
    """IDLE: one timer for every idling session, changes elsewhere in order."""

    def idle(self, client: Client, mailbox: str = "INBOX") -> None:
        client.command(f"s SELECT {mailbox}")
        self.assertEqual(client.command("i IDLE"), ["+ idling"])

    def poll_timers(self) -> list:
        """Calls due within one IDLE poll (the sessions' autologouts are 30 minutes away)."""
        now = self.clock.seconds()
        return [call for call in self.clock.getDelayedCalls() if call.getTime() - now <= IMAPServer.IDLE_POLL]

    def test_idling_sessions_share_one_timer(self) -> None:
        self.context.realm.account("bob")
        idlers = [self.client() for _ in range(5)] + [self.client("bob")]
        for client in idlers:
            self.idle(client)
        self.assertEqual(len(self.poll_timers()), 1)
        for client in idlers:
            self.assertEqual(client.command("DONE")[-1], "i OK IDLE terminated")
        self.assertEqual(self.poll_timers(), [])

    def test_changes_made_elsewhere_reach_the_idlers_in_order(self) -> None:
        for subject in ("One", "Two", "Three"):
            deliver(self.context, "alice", "INBOX", subject)
        self.client().command("c SELECT INBOX")  # claims them: not recent for the idlers
        first, second = self.client(), self.client()
        for client in (first, second):
            self.idle(client)
        inbox = self.elsewhere().mailboxes("alice").open("INBOX")
        inbox.set_flags([3], FlagChange.ADD, Flag.FLAGGED)
        inbox.set_flags([1], FlagChange.ADD, Flag.DELETED)
        inbox.expunge()
        inbox.append(message("Four"))
        self.clock.advance(IMAPServer.IDLE_POLL)
        heard = [first.lines(), second.lines()]
        for lines in heard:
            self.assertEqual(lines[:3], ["* 1 EXPUNGE", "* 2 FETCH (FLAGS (\\Flagged))", "* 3 EXISTS"])
        # exactly one session sees the new message as recent
        self.assertEqual(sorted(lines[3] for lines in heard), ["* 0 RECENT", "* 1 RECENT"])

    def test_idle_tells_at_once_what_changed_elsewhere_since_the_last_command(self) -> None:
        alice = self.client()
        alice.command("s SELECT INBOX")
        self.elsewhere().mailboxes("alice").open("INBOX").append(message())
        self.assertEqual(alice.command("i IDLE"), ["+ idling", "* 1 EXISTS", "* 1 RECENT"])

    def test_a_session_that_left_idle_hears_nothing_more(self) -> None:
        alice, other = self.client(), self.client()
        self.idle(alice)
        other.command("s SELECT INBOX")
        self.assertEqual(alice.command("DONE"), ["i OK IDLE terminated"])
        deliver(self.context, "alice", "INBOX")
        self.elsewhere().mailboxes("alice").open("INBOX").append(message("Two"))
        self.clock.advance(IMAPServer.IDLE_POLL * 2)
        self.assertEqual(alice.lines(), [])
        self.assertEqual(alice.command("n NOOP")[0], "* 2 EXISTS")  # told at its next command

    def test_a_closed_idler_stops_the_timer(self) -> None:
        alice = self.client()
        self.idle(alice)
        alice.server.connectionLost(None)
        self.assertEqual(self.poll_timers(), [])


class SharedMapTests(ScaleCase):
    """Sessions that know a mailbox in the same state share one UID map."""

    def view(self, client: Client):
        return client.server.state.view

    def two_sessions(self) -> tuple[Client, Client]:
        """Two sessions of alice with INBOX (three messages) selected."""
        for _ in range(3):
            deliver(self.context, "alice", "INBOX")
        first, second = self.client(), self.client()
        for client in (first, second):
            client.command("s SELECT INBOX")
        return first, second

    def test_sessions_on_one_mailbox_share_their_uid_map(self) -> None:
        first, second = self.two_sessions()
        self.assertIs(self.view(first).uids, self.view(second).uids)
        self.assertEqual(list(self.view(first).uids), [1, 2, 3])
        deliver(self.context, "alice", "INBOX")
        for client in (first, second):
            self.assertEqual(client.command("n NOOP")[0], "* 4 EXISTS")
        self.assertIs(self.view(first).uids, self.view(second).uids)
        self.assertEqual(list(self.view(second).uids), [1, 2, 3, 4])

    def test_a_view_holding_back_an_expunge_keeps_its_own_map(self) -> None:
        first, second = self.two_sessions()
        second.command("d STORE 2 +FLAGS.SILENT (\\Deleted)")
        self.assertEqual(second.command("e EXPUNGE")[0], "* 2 EXPUNGE")
        answer = first.command("f FETCH 1:3 (UID)")  # the expunge is held back during FETCH
        self.assertEqual([line for line in answer if "FETCH" in line], ["* 1 FETCH (UID 1)", "* 3 FETCH (UID 3)"])
        self.assertEqual(list(self.view(first).uids), [1, 2, 3])
        self.assertEqual(list(self.view(second).uids), [1, 3])
        self.assertEqual(first.command("n NOOP")[0], "* 2 EXPUNGE")
        self.assertIs(self.view(first).uids, self.view(second).uids)

    def test_reported_flags_are_not_told_twice(self) -> None:
        deliver(self.context, "alice", "INBOX")
        alice = self.client()
        alice.command("s SELECT INBOX")
        answer = alice.command("t STORE 1 +FLAGS (\\Flagged)")
        self.assertEqual([line for line in answer if "FETCH" in line], ["* 1 FETCH (FLAGS (\\Flagged \\Recent))"])
        self.assertEqual(alice.command("n NOOP"), ["n OK NOOP completed"])
        self.assertFalse([line for line in alice.command("n2 NOOP") if "FETCH" in line])
