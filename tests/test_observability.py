"""Observability: /metrics over HTTP, ``who`` and ``kick``, the protocol trace and log levels,
through the real twistd process and the real command line."""

from __future__ import annotations

import base64
import io
import os
import socket
import ssl
import stat
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from types import SimpleNamespace

from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from cyrusmail import logs
from cyrusmail.admin.main import main as admin_main
from cyrusmail.metrics import Metrics, merge_expositions
from cyrusmail.trace import InputMasker
from tests.test_twistd import Line, LiveServer

PASSWORD = "S3cret-Pw"
SECRETS = (PASSWORD, base64.b64encode(b"\0alice\0" + PASSWORD.encode()).decode(),
           base64.b64encode(b"\0bob\0" + PASSWORD.encode()).decode(), base64.b64encode(PASSWORD.encode()).decode())


def tagged(client: Line, line: str) -> str:
    """Send an IMAP command; its tagged reply (untagged lines are skipped)."""
    reply = client.send(line)
    while not reply.startswith(line.split(" ", 1)[0] + " "):
        reply = client.read()
    return reply


def plain(user: str) -> str:
    return base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()


class LiveObservability(LiveServer):
    """The real server with metrics on, bob traced by the config, and users whose password is PASSWORD."""

    EXTRA_PORTS = ("metrics",)
    SERVER_KEYS = "rawlog_users = bob\n"
    SECTIONS = "[metrics]\nenabled = yes\nlisten = tcp:{ports[metrics]}:interface=127.0.0.1\nquota_users = alice\n"

    def setUp(self):
        super().setUp()
        for user in ("alice", "bob"):
            self.admin("user", "passwd", user, "--password", PASSWORD)

    def run_admin(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = admin_main(["--config", str(self.config), *argv], out, err)
        return code, out.getvalue(), err.getvalue()

    def login(self, service: str, user: str = "alice") -> Line:
        client = Line(self.ports[service])
        self.addCleanup(client.close)
        lines = {"imap": [f"a LOGIN {user} {PASSWORD}"], "pop3": [f"USER {user}", f"PASS {PASSWORD}"],
                 "submission": ["EHLO client.example.org", f"AUTH PLAIN {plain(user)}"]}[service]
        for line in lines:
            reply = client.send(line)
        self.assertRegex(reply, r"^(a OK|\+OK|235 )", reply)
        return client

    def metrics(self, path: str = "/metrics") -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['metrics']}{path}", timeout=30) as answer:
            self.assertTrue(answer.headers["Content-Type"].startswith("text/plain"))
            return answer.read().decode()


class MetricsOverHTTPTests(LiveObservability, unittest.TestCase):
    def test_metrics_count_connections_logins_commands_and_deliveries(self):
        process = self.start()
        imap = self.login("imap")
        self.assertEqual(imap.send("b NOOP"), "b OK NOOP completed\r\n")
        self.assertEqual(imap.send("c FROB"), "c BAD unknown command\r\n")
        pop3 = self.login("pop3")
        self.assertEqual(pop3.send("STAT"), "+OK 0 0\r\n")
        lmtp = Line(self.ports["lmtp"])
        self.addCleanup(lmtp.close)
        for line in ("LHLO mta.example.org", "MAIL FROM:<x@example.net>", "RCPT TO:<alice@example.org>",
                     "RCPT TO:<nobody@example.org>", "DATA"):
            lmtp.send(line)
        self.assertRegex(lmtp.send("Subject: hi\r\n\r\nhello\r\n."), r"^250 ")
        wrong = Line(self.ports["imap"])
        self.addCleanup(wrong.close)
        self.assertRegex(wrong.send("z LOGIN alice wrong"), "^z NO ")
        text = self.metrics()
        samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
        expected = {
            'cyrusmail_logins_total{mechanism="LOGIN",result="ok",service="imap"}': "1.0",
            'cyrusmail_logins_total{mechanism="LOGIN",result="failed",service="imap"}': "1.0",
            'cyrusmail_logins_total{mechanism="USER",result="ok",service="pop3"}': "1.0",
            'cyrusmail_command_duration_seconds_count{command="NOOP",protocol="imap"}': "1.0",
            'cyrusmail_command_duration_seconds_count{command="other",protocol="imap"}': "1.0",
            'cyrusmail_command_duration_seconds_count{command="STAT",protocol="pop3"}': "1.0",
            'cyrusmail_command_duration_seconds_count{command="RCPT",protocol="lmtp"}': "2.0",
            'cyrusmail_command_duration_seconds_count{command="message",protocol="lmtp"}': "1.0",
            'cyrusmail_deliveries_total{result="delivered",service="lmtp"}': "1.0",
            'cyrusmail_connections{service="imap"}': "2.0",
            'cyrusmail_sessions_logged_in{service="imap"}': "1.0",
            'cyrusmail_connections{service="lmtp"}': "1.0",
            'cyrusmail_connections_refused_total{service="imap"}': "0.0",
            'cyrusmail_queue_messages': "0.0",
            'cyrusmail_quota_storage_used_kib{user="alice"}': "1.0",
        }
        self.assertEqual({name: samples.get(name) for name in expected}, expected)
        # the start-up probe of each port counts too
        self.assertGreaterEqual(float(samples['cyrusmail_connections_accepted_total{service="imap"}']), 2)
        self.assertNotIn("_created", text)
        # Unknown commands are one label, whatever the client sends: the label set stays bounded.
        self.assertNotIn("FROB", text)
        self.assertIn('cyrusmail_command_duration_seconds_bucket{command="NOOP",le="+Inf",protocol="imap"} 1.0',
                      text)
        with self.assertRaises(urllib.error.HTTPError) as refused:
            self.metrics("/other")
        self.assertEqual(refused.exception.code, 404)
        self.stop(process)

    def test_the_control_socket_answers_the_same_figures(self):
        process = self.start()
        self.login("imap")
        from cyrusmail import control

        answer = control.ask(self.data, "metrics")
        self.assertIn('* cyrusmail_connections{service="imap"} 1.0', answer)
        self.assertEqual(answer[-1], f"ok {len(answer) - 1}")
        self.stop(process)


