#!/usr/bin/env python3
"""QRESYNC benchmark: the cost of a resync after 1,000 changes, cyrusmail beside Dovecot.

A mailbox of 10,000 small messages.  Each run: a client syncs (SELECT,
remembering UIDVALIDITY and HIGHESTMODSEQ) and logs out; another session
sets a keyword on 500 messages and expunges 500 others; the first client
comes back with ``SELECT box (QRESYNC (uidvalidity modseq known-uids))``,
which is timed (from the command to its tagged OK: 500 FETCH responses and
a VANISHED (EARLIER) of 500 UIDs), and so, for comparison, is what a client
without QRESYNC does instead (SELECT, then ``UID FETCH 1:* (FLAGS)``).
Between runs 500 new messages come in, so each starts at 10,000.

The same steps run against Dovecot on 127.0.0.1:10143 (user1 / pass, see
``../shared/bench/README.md``) when it is reachable; otherwise a note says so.

    python bench/qresync_bench.py --runs 5
"""

from __future__ import annotations

import argparse
import imaplib
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BOX = "qrbench"
CHANGED = 500
EXPUNGED = 500


def message(number: int) -> bytes:
    return (f"From: Sender {number % 17} <s{number % 17}@example.org>\r\nTo: user@example.org\r\n"
            f"Subject: message {number}\r\nDate: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
            f"Message-ID: <{number}.qrbench@example.org>\r\n\r\nBody of message {number}.\r\n").encode()


