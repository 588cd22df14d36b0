#!/usr/bin/env python3
"""A long SEARCH against the real ``twistd`` server, and what it does to everyone else.

Fills a mailbox with about ``--megabytes`` of mail (plain, quoted-printable,
base64 and multipart messages, imported with ``cyrusmail-admin import``),
starts ``twistd -n cyrusmail`` with IMAP and POP3 on loopback, sends one
``SEARCH`` of ``--terms`` ``NOT BODY`` keys and, while it runs, opens POP3
connections one after another and times each greeting.  Prints the search's
own time (wall clock, and the server's CPU time, which a busy machine
disturbs less) and the worst and median greeting delay: figures, never
asserted.

    python bench/search_fairness.py                   # 50 MB, 60 terms
    python bench/search_fairness.py --megabytes 10 --terms 20

Not part of ``make bench`` (building the mailbox takes a while).
"""

from __future__ import annotations

import argparse
import base64
import imaplib
import os
import quopri
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu"]


def text(rnd: random.Random, size: int) -> str:
    lines, total = [], 0
    while total < size:
        line = " ".join(rnd.choice(WORDS) for _ in range(12))
        lines.append(line)
        total += len(line) + 2
    return "\r\n".join(lines) + "\r\n"


def message(n: int, rnd: random.Random) -> bytes:
    body = text(rnd, rnd.randint(20_000, 80_000))
    header = (f"From: Sender {n % 17} <s{n % 17}@example.org>\r\nTo: alice@example.org\r\n"
              f"Subject: message {n}\r\nDate: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
              f"Message-ID: <{n}.fair@example.org>\r\nMIME-Version: 1.0\r\n")
    kind = n % 4
    if kind == 0:
        return (header + "Content-Type: text/plain; charset=us-ascii\r\n\r\n" + body).encode()
    if kind == 1:
        encoded = quopri.encodestring(body.encode()).decode()
        return (header + "Content-Type: text/plain; charset=utf-8\r\n"
                "Content-Transfer-Encoding: quoted-printable\r\n\r\n" + encoded).encode()
    if kind == 2:
        encoded = base64.encodebytes(body.encode()).decode().replace("\n", "\r\n")
        return (header + "Content-Type: text/plain; charset=utf-8\r\n"
                "Content-Transfer-Encoding: base64\r\n\r\n" + encoded).encode()
    half = len(body) // 2
    return (header + 'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
            "--b\r\nContent-Type: text/plain\r\n\r\n" + body[:half] +
            "--b\r\nContent-Type: text/html\r\n\r\n<p>" + body[half:] + "</p>\r\n--b--\r\n").encode()


def mbox(path: Path, megabytes: float) -> int:
    rnd = random.Random(7)
    total = count = 0
    with open(path, "wb") as out:
        while total < megabytes * 1e6:
            data = message(count, rnd)
            out.write(b"From alice@example.org Mon Feb  7 21:52:25 1994\n" + data.replace(b"\r\n", b"\n") + b"\n")
            total += len(data)
            count += 1
    return count


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` (Linux; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=50)
    parser.add_argument("--terms", type=int, default=60)
    parser.add_argument("--runs", type=int, default=2)
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="searchfair-"))
    imap_port, pop3_port = free_port(), free_port()
    config = folder / "cyrusmail.conf"
    sections = [f"[server]\ndata = {folder / 'data'}\nhostname = mail.example.org\n"]
    for name in ("imap", "imaps", "pop3", "pop3s", "submission", "submissions", "lmtp"):
        port = {"imap": imap_port, "pop3": pop3_port}.get(name)
        sections.append(f"[{name}]\nenabled = yes\nlisten = tcp:{port}:interface=127.0.0.1\n" if port
                        else f"[{name}]\nenabled = no\n")
    config.write_text("\n".join(sections))
    admin = [sys.executable, "-m", "cyrusmail.admin.main", "--config", str(config)]
    subprocess.run([*admin, "user", "add", "alice", "--password", "secret"], check=True, cwd=ROOT)
    count = mbox(folder / "mail.mbox", options.megabytes)
    subprocess.run([*admin, "import", str(folder / "mail.mbox"), "alice/INBOX"], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    server = subprocess.Popen([sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                               "--pidfile=", "-n", "cyrusmail", "--config", str(config)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", pop3_port)) == 0:
                    break
            time.sleep(0.1)
        client = imaplib.IMAP4("127.0.0.1", imap_port)
        client.login("alice", "secret")
        client.select("INBOX")
        criteria = " ".join(f"NOT BODY absent{n}" for n in range(options.terms))
        print(f"{count} messages, {options.megabytes:.0f} MB; SEARCH of {options.terms} NOT BODY terms")
        for run in range(options.runs):
            delays: list[float] = []
            done = threading.Event()

            def greet(done: threading.Event, delays: list[float]) -> None:
                while not done.is_set():
                    started = time.perf_counter()
                    with socket.create_connection(("127.0.0.1", pop3_port)) as pop3:
                        pop3.recv(512)
                    delays.append(time.perf_counter() - started)
                    time.sleep(0.05)

            cpu = cpu_seconds(server.pid)
            started = time.perf_counter()
            tag = client._command("SEARCH", criteria)
            prober = threading.Thread(target=greet, args=(done, delays))
            prober.start()
            typ, data = client._command_complete("SEARCH", tag)
            elapsed = time.perf_counter() - started
            done.set()
            prober.join()
            cpu = cpu_seconds(server.pid) - cpu  # the search's, and the greetings' (small)
            hits = len(client._untagged_response(typ, data, "SEARCH")[1][0].split())
            print(f"  run {run + 1}: SEARCH {elapsed:.2f} s ({cpu:.2f} s server CPU; {typ}, {hits} hits);"
                  " POP3 greetings during it:"
                  f" {len(delays)}, worst {max(delays) * 1000:.0f} ms, median {statistics.median(delays) * 1000:.1f} ms")
        client.logout()
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
