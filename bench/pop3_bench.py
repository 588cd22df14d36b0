"""POP3 benchmark: RETR throughput of a large message, LIST/UIDL time on a 10,000-message maildrop.

Run from the checkout: ``python bench/pop3_bench.py [--messages 10000] [--size-mib 50] [--runs 5]``.

A real server listens on 127.0.0.1 (plain and POP3S) in this process, on
the reactor; the clients run in a thread over real sockets. Each figure is
the median of ``--runs`` runs. "raw" reads the reply with large recv()
calls, so it measures the server; "poplib" includes poplib's own per-line
parsing, as a Python client sees it. The maximum resident size before and
after the raw RETR runs shows whether the message was held in memory.
"""

from __future__ import annotations

import argparse
import configparser
import poplib
import resource
import socket
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import reactor, threads
from twisted.protocols.tls import TLSMemoryBIOFactory

from cyrusmail.auth.checkers import PasswordChecker
from cyrusmail.config import SERVICES, from_parser
from cyrusmail.pop3.server import POP3Factory
from cyrusmail.service import open_context

BATCH = 500


def make_context(data: Path):
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read_dict({
        "server": {"data": str(data), "hostname": "bench.example.org", "domains": "example.org"},
        **{name: {"enabled": "no"} for name in SERVICES},
    })
    context = open_context(from_parser("bench.conf", parser), reactor)
    context.portal.registerChecker(PasswordChecker(context.users, context.config.domains, hash_in_thread=False))
    return context


def small_message(number: int) -> bytes:
    return (f"From: sender{number}@example.org\r\nTo: alice@example.org\r\n"
            f"Subject: message {number}\r\nMessage-ID: <{number}@bench>\r\n\r\n"
            + "Some body text of a typical short message.\r\n" * 20).encode()


def stage_large_message(store, size: int):
    """A message of ``size`` octets, written in blocks so that it is never whole in memory."""
    line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3\r\n"
    block = line * 99 + b".a line that must be dot-stuffed\r\n"
    staged = store.stage()
    staged.write(b"From: big@example.org\r\nTo: alice@example.org\r\nSubject: large\r\n\r\n")
    while staged.size + len(block) + 2 <= size:
        staged.write(block)
    while staged.size < size:  # pad with short lines: poplib refuses lines over 2048 octets
        staged.write(b"x" * min(76, max(0, size - staged.size - 2)) + b"\r\n")
    staged.finish()
    return staged


def fill(context, count: int, size: int) -> None:
    inbox = context.store.mailboxes("alice").open("INBOX")
    staged = stage_large_message(context.store, size)
    inbox.append(staged)
    staged.discard()
    started = time.perf_counter()
    for first in range(1, count, BATCH):
        inbox.append_many([(small_message(n), None, (), None) for n in range(first, min(first + BATCH, count))])
    print(f"maildrop: 1 message of {size / 2**20:.0f} MiB + {count - 1} small ones,"
          f" built in {time.perf_counter() - started:.1f} s")


def login_raw(sock: socket.socket) -> None:
    sock.sendall(b"USER alice\r\nPASS secret\r\n")
    seen = b""
    while seen.count(b"\r\n") < 3:  # greeting, USER, PASS
        seen += sock.recv(4096)


def raw_retr(port: int, size: int, tls: bool) -> float:
    """Seconds to receive RETR 1 whole, read in 1 MiB recv() calls and not kept."""
    sock = socket.create_connection(("127.0.0.1", port))
    if tls:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        sock = context.wrap_socket(sock, server_hostname="localhost")
    login_raw(sock)
    started = time.perf_counter()
    sock.sendall(b"RETR 1\r\n")
    tail, received = b"", 0
    while not tail.endswith(b"\r\n.\r\n"):
        data = sock.recv(1 << 20)
        if not data:
            raise RuntimeError("connection closed during RETR")
        received += len(data)
        tail = (tail + data)[-5:]
    elapsed = time.perf_counter() - started
    if received < size:
        raise RuntimeError(f"received {received} octets of {size}")
    sock.sendall(b"QUIT\r\n")
    sock.close()
    return elapsed


def poplib_session(port: int) -> dict[str, float]:
    pop = poplib.POP3("127.0.0.1", port)
    pop.user("alice")
    pop.pass_("secret")
    timings = {}
    started = time.perf_counter()
    listing = pop.list()[1]
    timings["LIST"] = time.perf_counter() - started
    started = time.perf_counter()
    uids = pop.uidl()[1]
    timings["UIDL"] = time.perf_counter() - started
    started = time.perf_counter()
    pop.retr(1)
    timings["RETR"] = time.perf_counter() - started
    started = time.perf_counter()
    pop.top(2, 5)
    timings["TOP"] = time.perf_counter() - started
    pop.quit()
    assert len(listing) == len(uids)
    timings["lines"] = len(listing)
    return timings


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(arguments: argparse.Namespace, plain_port: int, tls_port: int, size: int) -> None:
    runs = arguments.runs
    rss_before = max_rss_mib()
    mib = size / 2**20
    for name, port, tls in (("plain", plain_port, False), ("POP3S", tls_port, True)):
        seconds = statistics.median(raw_retr(port, size, tls) for _ in range(runs))
        print(f"RETR {mib:.0f} MiB, {name}, raw socket: {mib / seconds:8.1f} MiB/s  (median {seconds:.3f} s)")
    print(f"max RSS of this process: {rss_before:.0f} MiB before the raw RETRs, {max_rss_mib():.0f} MiB after")
    sessions = [poplib_session(plain_port) for _ in range(runs)]
    lines = sessions[0]["lines"]
    for command in ("LIST", "UIDL", "TOP"):
        seconds = statistics.median(session[command] for session in sessions)
        print(f"{command:4} ({lines} messages), poplib: {seconds * 1000:8.1f} ms (median)")
    seconds = statistics.median(session["RETR"] for session in sessions)
    print(f"RETR {mib:.0f} MiB, plain, poplib:     {mib / seconds:8.1f} MiB/s  (median {seconds:.3f} s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--size-mib", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    arguments = parser.parse_args()
    size = arguments.size_mib * 2**20
    status = {"code": 1}
    with tempfile.TemporaryDirectory(prefix="pop3-bench-") as folder:
        context = make_context(Path(folder))
        context.users.add("alice", "secret")
        context.realm.account("alice")
        fill(context, arguments.messages, size)
        factory = POP3Factory(context, "pop3")
        plain = reactor.listenTCP(0, factory, interface="127.0.0.1")
        tls = reactor.listenTCP(0, TLSMemoryBIOFactory(context.tls, False, factory), interface="127.0.0.1")

        def finished(result):
            status["code"] = 0 if result is None else 1
            if result is not None:
                result.printTraceback(file=sys.stdout)
            reactor.stop()

        work = threads.deferToThread(run, arguments, plain.getHost().port, tls.getHost().port, size)
        work.addBoth(finished)
        reactor.run()
        context.store.close()
        context.users.close()
    return status["code"]


if __name__ == "__main__":
    raise SystemExit(main())
