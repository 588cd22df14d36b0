#!/usr/bin/env python3
"""Many clients at once: imaptest's stress mode against cyrusmail and Dovecot, side by side.

Dovecot's ``imaptest`` runs N clients for ``--secs`` seconds, each sending
random commands with imaptest's state percentages and checking the
answers.  Two profiles:

* ``default``: imaptest's own percentages (every cycle logs in, LISTs,
  STATUSes, SELECTs, FETCHes, STOREs, EXPUNGEs, APPENDs and logs out);
* ``read``: a read-heavy mix (FETCH, SEARCH, STATUS and LIST; few STOREs,
  EXPUNGEs and APPENDs; the session stays logged in across several
  SELECTs), as a webmail or a client syncing mostly unchanged folders.

For each profile and client count it runs cyrusmail (a fresh ``twistd -n
cyrusmail`` with a throwaway data folder and users user1..user20, password
``pass``, started once per worker count) and Dovecot (the reference server
that ``../shared/bench/reference/setup.sh`` runs on 127.0.0.1:10143; skipped
with a note when nothing answers there).  Figures per run: total commands/s
(the sum of imaptest's totals over the seconds run), the server's CPU (the
sum of utime+stime of its whole process tree, from ``/proc``, read before
and after: for Dovecot its master and every child, the reaped ones through
the master's cutime/cstime) per command and as a share of one core, and
imaptest's error count, and for cyrusmail the CPU of its main threads alone
(its reactors, without the thread pools that hash passwords or write the
store).  Each row is the run of median rate among ``--runs`` runs; the last
columns are the ratios cyrusmail / Dovecot.  ``--tree`` adds another
checkout's server (its name as the label), for before/after figures.

    python bench/stress_bench.py                 # the full set: 3 runs of 20 s each
    python bench/stress_bench.py --quick         # 1 run of 10 s each (what ``make bench`` runs)
    python bench/stress_bench.py --profiles default --clients 10 --runs 5
    python bench/stress_bench.py --workers 1,2   # cyrusmail with [server] workers = 1, then 2

imaptest is found at ``--imaptest``, ``$IMAPTEST``, ``../imaptest/src/imaptest``
or on the PATH (it is not packaged by Debian: ../shared/bench/README.md says
how to build it); without it the bench says so and does nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "bench"
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
USERS = 20
PASSWORD = "pass"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

#: imaptest state percentages per profile (``state=probability[,again]``; no argument keeps imaptest's own).
PROFILES: dict[str, list[str]] = {
    "default": [],
    "read": ["login=100", "list=50", "status=100", "select=100", "fetch=100", "fetch2=100,50",
             "search=50", "store=10", "delete=5", "expunge=10", "append=10,0", "logout=20"],
}


@dataclass
class Figures:
    commands: int
    seconds: float
    cpu: float  # server CPU seconds over the run
    errors: int
    first_error: str = ""
    reactor_cpu: float | None = None  # the main threads' share of ``cpu`` (cyrusmail)

    @property
    def rate(self) -> float:
        return self.commands / self.seconds

    @property
    def cpu_ms_per_command(self) -> float:
        return 1000 * self.cpu / self.commands if self.commands else float("nan")

    @property
    def reactor_ms_per_command(self) -> float | None:
        if self.reactor_cpu is None or not self.commands:
            return None
        return 1000 * self.reactor_cpu / self.commands

    @property
    def cpu_share(self) -> float:
        return self.cpu / self.seconds


# -- processes and their CPU ---------------------------------------------------


def _stat(pid: int) -> tuple[int, list[str]] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), fields  # (ppid, fields from the state on)


def tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and every descendant alive now, plus the children
    already reaped (the kernel adds those to their parent's cutime/cstime)."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = _stat(int(entry))
            if found is not None:
                children.setdefault(found[0], []).append(int(entry))
                stats[int(entry)] = found[1]
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        fields = stats.get(pid)
        if fields is None:
            continue
        # utime, stime, cutime, cstime are fields 14-17 of stat: 11-14 counted from the state
        total += sum(int(value) for value in fields[11:15])
        todo += children.get(pid, [])
    return total / CLOCK_TICKS


def main_threads_cpu(root: int) -> float:
    """CPU seconds of the main thread of ``root`` and of each live descendant:
    cyrusmail's reactors, without its thread pools (password hashing, store work)."""
    total = 0
    for pid in _tree(root):
        try:
            text = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = _stat(int(entry))
            if found is not None:
                children.setdefault(found[0], []).append(int(entry))
    found_pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        found_pids.append(pid)
        todo += children.get(pid, [])
    return found_pids


def answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
        return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def supports_workers() -> bool:
    from cyrusmail.config import SCHEMA

    return "workers" in SCHEMA["server"]


@contextmanager
def cyrusmail(port: int, workers: int | None, keep: bool = False, twistd_options: tuple[str, ...] = (),
              tree: str | None = None, messages: int = 0):
    """A fresh twistd serving IMAP on ``port`` with users user1..user20; yields its pid.

    ``twistd_options`` go before the plugin name (``--profile=FILE --profiler=cprofile --savestats``);
    ``tree`` is another checkout whose server runs (for before/after figures);
    ``messages`` small messages are put in each user's INBOX first.
    """
    from cyrusmail.admin.main import main as admin

    folder = Path(tempfile.mkdtemp(prefix="stress-bench-"))
    config = folder / "cyrusmail.conf"
    server = [f"data = {folder / 'data'}", "hostname = localhost", "domains = localhost",
              "max_connections = 20000", "max_unauthenticated = 20000"]
    if workers is not None:
        server.append(f"workers = {workers}")
    sections = ["[server]\n" + "\n".join(server) + "\n",
                f"[imap]\nenabled = yes\nlisten = tcp:{port}:interface=127.0.0.1\n"]
    sections += [f"[{name}]\nenabled = no\n" for name in ("imaps", "pop3", "pop3s", "submission", "submissions", "lmtp")]
    config.write_text("\n".join(sections))
    with open(os.devnull, "w") as quiet:
        for number in range(1, USERS + 1):
            admin(["--config", str(config), "user", "add", f"user{number}", "--password", PASSWORD], out=quiet)
    if messages:
        fill(folder / "data", messages)
    env = dict(os.environ, PYTHONPATH=str(Path(tree).resolve())) if tree else None
    process = subprocess.Popen([*TWISTD, "--pidfile=", "-n", f"--logfile={folder / 'server.log'}",
                                *twistd_options, "cyrusmail", "--config", str(config)], cwd=folder,
                               stdout=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 60
        while not answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"cyrusmail did not start; see {folder / 'server.log'}")
            time.sleep(0.2)
        yield process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if keep:
            print(f"   (cyrusmail's data folder and log kept in {folder})")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def fill(data: Path, count: int) -> None:
    """Put ``count`` small messages in the INBOX of each of user1..user20 (one transaction per 500)."""
    from cyrusmail.store.maildir.store import MaildirStore

    store = MaildirStore(data, analyser=None)
    try:
        for number in range(1, USERS + 1):
            inbox = store.mailboxes(f"user{number}").open("INBOX")
            for start in range(0, count, 500):
                inbox.append_many([(b"From: a@example.org\r\nSubject: %d\r\n\r\nHello\r\n" % n, None, (), None)
                                   for n in range(start, min(count, start + 500))])
    finally:
        store.close()


def dovecot_master(anchors: Path) -> int | None:
    try:
        return int((anchors / "dovecot" / "run" / "master.pid").read_text().strip())
    except (OSError, ValueError):
        return None


# -- imaptest -------------------------------------------------------------------


