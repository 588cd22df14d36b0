"""The real ``twistd -n cyrusmail`` process: it listens on every configured port, stops on SIGTERM
with a goodbye to every session, survives SIGHUP and SIGUSR1, and ends a deleted user's sessions."""

from __future__ import annotations

import base64
import grp
import imaplib
import io
import os
import pwd
import re
import shutil
import signal
import smtplib
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
from cyrusmail.auth import kerberos
from cyrusmail.config import SERVICES
from cyrusmail.protocols import builder_of
from tests.helpers import modes_not_private, workers_under_test

ROOT = Path(__file__).resolve().parents[1]
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
ADMIN = [sys.executable, "-c", "import sys; from cyrusmail.admin.main import main; sys.exit(main())"]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def greeting(port: int, timeout: float = 10) -> bytes:
    """The first line a plain-text service sends: proof that the server is serving, not only bound."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            return sock.makefile("rb").readline()
    except OSError:
        return b""


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def sessions_ended(output: str) -> int:
    """How many sessions the server said it ended at shutdown (with workers, each says its own)."""
    return sum(int(count) for count in re.findall(r"cyrusmail: ending (\d+) sessions", output))


def stop_server(test: unittest.TestCase, process: subprocess.Popen) -> str:
    """SIGTERM, then the server's output (its pipe, or the file named by
    ``process.log_path``); it must have exited 0."""
    process.send_signal(signal.SIGTERM)
    piped = process.communicate(timeout=60)[0]
    if piped is None:
        piped = Path(process.log_path).read_bytes() if hasattr(process, "log_path") else b""
    output = piped.decode("utf-8", "replace")
    test.assertEqual(process.returncode, 0, output)
    return output


class TwistdTests(unittest.TestCase):
    def write_config(self, services: list[str], ports: list[int]) -> tuple[Path, Path]:
        folder = Path(self.mktemp()).resolve()
        folder.mkdir()
        data = folder / "data"
        lines = [f"[server]\ndata = {data}\nhostname = mail.example.org\nworkers = {workers_under_test()}\n"]
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
        if "imap" in services:  # the ports are bound before the store opens: wait until it serves
            self.assertTrue(greeting(ports[services.index("imap")]).startswith(b"* OK"))
        cert = data / "tls" / "cert.pem"
        if not services:
            time.sleep(2)
        self.assertIsNone(process.poll(), "twistd exited early")
        self.assertEqual(waiting, set(), f"not listening: {waiting}")
        self.assertTrue(cert.exists())
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


def snapshot(folder: Path) -> dict[str, int]:
    """Every path under ``folder`` with its size, to see that a failed start left nothing behind."""
    return {str(path.relative_to(folder)): path.lstat().st_size for path in folder.rglob("*")}


def config_text(data: Path, listen: dict[str, str], extra: str = "") -> str:
    """A config enabling only the services of ``listen`` (name -> endpoint)."""
    lines = [(f"[server]\ndata = {data}\nhostname = mail.example.org\ndomains = example.org\n"
             f"workers = {workers_under_test()}\n")]
    for name in SERVICES:
        if name in listen:
            lines.append(f"[{name}]\nenabled = yes\nlisten = {listen[name]}\n")
        else:
            lines.append(f"[{name}]\nenabled = no\n")
    return "\n".join(lines) + extra


class StartFailureTests(unittest.TestCase):
    """A start that fails: exit status 2, one line on standard error, no traceback, nothing made on disk."""

    def setUp(self):
        # Short, so that a unix socket's path fits the 108 bytes the kernel allows.
        self.folder = Path(tempfile.mkdtemp(prefix="cyrusmail-"))
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.data = self.folder / "data"

    def refused(self, text: str) -> str:
        config = self.folder / "cyrusmail.conf"
        config.write_text(text)
        before = snapshot(self.folder)
        result = subprocess.run([*TWISTD, "--pidfile=", "-n", "cyrusmail", "--config", str(config)],
                                cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
        self.assertEqual(result.returncode, 2, result.stderr + result.stdout)
        self.assertEqual(result.stderr.count("\n"), 1, result.stderr)
        self.assertTrue(result.stderr.startswith("cyrusmail: "), result.stderr)
        self.assertNotIn("Traceback", result.stdout + result.stderr)
        self.assertEqual(snapshot(self.folder), before)
        self.assertFalse(self.data.exists())
        return result.stderr

    def test_a_port_in_use(self):
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        (free,) = free_ports(1)
        socket_path = self.folder / "imap.sock"
        message = self.refused(config_text(self.data, {
            "imap": f"unix:{socket_path}", "pop3": f"tcp:{free}:interface=127.0.0.1",
            "lmtp": f"tcp:{port}:interface=127.0.0.1"}))
        self.assertIn(f"[lmtp] listen tcp:{port}:interface=127.0.0.1: cannot listen: Address already in use", message)
        self.assertFalse(socket_path.exists())  # the ports bound before it are closed again
        self.assertFalse(listening(free))

    def test_a_unix_socket_path_too_long(self):
        socket_path = self.folder / ("s" * 120)
        message = self.refused(config_text(self.data, {"imap": f"unix:{socket_path}"}))
        self.assertIn(f"[imap] listen unix:{socket_path}: cannot listen:", message)

    def test_a_certificate_that_is_not_pem(self):
        junk = self.folder / "junk.pem"
        junk.write_text("not a certificate\n")
        message = self.refused(config_text(self.data, {"imap": "tcp:0:interface=127.0.0.1"},
                                           f"[tls]\ncertificate = {junk}\nkey = {junk}\n"))
        self.assertIn(f"[tls] certificate: {junk} is not a PEM certificate", message)

    def test_a_key_that_is_not_the_certificates(self):
        from cyrusmail import tls

        cert, _ = tls.self_signed_paths(self.folder / "one")
        tls.make_self_signed("mail.example.org", cert, self.folder / "one" / "key.pem")
        other_key = self.folder / "other.pem"
        tls.make_self_signed("mail.example.org", self.folder / "other-cert.pem", other_key)
        message = self.refused(config_text(self.data, {"imap": "tcp:0:interface=127.0.0.1"},
                                           f"[tls]\ncertificate = {cert}\nkey = {other_key}\n"))
        self.assertIn(f"[tls] key: {other_key} is not the key of the certificate {cert}", message)

    def test_a_missing_key(self):
        message = self.refused(config_text(self.data, {"imap": "tcp:0:interface=127.0.0.1"},
                                           f"[tls]\ncertificate = {self.folder}/c.pem\nkey = {self.folder}/k.pem\n"))
        self.assertIn(f"[tls] certificate: cannot read {self.folder}/c.pem: No such file or directory", message)

    def test_a_data_folder_that_cannot_be_made(self):
        blocker = self.folder / "file"
        blocker.write_text("a file, not a folder\n")
        self.data = blocker / "data"
        message = self.refused(config_text(self.data, {"imap": "tcp:0:interface=127.0.0.1"}))
        self.assertIn(f"[server] data: cannot make {self.data}: {blocker} is not a folder", message)

    def test_a_keytab_that_cannot_be_read(self):
        keytab = self.folder / "missing.keytab"
        message = self.refused(config_text(self.data, {"imap": "tcp:0:interface=127.0.0.1"},
                                           f"[auth]\nkeytab = {keytab}\ngssapi_realms = EXAMPLE.ORG\n"))
        self.assertIn("[auth] keytab: ", message)  # without python-gssapi: that it is needed
        if kerberos.available():
            self.assertIn(f"cannot read {keytab}: No such file or directory", message)

    def test_a_port_that_is_not_a_number(self):
        message = self.refused(config_text(self.data, {"imap": "tcp:abc"}))
        self.assertIn("[imap] listen: endpoint 'tcp:abc': the port must be a number from 0 to 65535", message)


class RunningServerTests(unittest.TestCase):
    """A real server on a short temporary folder, started and stopped by the test."""

    def setUp(self):
        self.folder = Path(tempfile.mkdtemp(prefix="cyrusmail-"))
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.data = self.folder / "data"

    def config(self, name: str, listen: dict[str, str], extra: str = "") -> Path:
        path = self.folder / f"{name}.conf"
        path.write_text(config_text(self.data, listen, extra))
        return path

    def serve(self, config: Path, port: int, umask: int = -1) -> subprocess.Popen:
        """Start twistd and wait until the IMAP service on ``port`` greets."""
        process = subprocess.Popen([*TWISTD, "--pidfile=", "-n", "cyrusmail", "--config", str(config)],
                                   cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, umask=umask)
        self.addCleanup(lambda: process.poll() is None and process.kill())
        deadline = time.monotonic() + 30
        while not listening(port) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        self.assertTrue(greeting(port).startswith(b"* OK"), "the server does not serve")
        return process

    def stop(self, process: subprocess.Popen) -> str:
        return stop_server(self, process)

    def admin(self, config: Path, *argv: str, umask: int = -1) -> None:
        result = subprocess.run([*ADMIN, "--config", str(config), *argv], cwd=ROOT, capture_output=True,
                                text=True, timeout=60, check=False, umask=umask)
        self.assertEqual(result.returncode, 0, result.stderr)


class DataLockTests(RunningServerTests):
    def test_a_second_server_on_the_same_data_refuses_and_the_first_keeps_serving(self):
        first_port, second_port = free_ports(2)
        first_config = self.config("first", {"imap": f"tcp:{first_port}:interface=127.0.0.1"})
        second_config = self.config("second", {"imap": f"tcp:{second_port}:interface=127.0.0.1"})
        first = self.serve(first_config, first_port)

        pid_file = self.folder / "second.pid"
        second = subprocess.run([*TWISTD, f"--pidfile={pid_file}", "-n", "cyrusmail", "--config", str(second_config)],
                                cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
        self.assertEqual(second.returncode, 2, second.stderr + second.stdout)
        self.assertFalse(pid_file.exists())
        lock = self.data / "server.lock"
        self.assertEqual(second.stderr, f"cyrusmail: another cyrusmail server (process {first.pid})"
                                        f" is using {self.data}: it holds {lock}\n")
        self.assertNotIn("Traceback", second.stdout)
        self.assertFalse(listening(second_port))

        # The first serves on, and cyrusmail-admin works beside it (it never takes the lock).
        self.admin(first_config, "user", "add", "alice", "--password", "secret")
        client = imaplib.IMAP4("127.0.0.1", first_port)
        self.assertEqual(client.login("alice", "secret")[0], "OK")
        client.logout()
        self.stop(first)

        # The lock went with the first server: the second starts now.
        self.stop(self.serve(second_config, second_port))

    def test_a_second_daemon_says_why_and_leaves_no_pid_file(self):
        first_port, second_port = free_ports(2)
        first = self.serve(self.config("first", {"imap": f"tcp:{first_port}:interface=127.0.0.1"}), first_port)
        pid_file = self.folder / "second.pid"
        second = subprocess.run(
            [*TWISTD, f"--pidfile={pid_file}", f"--logfile={self.folder / 'second.log'}", "cyrusmail",
             "--config", str(self.config("second", {"imap": f"tcp:{second_port}:interface=127.0.0.1"}))],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
        self.assertEqual(second.returncode, 1, second.stderr)  # twistd's own status for a daemon that failed
        self.assertIn("another cyrusmail server", second.stderr)
        self.assertIn(f"another cyrusmail server (process {first.pid}) is using {self.data}",
                      (self.folder / "second.log").read_text())
        # twistd's forked child reports the failure to the launcher first and removes its pid file just after.
        deadline = time.monotonic() + 30
        while pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertFalse(pid_file.exists())
        self.stop(first)


class FileModeTests(RunningServerTests):
    def test_everything_under_data_is_private_under_a_permissive_umask(self):
        imap, submission, lmtp, nobody = free_ports(4)
        self.data.mkdir()
        self.data.chmod(0o777)  # a folder made open before is closed at start
        config = self.config("server", {"imap": f"tcp:{imap}:interface=127.0.0.1",
                                        "submission": f"tcp:{submission}:interface=127.0.0.1",
                                        "lmtp": f"tcp:{lmtp}:interface=127.0.0.1"},
                             f"[queue]\nsmarthost = 127.0.0.1:{nobody}\n")  # refused: the message waits
        process = self.serve(config, imap, umask=0)
        self.admin(config, "user", "add", "alice", "--password", "secret", umask=0)
        with smtplib.LMTP("127.0.0.1", lmtp) as client:
            client.sendmail("bob@example.net", ["alice@example.org"], b"Subject: in\r\n\r\nHello.\r\n")
        with smtplib.SMTP("127.0.0.1", submission) as client:
            client.login("alice", "secret")
            client.sendmail("alice@example.org", ["carol@remote.invalid"],
                            b"From: alice@example.org\r\nSubject: out\r\n\r\nBye.\r\n")
        self.stop(process)
        self.assertTrue(list(self.data.glob("users/alice/mail/*/*.*")), "the message was delivered")
        self.assertTrue(list(self.data.glob("queue/*.json")), "the outbound message waits in the queue")
        self.assertEqual(modes_not_private(self.data), {})


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


def admin_output(test: unittest.TestCase, config: Path, *argv: str) -> str:
    """What ``cyrusmail-admin --config CONFIG ARGV...`` says, in this process; it must succeed."""
    out, err = io.StringIO(), io.StringIO()
    code = admin_main(["--config", str(config), *argv], out, err)
    test.assertEqual(code, 0, err.getvalue())
    return out.getvalue()


PLAIN = "AUTH PLAIN " + base64.b64encode(b"\0alice\0secret").decode()
LOGINS = {"imap": ["a LOGIN alice secret"], "pop3": ["USER alice", "PASS secret"],
          "submission": ["EHLO client.example.org", PLAIN], "lmtp": ["LHLO mta.example.org"]}


class LiveServer:
    """A mixin: a config with users alice and bob, the real twistd on it, and logged-in clients.

    ``SERVER_KEYS`` is added to ``[server]``, ``SECTIONS`` (which may name
    ``{ports[...]}``) after the services; ``WORKERS`` sets ``[server] workers``.
    """

    SERVICES = ("imap", "imaps", "pop3", "submission", "lmtp")
    SERVER_KEYS = ""
    SECTIONS = ""
    EXTRA_PORTS: tuple[str, ...] = ()
    WORKERS: int | None = None  # None: as the suite runs (workers_under_test)

    def setUp(self):
        # A short data path: a unix socket's path holds at most 107 bytes.
        self.data = Path(tempfile.mkdtemp(prefix="cm-", dir="/tmp"))
        self.addCleanup(shutil.rmtree, self.data, True)
        names = (*self.SERVICES, *self.EXTRA_PORTS)
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        lines = [f"[server]\ndata = {self.data}\nhostname = mail.example.org\ndomains = example.org\n"
                 f"workers = {self.WORKERS or workers_under_test()}\n" + self.SERVER_KEYS]
        for name in SERVICES:
            if name in self.ports:
                lines.append(f"[{name}]\nlisten = tcp:{self.ports[name]}:interface=127.0.0.1\n")
            else:
                lines.append(f"[{name}]\nenabled = no\n")
        lines.append(self.SECTIONS.format(ports=self.ports))
        self.config = self.data / "cyrusmail.conf"
        self.config.write_text("\n".join(lines))
        self.admin("user", "add", "alice", "--password", "secret")
        self.admin("user", "add", "bob", "--password", "secret")

    def admin(self, *argv: str) -> str:
        return admin_output(self, self.config, *argv)

    def start(self, *twistd_options: str) -> subprocess.Popen:
        process = subprocess.Popen(
            [*TWISTD, "--pidfile=", "-n", *twistd_options, "cyrusmail", "--config", str(self.config)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self.addCleanup(lambda: process.poll() is None and process.kill())
        deadline = time.monotonic() + 60
        waiting = {self.ports[name] for name in self.SERVICES}
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
        return stop_server(self, process)


class LiveSessionTests(LiveServer, unittest.TestCase):
    """Goodbyes at SIGTERM and at user deletion, SIGHUP and SIGUSR1, in the real twistd process."""

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
        self.assertEqual(sessions_ended(output), 5, output)
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

    def test_the_logrotate_snippet_rotates_the_log_and_the_server_writes_the_new_one(self):
        logrotate = shutil.which("logrotate") or ("/usr/sbin/logrotate" if os.path.exists("/usr/sbin/logrotate")
                                                  else None)
        if logrotate is None:
            raise unittest.SkipTest("logrotate is not installed (Debian package logrotate; CI installs it)")
        log, pid_file = self.data / "cyrusmail.log", self.data / "twistd.pid"
        owner = f"{pwd.getpwuid(os.getuid()).pw_name} {grp.getgrgid(os.getgid()).gr_name}"
        snippet = (ROOT / "etc" / "cyrusmail.logrotate").read_text()
        for theirs, ours in (("/var/log/cyrusmail/cyrusmail.log", str(log)),
                             ("/run/cyrusmail/twistd.pid", str(pid_file)), ("cyrusmail cyrusmail", owner)):
            self.assertIn(theirs, snippet)
            snippet = snippet.replace(theirs, ours)
        rules = self.data / "logrotate.conf"
        rules.write_text(snippet)
        process = self.start(f"--logfile={log}", f"--pidfile={pid_file}")
        self.session("imap")
        rotated = subprocess.run([logrotate, "-f", "-s", str(self.data / "logrotate.state"), str(rules)],
                                 check=False, capture_output=True, text=True, timeout=60)
        self.assertEqual(rotated.returncode, 0, rotated.stderr)
        self.assertIn("logged in", (self.data / "cyrusmail.log.1").read_text())
        deadline = time.monotonic() + 30
        while "SIGHUP received, reopened 1 log files" not in (log.read_text() if log.exists() else ""):
            self.assertLess(time.monotonic(), deadline, "the server did not reopen its log")
            time.sleep(0.1)
        self.assertEqual(oct(log.stat().st_mode & 0o777), "0o600")
        self.session("imap", "bob")
        while "bob" not in log.read_text():
            self.assertLess(time.monotonic(), deadline, "the new log file gets no lines")
            time.sleep(0.1)
        self.assertNotIn("bob", (self.data / "cyrusmail.log.1").read_text())
        self.stop(process)

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
        self.assertIn(tls.fingerprint(tls.context_factory(cert, key)), log.read_text())
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