class MetricsAcrossWorkersTests(LiveObservability, unittest.TestCase):
    """With worker processes the supervisor serves /metrics: every worker's figures, summed."""

    WORKERS = 2

    def test_the_supervisor_sums_every_workers_figures(self):
        process = self.start()
        clients = []
        for _ in range(40):  # until both workers serve some (the kernel chooses which accepts)
            clients.append(self.login("imap"))
            self.assertEqual(clients[-1].send("b NOOP"), "b OK NOOP completed\r\n")
            if len({line.split()[-1] for line in self.run_admin("who")[1].splitlines()[1:-1]}) == 2:
                break
        else:
            self.fail("every connection went to one worker")
        n = f"{len(clients)}.0"
        text = self.metrics()
        samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
        expected = {
            "cyrusmail_workers": "2",
            "cyrusmail_workers_answered": "2",
            'cyrusmail_logins_total{mechanism="LOGIN",result="ok",service="imap"}': n,
            'cyrusmail_command_duration_seconds_count{command="NOOP",protocol="imap"}': n,
            'cyrusmail_connections{service="imap"}': n,
            'cyrusmail_quota_storage_used_kib{user="alice"}': "0.0",  # read by each worker, shown once
        }
        self.assertEqual({name: samples.get(name) for name in expected}, expected)
        self.assertEqual(text.count("# TYPE cyrusmail_logins_total counter"), 1)
        from cyrusmail import control

        answer = control.ask(self.data, "metrics")
        self.assertIn(f'* cyrusmail_connections{{service="imap"}} {n}', answer)
        self.assertEqual(answer.count("* # TYPE cyrusmail_connections gauge"), 1)
        self.stop(process)


