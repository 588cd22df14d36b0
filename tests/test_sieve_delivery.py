"""Sieve at delivery, through LMTP and submission: fileinto, flags, reject, redirect, vacation, editheader, errors."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial import unittest

from cyrusmail.delivery.queue import queue_of
from cyrusmail.sieve.scripts import scripts_of
from cyrusmail.smtp import codes
from cyrusmail.store.records import Flag
from tests.helpers import add_user, make_context
from tests.test_smtp_session_support import (
    Conversation,
    expected,
    inbox_messages,
    lmtp_factory,
    plain,
    submission_factory,
)

MESSAGE = (b"From: Someone <someone@remote.example>\r\nTo: alice@example.org\r\n"
           b"Subject: Hello there\r\nMessage-ID: <m1@remote.example>\r\n\r\nHello.\r\n")


def make_sieve_server(tmp, **sections):
    clock = Clock()
    clock.advance(1_700_000_000)
    context = make_context(tmp, reactor=clock, **sections)
    for checker in context.portal.checkers.values():
        checker.hash_in_thread = False
    add_user(context, "alice")
    add_user(context, "bob")
    return context, clock


def damage_scripts(context, user: str = "alice") -> None:
    """Make ``user``'s scripts unreadable as a fault would: the embedded store's file overwritten,
    PostgreSQL's table gone (from this test's own schema)."""
    if hasattr(context.store, "user_dir"):
        (context.store.user_dir(user) / "sieve.sqlite").write_bytes(b"this is not a database" * 100)
    else:
        context.store.db.execute("ALTER TABLE sieve_scripts RENAME TO sieve_scripts_lost")


class SieveCase:
    """A server with users alice and bob and a Clock; scripts set and messages delivered through LMTP."""

    def setUp(self) -> None:
        self.context, self.clock = make_sieve_server(self.mktemp())
        self.factory = lmtp_factory(self.context, self.clock)
        self.scripts = scripts_of(self.context)

    def activate(self, text: str, user: str = "alice") -> None:
        self.scripts.put(user, "main", text)
        self.scripts.set_active(user, "main")

    def lmtp(self, message: bytes = MESSAGE, sender: str = "someone@remote.example",
             recipients: tuple[str, ...] = ("alice@example.org",)):
        talk = Conversation(self.factory)
        talk.send("LHLO mx.example.org\r\n")
        envelope = f"MAIL FROM:<{sender}>\r\n" + "".join(f"RCPT TO:<{r}>\r\n" for r in recipients)
        talk.send(envelope)
        talk.send("DATA\r\n")
        return talk.send(message + b".\r\n")

    def queued(self) -> list[tuple[object, bytes]]:
        """Each queued entry and its message (on the shared spool, read under a claim as an attempt would)."""
        queue = queue_of(self.context)
        found = []
        for entry in queue.listing():
            queue.storage.claim(entry, self.clock.seconds())
            try:
                found.append((entry, queue.message_path(entry).read_bytes()))
            finally:
                queue.storage.release(entry)
        return found


class SieveDeliveryTests(SieveCase, unittest.TestCase):
    def test_no_script_delivers_to_inbox(self) -> None:
        [(code, _, _)] = self.lmtp()
        self.assertEqual(code, 250)
        self.assertEqual(len(inbox_messages(self.context, "alice")), 1)

    def test_fileinto_with_flags_and_create(self) -> None:
        self.activate('require ["fileinto", "imap4flags", "mailbox"];\r\n'
                      'if header :contains "subject" "hello" {\r\n'
                      '  fileinto :create :flags ["\\\\Seen", "$Work"] "Lists/hello";\r\n}\r\n')
        [(code, _, _)] = self.lmtp()
        self.assertEqual(code, 250)
        self.assertEqual(inbox_messages(self.context, "alice"), [])
        mailbox = self.context.realm.account("alice").mailboxes.open("Lists/hello")
        [record] = mailbox.messages()
        self.assertEqual(record.flags, Flag.SEEN)
        self.assertEqual(set(record.keywords), {"$Work"})

    def test_fileinto_missing_mailbox_without_create_keeps_in_inbox(self) -> None:
        self.activate('require "fileinto"; fileinto "Nowhere";')
        [(code, _, _)] = self.lmtp()
        self.assertEqual(code, 250)
        self.assertEqual(len(inbox_messages(self.context, "alice")), 1)
        self.assertFalse(self.context.realm.account("alice").mailboxes.exists("Nowhere"))

    def test_runtime_error_keeps_the_message(self) -> None:
        # include of a script that does not exist is a runtime error: the message goes to INBOX.
        self.activate('require ["include", "fileinto"]; fileinto "Trash"; include "missing";')
        [(code, _, _)] = self.lmtp()
        self.assertEqual(code, 250)
        self.assertEqual(len(inbox_messages(self.context, "alice")), 1)
        self.assertEqual(inbox_messages(self.context, "alice", "Trash"), [])

    def test_broken_active_script_keeps_the_message(self) -> None:
        self.scripts.put("alice", "main", "this is not sieve")  # stored behind ManageSieve's back
        self.scripts.set_active("alice", "main")
        [(code, _, _)] = self.lmtp()
        self.assertEqual(code, 250)
        self.assertEqual(len(inbox_messages(self.context, "alice")), 1)

    def test_reject_and_ereject_refuse_that_recipient_only(self) -> None:
        self.activate('require "ereject"; ereject "I do not want mail from you";')
        self.scripts.put("bob", "main", 'require "reject"; if true { reject text:\r\nGo away.\r\n.\r\n; }')
        self.scripts.set_active("bob", "main")
        add_user(self.context, "carol")
        replies = self.lmtp(recipients=("alice@example.org", "bob@example.org", "carol@example.org"))
        self.assertEqual([(code, enhanced) for code, enhanced, _ in replies],
                         expected(codes.SIEVE_REJECTED, codes.SIEVE_REJECTED, codes.MESSAGE_ACCEPTED))
        self.assertIn("I do not want mail from you", replies[0][2][0])
        self.assertIn("Go away.", replies[1][2][0])
        self.assertEqual(inbox_messages(self.context, "alice"), [])
        self.assertEqual(len(inbox_messages(self.context, "carol")), 1)

    def test_discard_and_keep(self) -> None:
        self.activate('if header :is "subject" "Hello there" { discard; }')
        self.activate('if header :is "subject" "Hello there" { discard; }', user="bob")
        self.scripts.put("bob", "main", 'if header :is "subject" "Other" { discard; } keep;')
        [(alice, _, _), (bob, _, _)] = self.lmtp(recipients=("alice@example.org", "bob@example.org"))
        self.assertEqual((alice, bob), (250, 250))
        self.assertEqual(inbox_messages(self.context, "alice"), [])
        self.assertEqual(len(inbox_messages(self.context, "bob")), 1)  # keep once, not twice

    def test_redirect_goes_through_the_queue_with_the_sender_and_a_loop_guard(self) -> None:
        self.activate('redirect "friend@remote.example";')
        [(code, _, _)] = self.lmtp()
        self.assertEqual(code, 250)
        self.assertEqual(inbox_messages(self.context, "alice"), [])
        [(entry, data)] = self.queued()
        self.assertEqual(entry.sender, "someone@remote.example")
        self.assertEqual([r.address for r in entry.recipients], ["friend@remote.example"])
        self.assertTrue(data.startswith(b"Delivered-To: alice@example.org\r\n"))
        self.assertIn(b"Subject: Hello there", data)

    def test_redirect_loop_is_kept_not_sent(self) -> None:
        self.activate('redirect :copy "friend@remote.example"; redirect "other@remote.example";')
        looped = b"Delivered-To: alice@example.org\r\n" + MESSAGE
        [(code, _, _)] = self.lmtp(looped)
        self.assertEqual(code, 250)
        self.assertEqual(self.queued(), [])
        self.assertEqual(len(inbox_messages(self.context, "alice")), 1)

    def test_vacation_once_per_days_to_the_sender_with_the_null_path(self) -> None:
        self.activate('require "vacation";\r\nvacation :days 2 :subject "Away" "I am away until Monday.";')
        [(code, _, _)] = self.lmtp()
        self.assertEqual(code, 250)
        self.assertEqual(len(inbox_messages(self.context, "alice")), 1)  # vacation keeps the message
        [(entry, reply)] = self.queued()
        self.assertIsNone(entry.sender)
        self.assertEqual([r.address for r in entry.recipients], ["someone@remote.example"])
        self.assertIn(b"Subject: Away\r\n", reply)
        self.assertIn(b"Auto-Submitted: auto-replied", reply)
        self.assertIn(b"In-Reply-To: <m1@remote.example>", reply)
        self.assertIn(b"From: <alice@example.org>", reply)
        self.assertIn(b"I am away until Monday.", reply)
        queue = queue_of(self.context)
        queue.delete(entry.id)
        self.lmtp()
        self.assertEqual(self.queued(), [])  # answered already
        self.clock.advance(2 * 86400 + 1)
        self.lmtp()
        self.assertEqual(len(self.queued()), 1)  # two days later, once more

    def test_vacation_loop_protection(self) -> None:
        self.activate('require "vacation"; vacation "Away.";')
        cases = [
            (MESSAGE, ""),  # null sender
            (MESSAGE, "MAILER-DAEMON@remote.example"),
            (MESSAGE, "owner-list@remote.example"),
            (MESSAGE, "alice@example.org"),  # the user herself
            (b"Auto-Submitted: auto-replied\r\n" + MESSAGE, "someone@remote.example"),
            (b"Precedence: bulk\r\n" + MESSAGE, "someone@remote.example"),
            (b"List-Id: <list.remote.example>\r\n" + MESSAGE, "someone@remote.example"),
            (MESSAGE.replace(b"To: alice@example.org", b"To: undisclosed-recipients:;"), "someone@remote.example"),
        ]
        for message, sender in cases:
            [(code, _, _)] = self.lmtp(message, sender=sender)
            self.assertEqual(code, 250)
        self.assertEqual(self.queued(), [])
        self.assertEqual(len(inbox_messages(self.context, "alice")), len(cases))

    def test_editheader_adds_and_deletes_but_not_received(self) -> None:
        self.activate('require "editheader";\r\n'
                      'addheader "X-Filtered" "by sieve";\r\n'
                      'addheader :last "X-Last" "Zürich";\r\n'
                      'deleteheader "subject";\r\n'
                      'deleteheader "received";\r\n')
        self.lmtp()
        [stored] = inbox_messages(self.context, "alice")
        header = stored.split(b"\r\n\r\n", 1)[0]
        self.assertTrue(header.startswith(b"Return-Path: <someone@remote.example>\r\nX-Filtered: by sieve\r\n"))
        self.assertIn(b"\r\nReceived: from mx.example.org", header)
        self.assertNotIn(b"Subject:", header)
        self.assertTrue(header.endswith(b"X-Last: =?UTF-8?B?WsO8cmljaA==?="))
        self.assertTrue(stored.endswith(b"\r\n\r\nHello.\r\n"))

    def test_variables_subaddress_and_envelope(self) -> None:
        self.activate('require ["fileinto", "variables", "envelope", "subaddress", "mailbox"];\r\n'
                      'if envelope :detail :matches "to" "*" { fileinto :create "plus/${1}"; }\r\n')
        self.lmtp(recipients=("alice+news@example.org",))
        mailbox = self.context.realm.account("alice").mailboxes.open("plus/news")
        self.assertEqual(len(mailbox.messages()), 1)

    def test_body_and_size_tests(self) -> None:
        self.activate('require ["fileinto", "body"];\r\n'
                      'if allof (body :contains "hello", size :under 1K) { fileinto "Archive"; }\r\n')
        self.lmtp()
        self.assertEqual(len(inbox_messages(self.context, "alice", "Archive")), 1)

    def test_submission_local_recipient_is_filtered_and_reject_bounces(self) -> None:
        self.activate('require ["fileinto"]; fileinto "Archive";')
        self.activate('require "reject"; reject "No thanks.";', user="bob")
        talk = Conversation(submission_factory(self.context, self.clock))
        talk.send("EHLO client\r\n")
        talk.send(b"AUTH PLAIN " + plain("bob") + b"\r\n")
        message = b"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: hi\r\n\r\nHi.\r\n"
        replies = talk.codes(b"MAIL FROM:<bob@example.org>\r\nRCPT TO:<alice@example.org>\r\n"
                             b"RCPT TO:<bob@example.org>\r\nDATA\r\n" + message + b".\r\n")
        self.assertEqual(replies, expected(codes.SENDER_OK, codes.RECIPIENT_OK, codes.RECIPIENT_OK,
                                           codes.START_DATA, codes.MESSAGE_ACCEPTED))
        self.assertEqual(len(inbox_messages(self.context, "alice", "Archive")), 1)
        # bob refused his own copy: as the sender he gets a failure report (delivered at once, locally)
        [report] = inbox_messages(self.context, "bob")
        self.assertIn(b"No thanks.", report)
