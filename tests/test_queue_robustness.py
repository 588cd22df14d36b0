"""The queue under trouble: crashes, full disks, dead hosts, DNS, hostile servers.

Results are on disk before QUIT is sent; a failing save never makes the
runner spin; giving up works for every kind of temporary failure
(4xx, refused connection, DNS trouble) with a DSN naming the last error;
resolve_mx tells NXDOMAIN, no address, null MX (RFC 7505) and DNS trouble
apart; the domains of one message are tried at once; a plaintext reply
injected after STARTTLS's 220 aborts; old and newer spool envelopes load.
"""

from __future__ import annotations

import json

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.ssl import CertificateOptions
from twisted.names import dns
from twisted.names import error as dns_error
from twisted.protocols.basic import LineReceiver
from twisted.python.filepath import FilePath
from twisted.trial import unittest

from cyrusmail.delivery import spool as spool_module
from cyrusmail.delivery.queue import (
    DELIVERED,
    FAILED,
    PENDING,
    DestinationError,
    Queue,
    resolve_mx,
)
from cyrusmail.smtp import client as smtp_client
from cyrusmail.smtp.client import ConnectionFailed, Envelope
from tests.helpers import embedded_store_only
from tests.test_dsn import parse_report
from tests.test_queue import MESSAGE, QueueTestsBase, async_test, free_port
from tests.test_smtp_session_support import inbox_messages


class CrashSafetyTests(QueueTestsBase):
    @async_test
    async def test_results_are_durable_before_quit(self) -> None:
        at_quit = []

        async def handle_quit(server, session, envelope):  # in aiosmtpd's thread: the spool as it is
            at_quit.extend(self.saved().values())
            return "221 Bye"

        self.handler.handle_QUIT = handle_quit
        self.handler.rcpt_replies = {"dave@remote.example": "451 4.2.1 later"}
        entry = self.queue.enqueue(self.mail(), ["carol@remote.example", "dave@remote.example"], MESSAGE)
        await self.queue.attempt(entry)
        [saved] = at_quit
        self.assertEqual([r.state for r in saved.recipients], [DELIVERED, PENDING])

    @embedded_store_only
    @async_test
    async def test_a_failing_disk_never_makes_the_runner_spin(self) -> None:
        entry = self.queue.enqueue(self.mail(), ["carol@remote.example"], MESSAGE)
        self.handler.data_replies = ["451 4.3.0 later"]

        def full(path, value):
            raise OSError(28, "No space left on device")

        self.patch(spool_module, "write_json_atomically", full)
        with self.assertRaises(OSError):
            await self.queue.attempt(entry)
        self.assertGreater(entry.next_attempt, reactor.seconds())  # not due again at once
        self.assertEqual(self.queue.due(), [])
        self.assertTrue(self.flushLoggedErrors(OSError))

    @embedded_store_only
    def test_envelopes_of_other_versions_load(self) -> None:
        entry = self.queue.enqueue(self.mail(), ["carol@remote.example"], MESSAGE)
        path = self.queue.spool / f"{entry.id}.json"
        saved = json.loads(path.read_text())
        saved["from_the_future"] = 1
        saved["recipients"][0]["also_new"] = True
        for old in ("success_action", "last_attempt", "reported", "delay_reported"):
            del saved["recipients"][0][old]  # as written before this version
        path.write_text(json.dumps(saved))
        [loaded] = self.make_queue().load()
        self.assertEqual((loaded.id, loaded.recipients[0].state), (entry.id, PENDING))


class GiveUpTests(QueueTestsBase):
    def queue_settings(self) -> dict[str, str]:
        return {"retry_initial": "1s", "retry_max": "4s", "give_up": "1h"}

    def queue_with(self, resolver) -> tuple[Queue, task.Clock]:
        clock = task.Clock()
        clock.advance(1_000_000)
        queue = Queue(self.context, clock=clock, resolver=resolver)
        queue.reactor = reactor
        return queue, clock

    async def give_up(self, resolver) -> tuple:
        queue, clock = self.queue_with(resolver)
        entry = queue.enqueue(self.mail(), ["carol@remote.example"], MESSAGE)
        await queue.attempt(entry)
        self.assertEqual(entry.recipients[0].state, PENDING)
        self.assertEqual(inbox_messages(self.context, "alice"), [])
        clock.advance(3600)
        await queue.attempt(entry)
        self.assertEqual(entry.recipients[0].state, FAILED)
        self.assertEqual(queue.entries, {})
        [raw] = inbox_messages(self.context, "alice")
        _, _, [fields], _ = parse_report(self, raw)
        self.assertEqual((fields["Action"], fields["Status"]), ("failed", "4.4.7"))
        return entry, fields

    @async_test
    async def test_refused_connections(self) -> None:
        port = free_port()  # nothing listens there

        async def resolver(domain):
            return [("127.0.0.1", port)]

        _, fields = await self.give_up(resolver)
        self.assertIn("cannot connect", fields["Diagnostic-Code"])

    @async_test
    async def test_dns_trouble(self) -> None:
        async def resolver(domain):
            raise DestinationError(f"DNS lookup of {domain} failed: DNSServerError", permanent=False,
                                   status="4.4.3")

        _, fields = await self.give_up(resolver)
        self.assertIn("DNSServerError", fields["Diagnostic-Code"])

    @async_test
    async def test_domains_are_tried_at_once(self) -> None:
        events = []

        async def resolver(domain):
            events.append(("start", domain))
            await task.deferLater(reactor, 0.2, lambda: None)
            events.append(("end", domain))
            return [("127.0.0.1", self.port)]

        queue, _ = self.queue_with(resolver)
        entry = queue.enqueue(self.mail(), ["a@one.example", "b@two.example", "c@ONE.example"], MESSAGE)
        await queue.attempt(entry)
        self.assertEqual(sorted(events[:2]), [("start", "one.example"), ("start", "two.example")])
        self.assertEqual(sorted(rcpts for _, rcpts, _ in self.handler.received),
                         [["a@one.example", "c@ONE.example"], ["b@two.example"]])


