#!/usr/bin/env python3
"""SORT and THREAD benchmark: cyrusmail beside Dovecot, on 10,000 messages (100,000 on request).

    python bench/sort_bench.py                    # 10,000 messages (what ``make bench`` runs)
    python bench/sort_bench.py --count 100000     # or SORT_BENCH_COUNT=100000 make bench
    python bench/sort_bench.py --runs 7 --no-dovecot

Steps, each over the whole mailbox: SORT (ARRIVAL), (DATE), (SUBJECT),
(FROM), THREAD REFERENCES and THREAD ORDEREDSUBJECT, sent with plain
sockets; the first run of each (Dovecot builds its sort and thread indexes
then) and the median of ``--runs`` more.  cyrusmail runs in its own
process (as in production); Dovecot is the reference server of
``../shared/bench/reference/`` on 127.0.0.1:10143 (user1/pass), skipped
with a note when it does not answer.  Its mailbox ``sortbench-N`` is kept
between runs, so only the first run loads it.

The messages' headers follow ``../shared/bench/reference/gen_mbox.py``: its
subjects, people with non-ASCII display names (RFC 2047), dates 37 minutes
apart with jitter and zones, 30% replies to one of the last 50 messages
(In-Reply-To, References, "Re:"), Cc on a quarter; the bodies are about
1 KB (gen_mbox's attachments would make 100,000 messages several GB, and
SORT and THREAD read headers only).  Both servers get them the same way:
MULTIAPPEND batches (LITERAL+) over one connection.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

STEPS = [
    ("SORT (ARRIVAL)", "SORT (ARRIVAL) US-ASCII ALL"),
    ("SORT (DATE)", "SORT (DATE) US-ASCII ALL"),
    ("SORT (SUBJECT)", "SORT (SUBJECT) US-ASCII ALL"),
    ("SORT (FROM)", "SORT (FROM) US-ASCII ALL"),
    ("THREAD REFERENCES", "THREAD REFERENCES US-ASCII ALL"),
    ("THREAD ORDEREDSUBJECT", "THREAD ORDEREDSUBJECT US-ASCII ALL"),
]

FIRST = ["Alice", "Bob", "Carol", "Dave", "Eve", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory",
         "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter", "Zoë", "José",
         "Jürgen", "Søren", "Łukasz"]
LAST = ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Müller",
        "García", "Nowak", "Rossi", "Dubois", "Andersen"]
DOMAINS = ["example.com", "example.org", "example.net", "mail.example.edu", "corp.example"]
SUBJECTS = ["Quarterly report", "Meeting tomorrow", "Invoice #{n}", "Re: project status",
            "Server maintenance window", "Lunch?", "Release {n} notes", "Backup failed on host{n}",
            "Your ticket #{n} has been updated", "Agenda for Monday", "Photos from the trip",
            "Contract draft v{n}", "Weekly newsletter", "Build #{n} passed", "Resume and cover letter",
            "Rechnung {n} pruefen", "Question about the API", "Security advisory {n}"]
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "lorem", "ipsum", "dolor", "sit", "amet", "meeting", "report", "budget", "invoice", "schedule", "project", "release", "server", "deploy", "review", "patch", "backup", "storage", "network"]
ZONES = [UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=-5)),
         timezone(timedelta(hours=5, minutes=30))]


def generate(count: int, seed: int = 42) -> list[tuple[bytes, datetime]]:
    """``count`` messages and their internal dates, the same for every server."""
    rnd = random.Random(seed)

    def person() -> str:
        first, last = rnd.choice(FIRST), rnd.choice(LAST)
        address = f"{first.lower()[:1]}{last.lower()}{rnd.randint(1, 99)}@{rnd.choice(DOMAINS)}"
        return f"{first} {last} <{address.encode('ascii', 'ignore').decode()}>"

    start = datetime(2024, 1, 1, 8, 0, tzinfo=UTC)
    ids: list[str] = []
    made = []
    for n in range(count):
        message = EmailMessage()
        sender = person()
        message["From"] = sender
        message["To"] = ", ".join(person() for _ in range(rnd.choice([1, 1, 1, 2, 3])))
        if rnd.random() < 0.25:
            message["Cc"] = ", ".join(person() for _ in range(rnd.randint(1, 3)))
        subject = rnd.choice(SUBJECTS).format(n=rnd.randint(100, 9999))
        sent = start + timedelta(minutes=37 * n + rnd.randint(0, 30))
        message["Date"] = format_datetime(sent.astimezone(rnd.choice(ZONES)))
        identifier = make_msgid(idstring=f"sortbench{n}", domain=sender.split("@")[1].rstrip(">"))
        if ids and rnd.random() < 0.3:
            parent = rnd.choice(ids[-50:])
            message["In-Reply-To"] = parent
            message["References"] = parent
            subject = "Re: " + subject
        message["Subject"] = subject
        message["Message-ID"] = identifier
        ids.append(identifier)
        message.set_content(" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(60, 250))) + "\n")
        data = message.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        made.append((data, sent + timedelta(seconds=rnd.randint(1, 600))))
    return made


class Connection:
    """Just enough IMAP: one command at a time, answers read to the tagged line."""

    def __init__(self, port: int, user: str, password: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=600)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")
        self.reader.readline()
        self.serial = 0
        self.command(f"LOGIN {user} {password}")

    def send(self, data: bytes) -> str:
        self.serial += 1
        tag = f"b{self.serial}"
        self.sock.sendall(tag.encode() + b" " + data + b"\r\n")
        return tag

    def answer(self, tag: str) -> tuple[list[bytes], bytes]:
        lines = []
        while True:
            line = self.reader.readline()
            if not line:
                raise ConnectionError("the server closed the connection")
            if line.startswith(tag.encode() + b" "):
                if not line.startswith(tag.encode() + b" OK"):
                    raise RuntimeError(line.decode("utf-8", "replace").strip())
                return lines, line
            lines.append(line)

    def command(self, text: str) -> list[bytes]:
        return self.answer(self.send(text.encode()))[0]

    def close(self) -> None:
        try:
            self.command("LOGOUT")
        except (OSError, RuntimeError):
            pass
        self.sock.close()


def load(connection: Connection, mailbox: str, messages: list[tuple[bytes, datetime]], batch: int = 200) -> float:
    """MULTIAPPEND in batches with LITERAL+; the seconds it took."""
    started = time.perf_counter()
    for first in range(0, len(messages), batch):
        parts = [f"APPEND {mailbox}".encode()]
        for data, arrived in messages[first:first + batch]:
            parts.append(b'(\\Seen) "' + arrived.strftime("%d-%b-%Y %H:%M:%S +0000").encode()
                         + b'" {%d+}\r\n' % len(data) + data)
        connection.answer(connection.send(b" ".join(parts)))
    return time.perf_counter() - started


def exists(connection: Connection, mailbox: str) -> int:
    for line in connection.command(f"SELECT {mailbox}"):
        words = line.split()
        if len(words) == 3 and words[2] == b"EXISTS":
            return int(words[1])
    return 0


def measure(connection: Connection, runs: int) -> dict[str, tuple[float, float, int]]:
    """Step -> (first run, median of the next ``runs``, answer size in bytes)."""
    results = {}
    for label, command in STEPS:
        samples = []
        size = 0
        for _ in range(runs + 1):
            started = time.perf_counter()
            lines = connection.command(command)
            samples.append(time.perf_counter() - started)
            size = sum(len(line) for line in lines)
        results[label] = (samples[0], statistics.median(samples[1:]), size)
    return results


def prepare(connection: Connection, mailbox: str, messages: list) -> str:
    have = exists(connection, mailbox) if mailbox_exists(connection, mailbox) else -1
    if have == len(messages):
        return "kept from an earlier run"
    if have >= 0:
        connection.command("UNSELECT")
        connection.command(f"DELETE {mailbox}")
    connection.command(f"CREATE {mailbox}")
    seconds = load(connection, mailbox, messages)
    exists(connection, mailbox)
    return f"loaded in {seconds:.0f} s ({len(messages) / seconds:.0f} msg/s)"


def mailbox_exists(connection: Connection, mailbox: str) -> bool:
    return any(mailbox.encode() in line for line in connection.command(f'LIST "" {mailbox}'))


def cyrusmail(count: int, messages: list, runs: int) -> tuple[str, dict]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = tempfile.mkdtemp(prefix="sortbench-")
    server = subprocess.Popen([sys.executable, __file__, "--serve", "--port", str(port), "--data", data],
                              stdout=subprocess.PIPE, text=True)
    try:
        server.stdout.readline()  # once it listens
        connection = Connection(port, "alice", "secret")
        note = prepare(connection, f"sortbench-{count}", messages)
        results = measure(connection, runs)
        connection.close()
    finally:
        server.terminate()
        server.wait(30)
        subprocess.run(["rm", "-rf", data], check=False)
    return note, results


def dovecot(count: int, messages: list, runs: int, port: int) -> tuple[str, dict] | None:
    try:
        connection = Connection(port, "user1", "pass")
    except OSError:
        return None
    note = prepare(connection, f"sortbench-{count}", messages)
    results = measure(connection, runs)
    connection.close()
    return note, results


def serve(port: int, data: str) -> None:
    from imap_bench import start_server

    reactor, port, _ = start_server(port, Path(data))
    print(f"cyrusmail IMAP on 127.0.0.1:{port}", flush=True)
    reactor.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=int(os.environ.get("SORT_BENCH_COUNT", "10000")))
    parser.add_argument("--runs", type=int, default=5, help="timed runs after the first (median)")
    parser.add_argument("--dovecot-port", type=int, default=10143)
    parser.add_argument("--no-dovecot", action="store_true")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve:
        serve(options.port, options.data)
        return
    messages = generate(options.count)
    ours = cyrusmail(options.count, messages, options.runs)
    theirs = None if options.no_dovecot else dovecot(options.count, messages, options.runs, options.dovecot_port)
    print(f"SORT and THREAD over {options.count} messages (headers as gen_mbox.py, ~1.5 KB each);"
          f" first run, then the median of {options.runs} more, in ms")
    print(f"  cyrusmail: {ours[0]}")
    if theirs is None:
        print(f"  Dovecot: not measured (nothing answers on 127.0.0.1:{options.dovecot_port};"
              " see ../shared/bench/README.md)")
    else:
        print(f"  Dovecot 127.0.0.1:{options.dovecot_port}: {theirs[0]}")
    print(f"  {'step':24}{'cyrusmail first':>16}{'median':>10}" + (f"{'Dovecot first':>16}{'median':>10}"
                                                                 if theirs else ""))
    for label, _ in STEPS:
        first, median, _ = ours[1][label]
        line = f"  {label:24}{first * 1000:16.0f}{median * 1000:10.0f}"
        if theirs is not None:
            their_first, their_median, _ = theirs[1][label]
            line += f"{their_first * 1000:16.0f}{their_median * 1000:10.0f}"
        print(line)


if __name__ == "__main__":
    main()