class WhoAndKickTests(LiveObservability, unittest.TestCase):
    def test_who_lists_live_sessions_and_kick_ends_one_users(self):
        process = self.start()
        alice = {service: self.login(service) for service in ("imap", "pop3", "submission")}
        bob = self.login("imap", "bob")
        code, out, err = self.run_admin("who")
        self.assertEqual((code, err), (0, ""))
        rows = out.splitlines()
        self.assertEqual(rows[0].split(), ["SESSION", "SERVICE", "USER", "ADDRESS", "SINCE", "PROCESS"])
        self.assertEqual(sorted(row.split()[1:3] for row in rows[1:-1]),
                         [["imap", "alice"], ["imap", "bob"], ["pop3", "alice"], ["submission", "alice"]])
        self.assertRegex(rows[1], r"127\.0\.0\.1:\d+ +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC +\d+$")
        self.assertEqual(rows[-1], "4 sessions")
        code, out, err = self.run_admin("kick", "Alice")
        self.assertEqual((code, out, err), (0, "3 sessions of alice ended\n", ""))
        said = {service: client.rest() for service, client in alice.items()}
        self.assertEqual(said, {
            "imap": ["* BYE Disconnected by the administrator\r\n"],
            "pop3": ["-ERR [SYS/TEMP] Disconnected by the administrator\r\n"],
            "submission": ["421 4.3.2 mail.example.org Disconnected by the administrator\r\n"]})
        self.assertEqual(bob.send("b NOOP"), "b OK NOOP completed\r\n")
        self.login("imap")  # a kicked user may log in again at once
        self.assertEqual(self.run_admin("kick", "nobody")[1], "0 sessions of nobody ended\n")
        self.stop(process)

    def test_without_a_server_who_and_kick_say_so(self):
        for argv in (["who"], ["kick", "alice"], ["trace", "alice", "on"]):
            code, out, err = self.run_admin(*argv)
            self.assertEqual((code, out), (1, ""), argv)
            self.assertEqual(err, f"cyrusmail-admin: no server is running on {self.data}\n")


class TraceTests(LiveObservability, unittest.TestCase):
    def traces(self, user: str) -> dict[str, str]:
        folder = self.data / "rawlog" / user
        if not folder.exists():
            return {}
        self.assertEqual(stat.S_IMODE(folder.stat().st_mode), 0o700)
        found = {}
        for path in sorted(folder.iterdir()):
            self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600, path)
            found[path.name] = path.read_bytes().decode("utf-8", "replace")
        return found

    def test_a_traced_users_sessions_are_written_with_every_password_masked(self):
        process = self.start()
        self.assertEqual(self.run_admin("trace", "alice", "on")[0], 0)
        self.assertEqual(self.run_admin("trace")[1], "alice\nbob\n")
        imap = Line(self.ports["imap"])
        self.addCleanup(imap.close)
        tagged(imap, "a CAPABILITY")
        self.assertRegex(tagged(imap, f"b AUTHENTICATE PLAIN {plain('alice')}"), "^b OK ")
        self.assertRegex(tagged(imap, "c UNAUTHENTICATE"), "^c OK ")
        imap.sock.sendall(f"d LOGIN {{5+}}\r\nalice {{{len(PASSWORD)}+}}\r\n{PASSWORD}\r\n".encode())
        reply = imap.read()
        while not reply.startswith("d "):
            reply = imap.read()
        self.assertRegex(reply, "^d OK ")
        self.assertEqual(tagged(imap, "e NOOP"), "e OK NOOP completed\r\n")
        tagged(imap, "f LOGOUT")
        pop3 = Line(self.ports["pop3"])
        self.addCleanup(pop3.close)
        pop3.send("AUTH PLAIN")
        self.assertRegex(pop3.send(plain("alice")), r"^\+OK")
        pop3.send("QUIT")
        submission = Line(self.ports["submission"])
        self.addCleanup(submission.close)
        submission.send("EHLO client.example.org")
        submission.send("AUTH LOGIN")
        submission.send(base64.b64encode(b"alice").decode())
        self.assertRegex(submission.send(base64.b64encode(PASSWORD.encode()).decode()), "^235 ")
        submission.send("QUIT")
        bob = self.login("pop3", "bob")  # traced by the config
        bob.send("QUIT")
        carol = Line(self.ports["imap"])  # not traced: a wrong login
        self.addCleanup(carol.close)
        carol.send(f"x LOGIN carol {PASSWORD}")
        self.stop(process)

        traces = self.traces("alice")
        self.assertEqual(len(traces), 6, sorted(traces))
        everything = "".join(traces.values())
        for secret in SECRETS:
            self.assertNotIn(secret, everything)
        imap_in = next(text for name, text in traces.items() if name.endswith("-imap.in"))
        self.assertEqual(imap_in, "a CAPABILITY\r\nb AUTHENTICATE PLAIN ***\r\nc UNAUTHENTICATE\r\n"
                                  "d LOGIN ***\r\n***\r\n***\r\ne NOOP\r\nf LOGOUT\r\n")
        imap_out = next(text for name, text in traces.items() if name.endswith("-imap.out"))
        self.assertIn("* OK [CAPABILITY", imap_out)
        self.assertIn("e OK NOOP completed\r\n", imap_out)
        pop3_in = next(text for name, text in traces.items() if name.endswith("-pop3.in"))
        self.assertEqual(pop3_in, "AUTH PLAIN\r\n***\r\nQUIT\r\n")
        submission_in = next(text for name, text in traces.items() if name.endswith("-submission.in"))
        self.assertEqual(submission_in, "EHLO client.example.org\r\nAUTH LOGIN\r\n***\r\n***\r\nQUIT\r\n")
        bob_in = [text for name, text in self.traces("bob").items() if name.endswith(".in")]
        self.assertEqual(bob_in, ["USER bob\r\nPASS ***\r\nQUIT\r\n"])
        self.assertEqual(self.traces("carol"), {})

    def test_the_trace_sees_inside_tls_and_compress(self):
        process = self.start()
        raw = socket.create_connection(("127.0.0.1", self.ports["imaps"]), timeout=30)
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        tls = context.wrap_socket(raw, server_hostname="mail.example.org")
        self.addCleanup(tls.close)
        reader = tls.makefile("rb")
        reader.readline()  # the greeting
        tls.sendall(f"a LOGIN bob {PASSWORD}\r\nb COMPRESS DEFLATE\r\n".encode())
        while not reader.readline().startswith(b"b OK"):
            pass
        deflate, inflate = zlib.compressobj(wbits=-15), zlib.decompressobj(wbits=-15)
        tls.sendall(deflate.compress(b"c NOOP\r\nd LOGOUT\r\n") + deflate.flush(zlib.Z_SYNC_FLUSH))
        got = b""
        while b"d OK" not in got:
            chunk = tls.recv(65536)
            self.assertTrue(chunk, got)
            got += inflate.decompress(chunk)
        self.assertIn(b"c OK NOOP completed", got)
        self.stop(process)
        traces = {name.rpartition(".")[2]: text for name, text in self.traces("bob").items() if "-imaps." in name}
        self.assertEqual(traces["in"], "a LOGIN ***\r\nb COMPRESS DEFLATE\r\nc NOOP\r\nd LOGOUT\r\n")
        self.assertIn("c OK NOOP completed\r\n", traces["out"])
        self.assertIn("* BYE", traces["out"])

    def test_trace_off_stops_tracing_new_sessions(self):
        process = self.start()
        self.assertEqual(self.run_admin("trace", "bob", "off")[1],
                         "bob: not traced (until the next start, if [server] rawlog_users names them)\n")
        self.login("imap", "bob").send("a LOGOUT")
        self.assertEqual(self.run_admin("trace")[1], "no one is traced\n")
        self.stop(process)
        self.assertFalse((self.data / "rawlog" / "bob").exists())


