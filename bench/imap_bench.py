#!/usr/bin/env python3
"""IMAP benchmark: a cyrusmail server in process, one imaplib connection.

Reports APPEND rate (durable, TCP_NODELAY), SELECT time, FETCH of the
summary items, UID SEARCH on a header and on body text, and FETCH BODY[]
throughput, on generated messages of 2-50 KB.

    python bench/imap_bench.py --count 2000
    python bench/imap_bench.py --serve --port 1143      # for ../shared/bench/imapbench.py

The issue's scale: 10,000 messages (``--count 10000``); ``make bench`` runs 2,000.
"""

from __future__ import annotations

import argparse
import imaplib
import random
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu"]


def generate(count: int, seed: int = 7) -> list[bytes]:
    rnd = random.Random(seed)
    messages = []
    for n in range(count):
        size = rnd.randint(2_000, 50_000)
        lines, total = [], 0
        while total < size:
            line = " ".join(rnd.choice(WORDS) for _ in range(12))
            lines.append(line)
            total += len(line) + 2
        if n % 100 == 42:
            lines.append("needle-token-in-body")
        body = "\r\n".join(lines) + "\r\n"
        header = (f"From: Sender {n % 17} <s{n % 17}@example.org>\r\nTo: alice@example.org\r\n"
                  f"Subject: message {n} {rnd.choice(WORDS)}\r\nX-Bench-Tag: tag{n % 10}\r\n"
                  f"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\nMessage-ID: <{n}.bench@example.org>\r\n"
                  "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")
        messages.append((header + body).encode())
    return messages


def start_server(port: int, data: Path):
    from twisted.internet import reactor

    from cyrusmail.imap.server import make_factory
    from tests.helpers import add_user, make_context

    context = make_context(data, imap={"enabled": "yes", "listen": f"tcp:{port}:interface=127.0.0.1"})
    add_user(context, "alice", "secret")
    listening = reactor.listenTCP(port, make_factory(context, "imap"), interface="127.0.0.1")
    return reactor, listening.getHost().port, context


def timed(label: str, function, results: dict, runs: int = 1):
    """Run ``function`` ``runs`` times; keep the median time and the last value."""
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        value = function()
        samples.append(time.perf_counter() - start)
    results[label] = statistics.median(samples)
    return value


def run(count: int) -> None:
    """The server in its own process (as in production), the client here."""
    import subprocess

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, __file__, "--serve", "--port", str(port)],
                              stdout=subprocess.PIPE, text=True)
    try:
        server.stdout.readline()  # "cyrusmail IMAP on ..." once it listens
        measure(count, port)
    finally:
        server.terminate()
        server.wait(10)


def measure(count: int, port: int) -> None:
    messages = generate(count)
    total_bytes = sum(len(m) for m in messages)
    client = imaplib.IMAP4("127.0.0.1", port)
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.login("alice", "secret")
    client.create("bench")
    results: dict[str, float] = {}

    def append_all():
        for message in messages:
            typ, _ = client.append("bench", None, None, message)
            assert typ == "OK"

    timed("append", append_all, results)
    timed("select", lambda: client.select("bench"), results)
    summary = "(FLAGS UID RFC822.SIZE ENVELOPE BODYSTRUCTURE)"
    fetched = timed("fetch_summary", lambda: client.fetch("1:*", summary), results, runs=5)
    header_hits = timed("search_header", lambda: client.uid("SEARCH", "HEADER", "X-Bench-Tag", "tag7"), results, 5)
    body_hits = timed("search_body", lambda: client.uid("SEARCH", "BODY", "needle-token-in-body"), results, 3)
    timed("fetch_body", lambda: client.fetch("1:*", "(BODY.PEEK[])"), results)
    client.logout()
    print(f"cyrusmail IMAP, {count} messages of 2-50 KB ({total_bytes / 1e6:.1f} MB);"
          " server in its own process, imaplib client with TCP_NODELAY; medians of 5 (SEARCH BODY: 3)")
    print(f"  APPEND           {count / results['append']:8.0f} msg/s  ({results['append']:.2f} s)")
    print(f"  SELECT           {results['select'] * 1000:8.1f} ms")
    print(f"  FETCH summary    {results['fetch_summary'] * 1000:8.1f} ms  ({len(fetched[1]) } responses)")
    print(f"  UID SEARCH HEADER{results['search_header'] * 1000:8.1f} ms  ({len(header_hits[1][0].split())} hits)")
    print(f"  UID SEARCH BODY  {results['search_body'] * 1000:8.1f} ms  ({len(body_hits[1][0].split())} hits)")
    print(f"  FETCH BODY[]     {total_bytes / results['fetch_body'] / 1e6:8.1f} MB/s ({results['fetch_body']:.2f} s)")


def serve(port: int) -> None:
    data = Path(tempfile.mkdtemp(prefix="imapserve-"))
    reactor, port, _ = start_server(port, data)
    print(f"cyrusmail IMAP on 127.0.0.1:{port}, user alice / secret, data in {data}", flush=True)
    reactor.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--serve", action="store_true", help="only run the server")
    parser.add_argument("--port", type=int, default=1143)
    options = parser.parse_args()
    if options.serve:
        serve(options.port)
    else:
        run(options.count)


if __name__ == "__main__":
    main()
