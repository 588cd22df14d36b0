"""Mail-in with store work off the reactor: APPEND and LMTP, 1 and 10 clients, and greeting latency.

The real ``twistd cyrusmail`` runs in its own process on a fresh data
folder; clients are imaplib and smtplib.LMTP threads in this process.
Every OK and 250 means the message is durable (fsynced file, folder and
index).  Figures:

- APPEND and LMTP delivery rates with 1 client, and with 10 clients at once
  all writing to the same user (where concurrent deliveries share commits);
- the time another connection waits for its IMAP greeting while 10 LMTP
  clients deliver as fast as they can (median and 95th percentile).

Medians of ``--runs`` runs.  ``--tree PATH`` runs the server from another
checkout (e.g. the code before a change) for a before/after comparison.
"""

from __future__ import annotations

import argparse
import imaplib
import os
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))

from tests.test_twistd import config_text

BODY = (b"From: carol@example.org\r\nTo: alice@example.org\r\nSubject: bench\r\n"
        b"Message-ID: <bench@example.org>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n"
        + (b"x" * 76 + b"\r\n") * 50)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Server:
    """A twistd process on its own data folder, from ``tree``."""

    def __init__(self, tree: Path, keep: bool = False) -> None:
        self.tree, self.keep = tree, keep
        self.folder = Path(tempfile.mkdtemp(prefix="cm-bench-"))
        self.imap, self.lmtp = free_port(), free_port()
        listen = {"imap": self.imap, "lmtp": self.lmtp}
        self.config = self.folder / "cyrusmail.conf"
        self.config.write_text(config_text(self.folder / "data", {name: f"tcp:{port}:interface=127.0.0.1"
                                                                  for name, port in listen.items()}))
        self.env = {**os.environ, "PYTHONPATH": str(tree)}
        self.log = open(self.folder / "twistd.log", "wb")  # noqa: SIM115 - closed by stop()
        for user in ("alice", "bob"):
            self.python("import sys; from cyrusmail.admin.main import main; sys.exit(main())",
                        "--config", str(self.config), "user", "add", user, "--password", "secret")
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "--pidfile=", "-n", "cyrusmail", "--config", str(self.config)],
            cwd=tree, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not (listening(self.imap) and listening(self.lmtp)):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.1)

    def python(self, code: str, *argv: str) -> None:
        subprocess.run([sys.executable, "-c", code, *argv], cwd=self.tree, env=self.env, check=True,
                       stdout=subprocess.DEVNULL)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)
        self.log.close()
        if self.keep:
            print(f"  (kept {self.folder}, the server's log in twistd.log)")
        else:
            shutil.rmtree(self.folder, ignore_errors=True)


def append_client(port: int, count: int) -> None:
    client = imaplib.IMAP4("127.0.0.1", port)
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.login("alice", "secret")
    for _ in range(count):
        status, answer = client.append("INBOX", None, None, BODY)
        assert status == "OK", answer
    client.logout()


def lmtp_client(port: int, count: int) -> None:
    client = smtplib.LMTP("127.0.0.1", port)
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.ehlo("bench")
    for _ in range(count):
        assert not client.sendmail("carol@example.org", ["alice@example.org"], BODY)
    client.quit()


def rate(client, port: int, clients: int, per_client: int) -> float:
    """Messages per second with ``clients`` connections at once."""
    threads = [threading.Thread(target=client, args=(port, per_client)) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return clients * per_client / (time.perf_counter() - start)


def greeting_latency(server: Server, per_client: int) -> tuple[float, float]:
    """Median and 95th percentile (ms) of IMAP greetings while 10 LMTP clients deliver."""
    senders = [threading.Thread(target=lmtp_client, args=(server.lmtp, per_client)) for _ in range(10)]
    for thread in senders:
        thread.start()
    samples = []
    time.sleep(0.2)  # the deliveries are under way
    while any(thread.is_alive() for thread in senders):
        start = time.perf_counter()
        with socket.create_connection(("127.0.0.1", server.imap), timeout=60) as sock:
            sock.makefile("rb").readline()
        samples.append((time.perf_counter() - start) * 1000)
        time.sleep(0.02)
    for thread in senders:
        thread.join()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=HERE, help="the checkout whose server to run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--count", type=int, default=400, help="messages per measure")
    parser.add_argument("--keep", action="store_true", help="keep each run's data folder and server log")
    options = parser.parse_args()
    figures: dict[str, list[float]] = {}
    for _ in range(options.runs):
        server = Server(options.tree, options.keep)
        try:
            for label, client, port in (("APPEND", append_client, server.imap), ("LMTP", lmtp_client, server.lmtp)):
                figures.setdefault(f"{label} 1 client", []).append(rate(client, port, 1, options.count))
                figures.setdefault(f"{label} 10 clients", []).append(
                    rate(client, port, 10, options.count // 10))
            median, p95 = greeting_latency(server, options.count // 10)
            figures.setdefault("greeting median", []).append(median)
            figures.setdefault("greeting p95", []).append(p95)
        finally:
            server.stop()
    print(f"cyrusmail mail-in from {options.tree}: {len(BODY)}-octet messages, all to one user;"
          f" server in its own process; medians of {options.runs} runs")
    for label, values in figures.items():
        unit = "ms while 10 LMTP clients deliver" if label.startswith("greeting") else "msg/s"
        print(f"  {label:20s} {statistics.median(values):8.1f} {unit}")


if __name__ == "__main__":
    main()
