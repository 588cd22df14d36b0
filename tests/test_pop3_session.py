"""POP3 transcripts: every command in every state, over a StringTransport and a real store.

Each test reads as the conversation it checks: a table of (client line,
expected start of the server's reply).
"""

from __future__ import annotations

import base64
import io
import sqlite3

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IPushProducer, ISSLTransport
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase
from zope.interface import directlyProvides

from cyrusmail.pop3 import session as pop3_session
from cyrusmail.pop3.locks import MaildropLocks
from cyrusmail.pop3.server import POP3Factory, make_factory
from cyrusmail.pop3.session import IDLE_TIMEOUT, MessageProducer
from cyrusmail.pop3.wire import TopFilter
from cyrusmail.store.records import Flag, FlagChange
from tests.helpers import another_store
from tests.test_pop3_support import REMOTE, Pop3Server, message, unstuff


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


PLAIN_ALICE = b64(b"\0alice\0secret")
PLAIN_WRONG = b64(b"\0alice\0wrong")
PLAIN_AS_BOB = b64(b"bob\0alice\0secret")


class AuthorizationTests(TestCase):
    def setUp(self) -> None:
        self.server = Pop3Server(self)
        self.server.deliver(message(1), message(2))

    def test_greeting(self) -> None:
        self.assertEqual(self.server.connect().greeting, b"+OK cyrusmail POP3 server ready\r\n")

    def test_user_pass(self) -> None:
        self.server.connect().check([
            ("PASS secret", "-ERR Send USER first"),
            ("USER alice", "+OK"),
            ("PASS secret", "+OK alice has 2 messages (220 octets)"),
            ("STAT", "+OK 2 220"),
        ])

    def test_password_with_spaces(self) -> None:
        self.server.context.users.set_password("alice", "two words ")
        self.server.connect().check([("USER alice", "+OK"), ("PASS two words ", "+OK alice has 2")])

    def test_transaction_commands_refused_before_login(self) -> None:
        conversation = self.server.connect()
        conversation.check([
            (name, f"-ERR {name.split()[0]} is not allowed in the AUTHORIZATION state")
            for name in ("STAT", "LIST", "LIST 1", "UIDL", "RETR 1", "TOP 1 1", "DELE 1", "RSET", "NOOP")
        ])
        conversation.check([("USER alice", "+OK"), ("PASS secret", "+OK")])

    def test_login_after_a_failure_waits_its_turn(self) -> None:
        conversation = self.server.connect()
        conversation.check([("USER alice", "+OK"), ("PASS wrong", "-ERR [AUTH] Authentication failed")])
        # The next password is checked a second after the failure, the one after
        # two seconds after the second; the commands sent meanwhile wait their turn.
        self.assertEqual(conversation.send(b"USER alice\r\nPASS bad\r\nUSER alice\r\nPASS secret\r\n"),
                         b"+OK Send PASS\r\n")
        self.server.clock.advance(0.99)
        self.assertEqual(conversation.take(), b"")
        self.server.clock.advance(0.01)
        self.assertEqual(conversation.take(), b"-ERR [AUTH] Authentication failed\r\n+OK Send PASS\r\n")
        self.server.clock.advance(1.9)
        self.assertEqual(conversation.take(), b"")
        self.server.clock.advance(0.1)
        self.assertEqual(conversation.take(), b"+OK alice has 2 messages (220 octets)\r\n")

    def test_unknown_user_fails_like_a_wrong_password(self) -> None:
        conversation = self.server.connect()
        conversation.check([("USER mallory", "+OK"), ("PASS secret", "-ERR [AUTH] Authentication failed")])

    def test_auth_plain_initial_response(self) -> None:
        self.server.connect().check([
            (f"AUTH PLAIN {PLAIN_ALICE}", "+OK alice has 2 messages"),
            ("STAT", "+OK 2 220"),
        ])

    def test_auth_plain_challenge(self) -> None:
        self.server.connect().check([
            ("AUTH plain", "+ \r\n"),
            (b64(b"alice\0alice\0secret"), "+OK alice has 2 messages"),
        ])

    def test_auth_login(self) -> None:
        self.server.connect().check([
            ("AUTH LOGIN", f"+ {b64(b'Username:')}\r\n"),
            (b64(b"alice"), f"+ {b64(b'Password:')}\r\n"),
            (b64(b"secret"), "+OK alice has 2 messages"),
        ])

    def test_auth_login_initial_response(self) -> None:
        self.server.connect().check([
            (f"AUTH LOGIN {b64(b'alice')}", f"+ {b64(b'Password:')}\r\n"),
            (b64(b"secret"), "+OK alice has 2 messages"),
        ])

    def test_auth_failures_and_cancel(self) -> None:
        conversation = self.server.connect()
        conversation.check([
            ("AUTH", "+OK SASL mechanisms follow\r\nSCRAM-SHA-256\r\nPLAIN\r\nLOGIN\r\n.\r\n"),
            ("AUTH CRAM-MD5", "-ERR Unsupported mechanism CRAM-MD5"),
            ("AUTH PLAIN !!!", "-ERR [AUTH] response is not base64"),
            ("AUTH LOGIN", "+ "),
            ("*", "-ERR Authentication cancelled"),
            ("AUTH PLAIN", "+ "),
            ("not base64!", "-ERR [AUTH] response is not base64"),
            ("AUTH PLAIN", "+ "),
            ("A" * 5000, "-ERR [AUTH] PLAIN message must have exactly three"),  # valid base64, 5000 zero octets
            ("AUTH PLAIN", "+ "),
            ("A" * 20000, "-ERR SASL response too long"),
            (f"AUTH PLAIN {PLAIN_WRONG}", ""),  # the malformed message counted as a failure: this waits 1 s
        ])
        self.server.clock.advance(1)
        self.assertEqual(conversation.take(), b"-ERR [AUTH] Authentication failed\r\n")
        conversation.check([("AUTH PLAIN =", "")])  # "=" is an empty response; waits 2 s
        self.server.clock.advance(2)
        self.assertTrue(conversation.take().startswith(b"-ERR [AUTH] PLAIN message must have exactly three"))
        conversation.check([
            ("AUTH PLAIN", "+ "),
            (PLAIN_ALICE, ""),  # alice's turn comes 3 s after the third failure
        ])
        self.server.clock.advance(3)
        self.assertIn(b"+OK alice has", conversation.take())

    def test_auth_as_another_user_needs_a_master(self) -> None:
        conversation = self.server.connect()
        conversation.check([(f"AUTH PLAIN {PLAIN_AS_BOB}", "-ERR [AUTH] Authentication failed")])  # alice is no master

    def test_quit_before_login(self) -> None:
        conversation = self.server.connect()
        conversation.check([("QUIT", "+OK Bye")])
        self.assertTrue(conversation.transport.disconnecting)


