"""Delivery status notifications (RFC 3461 as a service, RFC 3464 as a format).

Every DSN is parsed back with Python's ``email`` package: the
multipart/report structure, the per-message and per-recipient fields, and
what is returned of the original (RET=FULL, RET=HDRS).  The queue's
decisions are checked end to end: NOTIFY=SUCCESS gives "delivered" for a
local mailbox and "relayed" for a next hop without DSN, and nothing at all
for a next hop with DSN (which is handed NOTIFY, ORCPT, RET and ENVID
instead); NOTIFY=DELAY gives one "delayed"; NOTIFY=NEVER gives nothing; a
DSN is sent with ``<>`` and never reported on.
"""

from __future__ import annotations

import email
import email.policy

from twisted.internet import protocol, reactor, task
from twisted.protocols.basic import LineReceiver
from twisted.trial import unittest

from cyrusmail.delivery import dsn
from cyrusmail.delivery.queue import DELIVERED, FAILED, PENDING, Queue
from cyrusmail.smtp import codes, wire
from tests.test_queue import MESSAGE, QueueTestsBase, async_test
from tests.test_smtp_session_support import (
    Conversation,
    expected,
    inbox_messages,
    make_server,
    plain,
    submission_factory,
)


def parse_report(test: unittest.TestCase, raw: bytes):
    """(report, per-message fields, [per-recipient fields], returned part), checked against RFC 3464."""
    report = email.message_from_bytes(raw, policy=email.policy.default)
    test.assertEqual(report.get_content_type(), "multipart/report")
    test.assertEqual(report.get_param("report-type"), "delivery-status")
    test.assertEqual(report["Auto-Submitted"], "auto-replied")
    human, status, returned = report.get_payload()
    test.assertEqual(human.get_content_type(), "text/plain")
    test.assertEqual(status.get_content_type(), "message/delivery-status")
    per_message, *per_recipient = status.get_payload()
    test.assertTrue(per_message["Reporting-MTA"].startswith("dns; "))
    test.assertIsNotNone(email.utils.parsedate_to_datetime(per_message["Arrival-Date"]))
    for fields in per_recipient:
        test.assertTrue(fields["Final-Recipient"].startswith("rfc822; "))
        test.assertIn(fields["Action"], ("failed", "delayed", "delivered", "relayed", "expanded"))
        test.assertRegex(fields["Status"], r"^[245]\.\d{1,3}\.\d{1,3}$")
        test.assertIsNotNone(email.utils.parsedate_to_datetime(fields["Last-Attempt-Date"]))
    return report, per_message, per_recipient, returned


class BuildTests(unittest.TestCase):
    def test_failure_report_with_headers_only(self) -> None:
        raw = dsn.build_dsn(
            reporting_mta="mail.example.org", sender="alice@example.org", arrival=1_700_000_000,
            now=1_700_000_100, envid="QQ314159",
            recipients=[dsn.ReportRecipient("dave@remote.example", "5.1.1", "550 5.1.1 No such user",
                                            "mx.remote.example", "rfc822;Dave@Remote.example")],
            original_header=dsn.header_of(MESSAGE))
        report, per_message, [fields], returned = parse_report(self, raw)
        self.assertEqual(report["Subject"], "Undelivered Mail Returned to Sender")
        self.assertEqual(per_message["Reporting-MTA"], "dns; mail.example.org")
        self.assertEqual(per_message["Original-Envelope-Id"], "QQ314159")
        self.assertEqual(fields["Original-Recipient"], "rfc822;Dave@Remote.example")
        self.assertEqual(fields["Final-Recipient"], "rfc822; dave@remote.example")
        self.assertEqual((fields["Action"], fields["Status"]), ("failed", "5.1.1"))
        self.assertEqual(fields["Remote-MTA"], "dns; mx.remote.example")
        self.assertEqual(fields["Diagnostic-Code"], "smtp; 550 5.1.1 No such user")
        self.assertEqual(returned.get_content_type(), "text/rfc822-headers")
        self.assertIn(b"Subject: out\r\n", raw)
        self.assertNotIn(b"Hello.", raw)

    def test_failure_report_with_the_full_message(self) -> None:
        raw = dsn.build_dsn(
            reporting_mta="mail.example.org", sender="alice@example.org", arrival=0, now=10,
            recipients=[dsn.ReportRecipient("dave@remote.example", "5.1.1")], original_message=MESSAGE)
        _, _, _, returned = parse_report(self, raw)
        self.assertEqual(returned.get_content_type(), "message/rfc822")
        [original] = returned.get_payload()
        self.assertEqual(original["Message-ID"], "<out@example.org>")
        self.assertIn(b"\r\n\r\n" + MESSAGE + b"\r\n--", raw)  # byte for byte

    def test_delayed_report_says_until_when(self) -> None:
        raw = dsn.build_dsn(
            reporting_mta="mail.example.org", sender="alice@example.org", arrival=0, now=10,
            recipients=[dsn.ReportRecipient("dave@remote.example", "4.4.1", action=dsn.DELAYED,
                                            will_retry_until=86400)], original_header=b"Subject: x\r\n")
        report, _, [fields], _ = parse_report(self, raw)
        self.assertTrue(report["Subject"].startswith("Delayed Mail"))
        self.assertEqual(fields["Action"], "delayed")
        self.assertIsNotNone(email.utils.parsedate_to_datetime(fields["Will-Retry-Until"]))

    def test_field_text_is_one_line(self) -> None:
        raw = dsn.build_dsn(
            reporting_mta="m", sender="a@b", arrival=0, now=0, envid="x\r\nBcc: evil",
            recipients=[dsn.ReportRecipient("d@r", "5.0.0", "550 bad\r\nInjected: yes")])
        self.assertNotIn(b"\r\nInjected:", raw)
        self.assertNotIn(b"\r\nBcc:", raw)

    def test_ret_full_only_for_failures_and_not_too_large(self) -> None:
        failed = [dsn.ReportRecipient("d@r", "5.0.0")]
        delivered = [dsn.ReportRecipient("d@r", "2.0.0", action=dsn.DELIVERED)]
        self.assertTrue(dsn.returns_full(failed, "FULL", 100))
        self.assertFalse(dsn.returns_full(failed, "HDRS", 100))
        self.assertFalse(dsn.returns_full(failed, None, 100))
        self.assertFalse(dsn.returns_full(delivered, "FULL", 100))
        self.assertFalse(dsn.returns_full(failed, "FULL", dsn.MAX_RETURN_FULL + 1))


