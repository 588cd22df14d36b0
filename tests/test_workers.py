"""Several worker processes (``[server] workers = 2``) behind one supervisor, in the real twistd process.

Each test forces the connections it needs onto different workers: it opens
them until the control socket's ``who`` shows them served by two
different processes.  What one worker does must be seen by the other at
once (IDLE), and what must hold for the whole server (the POP3 maildrop
lock, the connection caps, the login throttle, the control socket's
``who`` and ``kick``, the outbound queue, the goodbyes at SIGTERM and the
certificate reloaded at SIGHUP) must hold across workers.  A worker killed
with SIGKILL loses no acknowledged message and is replaced.
"""

from __future__ import annotations

import imaplib
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from twisted.trial import unittest

from cyrusmail import control, tls
from cyrusmail.config import SERVICES
from tests.test_twistd import ROOT, TWISTD, Line, admin_output, free_ports, listening

try:
    from aiosmtpd.controller import Controller
except ImportError:  # pragma: no cover
    Controller = None

#: A generous bound for anything that should take milliseconds: a hang check, never a measure.
HANG = 60.0


class Client(Line):
    """A line client, over TLS with ``wrap``; ``send`` a POP3 or SMTP command, ``command`` an IMAP one."""

    def __init__(self, port: int, wrap: ssl.SSLContext | None = None) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=HANG)
        self.sock = wrap.wrap_socket(sock) if wrap is not None else sock
        self.reader = self.sock.makefile("rb")
        self.greeting = self.read()

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def write(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")

    def command(self, tag: str, text: str) -> list[str]:
        """An IMAP command: every line up to and including the tagged one."""
        self.write(f"{tag} {text}")
        lines = []
        while True:
            line = self.read()
            if not line:
                raise ConnectionError(f"closed during {text!r}: {lines}")
            lines.append(line)
            if line.startswith(f"{tag} "):
                return lines


class MultiWorkerTests(unittest.TestCase):
    """A real twistd with two workers on a short temporary data folder."""

    SERVICES = ("imap", "imaps", "pop3", "submission", "lmtp")
    EXTRA = ""  # more [server] keys

    def setUp(self):
        self.data = Path(tempfile.mkdtemp(prefix="cm-", dir="/tmp"))  # a unix socket's path holds 107 bytes
        self.addCleanup(shutil.rmtree, self.data, True)
        self.ports = dict(zip(self.SERVICES, free_ports(len(self.SERVICES)), strict=True))
        self.config = self.data / "cyrusmail.conf"
        self.write_config()
        self.admin("user", "add", "alice", "--password", "secret")
        self.admin("user", "add", "bob", "--password", "secret")

    def write_config(self, queue: str = "", **listen: str) -> None:
        """The config: ``listen`` names endpoints other than the TCP ports of ``self.ports``."""
        lines = [(f"[server]\ndata = {self.data}\nhostname = mail.example.org\ndomains = example.org\n"
                 f"workers = 2\nidle_check_interval = 1h\n{self.EXTRA}")]
        listen = {**{name: f"tcp:{port}:interface=127.0.0.1" for name, port in self.ports.items()}, **listen}
        for name in SERVICES:
            if name in listen:
                lines.append(f"[{name}]\nlisten = {listen[name]}\n")
            else:
                lines.append(f"[{name}]\nenabled = no\n")
        self.config.write_text("\n".join(lines) + queue)

    def admin(self, *argv: str) -> str:
        return admin_output(self, self.config, *argv)

    def start(self, *twistd_options: str) -> subprocess.Popen:
        """Start twistd; return once both workers serve."""
        self.output = self.data / "twistd.out"  # a file: a pipe nobody reads would fill and stop the server
        with open(self.output, "wb") as output:
            process = subprocess.Popen(
                [*TWISTD, "--pidfile=", "-n", *twistd_options, "cyrusmail", "--config", str(self.config)],
                cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
        self.addCleanup(lambda: process.poll() is None and process.kill())
        self.process = process
        deadline = time.monotonic() + HANG
        while time.monotonic() < deadline:
            self.assertIsNone(process.poll(), "twistd exited early")
            # A worker is ready once it accepts on every port.  (Probing the ports instead
            # would leave connections queued for the workers to count as they start.)
            if len(self.workers()) == 2:
                self.settle()
                return process
            time.sleep(0.1)
        self.fail("the workers did not start")

    def stop(self) -> str:
        """SIGTERM; the output of a server that exited 0."""
        self.process.send_signal(signal.SIGTERM)
        return self.ended()

    def ended(self) -> str:
        """The output of a server that exited 0."""
        self.process.wait(timeout=HANG)
        output = self.output.read_text("utf-8", "replace")
        self.assertEqual(self.process.returncode, 0, output)
        return output

    def wait_for_sessions(self, count: int) -> None:
        deadline = time.monotonic() + HANG
        while len(self.serving()) != count and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(len(self.serving()), count)

    def settle(self) -> None:
        """Two round trips through every worker: each has heard the others' latest counts."""
        self.ask("who")
        self.ask("who")

    def ask(self, command: str) -> list[str]:
        answer = control.ask(self.data, command)
        self.assertIsNotNone(answer, "no control socket")
        return answer

    def workers(self) -> dict[int, int]:
        """Slot -> process id of each serving worker."""
        try:
            answer = control.ask(self.data, "workers") or []
        except OSError:
            return {}
        return {int(row.split()[1]): int(row.split()[2]) for row in answer if row.startswith("* ")}

    def serving(self) -> dict[int, int]:
        """Local port -> the process id serving that connection, from ``who``."""
        pids = {}
        for row in self.ask("who"):
            fields = row.split()
            if row.startswith("* ") and fields[3].startswith("127.0.0.1:"):
                pids[int(fields[3].rpartition(":")[2])] = int(fields[6])
        return pids

    def on_each_worker(self, connect) -> tuple:
        """Two clients ``connect()`` made, served by different workers (the others are closed)."""
        made = []
        for _ in range(40):
            made.append(connect())
            pids = self.serving()
            first = pids[made[0].port]
            other = next((client for client in made if pids[client.port] != first), None)
            if other is not None:
                extra = {client.port for client in made if client is not made[0] and client is not other}
                for client in made:
                    if client.port in extra:
                        client.close()
                deadline = time.monotonic() + HANG
                while extra & self.serving().keys() and time.monotonic() < deadline:
                    time.sleep(0.05)
                self.addCleanup(made[0].close)
                self.addCleanup(other.close)
                return made[0], other
        self.fail("every connection went to one worker")

    def imap(self, user: str = "alice") -> Client:
        client = Client(self.ports["imap"])
        self.assertRegex(client.command("l", f"LOGIN {user} secret")[-1], r"^l OK .*Logged in\r\n$")
        return client


class ChangeNotificationTests(MultiWorkerTests):
    def test_idle_on_one_worker_sees_the_others_append_store_expunge_and_lmtp_delivery(self):
        self.start()
        idler, other = self.on_each_worker(self.imap)
        idler.command("s", "SELECT INBOX")
        idler.write("i IDLE")
        self.assertEqual(idler.read(), "+ idling\r\n")
        # idle_check_interval is an hour: whatever arrives now was pushed.
        message = "Subject: one\r\n\r\nHello.\r\n"
        self.assertRegex(other.command("a", f"APPEND INBOX {{{len(message)}+}}\r\n{message}")[-1], "^a OK ")
        self.assertEqual(idler.read(), "* 1 EXISTS\r\n")
        self.assertEqual(idler.read(), "* 1 RECENT\r\n")
        other.command("s", "SELECT INBOX")
        other.command("f", "STORE 1 +FLAGS.SILENT (\\Flagged)")
        self.assertRegex(idler.read(), r"^\* 1 FETCH \(FLAGS \(.*\\Flagged.*\)\)")
        other.command("d", "STORE 1 +FLAGS.SILENT (\\Deleted)")
        self.assertRegex(idler.read(), r"^\* 1 FETCH \(FLAGS \(.*\\Deleted.*\)\)")
        other.command("e", "EXPUNGE")
        self.assertEqual(idler.read(), "* 1 EXPUNGE\r\n")

        # A delivery by LMTP in the other worker wakes the IDLE too.
        idler_pid = self.serving()[idler.port]
        for _ in range(40):
            lmtp = Client(self.ports["lmtp"])
            self.addCleanup(lmtp.close)
            if self.serving()[lmtp.port] != idler_pid:
                break
        else:
            self.fail("every LMTP connection went to the IDLE's worker")
        for line in ("LHLO mta.example.net", "MAIL FROM:<bob@example.net>", "RCPT TO:<alice@example.org>",
                     "DATA"):
            lmtp.send(line)
        self.assertRegex(lmtp.send("Subject: two\r\n\r\nHi.\r\n."), "^250 ")
        self.assertEqual(idler.read(), "* 1 EXISTS\r\n")
        self.assertEqual(idler.read(), "* 1 RECENT\r\n")
        idler.write("DONE")
        self.assertEqual(idler.read(), "i OK IDLE terminated\r\n")
        self.stop()


class SharedStateTests(MultiWorkerTests):
    def test_one_pop3_session_per_maildrop_across_workers(self):
        self.start()

        def pop3() -> Client:
            client = Client(self.ports["pop3"])
            self.assertEqual(client.send("USER alice")[:3], "+OK")
            return client

        first, second = self.on_each_worker(pop3)
        self.assertRegex(first.send("PASS secret"), r"^\+OK")
        self.assertEqual(second.send("PASS secret"), "-ERR [IN-USE] Maildrop is in use by another POP3 session\r\n")
        first.send("QUIT")
        self.stop()

    def test_a_quota_holds_under_appends_from_both_workers_at_once(self):
        self.admin("quota", "set", "user/alice", "MESSAGE=10")
        self.start()
        clients = self.on_each_worker(self.imap) + self.on_each_worker(self.imap)
        replies: list[str] = []

        def append(client: Client, number: int) -> None:
            for count in range(8):
                message = f"Subject: {number}-{count}\r\n\r\nHi.\r\n"
                replies.append(client.command("a", f"APPEND INBOX {{{len(message)}+}}\r\n{message}")[-1])

        threads = [threading.Thread(target=append, args=(client, number)) for number, client in enumerate(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(HANG)
        self.assertEqual(len(replies), 32)
        self.assertEqual(sum(reply.startswith("a OK") for reply in replies), 10)
        self.assertEqual(sum(reply.startswith("a NO [OVERQUOTA]") for reply in replies), 22, replies)
        self.assertEqual(clients[0].command("s", "STATUS INBOX (MESSAGES)")[0], "* STATUS \"INBOX\" (MESSAGES 10)\r\n")
        self.stop()

    def test_who_lists_and_kick_ends_the_sessions_of_every_worker(self):
        self.start()
        one, two = self.on_each_worker(self.imap)
        pids = self.serving()
        self.assertNotEqual(pids[one.port], pids[two.port])
        rows = [row for row in self.ask("who") if row.startswith("* ")]
        self.assertEqual(len(rows), 2, rows)
        self.assertEqual(sorted(int(row.split()[6]) for row in rows), sorted(self.workers().values()))
        self.assertEqual(self.admin("user", "delete", "alice", "--yes"),
                         "user alice deleted; 2 live sessions ended\n")
        self.assertEqual(one.rest(), ["* BYE Account removed\r\n"])
        self.assertEqual(two.rest(), ["* BYE Account removed\r\n"])
        self.assertEqual(self.ask("who"), ["ok 0"])
        self.stop()

    def test_a_wrong_password_on_one_worker_delays_the_next_check_on_the_other(self):
        self.start()

        def fresh() -> Client:
            return Client(self.ports["imap"])

        first, second = self.on_each_worker(fresh)
        self.assertRegex(first.command("a", "LOGIN alice wrong")[-1], r"^a NO \[AUTHENTICATIONFAILED\]")
        began = time.monotonic()
        self.assertRegex(second.command("b", "LOGIN alice wrong")[-1], r"^b NO \[AUTHENTICATIONFAILED\]")
        # The one throttle makes the account wait a second after a failure, whichever worker asks.
        self.assertGreaterEqual(time.monotonic() - began, 0.9)
        self.stop()


class BalanceTests(MultiWorkerTests):
    def test_new_connections_are_shared_between_the_workers(self):
        self.start()
        clients = [Client(self.ports["imap"]) for _ in range(6)]
        for client in clients:
            self.addCleanup(client.close)
        pids = self.serving()
        served = sorted(list(pids.values()).count(pid) for pid in set(pids.values()))
        # A worker two sessions ahead of the other leaves it the next connections.
        self.assertEqual(len(served), 2, served)
        self.assertGreaterEqual(served[0], 2, served)
        self.stop()


class ConnectionCapTests(MultiWorkerTests):
    EXTRA = "max_connections = 3\nlimit_exempt =\nmax_unauthenticated_per_address = 100\n"

    def test_the_global_cap_counts_the_sessions_of_every_worker(self):
        self.start()
        for _ in range(20):  # three sessions, on both workers
            clients = [Client(self.ports["imap"]) for _ in range(3)]
            pids = self.serving()
            self.assertEqual([client.greeting[:4] for client in clients], ["* OK"] * 3)
            if len({pids[client.port] for client in clients}) == 2:
                break
            for client in clients:
                client.close()
            self.wait_for_sessions(0)
            self.settle()
        else:
            self.fail("every connection went to one worker")
        for client in clients:
            self.addCleanup(client.close)
        self.settle()
        # Each worker holds fewer than three, yet the fourth and fifth connections are over the cap.
        for _ in range(2):
            refused = Client(self.ports["imap"])
            self.assertEqual(refused.greeting, "* BYE [UNAVAILABLE] Too many connections, try again later\r\n")
            self.assertEqual(refused.rest(), [])
        clients[0].close()
        self.wait_for_sessions(2)
        self.settle()
        welcome = Client(self.ports["imap"])
        self.addCleanup(welcome.close)
        self.assertRegex(welcome.greeting, r"^\* OK ")
        self.stop()


class StopAndReloadTests(MultiWorkerTests):
    def test_sigterm_says_goodbye_in_every_worker_and_exits_0(self):
        self.start()
        one, two = self.on_each_worker(self.imap)
        waiting = Client(self.ports["pop3"])
        self.addCleanup(waiting.close)
        self.process.send_signal(signal.SIGTERM)
        self.assertEqual(one.rest(), ["* BYE Server shutting down\r\n"])
        self.assertEqual(two.rest(), ["* BYE Server shutting down\r\n"])
        self.assertEqual(waiting.rest(), ["-ERR [SYS/TEMP] Server shutting down\r\n"])
        output = self.ended()
        self.assertRegex(output, r"cyrusmail: ending \d+ sessions")  # as last counted by the workers
        self.assertEqual(sorted(re.findall(r"worker \d: cyrusmail: ending (\d) sessions", output)), ["1", "2"])
        self.assertEqual(output.count("store and index closed"), 2, output)
        self.assertIn("every worker has stopped", output)
        for port in self.ports.values():
            self.assertFalse(listening(port))

    def test_sighup_gives_every_worker_the_renewed_certificate(self):
        log = self.data / "twistd.log"
        self.start(f"--logfile={log}")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        before = self.on_each_worker(lambda: Client(self.ports["imaps"], context))
        old = {client.sock.getpeercert(binary_form=True) for client in before}
        self.assertEqual(len(old), 1)
        cert, key = tls.self_signed_paths(self.data)
        tls.make_self_signed("mail.example.org", cert, key)
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + HANG
        while "TLS certificate reloaded" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertIn(f"TLS certificate reloaded, SHA-256 fingerprint "
                      f"{tls.fingerprint(tls.context_factory(cert, key))} (2 workers)", log.read_text())
        after = self.on_each_worker(lambda: Client(self.ports["imaps"], context))
        new = {client.sock.getpeercert(binary_form=True) for client in after}
        self.assertEqual(len(new), 1)
        self.assertNotEqual(new, old)
        self.assertEqual({client.sock.getpeercert(binary_form=True) for client in before}, old)  # kept
        self.stop()


class Smarthost:
    """Remembers what it is sent."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.arrived = threading.Event()

    async def handle_DATA(self, server, session, envelope):
        self.received.append(envelope.original_content)
        self.arrived.set()
        return "250 2.0.0 Queued"


class QueueTests(MultiWorkerTests):
    def test_mail_queued_in_either_worker_is_sent_by_the_one_queue_runner(self):
        if Controller is None:
            raise unittest.SkipTest("aiosmtpd is not installed")
        (port,) = free_ports(1)
        handler = Smarthost()
        controller = Controller(handler, hostname="127.0.0.1", port=port)
        controller.start()
        self.addCleanup(controller.stop)
        self.write_config(f"[queue]\nsmarthost = 127.0.0.1:{port}\n")
        self.start()

        def submission() -> Client:
            client = Client(self.ports["submission"])
            client.send("EHLO client.example.org")
            self.assertRegex(client.send("AUTH PLAIN AGFsaWNlAHNlY3JldA=="), "^235 ")
            return client

        clients = self.on_each_worker(submission)
        for number, client in enumerate(clients):
            handler.arrived.clear()
            for line in ("MAIL FROM:<alice@example.org>", "RCPT TO:<carol@remote.example>", "DATA"):
                client.send(line)
            self.assertRegex(client.send(f"From: alice@example.org\r\nSubject: out {number}\r\n\r\nHi.\r\n."),
                             "^250 ")
            self.assertTrue(handler.arrived.wait(HANG), "the message was not sent")
        self.assertEqual(sorted(re.search(rb"Subject: (out \d)", message)[1] for message in handler.received),
                         [b"out 0", b"out 1"])
        # The smarthost has the message before the runner reads its 250: wait for the spool to empty.
        deadline = time.monotonic() + HANG
        while list(self.data.glob("queue/*.json")) and time.monotonic() < deadline:
            time.sleep(0.05)
        output = self.stop()
        sent = re.findall(r"(worker \d): queue: \w+ to 127\.0\.0\.1", output)
        self.assertEqual(sent, ["worker 0", "worker 0"], output)  # the one runner
        self.assertEqual(list(self.data.glob("queue/*.json")), [])


class UnixSocketTests(MultiWorkerTests):
    SERVICES = ("imap",)

    def test_a_unix_socket_is_served_by_the_workers_and_outlives_a_dead_one(self):
        lmtp = self.data / "lmtp.sock"
        self.write_config(lmtp=f"unix:{lmtp}")
        self.start()

        def deliver(subject: str) -> None:
            with smtplib.LMTP(str(lmtp), timeout=HANG) as client:
                client.sendmail("bob@example.net", ["alice@example.org"], f"Subject: {subject}\r\n\r\nHi.\r\n")

        for number in range(4):
            deliver(f"before {number}")
        os.kill(self.workers()[0], signal.SIGKILL)
        self.assertTrue(lmtp.exists())
        for number in range(4):  # the living worker serves it, then the new one too
            deliver(f"after {number}")
        deadline = time.monotonic() + HANG
        while len(self.workers()) != 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        for number in range(4):
            deliver(f"later {number}")
        client = imaplib.IMAP4("127.0.0.1", self.ports["imap"], timeout=HANG)
        client.login("alice", "secret")
        self.assertEqual(client.select("INBOX", readonly=True), ("OK", [b"12"]))
        client.logout()
        self.stop()
        self.assertFalse(lmtp.exists())


class WorkerDeathTests(MultiWorkerTests):
    def test_kill_9_of_a_worker_loses_no_acknowledged_message_and_the_worker_is_replaced(self):
        self.start()
        acknowledged: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()
        errors: list[str] = []

        def deliver_by_lmtp(number: int) -> None:
            count = 0
            while not stop.is_set():
                try:
                    with smtplib.LMTP("127.0.0.1", self.ports["lmtp"], timeout=HANG) as client:
                        while not stop.is_set():
                            mark = f"lmtp-{number}-{count}"
                            count += 1
                            client.sendmail("bob@example.net", ["alice@example.org"],
                                            f"Subject: {mark}\r\nMessage-ID: <{mark}@test>\r\n\r\nHi.\r\n")
                            with lock:
                                acknowledged.append(mark)
                except (OSError, smtplib.SMTPException):
                    time.sleep(0.05)  # the worker went away: connect again

        def append_by_imap(number: int) -> None:
            count = 0
            while not stop.is_set():
                try:
                    client = imaplib.IMAP4("127.0.0.1", self.ports["imap"], timeout=HANG)
                    client.login("alice", "secret")
                    while not stop.is_set():
                        mark = f"imap-{number}-{count}"
                        count += 1
                        status, _ = client.append("INBOX", None, None,
                                                  f"Subject: {mark}\r\nMessage-ID: <{mark}@test>\r\n\r\nHi.\r\n"
                                                  .encode())
                        if status != "OK":
                            errors.append(f"{mark}: {status}")
                            continue
                        with lock:
                            acknowledged.append(mark)
                except (OSError, imaplib.IMAP4.abort, imaplib.IMAP4.error):
                    time.sleep(0.05)

        threads = [threading.Thread(target=target, args=(number,), daemon=True)
                   for number in range(2) for target in (deliver_by_lmtp, append_by_imap)]
        for thread in threads:
            thread.start()
        self.addCleanup(stop.set)

        def wait_for(count: int) -> None:
            deadline = time.monotonic() + HANG
            while len(acknowledged) < count and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertGreaterEqual(len(acknowledged), count, "the clients made no progress")

        wait_for(20)
        victims = []
        for slot in (1, 0):  # each worker in turn, the queue runner too
            before = self.workers()
            victim = before[slot]
            victims.append(victim)
            os.kill(victim, signal.SIGKILL)
            wait_for(len(acknowledged) + 20)  # the clients reconnect and go on
            deadline = time.monotonic() + HANG
            while (len(self.workers()) != 2 or victim in self.workers().values()) and time.monotonic() < deadline:
                time.sleep(0.1)
            after = self.workers()
            self.assertEqual(len(after), 2, after)
            self.assertEqual(after[1 - slot], before[1 - slot])
            self.assertNotEqual(after[slot], victim)
            wait_for(len(acknowledged) + 10)  # the new worker serves too
        stop.set()
        for thread in threads:
            thread.join(HANG)
        self.assertEqual(errors, [])

        client = imaplib.IMAP4("127.0.0.1", self.ports["imap"], timeout=HANG)
        client.login("alice", "secret")
        client.select("INBOX", readonly=True)
        _, data = client.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        stored = {re.search(rb"Subject: (\S+)", item[1])[1].decode() for item in data if isinstance(item, tuple)}
        client.logout()
        missing = sorted(set(acknowledged) - stored)
        self.assertEqual(missing, [], f"{len(missing)} of {len(acknowledged)} acknowledged messages lost")
        output = self.stop()
        for slot, victim in zip((1, 0), victims, strict=True):
            self.assertIn(f"worker {slot} (process {victim}) was killed by signal 9; another starts in", output)
