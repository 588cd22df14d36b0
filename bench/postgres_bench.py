#!/usr/bin/env python3
"""The same IMAP and delivery steps on the embedded store and on PostgreSQL with 1 and 3 front ends.

Three setups, each a set of real ``twistd -n cyrusmail`` processes with
``[server] workers = 1``:

* ``embedded``: one server on the embedded maildir+SQLite store;
* ``pg 1 front``: one server with ``[store] backend = postgresql``;
* ``pg 3 fronts``: three servers, each its own data folder and ports, on the
  same database (the same dsn).

PostgreSQL is a throwaway cluster (``tests/postgres_support.py``) with
fsync at commit left on, as the embedded store fsyncs every message; each
setup gets its own empty schema.  Every setup runs the same steps with the
same messages and ``--clients`` clients at once, client ``i`` talking to
front end ``i mod F`` as user ``i`` of the run (fresh users for each run):

* ``LMTP deliver``: ``--count`` messages over LMTP (messages/s);
* ``IMAP APPEND``: ``--count`` messages over IMAP APPEND (appends/s);
* ``FETCH``: SELECT INBOX, FETCH 1:* (FLAGS ENVELOPE), then FETCH 1:*
  BODY.PEEK[] of every message delivered and appended (messages/s);
* ``STORE``: ``STORE n +FLAGS (\\Flagged)``, one command per message (commands/s);
* ``login cycle``: a new connection, LOGIN, SELECT INBOX, LOGOUT (cycles/s).

Each figure is the median of ``--runs`` runs; below each, the server side's
CPU per operation, in ms (the front ends' process trees plus PostgreSQL's
postmaster and backends, from ``/proc``; the clients are threads of this
process and take their share of the same cores).

    python bench/postgres_bench.py             # 3 runs, 6 clients, 300 messages (about 3 minutes)
    python bench/postgres_bench.py --quick     # 1 run, 3 clients, 30 messages: a smoke run

Without PostgreSQL's binaries or psycopg it says so and does nothing.
"""

from __future__ import annotations

import argparse
import imaplib
import io
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stress_bench import tree_cpu
from tests import postgres_support
from tests.test_twistd import TWISTD, free_ports, listening

PASSWORD = "secret"
SETUPS = (("embedded", False, 1), ("pg 1 front", True, 1), ("pg 3 fronts", True, 3))
STEPS = (("LMTP deliver", "msg/s"), ("IMAP APPEND", "appends/s"), ("FETCH", "msg/s"),
         ("STORE", "cmds/s"), ("login cycle", "cycles/s"))


def message(n: int) -> bytes:
    """The ``n``th message: the same set for every setup (about 3 KB)."""
    return (f"From: Carol <carol@example.org>\r\nTo: user{n % 7}@example.org\r\nSubject: bench message {n}\r\n"
            f"Message-ID: <{n}.pgbench@example.org>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n"
            ).encode() + (b"%05d " % n + b"y" * 70 + b"\r\n") * 40


