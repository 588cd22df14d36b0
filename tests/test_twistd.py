"""The real ``twistd -n cyrusmail`` process: it listens on every configured port and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from twisted.trial import unittest

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