def rcpt(address: str, *notify: str, orcpt: str | None = None) -> wire.Rcpt:
    original = wire.OriginalRecipient("rfc822", orcpt) if orcpt else None
    return wire.Rcpt(wire.parse_path(f"<{address}>"),
                     notify=frozenset(wire.Notify(n) for n in notify) if notify else None, orcpt=original)


class QueueReportTests(QueueTestsBase):
    """Against the aiosmtpd smarthost, which does not advertise DSN."""

    def mail(self, sender="alice@example.org", ret=None, envid=None) -> wire.Mail:
        return wire.Mail(wire.parse_path(f"<{sender}>"), ret=wire.Ret(ret) if ret else None, envid=envid)

    @async_test
    async def test_success_relayed_to_a_next_hop_without_dsn(self) -> None:
        entry = self.queue.enqueue(self.mail(envid="E1"), [
            rcpt("carol@remote.example", "SUCCESS", "FAILURE", orcpt="carol@remote.example"),
            rcpt("erin@remote.example")], MESSAGE)
        await self.queue.attempt(entry)
        self.assertEqual([r.state for r in entry.recipients], [DELIVERED, DELIVERED])
        [raw] = inbox_messages(self.context, "alice")
        report, per_message, [fields], returned = parse_report(self, raw)
        self.assertEqual(report["Subject"], "Successful Mail Delivery Report")
        self.assertEqual(per_message["Original-Envelope-Id"], "E1")
        self.assertEqual(fields["Final-Recipient"], "rfc822; carol@remote.example")
        self.assertEqual(fields["Original-Recipient"], "rfc822;carol@remote.example")
        self.assertEqual((fields["Action"], fields["Status"]), ("relayed", "2.0.0"))
        self.assertEqual(fields["Remote-MTA"], "dns; 127.0.0.1")
        self.assertEqual(returned.get_content_type(), "text/rfc822-headers")

    @async_test
    async def test_default_notify_reports_failure_only(self) -> None:
        self.handler.rcpt_replies = {"dave@remote.example": "550 5.1.1 No"}
        entry = self.queue.enqueue(self.mail(), ["carol@remote.example", "dave@remote.example"], MESSAGE)
        await self.queue.attempt(entry)
        [raw] = inbox_messages(self.context, "alice")
        _, _, [fields], _ = parse_report(self, raw)
        self.assertEqual((fields["Final-Recipient"], fields["Action"]), ("rfc822; dave@remote.example", "failed"))

    @async_test
    async def test_ret_full_returns_the_whole_message_on_failure(self) -> None:
        self.handler.rcpt_replies = {"dave@remote.example": "550 5.1.1 No"}
        entry = self.queue.enqueue(self.mail(ret="FULL"), ["dave@remote.example"], MESSAGE)
        await self.queue.attempt(entry)
        [raw] = inbox_messages(self.context, "alice")
        _, _, [fields], returned = parse_report(self, raw)
        self.assertEqual(returned.get_content_type(), "message/rfc822")
        self.assertIn(MESSAGE, raw)
        self.assertIn("550 5.1.1 No", fields["Diagnostic-Code"])

    @async_test
    async def test_ret_hdrs_returns_the_header(self) -> None:
        self.handler.rcpt_replies = {"dave@remote.example": "550 5.1.1 No"}
        entry = self.queue.enqueue(self.mail(ret="HDRS"), ["dave@remote.example"], MESSAGE)
        await self.queue.attempt(entry)
        [raw] = inbox_messages(self.context, "alice")
        _, _, _, returned = parse_report(self, raw)
        self.assertEqual(returned.get_content_type(), "text/rfc822-headers")
        self.assertNotIn(b"Hello.", raw)

    @async_test
    async def test_delay_is_reported_once_past_the_threshold(self) -> None:
        self.handler.data_replies = ["451 4.3.0 later"] * 3
        clock = task.Clock()
        clock.advance(1_000_000)
        queue = Queue(self.context, clock=clock)
        queue.reactor = reactor
        queue.delay_notice_after = 600  # give_up is an hour here, the default threshold 4 hours
        entry = queue.enqueue(self.mail(), [rcpt("carol@remote.example", "DELAY", "FAILURE"),
                                            rcpt("erin@remote.example")], MESSAGE)
        await queue.attempt(entry)
        self.assertEqual(inbox_messages(self.context, "alice"), [])  # too early
        clock.advance(queue.delay_notice_after)
        await queue.attempt(entry)
        [raw] = inbox_messages(self.context, "alice")
        _, _, [fields], returned = parse_report(self, raw)
        self.assertEqual(fields["Final-Recipient"], "rfc822; carol@remote.example")
        self.assertEqual((fields["Action"], fields["Status"]), ("delayed", "4.3.0"))
        self.assertIn("Will-Retry-Until", fields)
        self.assertEqual(returned.get_content_type(), "text/rfc822-headers")
        self.assertEqual([r.state for r in entry.recipients], [PENDING, PENDING])
        clock.advance(60)
        await queue.attempt(entry)
        self.assertEqual(len(inbox_messages(self.context, "alice")), 1)  # once only
        restarted = Queue(self.context, clock=clock)
        [loaded] = restarted.load()
        self.assertTrue(loaded.recipients[0].delay_reported)

    @async_test
    async def test_never_means_no_report_at_all(self) -> None:
        self.handler.rcpt_replies = {"dave@remote.example": "550 5.1.1 No"}
        entry = self.queue.enqueue(self.mail(), [rcpt("carol@remote.example", "NEVER"),
                                                 rcpt("dave@remote.example", "NEVER")], MESSAGE)
        await self.queue.attempt(entry)
        self.assertEqual([r.state for r in entry.recipients], [DELIVERED, FAILED])
        self.assertEqual(inbox_messages(self.context, "alice"), [])
        self.assertEqual(self.queued(), [])

    @async_test
    async def test_a_dsn_is_sent_with_the_null_sender_and_never_reported_on(self) -> None:
        self.handler.rcpt_replies = {"dave@remote.example": "550 5.1.1 No",
                                     "erin@elsewhere.example": "550 5.1.1 gone too"}
        entry = self.queue.enqueue(self.mail("erin@elsewhere.example", ret="FULL"),
                                   [rcpt("dave@remote.example", "FAILURE", "SUCCESS", "DELAY")], MESSAGE)
        await self.queue.attempt(entry)
        [report] = self.queue.listing()
        self.assertIsNone(report.sender)
        self.assertTrue(report.is_bounce)
        await self.queue.attempt(report)
        self.assertEqual(report.recipients[0].state, FAILED)
        self.assertEqual(self.queue.listing(), [])
        self.assertEqual(self.queued(), [])

    @async_test
    async def test_local_recipient_delivered_by_the_queue_reports_delivered(self) -> None:
        entry = self.queue.enqueue(self.mail(), [rcpt("bob@example.org", "SUCCESS")], MESSAGE)
        await self.queue.attempt(entry)
        self.assertEqual(inbox_messages(self.context, "bob"), [MESSAGE])
        [raw] = inbox_messages(self.context, "alice")
        _, _, [fields], _ = parse_report(self, raw)
        self.assertEqual((fields["Action"], fields["Final-Recipient"]), ("delivered", "rfc822; bob@example.org"))
        self.assertIsNone(fields["Remote-MTA"])