def mx(preference: int, name: str) -> dns.RRHeader:
    return dns.RRHeader("x.example", dns.MX, payload=dns.Record_MX(preference, name))


class FakeDNS:
    """Answers like twisted.names.client: (answers, authority, additional), or an error."""

    def __init__(self, mx=(), a=(), aaaa=()) -> None:
        self.answers = {"MX": mx, "A": a, "AAAA": aaaa}

    def _answer(self, kind):
        value = self.answers[kind]
        if isinstance(value, Exception):
            return defer.fail(value)
        return defer.succeed((list(value), [], []))

    def lookupMailExchange(self, name):
        return self._answer("MX")

    def lookupAddress(self, name):
        return self._answer("A")

    def lookupIPV6Address(self, name):
        return self._answer("AAAA")


A = dns.RRHeader("x.example", dns.A, payload=dns.Record_A("192.0.2.1"))
AAAA = dns.RRHeader("x.example", dns.AAAA, payload=dns.Record_AAAA("2001:db8::1"))
CNAME = dns.RRHeader("x.example", dns.CNAME, payload=dns.Record_CNAME("y.example"))


class ResolveMXTests(unittest.TestCase):
    async def failure(self, lookup) -> DestinationError:
        with self.assertRaises(DestinationError) as caught:
            await resolve_mx("x.example", lookup)
        return caught.exception

    @async_test
    async def test_mx_hosts_best_first(self) -> None:
        hosts = await resolve_mx("x.example", FakeDNS(mx=[mx(20, "b.example"), CNAME, mx(10, "a.example"),
                                                          mx(20, "c.example")]))
        self.assertEqual(hosts[0], "a.example")
        self.assertEqual(sorted(hosts[1:]), ["b.example", "c.example"])

    @async_test
    async def test_equal_preferences_are_shuffled(self) -> None:
        lookup = FakeDNS(mx=[mx(10, f"h{i}.example") for i in range(6)])
        orders = {tuple(await resolve_mx("x.example", lookup)) for _ in range(20)}
        self.assertGreater(len(orders), 1)

    @async_test
    async def test_nxdomain_is_permanent(self) -> None:
        error = await self.failure(FakeDNS(mx=dns_error.DNSNameError()))
        self.assertEqual((error.permanent, error.status), (True, "5.1.2"))

    @async_test
    async def test_servfail_and_timeout_are_temporary(self) -> None:
        for trouble in (dns_error.DNSServerError(), dns_error.DNSQueryTimeoutError(5), defer.TimeoutError()):
            error = await self.failure(FakeDNS(mx=trouble))
            self.assertEqual((error.permanent, error.status), (False, "4.4.3"))

    @async_test
    async def test_implicit_mx(self) -> None:
        self.assertEqual(await resolve_mx("x.example", FakeDNS(a=[A])), ["x.example"])
        self.assertEqual(await resolve_mx("x.example", FakeDNS(aaaa=[AAAA])), ["x.example"])

    @async_test
    async def test_no_mx_and_no_address_is_permanent(self) -> None:
        error = await self.failure(FakeDNS(a=[CNAME]))
        self.assertEqual((error.permanent, error.status), (True, "5.1.2"))

    @async_test
    async def test_address_lookup_trouble_is_temporary(self) -> None:
        error = await self.failure(FakeDNS(a=dns_error.DNSServerError()))
        self.assertFalse(error.permanent)

    @async_test
    async def test_null_mx(self) -> None:
        error = await self.failure(FakeDNS(mx=[mx(0, "")]))
        self.assertEqual((error.permanent, error.status), (True, "5.1.10"))
        self.assertEqual(await resolve_mx("x.example", FakeDNS(mx=[mx(0, ""), mx(10, "a.example")])),
                         ["a.example"])

    @async_test
    async def test_address_literals(self) -> None:
        self.assertEqual(await resolve_mx("[192.0.2.7]", FakeDNS()), ["192.0.2.7"])
        self.assertEqual(await resolve_mx("[IPv6:2001:db8::7]", FakeDNS()), ["2001:db8::7"])


class Injector(LineReceiver):
    """Answers STARTTLS with 220 and, in the same packet, a forged reply."""

    delimiter = b"\r\n"

    def connectionMade(self) -> None:
        self.sendLine(b"220 evil ESMTP")

    def lineReceived(self, line: bytes) -> None:
        verb = line[:4].upper()
        if verb == b"EHLO":
            self.sendLine(b"250-evil\r\n250 STARTTLS")
        elif verb == b"STAR":
            self.transport.write(b"220 go ahead\r\n250-evil\r\n250 AUTH PLAIN\r\n")
        else:
            self.sendLine(b"250 OK")


class StartTLSInjectionTests(unittest.TestCase):
    @async_test
    async def test_plaintext_after_220_aborts(self) -> None:
        port = reactor.listenTCP(0, protocol.ServerFactory.forProtocol(Injector), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        message = FilePath(self.mktemp())
        message.setContent(MESSAGE)

        def connect():
            return smtp_client.connect_tcp(reactor, "127.0.0.1", port.getHost().port, reactor, 5)

        with self.assertRaises(ConnectionFailed) as caught:
            await smtp_client.send_message(
                connect, host="evil", helo="me.example", envelope=Envelope("a@b.example", ("c@d.example",)),
                message=message.path, starttls="opportunistic", tls_creator=CertificateOptions())
        self.assertIn("after its STARTTLS reply", str(caught.exception))
