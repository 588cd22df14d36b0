"""Flood benchmark: what a client that pipelines and never reads costs the server.

Run from the checkout: ``python bench/flood_bench.py [--megabytes 10] [SERVICE...]``.

For each case a fresh ``twistd -n cyrusmail`` runs on loopback; a client
sends ``--megabytes`` of one pipelined command (``a CAPABILITY``, ``CAPA``,
``EHLO``, ``LHLO``) and reads nothing, giving up on a send that blocks for 5
seconds (the server stopped reading).  The figure is the server's resident
size before and 3 seconds after.  Without output backpressure the server
read it all and held every answer: 150-250 MB for 10 MB of commands.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
SERVICES = ("imap", "imaps", "pop3", "pop3s", "submission", "submissions", "lmtp")
CASES = {  # service: (command, implicit TLS)
    "imap": (b"a CAPABILITY\r\n", False),
    "imaps": (b"a CAPABILITY\r\n", True),
    "pop3": (b"CAPA\r\n", False),
    "submission": (b"EHLO client.example\r\n", False),
    "lmtp": (b"LHLO client.example\r\n", False),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def resident_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return -1


@contextlib.contextmanager
def server(service: str):
    """A twistd serving only ``service`` on a free loopback port; yields (process, port)."""
    folder = Path(tempfile.mkdtemp())
    port = free_port()
    sections = [f"[server]\ndata = {folder / 'data'}\nhostname = mail.example.org\n"]
    for name in SERVICES:
        if name == service:
            sections.append(f"[{name}]\nenabled = yes\nlisten = tcp:{port}:interface=127.0.0.1\n")
        else:
            sections.append(f"[{name}]\nenabled = no\n")
    (folder / "cyrusmail.conf").write_text("\n".join(sections))
    process = subprocess.Popen([*TWISTD, "--pidfile=", "-n", "cyrusmail", "--config", str(folder / "cyrusmail.conf")],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                time.sleep(0.2)
        yield process, port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(folder, ignore_errors=True)


def flood(service: str, megabytes: float) -> str:
    command, implicit_tls = CASES[service]
    with server(service) as (process, port):
        sock = socket.create_connection(("127.0.0.1", port))
        if implicit_tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # the server's certificate is self-signed
            sock = context.wrap_socket(sock)
        sock.recv(4096)  # the greeting
        time.sleep(0.5)
        before = resident_mib(process.pid)
        block = command * (65536 // len(command))
        total, sent = int(megabytes * 2**20), 0
        sock.settimeout(5)
        started = time.monotonic()
        with contextlib.suppress(TimeoutError):
            while sent < total:
                sock.sendall(block)
                sent += len(block)
        elapsed = time.monotonic() - started
        time.sleep(3)
        after = resident_mib(process.pid)
        sock.close()
    return (f"{service:11} {command.decode().strip():22}"
            f" sent {sent / 2**20:5.1f} MB in {elapsed:4.1f} s; server resident {before} -> {after} MB"
            f" ({after - before:+d})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=10)
    parser.add_argument("services", nargs="*", metavar="SERVICE", help=f"any of {', '.join(CASES)} (all)")
    arguments = parser.parse_args()
    unknown = set(arguments.services) - set(CASES)
    if unknown:
        parser.error(f"unknown service {', '.join(sorted(unknown))}")
    for service in arguments.services or CASES:
        print(flood(service, arguments.megabytes), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
