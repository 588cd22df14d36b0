"""Sieve on the PostgreSQL store with two front ends on one database: a script uploaded over
ManageSieve through one filters the LMTP deliveries of the other at once; quotas, the vacation
record and a user's deletion are the database's, whichever server asks."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial import unittest

from cyrusmail.delivery.queue import queue_of
from cyrusmail.managesieve.server import ManageSieveFactory
from cyrusmail.sieve.scripts import ScriptError, scripts_of
from tests import postgres_support
from tests.helpers import add_user, make_context
from tests.test_managesieve import Client, literal
from tests.test_sieve_delivery import MESSAGE
from tests.test_smtp_session_support import Conversation, inbox_messages, lmtp_factory

FILE_REPORTS = b'require "fileinto";\r\nif header :contains "subject" "hello" { fileinto "Reports"; }\r\n'
VACATION = 'require "vacation";\r\nvacation :days 7 "Away this week.";\r\n'


class TwoFrontEndsTests(unittest.TestCase):
    skip = postgres_support.skip_reason()

    def setUp(self) -> None:
        dsn, schema = postgres_support.fresh_dsn()
        self.addCleanup(postgres_support.drop_schema, schema)
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        sections = {"store": {"backend": "postgresql", "dsn": dsn}, "sieve": {"max_scripts": "3"}}
        self.one = make_context(self.mktemp(), reactor=self.clock, **sections)
        self.two = make_context(self.mktemp(), reactor=self.clock, **sections)
        for context in (self.one, self.two):
            for checker in context.portal.checkers.values():
                checker.hash_in_thread = False
        add_user(self.one, "alice")
        self.two.realm.account("alice").mailboxes.create("Reports")

    def lmtp(self, context, sender: str = "someone@remote.example") -> list:
        talk = Conversation(lmtp_factory(context, self.clock))
        talk.send("LHLO mx.example.org\r\n")
        talk.send(f"MAIL FROM:<{sender}>\r\nRCPT TO:<alice@example.org>\r\n")
        talk.send("DATA\r\n")
        return talk.send(MESSAGE + b".\r\n")

    def managesieve(self, context) -> Client:
        client = Client(ManageSieveFactory(context, "managesieve", clock=self.clock))
        client.login()
        return client

    def test_a_script_put_through_one_server_files_deliveries_on_the_other(self) -> None:
        client = self.managesieve(self.one)
        self.assertEqual(client.send(b'PUTSCRIPT "main" ' + literal(FILE_REPORTS) + b"\r\n"), [b'OK "Stored"'])
        self.assertEqual(client.send('SETACTIVE "main"\r\n'), [b'OK "main is active"'])
        [(code, _, _)] = self.lmtp(self.two)
        self.assertEqual(code, 250)
        self.assertEqual((len(inbox_messages(self.two, "alice", "Reports")), inbox_messages(self.two, "alice")),
                         (1, []))
        # and deactivated through the other, the next message stays in INBOX
        other = self.managesieve(self.two)
        self.assertEqual(other.send("LISTSCRIPTS\r\n"), [b'"main" ACTIVE', b'OK "Listed"'])
        self.assertEqual(other.send('SETACTIVE ""\r\n'), [b'OK "No script is active"'])
        self.lmtp(self.one)
        self.assertEqual(len(inbox_messages(self.one, "alice")), 1)

    def test_the_script_quota_counts_the_scripts_put_through_every_server(self) -> None:
        scripts_of(self.one).put("alice", "a", "keep;")
        scripts_of(self.two).put("alice", "b", "keep;")
        scripts_of(self.one).put("alice", "c", "keep;")
        client = self.managesieve(self.two)
        self.assertEqual(client.send(b'PUTSCRIPT "d" {5+}\r\nkeep;\r\n'),
                         [b'NO (QUOTA/MAXSCRIPTS) "At most 3 scripts per user"'])
        self.assertEqual(client.send(b'PUTSCRIPT "b" {10+}\r\ndiscard;\r\n\r\n'), [b'OK "Stored"'])
        self.assertEqual(scripts_of(self.two).get("alice", "b"), "discard;\r\n")

    def test_one_vacation_reply_whichever_server_delivers(self) -> None:
        scripts_of(self.one).put("alice", "away", VACATION)
        scripts_of(self.one).set_active("alice", "away")
        self.lmtp(self.one)
        self.lmtp(self.two)
        self.assertEqual(len(inbox_messages(self.one, "alice")), 2)
        # the first server's reply is recorded in the database: the second sends none (the queue is shared)
        [reply] = queue_of(self.two).listing()
        self.assertEqual([recipient.address for recipient in reply.recipients], ["someone@remote.example"])

    def test_deleting_the_user_deletes_the_scripts(self) -> None:
        scripts_of(self.one).put("alice", "main", "keep;")
        scripts_of(self.one).set_active("alice", "main")
        self.one.store.remove_user("alice")
        self.assertEqual(scripts_of(self.two).list("alice"), [])
        with self.assertRaises(ScriptError) as raised:
            scripts_of(self.two).put("alice", "main", "keep;")
        self.assertEqual(raised.exception.code, "NONEXISTENT")

    def test_the_names_sort_and_a_nul_names_no_script(self) -> None:
        for name in ("b", "B", "a"):
            scripts_of(self.one).put("alice", name, "keep;")
        self.assertEqual([name for name, _ in scripts_of(self.two).list("alice")], ["B", "a", "b"])
        self.assertEqual(scripts_of(self.two).get("alice", "a\x00"), None)
        client = self.managesieve(self.two)
        self.assertEqual(client.send('DELETESCRIPT "a\x00"\r\n')[-1][:2], b"NO")
