"""The real ``twistd -n cyrusmail`` process: it listens on every configured port, stops on SIGTERM
with a goodbye to every session, survives SIGHUP and SIGUSR1, and ends a deleted user's sessions."""

from __future__ import annotations

import base64
import io
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from twisted.trial import unittest

from cyrusmail import tls
from cyrusmail.admin.main import main as admin_main
from cyrusmail.config import SERVICES
from cyrusmail.protocols import builder_of

ROOT = Path(__file__).resolve().parents[1]
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class TwistdTests(unittest.TestCase):
    def write_config(self, services: list[str], ports: list[int]) -> tuple[Path, Path]:
        folder = Path(self.mktemp()).resolve()
        folder.mkdir()
        data = folder / "data"
        lines = [f"[server]\ndata = {data}\nhostname = mail.example.org\n"]
        for name in SERVICES:
            if name in services:
                port = ports[services.index(name)]
                lines.append(f"[{name}]\nenabled = yes\nlisten = tcp:{port}:interface=127.0.0.1\n")
            else:
                lines.append(f"[{name}]\nenabled = no\n")
        config = folder / "cyrusmail.conf"
        config.write_text("\n".join(lines))
        return config, data

    def start(self, config: Path) -> subprocess.Popen:
        process = subprocess.Popen(
            [*TWISTD, "--pidfile=", "-n", "cyrusmail", "--config", str(config)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self.addCleanup(lambda: process.poll() is None and process.kill())
        return process

    def test_starts_every_enabled_service_and_stops_on_sigterm(self):
        services = [name for name in SERVICES if builder_of(name) is not None]
        ports = free_ports(len(services))
        config, data = self.write_config(services, ports)
        process = self.start(config)
        deadline = time.monotonic() + 30
        waiting = set(ports)
        while waiting and time.monotonic() < deadline and process.poll() is None:
            waiting = {port for port in waiting if not listening(port)}
            time.sleep(0.1)
        if not services:
            time.sleep(2)
        self.assertIsNone(process.poll(), "twistd exited early")
        self.assertEqual(waiting, set(), f"not listening: {waiting}")
        self.assertTrue((data / "tls" / "cert.pem").exists())
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode("utf-8", "replace")
        self.assertEqual(process.returncode, 0, output)
        self.assertIn("SHA-256 fingerprint", output)
        self.assertIn("store and index closed", output)
        for port in ports:
            self.assertFalse(listening(port))

    def test_bad_config_exits_nonzero_with_one_line_and_creates_nothing(self):
        folder = Path(self.mktemp()).resolve()
        folder.mkdir()
        config = folder / "bad.conf"
        config.write_text(f"[server]\ndata = {folder / 'data'}\n[imap]\nlisten = tcp:not-a-port\n")
        result = subprocess.run([*TWISTD, "--pidfile=", "-n", "cyrusmail", "--config", str(config)],
                                cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
        self.assertEqual(result.returncode, 2)
        self.assertEqual(result.stderr.count("\n"), 1, result.stderr)
        self.assertIn(f"{config}: [imap] listen: endpoint 'tcp:not-a-port'", result.stderr)
        self.assertFalse((folder / "data").exists())


class PluginTests(unittest.TestCase):
    def test_plugin_is_found(self):
        from twisted.application.service import IServiceMaker
        from twisted.plugin import getPlugins

        names = [plugin.tapname for plugin in getPlugins(IServiceMaker)]
        self.assertIn("cyrusmail", names)

    def test_no_init_in_twisted_plugins(self):
        self.assertFalse((ROOT / "twisted" / "__init__.py").exists())
        self.assertFalse((ROOT / "twisted" / "plugins" / "__init__.py").exists())
        self.assertTrue(os.path.exists(ROOT / "twisted" / "plugins" / "cyrusmail_plugin.py"))


class Line:
    """A plain client socket read line by line (loopback: passwords in the clear are allowed)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.reader = self.sock.makefile("rb")
        self.greeting = self.read()

    def read(self) -> str:
        return self.reader.readline().decode("utf-8", "replace")

    def send(self, line: str) -> str:
        """Send ``line``; the reply's last line (multi-line SMTP replies are read to their end)."""
        self.sock.sendall(line.encode() + b"\r\n")
        while True:
            reply = self.read()
            if not (len(reply) > 3 and reply[:3].isdigit() and reply[3] == "-"):
                return reply

    def rest(self) -> list[str]:
        """Every line until the server closes."""
        lines = []
        while line := self.read():
            lines.append(line)
        return lines

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


PLAIN = "AUTH PLAIN " + base64.b64encode(b"\0alice\0secret").decode()
LOGINS = {"imap": ["a LOGIN alice secret"], "pop3": ["USER alice", "PASS secret"],
          "submission": ["EHLO client.example.org", PLAIN], "lmtp": ["LHLO mta.example.org"]}


class LiveSessionTests(unittest.TestCase):
    """Goodbyes at SIGTERM and at user deletion, SIGHUP and SIGUSR1, in the real twistd process."""

    SERVICES = ("imap", "imaps", "pop3", "submission", "lmtp")

    def setUp(self):
        # A short data path: a unix socket's path holds at most 107 bytes.
        self.data = Path(tempfile.mkdtemp(prefix="cm-", dir="/tmp"))
        self.addCleanup(shutil.rmtree, self.data, True)
        self.ports = dict(zip(self.SERVICES, free_ports(len(self.SERVICES)), strict=True))
        lines = [f"[server]\ndata = {self.data}\nhostname = mail.example.org\ndomains = example.org\n"]
        for name in SERVICES:
            if name in self.ports:
                lines.append(f"[{name}]\nlisten = tcp:{self.ports[name]}:interface=127.0.0.1\n")
            else:
                lines.append(f"[{name}]\nenabled = no\n")
        self.config = self.data / "cyrusmail.conf"
        self.config.write_text("\n".join(lines))
        self.admin("user", "add", "alice", "--password", "secret")
        self.admin("user", "add", "bob", "--password", "secret")

    def admin(self, *argv: str) -> str:
        out, err = io.StringIO(), io.StringIO()
        code = admin_main(["--config", str(self.config), *argv], out, err)
        self.assertEqual(code, 0, err.getvalue())
        return out.getvalue()

    def start(self, *twistd_options: str) -> subprocess.Popen:
        process = subprocess.Popen(
            [*TWISTD, "--pidfile=", "-n", *twistd_options, "cyrusmail", "--config", str(self.config)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self.addCleanup(lambda: process.poll() is None and process.kill())
        deadline = time.monotonic() + 60
        waiting = set(self.ports.values())
        while (waiting or not (self.data / "control.sock").exists()) and time.monotonic() < deadline:
            self.assertIsNone(process.poll(), "twistd exited early")
            waiting = {port for port in waiting if not listening(port)}
            time.sleep(0.1)
        self.assertEqual(waiting, set())
        return process

    def session(self, service: str, user: str = "alice") -> Line:
        client = Line(self.ports[service])
        self.addCleanup(client.close)
        for line in LOGINS[service]:
            reply = client.send(line.replace("alice", user))
        self.assertRegex(reply, r"^(a OK|\+OK|250 |235 )", reply)
        return client

    def stop(self, process: subprocess.Popen) -> str:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0].decode("utf-8", "replace")
        self.assertEqual(process.returncode, 0, output)
        return output

    def test_sigterm_says_goodbye_to_every_session_then_exits_0(self):
        process = self.start()
        clients = {name: self.session(name) for name in ("imap", "pop3", "submission", "lmtp")}
        waiting = Line(self.ports["imap"])  # not logged in
        self.addCleanup(waiting.close)
        process.send_signal(signal.SIGTERM)
        said = {name: client.rest() for name, client in clients.items()}
        self.assertEqual(said["imap"], ["* BYE Server shutting down\r\n"])
        self.assertEqual(said["pop3"], ["-ERR [SYS/TEMP] Server shutting down\r\n"])
        self.assertEqual(said["submission"], ["421 4.3.2 mail.example.org Server shutting down\r\n"])
        self.assertEqual(said["lmtp"], ["421 4.3.2 mail.example.org Server shutting down\r\n"])
        self.assertEqual(waiting.rest(), ["* BYE Server shutting down\r\n"])
        output = process.communicate(timeout=60)[0].decode("utf-8", "replace")
        self.assertEqual(process.returncode, 0, output)
        self.assertIn("ending 5 sessions", output)
        self.assertIn("store and index closed", output)

    def test_user_delete_ends_that_users_live_sessions(self):
        process = self.start()
        alice = {name: self.session(name) for name in ("imap", "pop3", "submission")}
        bob = self.session("imap", "bob")
        self.assertEqual(self.admin("user", "delete", "alice", "--yes"),
                         "user alice deleted; 3 live sessions ended\n")
        said = {name: client.rest() for name, client in alice.items()}
        self.assertEqual(said, {"imap": ["* BYE Account removed\r\n"],
                                "pop3": ["-ERR [SYS/TEMP] Account removed\r\n"],
                                "submission": ["421 4.3.2 mail.example.org Account removed\r\n"]})
        self.assertEqual(bob.send("b NOOP"), "b OK NOOP completed\r\n")
        refused = Line(self.ports["imap"])
        self.addCleanup(refused.close)
        self.assertRegex(refused.send("c LOGIN alice secret"), "^c NO ")
        self.stop(process)

    def test_sighup_and_sigusr1_do_not_stop_the_server(self):
        process = self.start()
        client = self.session("imap")
        for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGHUP):
            process.send_signal(signum)
            self.assertEqual(client.send("b NOOP"), "b OK NOOP completed\r\n")
        self.assertIsNone(process.poll())
        output = self.stop(process)
        self.assertEqual(output.count("SIGHUP received, reopened 0 log files"), 2, output)
        self.assertIn("SIGUSR1 ignored", output)

    def test_sighup_reopens_the_log_file_and_reloads_the_certificate(self):
        log = self.data / "twistd.log"
        process = self.start(f"--logfile={log}")
        before = served_certificate(self.ports["imaps"])
        log.rename(self.data / "twistd.log.1")  # as logrotate does
        cert, key = tls.self_signed_paths(self.data)
        tls.make_self_signed("mail.example.org", cert, key)
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while not (log.exists() and "TLS certificate reloaded" in log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertIn("SIGHUP received, reopened 1 log files", log.read_text())
        after = served_certificate(self.ports["imaps"])
        self.assertNotEqual(before, after)
        self.assertIn(tls.fingerprint(cert), log.read_text())
        # A broken certificate is refused and the one in use stays.
        cert.write_text("not a certificate\n")
        process.send_signal(signal.SIGHUP)
        while "kept the old TLS certificate" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertIn("kept the old TLS certificate", log.read_text())
        self.assertEqual(served_certificate(self.ports["imaps"]), after)
        self.stop(process)
        self.assertIn("store and index closed", log.read_text())


def served_certificate(port: int) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, \
            context.wrap_socket(raw) as wrapped:
        return wrapped.getpeercert(binary_form=True)