class FrontEnd:
    """One ``twistd -n cyrusmail`` with IMAP and LMTP on free ports."""

    def __init__(self, folder: Path, dsn: str | None) -> None:
        folder.mkdir()
        self.folder = folder
        self.imap, self.lmtp = free_ports(2)
        lines = [(f"[server]\ndata = {folder / 'data'}\nhostname = {folder.name}.example.org\n"
                  f"domains = example.org\nworkers = 1\nmax_connections = 5000\nmax_unauthenticated = 5000\n"),
                 f"[imap]\nlisten = tcp:{self.imap}:interface=127.0.0.1\n",
                 f"[lmtp]\nenabled = yes\nlisten = tcp:{self.lmtp}:interface=127.0.0.1\n"]
        lines += [f"[{name}]\nenabled = no\n" for name in ("imaps", "pop3", "pop3s", "submission", "submissions",
                                                          "managesieve")]
        if dsn is not None:
            lines.append(f"[store]\nbackend = postgresql\ndsn = {dsn}\n")
        self.config = folder / "cyrusmail.conf"
        self.config.write_text("\n".join(lines))
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([*TWISTD, "--pidfile=", "-n", f"--logfile={self.folder / 'twistd.log'}",
                                         "cyrusmail", "--config", str(self.config)],
                                        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def wait(self) -> None:
        deadline = time.monotonic() + 120  # a hang check only
        while not (listening(self.imap) and listening(self.lmtp)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"cyrusmail did not start; see {self.folder / 'twistd.log'}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def setup(postgresql: bool, fronts: int, users: list[str], keep: bool):
    """``fronts`` running front ends (on one fresh schema when ``postgresql``) knowing ``users``."""
    from cyrusmail.admin.main import main as admin

    folder = Path(tempfile.mkdtemp(prefix="cm-pgbench-"))
    schema = None
    with ExitStack() as stack:
        if keep:
            stack.callback(print, f"   (kept {folder}: each front end's data and twistd.log)")
        else:
            stack.callback(shutil.rmtree, folder, True)
        dsn = None
        if postgresql:
            dsn, schema = postgres_support.fresh_dsn()
            stack.callback(postgres_support.drop_schema, schema)
        servers = [FrontEnd(folder / f"front{n}", dsn) for n in range(fronts)]
        # users once: on the database for all, in the only data folder for the embedded store
        for user in users:
            err = io.StringIO()
            if admin(["--config", str(servers[0].config), "user", "add", user, "--password", PASSWORD],
                     io.StringIO(), err):
                raise SystemExit(f"cyrusmail-admin user add {user}: {err.getvalue()}")
        for server in servers:
            stack.callback(server.stop)
            server.start()
        for server in servers:
            server.wait()
        yield servers


def server_cpu(servers: list[FrontEnd], postgresql: bool) -> tuple[float, float]:
    """CPU seconds so far of the front ends' process trees, and of PostgreSQL's (0 without it)."""
    fronts = sum(tree_cpu(server.process.pid) for server in servers)
    return fronts, tree_cpu(postgres_support.server().process.pid) if postgresql else 0.0


def imap_login(port: int, user: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", port, timeout=120)
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.login(user, PASSWORD)
    return client


def ok(answer: tuple) -> list:
    status, data = answer
    if status != "OK":
        raise RuntimeError(f"{status} {data!r}")
    return data


# -- the steps: each client connects, waits for the others, works, counts ------------------------


def deliver(server: FrontEnd, user: str, messages: list[bytes], ready: threading.Barrier) -> int:
    client = smtplib.LMTP("127.0.0.1", server.lmtp, timeout=120)
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.ehlo("bench")
    ready.wait()
    for body in messages:
        refused = client.sendmail("carol@example.org", [f"{user}@example.org"], body)
        if refused:
            raise RuntimeError(f"LMTP refused {refused}")
    client.quit()
    return len(messages)


def append(server: FrontEnd, user: str, messages: list[bytes], ready: threading.Barrier) -> int:
    client = imap_login(server.imap, user)
    ready.wait()
    for body in messages:
        ok(client.append("INBOX", None, None, body))
    client.logout()
    return len(messages)


def fetch(server: FrontEnd, user: str, messages: list[bytes], ready: threading.Barrier) -> int:
    client = imap_login(server.imap, user)
    ready.wait()
    exists = int(ok(client.select("INBOX", readonly=True))[0])
    summaries = ok(client.fetch("1:*", "(FLAGS ENVELOPE)"))
    bodies = [item for item in ok(client.fetch("1:*", "(BODY.PEEK[])")) if isinstance(item, tuple)]
    if len(bodies) != exists or len(summaries) != exists:
        raise RuntimeError(f"{user}: {exists} messages, {len(summaries)} summaries, {len(bodies)} bodies")
    client.logout()
    return exists


def store(server: FrontEnd, user: str, messages: list[bytes], ready: threading.Barrier) -> int:
    client = imap_login(server.imap, user)
    exists = int(ok(client.select("INBOX"))[0])
    ready.wait()
    for number in range(1, exists + 1):
        ok(client.store(str(number), "+FLAGS", r"(\Flagged)"))
    client.logout()
    return exists


def login_cycles(cycles: int) -> Callable:
    def cycle(server: FrontEnd, user: str, messages: list[bytes], ready: threading.Barrier) -> int:
        ready.wait()
        for _ in range(cycles):
            client = imap_login(server.imap, user)
            ok(client.select("INBOX"))
            client.logout()
        return cycles
    return cycle


def measure(work: Callable, servers: list[FrontEnd], postgresql: bool, users: list[str],
            shares: list[list[bytes]]) -> tuple[float, float, float]:
    """Run ``work`` in one thread per user at once; (operations/s, CPU ms per operation of the
    front ends, of PostgreSQL)."""
    ready = threading.Barrier(len(users) + 1)
    counts: list[int] = []
    failures: list[BaseException] = []

    def client(n: int) -> None:
        try:
            counts.append(work(servers[n % len(servers)], users[n], shares[n], ready))
        except BaseException as error:  # noqa: BLE001 - reported below, after the others end
            failures.append(error)
            ready.abort()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(len(users))]
    for thread in threads:
        thread.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        pass
    before, started = server_cpu(servers, postgresql), time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed, after = time.perf_counter() - started, server_cpu(servers, postgresql)
    if failures:
        raise SystemExit(f"a client failed: {failures[0]!r}")
    done = sum(counts)
    return done / elapsed, 1000 * (after[0] - before[0]) / done, 1000 * (after[1] - before[1]) / done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 run, 3 clients, 30 messages, 3 cycles")
    parser.add_argument("--runs", type=int, help="runs per setup; the median is shown (default 3, --quick 1)")
    parser.add_argument("--clients", type=int, help="clients at once (default 6, --quick 3)")
    parser.add_argument("--count", type=int, help="messages per delivery step, spread over the clients"
                        " (default 300, --quick 30)")
    parser.add_argument("--cycles", type=int, help="login cycles per client (default 20, --quick 3)")
    parser.add_argument("--keep", action="store_true", help="keep the front ends' data folders and logs")
    args = parser.parse_args()
    runs = args.runs or (1 if args.quick else 3)
    clients = args.clients or (3 if args.quick else 6)
    count = args.count or (30 if args.quick else 300)
    cycles = args.cycles or (3 if args.quick else 20)
    reason = postgres_support.skip_reason()
    if reason:
        print(f"skipped: {reason}")
        return 0
    postgres_support.server(durable=True)
    messages = [message(n) for n in range(count)]
    shares = [messages[n::clients] for n in range(clients)]
    steps = [deliver, append, fetch, store, login_cycles(cycles)]
    print(f"{count} messages of ~{len(messages[0])} octets per delivery step, {clients} clients at once,"
          f" {cycles} login cycles per client; median of {runs} run(s)", flush=True)
    figures: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for label, postgresql, fronts in SETUPS:
        all_users = [f"r{run}u{n}" for run in range(runs) for n in range(clients)]
        with setup(postgresql, fronts, all_users, args.keep) as servers:
            for run in range(runs):
                users = all_users[run * clients:(run + 1) * clients]
                for (step, _), work in zip(STEPS, steps, strict=True):
                    figures.setdefault((label, step), []).append(measure(work, servers, postgresql, users, shares))
        rates = "; ".join(f"{step} " + ", ".join(f"{rate:.0f}" for rate, _, _ in figures[label, step]) for step, _ in STEPS)
        print(f"   {label}: {rates}", flush=True)

    print()
    print(f"{'step':14} {'unit':10}" + "".join(f" {label:>12}" for label, _, _ in SETUPS))
    for step, unit in STEPS:
        medians = [sorted(figures[label, step])[(runs - 1) // 2] for label, _, _ in SETUPS]
        print(f"{step:14} {unit:10}" + "".join(f" {rate:12.0f}" for rate, _, _ in medians))
        print(f"{'':14} {'CPU ms/op':10}" + "".join(f" {front:7.2f}+{pg:4.2f}" if postgresql else f" {front:12.2f}"
                                                    for (_, front, pg), (_, postgresql, _) in zip(medians, SETUPS, strict=True)))
    print("CPU ms/op: CPU per operation of the median run, the front ends' + PostgreSQL's (postmaster and"
          " backends); the clients run here, on the same cores")
    print(f"machine: {os.cpu_count()} cores, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
