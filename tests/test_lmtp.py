"""LMTP transcripts (RFC 2033): LHLO, no AUTH, one reply per accepted recipient."""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from cyrusmail.delivery.local import LocalTarget
from cyrusmail.smtp import codes
from cyrusmail.store.errors import OverQuota
from tests.test_smtp_session_support import (
    Conversation,
    expected,
    inbox_messages,
    lmtp_factory,
    make_server,
)

MESSAGE = b"From: someone@remote.example\r\nSubject: for you\r\n\r\nHello.\r\n"


class LMTPTests(unittest.TestCase):
    def setUp(self) -> None:
        self.context, self.clock = make_server(self.mktemp())
        self.factory = lmtp_factory(self.context, self.clock)

    def test_mixed_recipients_one_reply_each(self) -> None:
        self.context.realm.account("bob").set_acl("Sent", "anyone", "+p")  # LMTP posts as anyone
        talk = Conversation(self.factory)
        self.assertEqual(talk.greeting[0][0], 220)
        [(code, _, lines)] = talk.send("LHLO mx.example.org\r\n")
        self.assertEqual(code, 250)
        self.assertNotIn("AUTH PLAIN LOGIN", lines)
        self.assertNotIn("STARTTLS", lines)
        replies = talk.codes(
            b"MAIL FROM:<someone@remote.example>\r\n"
            b"RCPT TO:<alice@example.org>\r\n"
            b"RCPT TO:<nobody@example.org>\r\n"
            b"RCPT TO:<carol@remote.example>\r\n"
            b"RCPT TO:<bob+Sent@example.org>\r\n"
            b"DATA\r\n" + MESSAGE + b".\r\n")
        self.assertEqual(replies, expected(
            codes.SENDER_OK, codes.RECIPIENT_OK, codes.NO_SUCH_USER, codes.NO_SUCH_USER, codes.RECIPIENT_OK,
            codes.START_DATA, codes.MESSAGE_ACCEPTED, codes.MESSAGE_ACCEPTED))
        [alice] = inbox_messages(self.context, "alice")
        [bob] = inbox_messages(self.context, "bob", "Sent")
        self.assertEqual(alice, bob)
        self.assertTrue(alice.startswith(b"Return-Path: <someone@remote.example>\r\nReceived: from mx.example.org"))
        self.assertTrue(alice.endswith(MESSAGE))
        self.assertIn(b"with LMTP id", alice)

    def test_plus_folder_without_post_right_goes_to_inbox(self) -> None:
        talk = Conversation(self.factory)
        talk.send("LHLO mx\r\n")
        replies = talk.codes(b"MAIL FROM:<x@remote.example>\r\nRCPT TO:<bob+Sent@example.org>\r\n"
                             b"DATA\r\n" + MESSAGE + b".\r\n")
        self.assertEqual(replies, expected(codes.SENDER_OK, codes.RECIPIENT_OK, codes.START_DATA,
                                           codes.MESSAGE_ACCEPTED))
        self.assertEqual(len(inbox_messages(self.context, "bob")), 1)
        self.assertEqual(inbox_messages(self.context, "bob", "Sent"), [])

    def test_shared_folder_posting_address_needs_the_post_right(self) -> None:
        self.context, self.clock = make_server(self.mktemp(), server={"admins": "alice"})
        self.factory = lmtp_factory(self.context, self.clock)
        admin = self.context.realm.account("alice")
        admin.mailboxes.create("Shared Folders/news")
        talk = Conversation(self.factory)
        talk.send("LHLO mx\r\n")
        refused = talk.codes(b"MAIL FROM:<x@remote.example>\r\nRCPT TO:<shared+news@example.org>\r\n")
        self.assertEqual(refused, expected(codes.SENDER_OK, codes.NO_SUCH_USER))
        admin.set_acl("Shared Folders/news", "anyone", "lrsp")
        talk.send("RSET\r\n")
        replies = talk.codes(b"MAIL FROM:<x@remote.example>\r\nRCPT TO:<shared+news@example.org>\r\n"
                             b"DATA\r\n" + MESSAGE + b".\r\n")
        self.assertEqual(replies, expected(codes.SENDER_OK, codes.RECIPIENT_OK, codes.START_DATA,
                                           codes.MESSAGE_ACCEPTED))
        news = self.context.realm.account("bob").mailboxes.open("Shared Folders/news")
        self.assertEqual(len(news.messages()), 1)

    def test_dsn_is_left_to_the_mta_in_front(self) -> None:
        talk = Conversation(self.factory)
        [(_code, _, lines)] = talk.send("LHLO mx\r\n")
        self.assertNotIn("DSN", " ".join(lines))
        self.assertEqual(talk.codes(b"MAIL FROM:<x@remote.example> RET=HDRS\r\n"),
                         expected(codes.PARAM_UNRECOGNIZED))
        self.assertEqual(talk.codes(b"MAIL FROM:<x@remote.example>\r\n"
                                    b"RCPT TO:<alice@example.org> NOTIFY=SUCCESS\r\n"),
                         expected(codes.SENDER_OK, codes.PARAM_UNRECOGNIZED))

    def test_one_staged_message_for_all_recipients(self) -> None:
        staged = []
        real_stage = self.context.store.stage
        self.context.store.stage = lambda: staged.append(real_stage()) or staged[-1]
        talk = Conversation(self.factory)
        talk.send("LHLO mx\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n")
        talk.send(MESSAGE + b".\r\n")
        self.assertEqual(len(staged), 1)

    def test_per_recipient_failure_over_quota(self) -> None:
        delivery = self.factory.callbacks.local
        real = delivery.deliver_async

        def deliver(staged, target):
            if target.user == "bob":
                return defer.succeed(codes.MAILBOX_FULL)
            return real(staged, target)

        delivery.deliver_async = deliver
        talk = Conversation(self.factory)
        talk.send("LHLO mx\r\nMAIL FROM:<x@remote.example>\r\nRCPT TO:<alice@example.org>\r\n"
                  "RCPT TO:<bob@example.org>\r\nRCPT TO:<alice+Trash@example.org>\r\nDATA\r\n")
        self.assertEqual(talk.codes(MESSAGE + b".\r\n"),
                         expected(codes.MESSAGE_ACCEPTED, codes.MAILBOX_FULL, codes.MESSAGE_ACCEPTED))

    def test_over_quota_maps_to_452_or_552(self) -> None:
        class Full:
            def __init__(self, permanent):
                self.permanent = permanent

            def open(self, name):
                return self

            def append(self, staged):
                raise OverQuota(permanent=self.permanent)

            def append_async(self, staged):
                return defer.fail(OverQuota(permanent=self.permanent))

        delivery = self.factory.callbacks.local
        for permanent, reply in ((False, codes.MAILBOX_FULL), (True, codes.QUOTA_EXCEEDED_PERM)):
            realm = self.context.realm
            full = Full(permanent)
            self.context.realm = type("R", (), {"delivery_target": lambda self, *args, box=full: box})()
            self.assertEqual(delivery.deliver(None, LocalTarget("bob")), reply)
            self.assertEqual(self.successResultOf(delivery.deliver_async(None, LocalTarget("bob"))), reply)
            self.context.realm = realm

    def test_bdat_last_replies_per_recipient(self) -> None:
        talk = Conversation(self.factory)
        talk.send("LHLO mx\r\nMAIL FROM:<x@remote.example>\r\nRCPT TO:<alice@example.org>\r\n"
                  "RCPT TO:<bob@example.org>\r\n")
        self.assertEqual(talk.codes(b"BDAT 10\r\n" + MESSAGE[:10]), expected(codes.CHUNK_OK))
        rest = MESSAGE[10:]
        self.assertEqual(talk.codes(b"BDAT %d LAST\r\n%s" % (len(rest), rest)),
                         expected(codes.MESSAGE_ACCEPTED, codes.MESSAGE_ACCEPTED))

    def test_failed_message_gets_one_error_per_recipient(self) -> None:
        talk = Conversation(self.factory)
        talk.send("LHLO mx\r\nMAIL FROM:<x@remote.example>\r\nRCPT TO:<alice@example.org>\r\n"
                  "RCPT TO:<bob@example.org>\r\nDATA\r\n")
        self.assertEqual(talk.codes(b"Subject: x\r\n\r\nbare\nnewline\r\n.\r\n"),
                         expected(codes.BARE_NEWLINE, codes.BARE_NEWLINE))
        self.assertEqual(inbox_messages(self.context, "alice"), [])

    def test_nul_octet_gets_554_per_recipient(self) -> None:
        """RFC 2033: one 554 5.6.0 per recipient after DATA and after BDAT LAST; nothing stored."""
        poisoned = MESSAGE.replace(b"Hello", b"Hel\x00lo")
        talk = Conversation(self.factory)
        talk.send("LHLO mx\r\nMAIL FROM:<x@remote.example>\r\nRCPT TO:<alice@example.org>\r\n"
                  "RCPT TO:<bob@example.org>\r\nDATA\r\n")
        self.assertEqual(talk.codes(poisoned + b".\r\n"), expected(codes.NUL_IN_MESSAGE, codes.NUL_IN_MESSAGE))
        talk.send("MAIL FROM:<x@remote.example>\r\nRCPT TO:<alice@example.org>\r\n"
                  "RCPT TO:<bob@example.org>\r\n")
        self.assertEqual(talk.codes(b"BDAT 10\r\n" + poisoned[:10]), expected(codes.CHUNK_OK))
        rest = poisoned[10:]
        self.assertEqual(talk.codes(b"BDAT %d LAST\r\n%s" % (len(rest), rest)),
                         expected(codes.NUL_IN_MESSAGE, codes.NUL_IN_MESSAGE))
        self.assertEqual(inbox_messages(self.context, "alice"), [])
        self.assertEqual(inbox_messages(self.context, "bob"), [])
        self.assertEqual(list(self.context.store.tmp_dir.iterdir()), [])

    def test_no_auth_no_starttls_no_helo(self) -> None:
        talk = Conversation(self.factory)
        self.assertEqual(talk.codes("EHLO mx\r\n"), expected(codes.SYNTAX_ERROR))
        self.assertEqual(talk.codes("HELO mx\r\n"), expected(codes.SYNTAX_ERROR))
        talk.send("LHLO mx\r\n")
        self.assertEqual(talk.codes("AUTH PLAIN\r\n"), expected(codes.NOT_IMPLEMENTED))
        self.assertEqual(talk.codes("STARTTLS\r\n"), expected(codes.NOT_IMPLEMENTED))
        self.assertEqual(talk.codes("NOOP\r\n"), expected(codes.OK))

    def test_mail_before_lhlo(self) -> None:
        talk = Conversation(self.factory)
        self.assertEqual(talk.codes("MAIL FROM:<>\r\n")[0][0], 503)

    def test_data_without_a_valid_recipient_is_503(self) -> None:
        """RFC 2033 section 4.2: with no successful RCPT, DATA MUST fail with 503."""
        talk = Conversation(self.factory)
        talk.send("LHLO mx\r\nMAIL FROM:<x@remote.example>\r\n")
        self.assertEqual(talk.codes("DATA\r\n"), expected(codes.BAD_SEQUENCE))
        self.assertEqual(talk.codes("RCPT TO:<nobody@example.org>\r\n"), expected(codes.NO_SUCH_USER))
        self.assertEqual(talk.codes("DATA\r\n"), expected(codes.BAD_SEQUENCE))
        self.assertEqual(talk.codes("BDAT 3 LAST\r\nabc"), expected(codes.BAD_SEQUENCE))
        self.assertEqual(talk.codes("NOOP\r\n"), expected(codes.OK))

    def test_postmaster_goes_to_admin(self) -> None:
        context, clock = make_server(self.mktemp(), server={"admins": "alice"})
        talk = Conversation(lmtp_factory(context, clock))
        talk.send("LHLO mx\r\nMAIL FROM:<>\r\n")
        self.assertEqual(talk.codes("RCPT TO:<Postmaster>\r\n"), expected(codes.RECIPIENT_OK))
        self.assertEqual(talk.codes("RCPT TO:<postmaster@example.org>\r\n"), expected(codes.RECIPIENT_OK))


class LMTPUnixSocketTests(unittest.TestCase):
    def test_unix_socket_peer(self) -> None:
        from twisted.internet.address import UNIXAddress
        from twisted.internet.testing import StringTransport

        context, clock = make_server(self.mktemp())
        session = lmtp_factory(context, clock).buildProtocol(None)
        transport = StringTransport(peerAddress=UNIXAddress(None))
        session.makeConnection(transport)
        session.dataReceived(b"LHLO mx\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n"
                             + MESSAGE + b".\r\n")
        self.assertTrue(transport.value().endswith(b"250 2.0.0 <alice@example.org> delivered, id "
                                                   + transport.value().rsplit(b"id ", 1)[1]))
        [stored] = inbox_messages(context, "alice")
        self.assertIn(b"Received: from mx (local)\r\n", stored)