class PlaintextPolicyTests(TestCase):
    def setUp(self) -> None:
        self.server = Pop3Server(self)

    def capabilities(self, conversation) -> list[bytes]:
        return conversation.command("CAPA").split(b"\r\n")[1:-2]

    def test_loopback_may_send_passwords(self) -> None:
        conversation = self.server.connect()
        self.assertEqual(self.capabilities(conversation), [
            b"TOP", b"UIDL", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING",
            b"USER", b"SASL SCRAM-SHA-256 PLAIN LOGIN", b"STLS", b"IMPLEMENTATION cyrusmail"])

    def test_remote_without_tls_is_refused_and_offered_stls(self) -> None:
        conversation = self.server.connect(peer=REMOTE)
        capabilities = self.capabilities(conversation)
        self.assertIn(b"STLS", capabilities)
        self.assertNotIn(b"USER", capabilities)
        self.assertFalse([line for line in capabilities if line.startswith(b"SASL")])
        refused = "-ERR [AUTH] Plaintext authentication is not allowed without TLS"
        conversation.check([
            ("USER alice", refused),
            ("PASS secret", "-ERR Send USER first"),
            (f"AUTH PLAIN {PLAIN_ALICE}", refused),
            ("AUTH LOGIN", refused),
            ("AUTH", "+OK SASL mechanisms follow\r\n.\r\n"),
        ])

    def test_remote_over_tls_may_log_in(self) -> None:
        conversation = self.server.connect(peer=REMOTE, tls=True)
        capabilities = self.capabilities(conversation)
        self.assertIn(b"USER", capabilities)
        self.assertNotIn(b"STLS", capabilities)
        conversation.check([("STLS", "-ERR Already using TLS"), ("USER alice", "+OK"), ("PASS secret", "+OK")])

    def test_loopback_refused_when_the_config_says_so(self) -> None:
        server = Pop3Server(self, allow_loopback=False)
        conversation = server.connect()
        self.assertNotIn(b"USER", self.capabilities(conversation))
        conversation.check([("USER alice", "-ERR [AUTH] Plaintext")])