class MaskerTests(unittest.TestCase):
    """What the trace keeps of each line a client may send (the masker sees a whole connection's input)."""

    CASES = (
        (b"a LOGIN alice secret\r\n", b"a LOGIN ***\r\n"),
        (b'a login "alice" "pass word"\r\n', b"a login ***\r\n"),
        (b"a LOGIN {5}\r\nalice {6}\r\nsecret\r\nb NOOP\r\n", b"a LOGIN ***\r\n***\r\n***\r\nb NOOP\r\n"),
        (b"a AUTHENTICATE PLAIN AGFAYgBj\r\nb NOOP\r\n", b"a AUTHENTICATE PLAIN ***\r\nb NOOP\r\n"),
        (b"a AUTHENTICATE LOGIN\r\nYWxpY2U=\r\nc2VjcmV0\r\nb NOOP\r\n",
         b"a AUTHENTICATE LOGIN\r\n***\r\n***\r\nb NOOP\r\n"),
        (b"USER alice\r\nPASS secret word\r\nSTAT\r\n", b"USER alice\r\nPASS ***\r\nSTAT\r\n"),
        (b"AUTH PLAIN AGFAYgBj\r\nMAIL FROM:<a@b>\r\n", b"AUTH PLAIN ***\r\nMAIL FROM:<a@b>\r\n"),
        (b"AUTH PLAIN\r\n*\r\nNOOP x\r\n", b"AUTH PLAIN\r\n***\r\nNOOP x\r\n"),
        (b"a SELECT INBOX\r\n", b"a SELECT INBOX\r\n"),
    )

    def test_each_case_whole_and_one_byte_at_a_time(self):
        for given, kept in self.CASES:
            self.assertEqual(InputMasker().feed(given), kept, given)
            masker = InputMasker()
            self.assertEqual(b"".join(masker.feed(given[at:at + 1]) for at in range(len(given))), kept, given)

    def test_the_servers_final_reply_ends_a_sasl_exchange(self):
        masker = InputMasker()
        self.assertEqual(masker.feed(b"AUTH LOGIN\r\n"), b"AUTH LOGIN\r\n")
        masker.reply(b"334 VXNlcm5hbWU6\r")
        self.assertEqual(masker.feed(b"YWxpY2U=\r\n"), b"***\r\n")
        masker.reply(b"334 UGFzc3dvcmQ6\r")
        self.assertEqual(masker.feed(b"c2VjcmV0\r\n"), b"***\r\n")
        masker.reply(b"235 2.7.0 Authentication successful\r")
        self.assertEqual(masker.feed(b"QUIT\r\n"), b"QUIT\r\n")

    def test_a_partial_last_line_is_masked_when_flushed(self):
        masker = InputMasker()
        self.assertEqual(masker.feed(b"PASS secr"), b"")
        self.assertEqual(masker.flush(), b"PASS ***")