class DSNSink(LineReceiver):
    """A next hop that advertises DSN and records every command."""

    delimiter = b"\r\n"
    MAX_LENGTH = 1 << 20

    def connectionMade(self) -> None:
        self.in_data = False
        self.lines: list[bytes] = []
        self.sendLine(b"220 sink ESMTP")

    def lineReceived(self, line: bytes) -> None:
        if self.in_data:
            if line == b".":
                self.in_data = False
                self.factory.messages.append(b"".join(l + b"\r\n" for l in self.lines))
                self.sendLine(b"250 2.0.0 OK")
            else:
                self.lines.append(line[1:] if line.startswith(b".") else line)
            return
        self.factory.commands.append(line.decode())
        verb = line[:4].upper()
        if verb == b"EHLO":
            self.sendLine(b"250-sink\r\n250-8BITMIME\r\n250 DSN")
        elif verb == b"DATA":
            self.in_data, self.lines = True, []
            self.sendLine(b"354 go")
        elif verb == b"QUIT":
            self.sendLine(b"221 bye")
            self.transport.loseConnection()
        else:
            self.sendLine(b"250 OK")


class PassOnTests(unittest.TestCase):
    def setUp(self) -> None:
        factory = protocol.ServerFactory.forProtocol(DSNSink)
        factory.commands, factory.messages = [], []
        self.sink = factory
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.context, _ = make_server(self.mktemp(), queue={"retry_initial": "1s", "retry_max": "4s"})

        async def resolver(domain):
            return [("127.0.0.1", port.getHost().port)]

        self.queue = Queue(self.context, clock=reactor, resolver=resolver)

    @async_test
    async def test_dsn_parameters_are_passed_on_and_no_relayed_report_is_made(self) -> None:
        mail = wire.Mail(wire.parse_path("<alice@example.org>"), ret=wire.Ret.FULL, envid="ID+1=2")
        entry = self.queue.enqueue(mail, [rcpt("carol@remote.example", "SUCCESS", "DELAY",
                                               orcpt="Carol@remote.example")], MESSAGE)
        await self.queue.attempt(entry)
        self.assertEqual(entry.recipients[0].state, DELIVERED)
        mail_line = next(c for c in self.sink.commands if c.startswith("MAIL"))
        rcpt_line = next(c for c in self.sink.commands if c.startswith("RCPT"))
        self.assertEqual(mail_line, "MAIL FROM:<alice@example.org> RET=FULL ENVID=ID+2B1+3D2")
        self.assertEqual(rcpt_line, "RCPT TO:<carol@remote.example> NOTIFY=DELAY,SUCCESS "
                                    "ORCPT=rfc822;Carol@remote.example")
        self.assertEqual(self.sink.messages, [MESSAGE])
        self.assertEqual(inbox_messages(self.context, "alice"), [])  # the next hop reports