class STLSTests(TestCase):
    def setUp(self) -> None:
        self.server = Pop3Server(self)

    def test_pipelined_command_after_stls_is_discarded(self) -> None:
        conversation = self.server.connect(peer=REMOTE)
        reply = conversation.send(b"STLS\r\nUSER alice\r\nPASS secret\r\n")
        self.assertEqual(reply, b"+OK Begin TLS negotiation now\r\n")
        self.assertIs(conversation.transport.tls_started_with, self.server.context.tls)
        conversation.check([
            ("STAT", "-ERR STAT is not allowed in the AUTHORIZATION state"),
            ("STLS", "-ERR Already using TLS"),
            ("USER alice", "+OK"), ("PASS secret", "+OK"),
        ])

    def test_user_given_before_stls_is_forgotten(self) -> None:
        conversation = self.server.connect()
        conversation.check([("USER alice", "+OK"), ("STLS", "+OK Begin TLS"), ("PASS secret", "-ERR Send USER first")])

    def test_stls_not_allowed_after_login(self) -> None:
        conversation = self.server.connect()
        conversation.login()
        conversation.check([("STLS", "-ERR STLS is not allowed in the TRANSACTION state")])


class TransactionTests(TestCase):
    def setUp(self) -> None:
        self.server = Pop3Server(self)
        self.tricky = b"Subject: dots\r\n\r\n.\r\n..two\r\nmiddle\r\n.\r\nno final CRLF."
        self.uids = self.server.deliver(message(1), message(2, body_lines=5), self.tricky)
        self.records = self.server.inbox().messages()
        self.conversation = self.server.connect()
        self.conversation.login()

    def test_stat_list_uidl(self) -> None:
        sizes = [record.size for record in self.records]
        guids = [record.guid for record in self.records]
        self.conversation.check([
            ("STAT", f"+OK 3 {sum(sizes)}\r\n"),
            ("LIST", f"+OK 3 messages\r\n1 {sizes[0]}\r\n2 {sizes[1]}\r\n3 {sizes[2]}\r\n.\r\n"),
            ("LIST 2", f"+OK 2 {sizes[1]}\r\n"),
            ("LIST 4", "-ERR No message 4"),
            ("UIDL", f"+OK 3 messages\r\n1 {guids[0]}\r\n2 {guids[1]}\r\n3 {guids[2]}\r\n.\r\n"),
            ("UIDL 3", f"+OK 3 {guids[2]}\r\n"),
            ("UIDL 9", "-ERR No message 9"),
        ])

    def test_uidl_is_printable_and_short(self) -> None:
        for record in self.records:
            self.assertTrue(record.guid.isascii() and record.guid.isprintable() and len(record.guid) <= 70)
            self.assertNotIn(" ", record.guid)

    def test_retr_returns_the_stored_bytes(self) -> None:
        for number, record in enumerate(self.records, 1):
            reply = self.conversation.command(f"RETR {number}")
            self.assertTrue(reply.startswith(f"+OK {record.size} octets\r\n".encode()), reply)
            stored = self.server.inbox().read(record.uid)
            self.assertEqual(len(stored), record.size)
            expected = stored if stored.endswith(b"\r\n") else stored + b"\r\n"
            self.assertEqual(unstuff(reply), expected)

    def test_retr_stuffs_dots_exactly(self) -> None:
        self.assertEqual(self.conversation.command("RETR 3"),
                         b"+OK %d octets\r\nSubject: dots\r\n\r\n..\r\n...two\r\nmiddle\r\n..\r\n"
                         b"no final CRLF.\r\n.\r\n" % len(self.tricky))

    def test_top(self) -> None:
        self.conversation.check([
            ("TOP 2 0", ("+OK Top of message follows\r\nFrom: bob@example.org\r\nTo: alice@example.org\r\n"
                        "Subject: message 2\r\n\r\n.\r\n")),
            ("TOP 2 2", ("+OK Top of message follows\r\nFrom: bob@example.org\r\nTo: alice@example.org\r\n"
                        "Subject: message 2\r\n\r\nline 1 of message 2\r\nline 2 of message 2\r\n.\r\n")),
            ("TOP 3 2", "+OK Top of message follows\r\nSubject: dots\r\n\r\n..\r\n...two\r\n.\r\n"),
            ("TOP 3 100", ("+OK Top of message follows\r\nSubject: dots\r\n\r\n..\r\n...two\r\nmiddle\r\n..\r\n"
                          "no final CRLF.\r\n.\r\n")),
            ("TOP 4 1", "-ERR No message 4"),
            ("TOP 1", "-ERR TOP: missing argument"),
        ])

    def test_dele_rset_and_quit_expunge(self) -> None:
        size_3 = self.records[2].size
        self.conversation.check([
            ("DELE 1", "+OK Message 1 deleted"),
            ("DELE 1", "-ERR Message 1 is deleted"),
            ("RETR 1", "-ERR Message 1 is deleted"),
            ("TOP 1 0", "-ERR Message 1 is deleted"),
            ("LIST 1", "-ERR Message 1 is deleted"),
            ("UIDL 1", "-ERR Message 1 is deleted"),
            ("STAT", f"+OK 2 {self.records[1].size + size_3}"),
            ("LIST", f"+OK 2 messages\r\n2 {self.records[1].size}\r\n3 {size_3}\r\n.\r\n"),
            ("RSET", "+OK Maildrop has 3 messages"),
            ("LIST 1", f"+OK 1 {self.records[0].size}"),
            ("DELE 1", "+OK"),
            ("DELE 3", "+OK"),
            ("RETR 2", "+OK"),
            ("NOOP", "+OK"),
        ])
        self.assertEqual(len(self.server.inbox().messages()), 3, "nothing changes before QUIT")
        self.conversation.check([("QUIT", "+OK Bye (1 messages left)")])
        self.assertTrue(self.conversation.transport.disconnecting)
        [left] = self.server.inbox().messages()
        self.assertEqual(left.uid, self.uids[1])
        self.assertTrue(left.flags & Flag.SEEN, "RETR marks the message seen at QUIT")

    def test_lost_connection_changes_nothing_and_releases_the_lock(self) -> None:
        self.conversation.check([("DELE 1", "+OK"), ("RETR 2", "+OK")])
        self.conversation.protocol.connectionLost(None)
        self.assertEqual([r.flags for r in self.server.inbox().messages()], [r.flags for r in self.records])
        self.server.connect().check([("USER alice", "+OK"), ("PASS secret", "+OK alice has 3 messages")])

    def test_authorization_commands_refused_after_login(self) -> None:
        self.conversation.check([
            ("USER alice", "-ERR USER is not allowed in the TRANSACTION state"),
            ("PASS secret", "-ERR PASS is not allowed in the TRANSACTION state"),
            ("AUTH PLAIN", "-ERR AUTH is not allowed in the TRANSACTION state"),
            ("CAPA", ("+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
                     "PIPELINING\r\nIMPLEMENTATION cyrusmail\r\n.\r\n")),
        ])

    def test_bad_input_gets_err_and_the_session_goes_on(self) -> None:
        self.conversation.check([
            ("XYZZY", "-ERR Unknown command XYZZY"),
            ("", "-ERR Empty command line"),
            ("APOP alice c4c9334bac560ecc979e58001b3e22fb", "-ERR Unknown command APOP"),
            ("RETR", "-ERR RETR: missing argument"),
            ("RETR 1 2", "-ERR RETR: too many arguments"),
            ("STAT now", "-ERR STAT: too many arguments"),
            ("DELE 0", "-ERR DELE: invalid message number"),
            ("RETR 99999", "-ERR No message 99999"),
            ("RETR one", "-ERR RETR: invalid message number"),
            ("TOP 1 x", "-ERR TOP: invalid line count"),
            ("X" * 10240, "-ERR Line too long"),
            ("NOOP " + "x" * 300, "-ERR Line too long"),
            ("X" * 100_000, "-ERR Line too long"),
            (b"\x00\xff\xfe binary", "-ERR Unknown command"),
            ("STAT", "+OK 3"),
        ])
        self.assertFalse(self.conversation.transport.disconnecting)

    def test_pipelined_commands_answer_in_order(self) -> None:
        reply = self.conversation.send(b"STAT\r\nRETR 3\r\nDELE 2\r\nLIST 2\r\nNOOP\r\n")
        self.assertEqual(reply.count(b"\r\n.\r\n"), 1)
        self.assertTrue(reply.startswith(b"+OK 3 "))
        self.assertTrue(reply.endswith(b"no final CRLF.\r\n.\r\n+OK Message 2 deleted\r\n"
                                       b"-ERR Message 2 is deleted\r\n+OK\r\n"), reply[-120:])