class MergeTests(unittest.TestCase):
    def test_counters_add_up_and_shared_gauges_are_taken_once(self):
        one, two = Metrics(), Metrics()
        one.login("imap", "LOGIN", ok=True)
        two.login("imap", "LOGIN", ok=True)
        two.login("imap", "PLAIN", ok=False)
        one.command("imap", "NOOP", 0.002)
        two.command("imaps", "NOOP", 0.2)
        for metrics in (one, two):  # both read the same spool
            metrics.state.watch(queue=lambda: SimpleNamespace(listing=lambda: [SimpleNamespace(arrival=0)]))
        merged = merge_expositions([one.exposition(), two.exposition()])
        self.assertIn('cyrusmail_logins_total{mechanism="LOGIN",result="ok",service="imap"} 2.0', merged)
        self.assertIn('cyrusmail_logins_total{mechanism="PLAIN",result="failed",service="imap"} 1.0', merged)
        self.assertIn('cyrusmail_command_duration_seconds_count{command="NOOP",protocol="imap"} 2.0', merged)
        self.assertIn('cyrusmail_command_duration_seconds_bucket{command="NOOP",le="0.0025",protocol="imap"} 1.0',
                      merged)
        self.assertIn("cyrusmail_queue_messages 1.0", merged)
        self.assertEqual(merge_expositions([merged]), merged)

    def test_mechanisms_outside_the_known_ones_are_other(self):
        metrics = Metrics()
        metrics.login("imap", "X-" + "A" * 200, ok=False)
        self.assertIn('mechanism="other"', metrics.exposition())


class LogLevelTests(unittest.TestCase):
    def setUp(self):
        self.seen: list[dict] = []
        globalLogPublisher.addObserver(self.seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.seen.append)
        self.addCleanup(logs.set_level, "info")

    def said(self) -> list[str]:
        return [event.get("log_format", "") for event in self.seen if event.get("log_namespace", "").startswith(
            "cyrusmail")]

    def test_each_level_lets_through_what_it_should(self):
        for level, expected in (("debug", ["d", "i", "w", "e"]), ("info", ["i", "w", "e"]),
                                ("warn", ["w", "e"]), ("error", ["e"])):
            self.seen.clear()
            logs.set_level(level)
            logs.log.debug("d")
            logs.log.info("i")
            logs.log.warn("w")
            logs.log.error("e")
            self.assertEqual(self.said(), expected, level)

    def test_debug_adds_each_command_and_its_time(self):
        metrics = Metrics()
        metrics.command("imaps", "SELECT", 0.0123)
        self.assertEqual(self.said(), [])
        logs.set_level("debug")
        metrics.command("imaps", "SELECT", 0.0123)
        self.assertEqual(self.said(), ["{service}: {command} answered in {ms:.1f} ms"])
        self.assertEqual(self.seen[-1]["command"], "SELECT")

    def test_the_config_refuses_an_unknown_level(self):
        folder = Path(self.mktemp())
        folder.mkdir()
        config = folder / "c.conf"
        config.write_text(f"[server]\ndata = {folder / 'data'}\nlog_level = verbose\n")
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(admin_main(["--config", str(config), "user", "list"], out, err), 2)
        self.assertIn("[server] log_level: expected one of debug, info, warn, error, got 'verbose'", err.getvalue())
        self.assertFalse(os.path.exists(folder / "data"))