class SubmissionReportTests(unittest.TestCase):
    def setUp(self) -> None:
        self.context, self.clock = make_server(self.mktemp())
        self.factory = submission_factory(self.context, self.clock)

    def test_success_notify_on_local_delivery_reports_delivered(self) -> None:
        talk = Conversation(self.factory)
        talk.send("EHLO client.example\r\n")
        self.assertEqual(talk.codes(b"AUTH PLAIN " + plain("alice") + b"\r\n"), expected(codes.AUTH_OK))
        talk.send(b"MAIL FROM:<alice@example.org> ENVID=sub-1\r\n"
                  b"RCPT TO:<bob@example.org> NOTIFY=SUCCESS ORCPT=rfc822;bob@example.org\r\n"
                  b"RCPT TO:<bob+Sent@example.org>\r\nDATA\r\n")
        self.assertEqual(talk.codes(MESSAGE + b".\r\n"), expected(codes.MESSAGE_ACCEPTED))
        self.assertEqual(len(inbox_messages(self.context, "bob")), 2)
        [raw] = inbox_messages(self.context, "alice")
        self.assertIn(b"Return-Path: <>", raw)
        _, per_message, [fields], returned = parse_report(self, raw)
        self.assertEqual(per_message["Original-Envelope-Id"], "sub-1")
        self.assertEqual(fields["Final-Recipient"], "rfc822; bob@example.org")
        self.assertEqual(fields["Original-Recipient"], "rfc822;bob@example.org")
        self.assertEqual((fields["Action"], fields["Status"][0]), ("delivered", "2"))
        self.assertEqual(returned.get_content_type(), "text/rfc822-headers")