class ConcurrentStoreTests(TestCase):
    """An IMAP session (played here through the store) works while POP3 is in TRANSACTION."""

    def test_expunge_and_append_elsewhere_during_transaction(self) -> None:
        server = Pop3Server(self)
        uids = server.deliver(message(1), message(2), message(3))
        conversation = server.connect()
        conversation.login()
        imap = server.inbox()
        imap.set_flags([uids[1]], FlagChange.ADD, Flag.DELETED)
        imap.expunge([uids[1]])
        [new_uid] = server.deliver(message(4))
        imap.set_flags([uids[2]], FlagChange.ADD, Flag.DELETED)  # flagged by IMAP, not expunged
        conversation.check([
            ("STAT", "+OK 3 "),  # the snapshot taken at login
            ("LIST 4", "-ERR No message 4"),
            ("RETR 2", "-ERR Message 2 no longer exists"),
            ("TOP 2 0", "-ERR Message 2 no longer exists"),
            ("RETR 1", "+OK"),
            ("DELE 1", "+OK"),
            ("DELE 2", "+OK"),
            ("QUIT", "+OK Bye"),
        ])
        left = server.inbox().messages()
        self.assertEqual([record.uid for record in left], [uids[2], new_uid])
        self.assertTrue(left[0].flags & Flag.DELETED, "IMAP's own \\Deleted is IMAP's to expunge")
        changes = imap.changes_since(0)
        self.assertEqual(changes.expunged, [uids[0], uids[1]])


