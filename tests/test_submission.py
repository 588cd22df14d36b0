"""Submission transcripts (RFC 6409, 3207, 4954) over a StringTransport against a real store."""

from __future__ import annotations

from twisted.trial import unittest

from cyrusmail.smtp import codes
from cyrusmail.smtp.session import MAX_PENDING_INPUT
from tests.test_smtp_session_support import (
    Conversation,
    expected,
    inbox_messages,
    make_server,
    plain,
    submission_factory,
)

MESSAGE = b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: hello\r\n\r\nHello Bob.\r\n"


class SubmissionTests(unittest.TestCase):
    def setUp(self) -> None:
        self.context, self.clock = make_server(self.mktemp())
        self.factory = submission_factory(self.context, self.clock)

    def login(self, peer: str = "127.0.0.1") -> Conversation:
        talk = Conversation(self.factory, peer)
        talk.send("EHLO client.example\r\n")
        self.assertEqual(talk.codes(b"AUTH PLAIN " + plain("alice") + b"\r\n"), expected(codes.AUTH_OK))
        return talk

    def test_greeting_and_ehlo_keywords(self) -> None:
        talk = Conversation(self.factory)
        self.assertEqual(talk.greeting[0][0], 220)
        [(code, _, lines)] = talk.send("EHLO client.example\r\n")
        self.assertEqual(code, 250)
        for keyword in ("PIPELINING", "SIZE 52428800", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8",
                        "DSN", "CHUNKING", "STARTTLS", "AUTH SCRAM-SHA-256 PLAIN LOGIN"):
            self.assertIn(keyword, lines)

    def test_submit_to_local_user_byte_for_byte(self) -> None:
        talk = self.login()
        replies = talk.codes(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n")
        self.assertEqual(replies, expected(codes.SENDER_OK, codes.RECIPIENT_OK, codes.START_DATA))
        self.assertEqual(talk.codes(MESSAGE + b".\r\n"), expected(codes.MESSAGE_ACCEPTED))
        [stored] = inbox_messages(self.context, "bob")
        self.assertTrue(stored.startswith(b"Received: from client.example ([127.0.0.1])\r\n"))
        self.assertIn(b"with ESMTPA id", stored)
        self.assertIn(b"(authenticated user alice)", stored)
        added, original = stored.split(b"From: alice@example.org", 1)
        self.assertEqual(b"From: alice@example.org" + original, MESSAGE)
        self.assertIn(b"\r\nMessage-ID: <", added)
        self.assertIn(b"\r\nDate: ", added)

    def test_accepted_message_reply_on_the_wire(self) -> None:
        """Success is 250 2.0.0: a 2.6.x detail would announce a media conversion (RFC 3463 section 3.7)."""
        talk = self.login()
        talk.send(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n")
        [(code, enhanced, _lines)] = talk.send(MESSAGE + b".\r\n")
        self.assertEqual((code, enhanced), (250, "2.0.0"))

    def test_existing_message_id_and_date_are_kept(self) -> None:
        talk = self.login()
        message = b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <x@y>\r\n" + MESSAGE
        talk.send(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n")
        talk.send(message + b".\r\n")
        [stored] = inbox_messages(self.context, "bob")
        self.assertEqual(stored.count(b"Message-ID:"), 1)
        self.assertEqual(stored.count(b"Date:"), 1)
        self.assertTrue(stored.endswith(message))

    def test_plus_folder_delivery_needs_the_post_right(self) -> None:
        talk = self.login()
        talk.send(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob+Sent@example.org>\r\n"
                  b"RCPT TO:<bob+NoSuchFolder@example.org>\r\nDATA\r\n")
        self.assertEqual(talk.codes(MESSAGE + b".\r\n"), expected(codes.MESSAGE_ACCEPTED))
        self.assertEqual(len(inbox_messages(self.context, "bob", "Sent")), 0)  # alice lacks p there
        self.assertEqual(len(inbox_messages(self.context, "bob")), 2)
        self.context.realm.account("bob").set_acl("Sent", "alice", "+p")
        talk.send(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob+Sent@example.org>\r\nDATA\r\n")
        self.assertEqual(talk.codes(MESSAGE + b".\r\n"), expected(codes.MESSAGE_ACCEPTED))
        self.assertEqual(len(inbox_messages(self.context, "bob", "Sent")), 1)

    def test_mail_requires_authentication(self) -> None:
        talk = Conversation(self.factory)
        talk.send("EHLO client.example\r\n")
        self.assertEqual(talk.codes("MAIL FROM:<alice@example.org>\r\n"), expected(codes.AUTH_REQUIRED))

    def test_sender_must_be_owned(self) -> None:
        talk = self.login()
        self.assertEqual(talk.codes("MAIL FROM:<bob@example.org>\r\n"), expected(codes.SENDER_NOT_OWNED))
        self.assertEqual(talk.codes("MAIL FROM:<>\r\n"), expected(codes.SENDER_NOT_OWNED))
        self.assertEqual(talk.codes("MAIL FROM:<Alice@Example.org>\r\n"), expected(codes.SENDER_OK))

    def test_binarymime_is_refused_with_a_code_mail_may_return(self) -> None:
        """BODY=BINARYMIME is not offered: 555 (RFC 5321 section 4.3.2 lists no 504 for MAIL)."""
        talk = self.login()
        self.assertEqual(talk.codes("MAIL FROM:<alice@example.org> BODY=BINARYMIME\r\n"),
                         expected(codes.PARAM_UNRECOGNIZED))
        self.assertEqual(talk.codes("MAIL FROM:<alice@example.org> BODY=8BITMIME\r\n"), expected(codes.SENDER_OK))

    def test_unreadable_bdat_says_421_before_closing(self) -> None:
        """RFC 5321 section 3.8: the server closes only after QUIT, a 421 or a timeout."""
        for line in ("BDAT\r\n", "BDAT x\r\n", "BDAT 3 FOO\r\n"):
            talk = self.login()
            talk.send("MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\n")
            self.assertEqual(talk.codes(line), expected(codes.PARAM_SYNTAX, codes.CLOSING_AFTER_BAD_BDAT))
            self.assertTrue(talk.transport.disconnecting)

    def test_unknown_local_recipient_refused_at_rcpt(self) -> None:
        talk = self.login()
        talk.send("MAIL FROM:<alice@example.org>\r\n")
        self.assertEqual(talk.codes("RCPT TO:<nobody@example.org>\r\n"), expected(codes.NO_SUCH_USER))
        self.assertEqual(talk.codes("DATA\r\n"), expected(codes.NO_VALID_RECIPIENTS))

    def test_bad_sequences_get_503_and_session_goes_on(self) -> None:
        talk = Conversation(self.factory)
        self.assertEqual(talk.codes("MAIL FROM:<a@example.org>\r\n")[0][0], 503)
        talk = self.login()
        self.assertEqual(talk.codes("RCPT TO:<bob@example.org>\r\n")[0][0], 503)
        self.assertEqual(talk.codes("DATA\r\n")[0][0], 503)
        self.assertEqual(talk.codes("BDAT 5 LAST\r\nhello"), [(503, "5.5.1")])
        self.assertEqual(talk.codes("FOO\r\n"), expected(codes.SYNTAX_ERROR))
        self.assertEqual(talk.codes("EXPN x\r\n"), expected(codes.NOT_IMPLEMENTED))
        self.assertEqual(talk.codes("LHLO x\r\n"), expected(codes.SYNTAX_ERROR))
        self.assertEqual(talk.codes("MAIL FROM:<alice@example.org> FOO=BAR\r\n"),
                         expected(codes.PARAM_UNRECOGNIZED))
        self.assertEqual(talk.codes("NOOP\r\n"), expected(codes.OK))

    def test_size_limit_announced_and_enforced(self) -> None:
        talk = self.login()
        self.assertEqual(talk.codes("MAIL FROM:<alice@example.org> SIZE=999999999999\r\n"),
                         expected(codes.TOO_BIG))

    def test_plaintext_auth_refused_off_loopback(self) -> None:
        talk = Conversation(self.factory, peer="203.0.113.9")
        [(_, _, lines)] = talk.send("EHLO client.example\r\n")
        self.assertIn("STARTTLS", lines)
        self.assertEqual([line for line in lines if line.startswith("AUTH")], [])  # no mechanism before TLS
        self.assertEqual(talk.codes(b"AUTH PLAIN " + plain("alice") + b"\r\n"),
                         expected(codes.ENCRYPTION_REQUIRED))
        self.assertEqual(talk.codes("MAIL FROM:<alice@example.org>\r\n"), expected(codes.STARTTLS_REQUIRED))
        self.assertEqual(talk.codes("STARTTLS\r\n"), expected(codes.TLS_READY))
        self.assertTrue(talk.transport.tls_started)
        [(_, _, lines)] = talk.send("EHLO client.example\r\n")
        self.assertNotIn("STARTTLS", lines)
        self.assertIn("AUTH SCRAM-SHA-256 PLAIN LOGIN", lines)
        self.assertEqual(talk.codes(b"AUTH PLAIN " + plain("alice") + b"\r\n"), expected(codes.AUTH_OK))

    def test_starttls_injection_is_discarded(self) -> None:
        talk = Conversation(self.factory, peer="203.0.113.9")
        talk.send("EHLO client.example\r\n")
        replies = talk.codes(b"STARTTLS\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\n")
        self.assertEqual(replies, expected(codes.TLS_READY))
        # After TLS: no EHLO yet, no transaction; the pipelined MAIL never ran.
        self.assertEqual(talk.codes("RCPT TO:<bob@example.org>\r\n")[0][0], 503)
        self.assertEqual(talk.codes("MAIL FROM:<alice@example.org>\r\n")[0][0], 503)

    def test_starttls_resets_login(self) -> None:
        talk = self.login()
        talk.send("STARTTLS\r\n")
        talk.send("EHLO client.example\r\n")
        self.assertEqual(talk.codes("MAIL FROM:<alice@example.org>\r\n"), expected(codes.AUTH_REQUIRED))

    def test_auth_after_a_failure_waits_its_turn(self) -> None:
        talk = Conversation(self.factory)
        talk.send("EHLO client.example\r\n")
        self.assertEqual(talk.codes(b"AUTH PLAIN " + plain("alice", "wrong") + b"\r\n"), expected(codes.AUTH_FAILED))
        self.assertEqual(talk.codes(b"AUTH PLAIN " + plain("alice") + b"\r\nNOOP\r\n"), [])
        self.clock.advance(0.5)
        self.assertEqual(talk.take(), [])
        self.clock.advance(0.5)
        self.assertEqual([(c, e) for c, e, _ in talk.take()], expected(codes.AUTH_OK, codes.OK))

    def test_auth_login_exchange(self) -> None:
        talk = Conversation(self.factory)
        talk.send("EHLO client.example\r\n")
        self.assertEqual(talk.send("AUTH LOGIN\r\n")[0][2], ["VXNlcm5hbWU6"])
        self.assertEqual(talk.send("YWxpY2U=\r\n")[0][2], ["UGFzc3dvcmQ6"])
        self.assertEqual(talk.codes("c2VjcmV0\r\n"), expected(codes.AUTH_OK))
        self.assertEqual(talk.codes("AUTH PLAIN\r\n")[0][0], 503)

    def test_auth_cancelled(self) -> None:
        talk = Conversation(self.factory)
        talk.send("EHLO client.example\r\n")
        talk.send("AUTH PLAIN\r\n")
        self.assertEqual(talk.codes("*\r\n"), expected(codes.AUTH_CANCELLED))
        self.assertEqual(talk.codes("NOOP\r\n"), expected(codes.OK))

    def test_bdat_chunks(self) -> None:
        talk = self.login()
        talk.send(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\n")
        head, tail = MESSAGE[:20], MESSAGE[20:]
        self.assertEqual(talk.codes(b"BDAT %d\r\n%s" % (len(head), head)), expected(codes.CHUNK_OK))
        self.assertEqual(talk.codes(b"BDAT %d LAST\r\n%s" % (len(tail), tail)),
                         expected(codes.MESSAGE_ACCEPTED))
        [stored] = inbox_messages(self.context, "bob")
        self.assertTrue(stored.endswith(MESSAGE))

    def test_overlong_data_line_refused_after_end_of_data(self) -> None:
        talk = self.login()
        talk.send(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n")
        replies = talk.codes(b"Subject: x\r\n\r\n" + b"a" * 2000 + b"\r\nMAIL FROM:<evil@example.org>\r\n.\r\n")
        self.assertEqual(replies, expected(codes.DATA_LINE_TOO_LONG))
        self.assertEqual(inbox_messages(self.context, "bob"), [])
        self.assertEqual(talk.codes("NOOP\r\n"), expected(codes.OK))

    def test_nul_octet_refused_with_554_nothing_stored(self) -> None:
        """DATA and BDAT alike: 554 5.6.0, nothing delivered or queued, nothing left in tmp/."""
        talk = self.login()
        poisoned = MESSAGE.replace(b"Hello", b"Hel\x00lo")
        talk.send(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\n"
                  b"RCPT TO:<carol@remote.example>\r\nDATA\r\n")
        [(code, enhanced, lines)] = talk.send(poisoned + b".\r\n")
        self.assertEqual((code, enhanced), (554, "5.6.0"))
        self.assertIn("NUL", lines[0])
        talk.send(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\n")
        self.assertEqual(talk.codes(b"BDAT %d LAST\r\n%s" % (len(poisoned), poisoned)),
                         expected(codes.NUL_IN_MESSAGE))
        self.assertEqual(talk.codes("NOOP\r\n"), expected(codes.OK))
        self.assertEqual(inbox_messages(self.context, "bob"), [])
        self.assertEqual(list(self.context.store.tmp_dir.iterdir()), [])
        self.assertEqual(list((self.context.config.data / "queue").glob("**/*.msg")), [])

    def test_smuggling_never_makes_two_messages(self) -> None:
        for ending in (b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n"):
            talk = self.login()
            talk.send(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n")
            smuggled = (b"Subject: one\r\n\r\nx" + ending
                        + b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n"
                        + b"Subject: two\r\n\r\ny\r\n.\r\n")
            self.assertEqual(talk.codes(smuggled), expected(codes.BARE_NEWLINE), ending)
        self.assertEqual(inbox_messages(self.context, "bob"), [])

    def test_input_is_bounded_while_paused(self) -> None:
        talk = Conversation(self.factory)
        talk.send("EHLO client.example\r\n")
        talk.send(b"AUTH PLAIN " + plain("alice", "wrong") + b"\r\n")
        talk.send(b"AUTH PLAIN " + plain("alice") + b"\r\n")  # busy: alice's turn comes a second later
        talk.send(b"NOOP\r\n" * (MAX_PENDING_INPUT // 6 + 10))
        self.assertEqual(talk.transport.producerState, "paused")
        self.clock.advance(2)
        self.assertEqual(talk.transport.producerState, "producing")

    def test_idle_timeout(self) -> None:
        talk = Conversation(self.factory)
        self.clock.advance(299)
        self.assertFalse(talk.transport.disconnecting)
        self.clock.advance(2)
        self.assertEqual([(c, e) for c, e, _ in talk.take()], expected(codes.TIMEOUT))
        self.assertTrue(talk.transport.disconnecting)

    def test_quit(self) -> None:
        talk = Conversation(self.factory)
        self.assertEqual(talk.codes("QUIT\r\nNOOP\r\n"), expected(codes.BYE))
        self.assertTrue(talk.transport.disconnecting)

    def test_helo_gets_no_enhanced_codes(self) -> None:
        talk = Conversation(self.factory)
        self.assertEqual(talk.codes("HELO client.example\r\n"), [(250, None)])
        self.assertEqual(talk.send("NOOP\r\n")[0][2], ["OK"])

    def test_remote_recipient_is_queued_before_250(self) -> None:
        talk = self.login()
        talk.send(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<carol@remote.example>\r\n"
                  b"RCPT TO:<bob@example.org>\r\nDATA\r\n")
        self.assertEqual(talk.codes(MESSAGE + b".\r\n"), expected(codes.MESSAGE_ACCEPTED))
        queue = self.context.extras["queue"]
        [entry] = queue.listing()
        self.assertEqual([r.address for r in entry.recipients], ["carol@remote.example"])
        self.assertEqual(entry.sender, "alice@example.org")
        [claimed] = queue.claim_due(1)  # as a runner would (on PostgreSQL: fetching the message)
        self.assertTrue(queue.message_path(claimed).read_bytes().endswith(MESSAGE))
        queue.storage.release(claimed)
        self.assertEqual(len(inbox_messages(self.context, "bob")), 1)
