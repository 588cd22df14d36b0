"""Many sessions on one server: what each command reads, IDLE's one shared
poll, and the UID maps sessions share.

Changes "made elsewhere" come through a second store on the same data folder
(its own SQLite connections), as another worker process or
``cyrusmail-admin`` would make them.
"""

from __future__ import annotations

from contextlib import contextmanager

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from cyrusmail.acl.registry import AccessRegistry
from cyrusmail.portal import ACCESS_REGISTRY
from cyrusmail.store.maildir.store import MaildirStore
from tests.imap_support import Client, deliver, session_context


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
        """The same data folder through other connections (another process)."""
        store = MaildirStore(self.context.store.root, analyser=None)
        self.addCleanup(store.close)
        return store

    @contextmanager
    def statements(self, user: str = "alice"):
        """The SQL statements run on ``user``'s index meanwhile."""
        seen: list[str] = []
        db = self.context.store.index(user).db
        db.set_trace_callback(seen.append)
        try:
            yield seen
        finally:
            db.set_trace_callback(None)


class PollTests(ScaleCase):
    """A command's closing poll reads the change log only when the index changed."""

    def test_fetch_reads_the_acl_once_while_nothing_changes(self) -> None:
        deliver(self.context, "alice", "INBOX")
        alice = self.client()
        alice.command("s SELECT INBOX")
        with self.statements() as seen:
            alice.command("f1 FETCH 1 (FLAGS)")
            alice.command("f2 FETCH 1 (UID)")
        self.assertFalse([statement for statement in seen if "FROM acls" in statement], seen)

    def test_losing_a_group_elsewhere_takes_effect_at_once(self) -> None:
        bob = self.context.realm.account("bob")
        bob.set_acl("INBOX", "group:staff", "lr")
        deliver(self.context, "bob", "INBOX")
        self.context.realm.access.registry.add_members("staff", ["alice"])
        alice = self.client()
        alice.command('s SELECT "Other Users/bob/INBOX"')
        self.assertEqual(alice.command("f1 FETCH 1 (FLAGS)")[-1], "f1 OK FETCH completed")
        registry = AccessRegistry(self.context.store.root / ACCESS_REGISTRY)
        self.addCleanup(registry.close)
        registry.remove_members("staff", ["alice"])
        # bob's INBOX may no longer be seen: as if it was deleted
        self.assertEqual(alice.command("f2 FETCH 1 (FLAGS)"), ["* BYE Selected mailbox no longer exists"])