def connect(port: int, user: str, password: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", port)
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.login(user, password)
    return client


def check(answer, what: str):
    typ, data = answer
    if typ != "OK":
        raise RuntimeError(f"{what}: {typ} {data}")
    return data


def fill(port: int, user: str, password: str, first: int, count: int, batch: int = 500) -> None:
    """APPEND ``count`` messages, ``batch`` to a MULTIAPPEND (RFC 3502) with
    LITERAL+ literals: one durable transaction each, on both servers."""
    with socket.create_connection(("127.0.0.1", port)) as raw:
        reader = raw.makefile("rb")
        reader.readline()

        def command(tag: str, text: bytes) -> None:
            raw.sendall(tag.encode() + b" " + text + b"\r\n")
            while True:
                line = reader.readline()
                if not line:
                    raise RuntimeError("connection closed")
                if line.startswith(tag.encode() + b" "):
                    if not line.startswith(tag.encode() + b" OK"):
                        raise RuntimeError(line.decode(errors="replace"))
                    return

        command("l", f'LOGIN "{user}" "{password}"'.encode())
        for start in range(first, first + count, batch):
            parts = [b"APPEND " + BOX.encode()]
            for number in range(start, min(start + batch, first + count)):
                data = message(number)
                parts.append(b" {%d+}\r\n" % len(data) + data)
            command(f"a{start}", b"".join(parts))
        command("z", b"LOGOUT")


def uids(client: imaplib.IMAP4) -> list[int]:
    return [int(uid) for uid in check(client.uid("SEARCH", "ALL"), "UID SEARCH")[0].split()]


def selected_codes(client: imaplib.IMAP4) -> tuple[int, int]:
    oks = b" ".join(client.untagged_responses.get("OK", []))
    codes = dict(part.split(b" ", 1) for part in oks.replace(b"]", b"[").split(b"[")[1::2] if b" " in part)
    return int(codes[b"UIDVALIDITY"]), int(codes[b"HIGHESTMODSEQ"])


def uid_set(numbers: list[int]) -> str:
    return ",".join(str(number) for number in numbers)


def one_run(port: int, user: str, password: str, next_number: int, run: int) -> dict:
    other = connect(port, user, password)
    check(other.select(BOX), "SELECT")
    present = uids(other)
    if len(present) < 10_000:  # top up to 10,000
        other.logout()
        fill(port, user, password, next_number, 10_000 - len(present))
        other = connect(port, user, password)
        check(other.select(BOX), "SELECT")
        present = uids(other)

    client = connect(port, user, password)
    check(client.enable("QRESYNC"), "ENABLE QRESYNC")
    check(client.select(BOX), "SELECT")
    uid_validity, modseq = selected_codes(client)
    known = f"{present[0]}:{present[-1]}"
    client.logout()

    flagged, doomed = present[1::20][:CHANGED], present[2::20][:EXPUNGED]
    check(other.uid("STORE", uid_set(flagged), "+FLAGS.SILENT", f"($Run{run})"), "STORE")  # new to each
    check(other.uid("STORE", uid_set(doomed), "+FLAGS.SILENT", "(\\Deleted)"), "STORE")
    check(other.expunge(), "EXPUNGE")
    other.logout()

    client = connect(port, user, password)
    check(client.enable("QRESYNC"), "ENABLE QRESYNC")
    start = time.perf_counter()
    check(client._simple_command("SELECT", BOX, f"(QRESYNC ({uid_validity} {modseq} {known}))"), "QRESYNC SELECT")
    qresync = time.perf_counter() - start
    fetched = len(client.untagged_responses.get("FETCH", []))
    vanished = client.untagged_responses.get("VANISHED", [])
    client.logout()

    plain = connect(port, user, password)
    start = time.perf_counter()
    check(plain.select(BOX), "SELECT")
    flags = check(plain.uid("FETCH", "1:*", "(FLAGS)"), "UID FETCH")
    full = time.perf_counter() - start
    plain.logout()
    return {"qresync": qresync, "full": full, "fetched": fetched, "vanished": vanished, "flags": len(flags),
            "added": 10_000 - len(present) if len(present) < 10_000 else 0}


def bench(name: str, port: int, user: str, password: str, runs: int) -> None:
    setup = connect(port, user, password)
    setup.delete(BOX)
    check(setup.create(BOX), "CREATE")
    setup.logout()
    start = time.perf_counter()
    fill(port, user, password, 0, 10_000)
    filled = time.perf_counter() - start
    results = [one_run(port, user, password, 10_000 + run * EXPUNGED, run) for run in range(runs)]
    qresync = statistics.median(result["qresync"] for result in results)
    full = statistics.median(result["full"] for result in results)
    last = results[-1]
    vanished_ranges = sum(part.count(b",") + 1 for part in last["vanished"])
    print(f"  {name}: 10,000 messages (MULTIAPPEND in {filled:.1f} s); {CHANGED} flag changes + {EXPUNGED} expunges by"
          f" another session; medians of {runs}")
    print(f"    SELECT (QRESYNC ...)          {qresync * 1000:8.1f} ms  ({last['fetched']} FETCH,"
          f" VANISHED (EARLIER) in {len(last['vanished'])} line(s), {vanished_ranges} ranges)")
    print(f"    SELECT + UID FETCH 1:* FLAGS  {full * 1000:8.1f} ms  ({last['flags']} FETCH; no QRESYNC)")


def reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dovecot-port", type=int, default=10143)
    options = parser.parse_args()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, str(HERE / "imap_bench.py"), "--serve", "--port", str(port)],
                              stdout=subprocess.PIPE, text=True)
    print("QRESYNC resync after 1,000 changes (imaplib client with TCP_NODELAY; servers in their own processes)")
    try:
        server.stdout.readline()  # it listens
        bench("cyrusmail", port, "alice", "secret", options.runs)
    finally:
        server.terminate()
        server.wait(10)
    if reachable(options.dovecot_port):
        bench(f"Dovecot (127.0.0.1:{options.dovecot_port})", options.dovecot_port, "user1", "pass", options.runs)
    else:
        print(f"  Dovecot: nothing listens on 127.0.0.1:{options.dovecot_port}; start it with"
              " ../shared/bench/reference/setup.sh to see the same steps there")


if __name__ == "__main__":
    main()