def find_imaptest(given: str | None) -> str | None:
    for candidate in (given, os.environ.get("IMAPTEST"), str(ROOT.parent / "imaptest" / "src" / "imaptest"),
                      shutil.which("imaptest")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def find_mbox(given: str | None, anchors: Path, scratch: Path) -> Path | None:
    """The messages imaptest APPENDs: ``--mbox``, the reference setup's sample, or one made now."""
    if given:
        return Path(given)
    sample = anchors / "data" / "sample.mbox"
    if sample.is_file():
        return sample
    generator = SHARED / "reference" / "gen_mbox.py"
    if generator.is_file():
        made = scratch / "sample.mbox"
        subprocess.run([sys.executable, str(generator), str(made), "500", "42"], check=True,
                       stdout=subprocess.DEVNULL)
        return made
    return None


def totals(output: str) -> int:
    """The sum of the counters on imaptest's ``Totals:`` line."""
    lines = output[output.rindex("Totals:"):].splitlines()[1:]
    header = lines[0].split()
    for line in lines[1:]:
        fields = line.split()
        if len(fields) == len(header) and all(field.isdigit() for field in fields):
            return sum(int(field) for field in fields)
    raise ValueError("no totals line in imaptest's output")


def stress(imaptest: str, port: int, server_pid: int, profile: str, clients: int, secs: int,
           mbox: Path, threads: bool = False) -> Figures:
    """One imaptest run; ``threads``: also the main threads' CPU (a threaded server)."""
    command = [imaptest, "host=127.0.0.1", f"port={port}", "user=user%d", f"users={USERS}",
               f"pass={PASSWORD}", f"clients={clients}", f"mbox={mbox}", f"secs={secs}",
               *PROFILES[profile]]
    env = dict(os.environ, LD_LIBRARY_PATH="/usr/lib/dovecot")
    reactor_before = main_threads_cpu(server_pid) if threads else 0.0
    cpu_before, started = tree_cpu(server_pid), time.monotonic()
    result = subprocess.run(command, env=env, capture_output=True, text=True, errors="replace",
                            timeout=secs + 120, check=False)
    elapsed = time.monotonic() - started
    cpu = tree_cpu(server_pid) - cpu_before
    reactor = main_threads_cpu(server_pid) - reactor_before if threads else None
    output = result.stdout + result.stderr
    if "Totals:" not in output:
        raise SystemExit(f"imaptest failed ({result.returncode}):\n{output[-2000:]}")
    errors = re.findall(r"^Error: .*", output, re.MULTILINE)
    # imaptest stops its clients at ``secs`` and then lets them log out: count the whole time
    return Figures(totals(output), elapsed, cpu, len(errors), errors[0][:200] if errors else "", reactor)


def median_figures(runs: list[Figures]) -> Figures:
    """The run of the median rate (the lower middle one of an even number), so every figure shown is of one run."""
    return sorted(runs, key=lambda run: run.rate)[(len(runs) - 1) // 2]


# -- the table ----------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run of 10 s per case (unless --runs/--secs say otherwise)")
    parser.add_argument("--runs", type=int, help="runs per case; the median is shown (default 3, --quick 1)")
    parser.add_argument("--secs", type=int, help="seconds per run (default 20, --quick 10)")
    parser.add_argument("--clients", default="10,100", help="client counts, comma separated (default 10,100)")
    parser.add_argument("--profiles", default="default,read", help=f"any of {', '.join(PROFILES)} (default all)")
    parser.add_argument("--workers", help="cyrusmail worker counts, comma separated (default: 1, and 2 when"
                        " this checkout has [server] workers; otherwise the key is not written)")
    parser.add_argument("--port", type=int, help="cyrusmail's IMAP port (default: a free one)")
    parser.add_argument("--dovecot-port", type=int, default=10143)
    parser.add_argument("--no-dovecot", action="store_true", help="run cyrusmail only")
    parser.add_argument("--anchors", default=os.environ.get("ANCHORS_DIR", "/tmp/anchors"),
                        help="the reference servers' folder (setup.sh's ANCHORS_DIR; default $ANCHORS_DIR or /tmp/anchors)")
    parser.add_argument("--imaptest", help="path of the imaptest binary")
    parser.add_argument("--mbox", help="messages for APPEND (default: the reference sample.mbox, else one made now)")
    parser.add_argument("--keep", action="store_true", help="keep cyrusmail's data folder and log")
    parser.add_argument("--tree", action="append", default=[],
                        help="also run another checkout's server (for before/after figures); repeatable")
    args = parser.parse_args()
    runs = args.runs or (1 if args.quick else 3)
    secs = args.secs or (10 if args.quick else 20)
    client_counts = [int(item) for item in args.clients.split(",")]
    profiles = args.profiles.split(",")
    unknown = [name for name in profiles if name not in PROFILES]
    if unknown:
        parser.error(f"unknown profile {', '.join(unknown)}")

    imaptest = find_imaptest(args.imaptest)
    if imaptest is None:
        print("imaptest not found (--imaptest, $IMAPTEST, ../imaptest/src/imaptest or PATH): skipped;"
              " ../shared/bench/README.md says how to build it")
        return 0
    anchors = Path(args.anchors)
    if args.workers:
        worker_counts: list[int | None] = [int(item) for item in args.workers.split(",")]
    else:
        worker_counts = [1, 2] if supports_workers() else [None]
    if any(count is not None for count in worker_counts) and not supports_workers():
        parser.error("this checkout has no [server] workers key: leave out --workers")

    scratch = Path(tempfile.mkdtemp(prefix="stress-bench-mbox-"))
    try:
        mbox = find_mbox(args.mbox, anchors, scratch)
        if mbox is None:
            print("no mbox for imaptest's APPENDs: give --mbox")
            return 1
        servers: dict[str, list] = {}  # label -> [(profile, clients) -> Figures]
        results: dict[tuple[str, str, int], Figures] = {}
        dovecot_pid = None if args.no_dovecot else dovecot_master(anchors)
        if args.no_dovecot:
            pass
        elif dovecot_pid is None or not answers(args.dovecot_port):
            print(f"note: no Dovecot answers on 127.0.0.1:{args.dovecot_port} (or no master pid in {anchors}/dovecot/run):"
                  f" cyrusmail only. Start it with ANCHORS_DIR={anchors} ../shared/bench/reference/setup.sh")
            dovecot_pid = None
        print(f"imaptest stress, {secs} s per run, median of {runs} run(s); mbox {mbox.name}", flush=True)

        def run_cases(label: str, port: int, pid: int) -> None:
            servers[label] = []
            threads = label != "dovecot"
            for profile in profiles:
                for clients in client_counts:
                    figures = [stress(imaptest, port, pid, profile, clients, secs, mbox, threads) for _ in range(runs)]
                    results[label, profile, clients] = median_figures(figures)
                    rates = ", ".join(f"{run.rate:.0f}" for run in figures)
                    print(f"   {label:14} {profile:8} {clients:4} clients: {rates} commands/s", flush=True)
                    for run in figures:
                        if run.first_error:
                            print(f"      {run.errors} imaptest error(s), the first: {run.first_error}")

        for tree in [None, *args.tree]:
            for workers in worker_counts if tree is None else [None]:
                label = "cyrusmail" if workers is None else f"cyrusmail w={workers}"
                if tree is not None:
                    label = Path(tree).resolve().name
                port = args.port or free_port()
                with cyrusmail(port, workers, args.keep, tree=tree) as pid:
                    run_cases(label, port, pid)
        if dovecot_pid is not None:
            run_cases("dovecot", args.dovecot_port, dovecot_pid)

        print()
        print(f"{'profile':8} {'clients':>7} {'server':14} {'cmds/s':>8} {'CPU ms/cmd':>10} {'reactor':>8}"
              f" {'CPU %':>6} {'errors':>6} {'rate ratio':>10} {'CPU ratio':>9}")
        for profile in profiles:
            for clients in client_counts:
                reference = results.get(("dovecot", profile, clients))
                for label in servers:
                    figures = results[label, profile, clients]
                    ratios = ""
                    if reference is not None and label != "dovecot":
                        ratios = (f" {figures.rate / reference.rate:10.2f}"
                                  f" {figures.cpu_ms_per_command / reference.cpu_ms_per_command:9.2f}")
                    reactor = figures.reactor_ms_per_command
                    reactor_text = "-" if reactor is None else f"{reactor:.2f}"
                    print(f"{profile:8} {clients:7} {label:14} {figures.rate:8.0f} {figures.cpu_ms_per_command:10.2f}"
                          f" {reactor_text:>8} {100 * figures.cpu_share:6.0f} {figures.errors:6}{ratios}")
        print("CPU ms/cmd: the server's whole process tree; reactor: cyrusmail's main threads alone"
              " (without its thread pools: password hashing, store work)")
        if dovecot_pid is not None:
            print("ratios are cyrusmail / Dovecot: rate above 1 is faster, CPU below 1 is cheaper per command")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