class MaildropLockTests(TestCase):
    def setUp(self) -> None:
        self.server = Pop3Server(self)
        self.server.deliver(message(1))

    def test_second_session_is_in_use_until_the_first_ends(self) -> None:
        first = self.server.connect()
        first.login()
        second = self.server.connect()
        second.check([
            ("USER alice", "+OK"),
            ("PASS secret", "-ERR [IN-USE] Maildrop is in use by another POP3 session"),
            ("STAT", "-ERR STAT is not allowed in the AUTHORIZATION state"),
            (f"AUTH PLAIN {PLAIN_ALICE}", "-ERR [IN-USE]"),
        ])
        first.check([("QUIT", "+OK")])
        second.check([("USER alice", "+OK"), ("PASS secret", "+OK alice has 1 messages")])

    def test_pop3_and_pop3s_share_the_locks(self) -> None:
        self.server.connect().login()
        pop3s = make_factory(self.server.context, "pop3s")
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40995))
        directlyProvides(transport, ISSLTransport)
        session = pop3s.buildProtocol(transport.getPeer())
        session.makeConnection(transport)
        session.dataReceived(b"USER alice\r\nPASS secret\r\n")
        self.assertTrue(transport.value().endswith(b"-ERR [IN-USE] Maildrop is in use by another POP3 session\r\n"))
        session.connectionLost(None)

    def other_process_locks(self) -> MaildropLocks:
        """The POP3 locks of another server process: on the same data folder (its own open lock file),
        or on the same database (its own connections)."""
        store = another_store(self.server.context.store)
        self.addCleanup(store.close)
        return MaildropLocks.for_store(store)

    def test_lock_holds_across_processes(self) -> None:
        """A second server process: its own registry, the same lock file or database lock."""
        self.server.connect().login()
        other_process = POP3Factory(self.server.context, "pop3", locks=self.other_process_locks())
        conversation = self.server.connect()
        conversation.protocol.locks = other_process.locks
        conversation.check([("USER alice", "+OK"), ("PASS secret", "-ERR [IN-USE]")])

    def test_lock_file_is_released(self) -> None:
        locks = MaildropLocks.for_store(self.server.context.store)
        lock = locks.acquire("alice")
        self.assertIsNone(locks.acquire("alice"))
        self.assertIsNone(self.other_process_locks().acquire("alice"))
        lock.release()
        lock.release()
        again = self.other_process_locks().acquire("alice")
        self.assertIsNotNone(again)
        self.assertIsNone(locks.acquire("alice"))  # and now this process waits for the other
        again.release()
        last = locks.acquire("alice")
        self.assertIsNotNone(last)
        last.release()


