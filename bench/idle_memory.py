#!/usr/bin/env python3
"""Many idle clients: memory and CPU per logged-in connection waiting in IDLE.

Opens connections in steps (``--steps 1000,5000,10000``), each one logged in
as one of user1..user20 (password ``pass``), with INBOX selected and an IDLE
running, and after each step waits for the server to settle and reads:

* the server's memory: for cyrusmail the RSS of its process tree (with one
  process, RSS and PSS are the same); for Dovecot, a process per connection,
  the sum of PSS over its whole tree (``/proc/PID/smaps_rollup``: shared
  pages counted once, split between the processes that map them) and, for
  comparison, the sum of RSS (which counts shared libraries once per
  process, overstating it);
* the server's CPU while the connections sit idle for ``--idle-secs``
  seconds (the cost of keeping IDLE alive: timers, polls);
* per connection: the growth since the step before (or since no
  connections) divided by the connections added.

cyrusmail is started fresh (throwaway data folder, ``max_connections`` high
enough, loopback exempt from the per-address caps); Dovecot is the reference
server on 127.0.0.1:10143 (``../shared/bench/reference/setup.sh``), whose
shared config caps IMAP processes at 1,000, so its steps stop there.
Connections come from several 127.0.0.x source addresses, at most four
logins in flight per address (the login throttle's parallel allowance).

    python bench/idle_memory.py                               # 1000,5000,10000 (cyrusmail), 500,1000 (Dovecot)
    python bench/idle_memory.py --steps 1000 --dovecot-steps 0   # quick, cyrusmail only

Not part of ``make bench``: logging in 10,000 times takes minutes of scrypt.
The test process raises its own file limit to the hard limit; the machine's
hard limit must exceed the connections.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stress_bench import (
    CLOCK_TICKS,
    answers,
    cyrusmail,
    dovecot_master,
    free_port,
    tree_cpu,
)

SOURCES = 8  # 127.0.0.2 .. 127.0.0.9: at most 32 logins in flight, under 2 per account
PER_SOURCE = 4


def tree_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(text[text.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def memory_kib(root: int) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) of ``root``'s process tree, in KiB."""
    rss = pss = 0
    for pid in tree_pids(root):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return rss, pss


class Client:
    """One connection: LOGIN, SELECT INBOX, IDLE; then it only waits."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.writer: asyncio.StreamWriter | None = None

    async def start(self, port: int, source: str, gate: asyncio.Semaphore) -> None:
        async with gate:
            reader, self.writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0), limit=2**20)
            await reader.readline()
            user = f"user{self.number % 20 + 1}"
            await self._command(reader, b"a LOGIN %s pass\r\n" % user.encode(), b"a ")
        await self._command(reader, b"b SELECT INBOX\r\n", b"b ")
        self.writer.write(b"c IDLE\r\n")
        while not (await reader.readline()).startswith(b"+"):
            pass
        self.reader = reader

    async def _command(self, reader: asyncio.StreamReader, line: bytes, tag: bytes) -> None:
        self.writer.write(line)
        while True:
            answer = await reader.readline()
            if not answer:
                raise ConnectionError(f"closed during {line.split()[1].decode()}")
            if answer.startswith(tag):
                if not answer.startswith(tag + b"OK"):
                    raise ConnectionError(answer.decode(errors="replace").strip())
                return


async def measure(port: int, pid: int, steps: list[int], idle_secs: float) -> list[tuple]:
    clients: list[Client] = []
    gates = {f"127.0.0.{2 + n}": asyncio.Semaphore(PER_SOURCE) for n in range(SOURCES)}
    sources = list(gates)
    await asyncio.sleep(2)
    rows = [(0, *memory_kib(pid), 0.0, 0.0)]
    for target in steps:
        started = time.monotonic()
        new = [Client(number) for number in range(len(clients), target)]
        results = await asyncio.gather(*(client.start(port, sources[client.number % SOURCES],
                                                      gates[sources[client.number % SOURCES]])
                                         for client in new), return_exceptions=True)
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            raise SystemExit(f"{len(failures)} of {len(new)} connections failed, e.g. {failures[0]!r}")
        clients += new
        took = time.monotonic() - started
        await asyncio.sleep(3)  # let the last answers drain
        cpu_before = tree_cpu(pid)
        await asyncio.sleep(idle_secs)
        idle_cpu = (tree_cpu(pid) - cpu_before) / idle_secs
        rows.append((target, *memory_kib(pid), idle_cpu, took))
    for client in clients:
        client.writer.close()
    return rows


def report(label: str, rows: list[tuple]) -> None:
    print(f"{label}:")
    print(f"  {'connections':>11} {'RSS MiB':>8} {'PSS MiB':>8} {'KiB/conn (RSS)':>15} {'KiB/conn (PSS)':>15}"
          f" {'idle CPU %':>10} {'connect s':>9}")
    for (count, rss, pss, idle, took), previous in zip(rows, [None, *rows]):
        per_rss = per_pss = ""
        if previous is not None:
            added = count - previous[0]
            per_rss = f"{(rss - previous[1]) / added:.1f}"
            per_pss = f"{(pss - previous[2]) / added:.1f}"
        print(f"  {count:11} {rss / 1024:8.1f} {pss / 1024:8.1f} {per_rss:>15} {per_pss:>15}"
              f" {100 * idle:10.1f} {took:9.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="1000,5000,10000", help="cyrusmail connection counts (cumulative)")
    parser.add_argument("--dovecot-steps", default="500,1000", help="Dovecot's; 0 to skip Dovecot")
    parser.add_argument("--idle-secs", type=float, default=15, help="seconds of idling measured per step")
    parser.add_argument("--workers", type=int, help="write [server] workers = N (checkouts that have it)")
    parser.add_argument("--messages", type=int, default=0,
                        help="messages put in each cyrusmail user's INBOX first (default none)")
    parser.add_argument("--tree", help="run another checkout's server (before/after figures)")
    parser.add_argument("--dovecot-port", type=int, default=10143)
    parser.add_argument("--anchors", default=os.environ.get("ANCHORS_DIR", "/tmp/anchors"))
    args = parser.parse_args()
    steps = [int(item) for item in args.steps.split(",") if int(item)]
    dovecot_steps = [int(item) for item in args.dovecot_steps.split(",") if int(item)]
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if max(steps + dovecot_steps + [0]) + 100 > hard:
        raise SystemExit(f"the hard file limit ({hard}) is too low for {max(steps + dovecot_steps)} connections")
    print(f"IMAP connections logged in, INBOX selected, in IDLE; CPU while idle over {args.idle_secs:.0f} s"
          f" (clock ticks of {1000 / CLOCK_TICKS:.0f} ms)", flush=True)
    if steps:
        port = free_port()
        with cyrusmail(port, args.workers, tree=args.tree, messages=args.messages) as pid:
            label = f"cyrusmail ({args.tree or 'this checkout'}, {args.messages} messages per INBOX)"
            report(label, asyncio.run(measure(port, pid, steps, args.idle_secs)))
    if dovecot_steps:
        master = dovecot_master(Path(args.anchors))
        if master is None or not answers(args.dovecot_port):
            print(f"Dovecot: nothing answers on 127.0.0.1:{args.dovecot_port}; skipped")
        else:
            report("Dovecot (every process of its master)", asyncio.run(
                measure(args.dovecot_port, master, dovecot_steps, args.idle_secs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