class IdleTimeoutTests(TestCase):
    def test_idle_session_is_closed_without_update(self) -> None:
        server = Pop3Server(self)
        server.deliver(message(1))
        conversation = server.connect()
        conversation.login()
        conversation.check([("DELE 1", "+OK")])
        server.clock.advance(IDLE_TIMEOUT - 1)
        conversation.check([("NOOP", "+OK")])  # activity restarts the timer
        server.clock.advance(IDLE_TIMEOUT - 1)
        self.assertFalse(conversation.transport.disconnecting)
        server.clock.advance(1)
        self.assertTrue(conversation.transport.disconnecting)
        self.assertEqual(conversation.take(), b"")
        self.assertEqual(len(server.inbox().messages()), 1)
        server.connect().login()  # the lock went with it

    def test_timeout_is_at_least_ten_minutes(self) -> None:
        self.assertGreaterEqual(IDLE_TIMEOUT, 600)


class PausingTransport:
    """Stands in for a socket whose buffer fills after every write."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.producer = None

    def write(self, data: bytes) -> None:
        self.written.append(data)
        if self.producer is not None:
            self.producer.pauseProducing()


class CountingFile(io.BytesIO):
    """A message file that counts the octets read from it."""

    octets_read = 0

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        self.octets_read += len(data)
        return data


class StreamingTests(TestCase):
    def test_large_message_streams_in_chunks_under_back_pressure(self) -> None:
        content = b"".join(b".line %d\r\n" % n for n in range(400_000))  # about 5 MiB, every line stuffed
        source = io.BytesIO(content)
        transport = PausingTransport()
        ended = []
        producer = MessageProducer(source, transport.write, ended.append)
        self.assertTrue(IPushProducer.providedBy(producer))
        transport.producer = producer
        producer.resumeProducing()
        self.assertEqual(len(transport.written), 1)
        self.assertLessEqual(source.tell(), pop3_session.CHUNK_SIZE, "one chunk read per resume")
        while not ended:
            producer.resumeProducing()
        self.assertEqual(ended, [None])
        self.assertGreater(len(transport.written), len(content) // pop3_session.CHUNK_SIZE)
        sent = b"".join(transport.written)
        self.assertEqual(sent, content.replace(b"\r\n.", b"\r\n..").replace(b".line 0", b"..line 0", 1) + b".\r\n")
        self.assertTrue(source.closed)

    def test_dot_line_at_every_offset_around_a_chunk_boundary(self) -> None:
        chunk = pop3_session.CHUNK_SIZE
        for offset in range(chunk - 4, chunk + 3):
            content = b"a" * (offset - 2) + b"\r\n.\r\n.." + b"b" * 10 + b"\r\n.\r\nend"
            sent: list[bytes] = []
            MessageProducer(io.BytesIO(content), sent.append, lambda error: None).resumeProducing()
            self.assertEqual(b"".join(sent), content.replace(b"\r\n.", b"\r\n..") + b"\r\n.\r\n", offset)

    def test_top_reads_only_what_it_needs(self) -> None:
        content = b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n" * 1 + b"y" * 10_000_000
        source = CountingFile(content)
        sent: list[bytes] = []
        ended = []
        MessageProducer(source, sent.append, ended.append, TopFilter(1)).resumeProducing()
        self.assertEqual(b"".join(sent), b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n.\r\n")
        self.assertEqual(ended, [None])
        self.assertEqual(source.octets_read, pop3_session.CHUNK_SIZE)
        self.assertTrue(source.closed)

    def test_stop_producing_closes_the_file(self) -> None:
        source = io.BytesIO(b"a\r\n" * 100_000)
        transport = PausingTransport()
        producer = MessageProducer(source, transport.write, self.fail)
        transport.producer = producer
        producer.resumeProducing()
        producer.stopProducing()
        self.assertTrue(source.closed)

    def test_retr_over_the_session_streams_while_the_reader_keeps_up(self) -> None:
        """The connection's one producer pauses the RETR whenever a chunk is
        written, and resuming it sends the next: the message never sits whole
        in the transport."""
        server = Pop3Server(self)
        big = b"Subject: big\r\n\r\n" + b"0123456789abcdef.\r\n" * 100_000
        server.deliver(big)
        conversation = server.connect()
        conversation.login()
        transport = conversation.transport
        flow = transport.producer
        self.assertIs(flow, conversation.protocol.flow, "the session's flow is the registered producer")

        def write(data, original=transport.write):
            original(data)
            flow.pauseProducing()  # a socket whose buffer fills at every write

        transport.write = write
        reply, rounds = conversation.command("RETR 1"), 0
        while not reply.endswith(b"\r\n.\r\n"):
            self.assertLessEqual(len(transport.value()), pop3_session.CHUNK_SIZE + 100)
            flow.resumeProducing()
            reply += conversation.take()
            rounds += 1
            self.assertLess(rounds, 1000)
        self.assertGreater(rounds, len(big) // pop3_session.CHUNK_SIZE - 1)
        self.assertEqual(unstuff(reply), big)
        self.assertIs(transport.producer, flow, "still registered for the next answer")

    def test_list_and_uidl_read_no_message_file(self) -> None:
        server = Pop3Server(self)
        server.inbox().append_many([(message(n), None, (), None) for n in range(1, 2001)])
        conversation = server.connect()
        conversation.login()
        on_postgresql = hasattr(server.context.store, "dsn")
        if on_postgresql:  # the bodies go; the rows stay
            server.context.store.db.execute("ALTER TABLE blobs RENAME TO blobs_lost")
            self.addCleanup(server.context.store.db.execute, "ALTER TABLE blobs_lost RENAME TO blobs")
        else:
            for path in server.inbox().folder.iterdir():  # the files go; the index stays
                if path.name != "mailbox.json":
                    path.unlink()
        listing = conversation.command("LIST")
        self.assertEqual(listing.count(b"\r\n"), 2002)
        self.assertEqual(conversation.command("UIDL").count(b"\r\n"), 2002)
        self.assertTrue(conversation.command("STAT").startswith(b"+OK 2000 "))
        if not on_postgresql:  # there a body cannot go while its row stays
            self.assertEqual(conversation.command("RETR 1"), b"-ERR Message 1 no longer exists\r\n")


def break_store(store) -> type[Exception]:
    """Make the store's next call fail as a fault would; what it raises then."""
    if hasattr(store, "dsn"):  # the PostgreSQL store: the next statement on messages fails
        import psycopg

        store.db.execute("ALTER TABLE messages RENAME TO messages_lost")
        return psycopg.Error
    store.close()  # every index handle goes: the next store call fails
    return sqlite3.Error


class StoreFailureTests(TestCase):
    def logged_in_then_broken(self):
        """A session logged in to a maildrop of one message; then the store breaks. The session and
        what the store raises now."""
        server = Pop3Server(self)
        server.deliver(message(1))
        conversation = server.connect()
        conversation.login()
        return conversation, break_store(server.context.store)

    def test_a_failed_read_is_answered_and_the_session_goes_on(self) -> None:
        conversation, failure = self.logged_in_then_broken()
        self.assertTrue(conversation.command("RETR 1").startswith(b"-ERR [SYS/TEMP] "))
        conversation.check([("NOOP", "+OK")])
        self.assertTrue(self.flushLoggedErrors(failure))

    def test_store_failure_is_answered_and_the_session_goes_on(self) -> None:
        conversation, failure = self.logged_in_then_broken()
        conversation.check([
            ("DELE 1", "+OK"),
            ("STAT", "+OK 0 0"),
            ("RSET", "+OK"),
            ("DELE 1", "+OK"),
            ("QUIT", "-ERR [SYS/TEMP] Some deleted messages not removed"),
        ])
        self.assertTrue(conversation.transport.disconnecting)
        self.assertTrue(self.flushLoggedErrors(failure))
