"""What a login costs the real server: CPU per LOGIN + SELECT + LOGOUT, and imaptest's default profile.

Starts ``twistd cyrusmail`` (IMAP only) on a free loopback port with users
``user1``..``user20`` (password ``pass``), then:

- **cycles**: one client connects, logs in, selects INBOX and logs out, again
  and again, rotating through the users; prints the server's CPU time (all
  its threads, scrypt included) per cycle, median of ``--runs`` runs;
- **imaptest** (if Dovecot's imaptest is built at ``--imaptest``): its default
  stress profile, which logs in on every cycle (10 clients, ``--seconds``),
  with ``--mbox`` (made by ../shared/bench/reference/gen_mbox.py when missing);
  prints commands per second and server CPU per command, medians of ``--runs``.

``--profile FILE`` runs the server under cProfile (twistd ``--profile``) and
prints where its time went, by cumulative time. A figure, not a test; the
machine's other load moves it, so compare medians of runs made back to back.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path.cwd()
sys.path.insert(0, str(ROOT))

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
USERS = 20
IMAPTEST = Path("/work/imaptest/src/imaptest")
GEN_MBOX = ROOT.parent / "shared" / "bench" / "reference" / "gen_mbox.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_cpu(pid: int) -> float:
    """CPU seconds the server process has used so far, every thread together."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_config(folder: Path, port: int, server: str = "") -> Path:
    """The server's config, with every user added and their folders made (as at their first login)."""
    from cyrusmail.config import load
    from cyrusmail.service import open_context

    data = folder / "data"
    config = folder / "cyrusmail.conf"
    disabled = "".join(f"[{name}]\nenabled = no\n" for name in
                       ("imaps", "pop3", "pop3s", "submission", "submissions", "lmtp"))
    config.write_text(f"[server]\ndata = {data}\nhostname = localhost\ndomains = localhost\n{server}"
                      f"[imap]\nlisten = tcp:{port}:interface=127.0.0.1\n{disabled}")
    context = open_context(load(config))
    for number in range(1, USERS + 1):
        context.realm.account(context.users.add(f"user{number}", "pass"))
    context.realm.close()
    context.store.close()
    context.users.close()
    return config


def start(config: Path, port: int, profile: Path | None) -> subprocess.Popen:
    options = [f"--profile={profile}", "--profiler=cprofile", "--savestats"] if profile else []
    server = subprocess.Popen([*TWISTD, "--pidfile=", "-n", *options, "cyrusmail", "--config", str(config)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return server
        time.sleep(0.1)
    server.kill()
    raise SystemExit("the server did not start")


def exchange(sock: socket.socket, reader, tag: bytes, line: bytes) -> None:
    sock.sendall(tag + b" " + line + b"\r\n")
    while True:
        answer = reader.readline()
        if not answer:
            raise ConnectionError("the server closed the connection")
        if answer.startswith(tag + b" "):
            if not answer.startswith(tag + b" OK"):
                raise SystemExit(f"unexpected answer: {answer!r}")
            return


def cycle(port: int, user: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = sock.makefile("rb")
        reader.readline()
        exchange(sock, reader, b"a", f"LOGIN user{user} pass".encode())
        exchange(sock, reader, b"b", b"SELECT INBOX")
        exchange(sock, reader, b"c", b"LOGOUT")


def cycles(server: subprocess.Popen, port: int, count: int) -> tuple[float, float]:
    """Server CPU and wall time per cycle, in milliseconds."""
    before, started = server_cpu(server.pid), time.monotonic()
    for number in range(count):
        cycle(port, 1 + number % USERS)
    return ((server_cpu(server.pid) - before) * 1000 / count, (time.monotonic() - started) * 1000 / count)


def imaptest(server: subprocess.Popen, port: int, binary: Path, mbox: Path, seconds: int) -> tuple[float, float]:
    """Commands per second, and server CPU milliseconds per command."""
    before = server_cpu(server.pid)
    result = subprocess.run(
        [str(binary), "host=127.0.0.1", f"port={port}", "user=user%d", f"users={USERS}", "pass=pass",
         "clients=10", f"mbox={mbox}", f"secs={seconds}"],
        env={**os.environ, "LD_LIBRARY_PATH": "/usr/lib/dovecot"}, capture_output=True, text=True, check=False)
    cpu = server_cpu(server.pid) - before
    lines = result.stdout.splitlines()
    totals = lines[lines.index("Totals:") + 4] if "Totals:" in lines else ""
    commands = sum(int(field) for field in totals.split() if field.isdigit())
    if not commands:
        raise SystemExit(f"imaptest gave no totals:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return commands / seconds, cpu * 1000 / commands


def print_profile(path: Path, lines: int) -> None:
    import pstats

    stats = pstats.Stats(str(path))
    stats.sort_stats("cumulative").print_stats(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=300, help="LOGIN+SELECT+LOGOUT cycles per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=20, help="length of each imaptest run")
    parser.add_argument("--imaptest", type=Path, default=IMAPTEST)
    parser.add_argument("--mbox", type=Path, default=Path(tempfile.gettempdir()) / "cyrusmail-bench.mbox")
    parser.add_argument("--server", default="", help="extra [server] lines, e.g. 'auth_cache_size = 0\\n'")
    parser.add_argument("--profile", type=Path, help="run the server under cProfile, stats to this file")
    parser.add_argument("--no-imaptest", action="store_true")
    args = parser.parse_args()

    use_imaptest = not args.no_imaptest and args.imaptest.exists()
    if use_imaptest and not args.mbox.exists():
        subprocess.run([sys.executable, str(GEN_MBOX), str(args.mbox), "500", "42"], check=True,
                       stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory() as folder:
        port = free_port()
        config = write_config(Path(folder), port, args.server.replace("\\n", "\n"))
        server = start(config, port, args.profile)
        try:
            cycles(server, port, USERS)  # warm up
            runs = [cycles(server, port, args.cycles) for _ in range(args.runs)]
            print(f"LOGIN + SELECT INBOX + LOGOUT, one client, {args.cycles} cycles x {args.runs} runs:")
            print(f"  server CPU per cycle: {statistics.median(cpu for cpu, _ in runs):.2f} ms"
                  f" (runs: {', '.join(f'{cpu:.2f}' for cpu, _ in runs)})")
            print(f"  wall time per cycle: {statistics.median(wall for _, wall in runs):.2f} ms")
            if use_imaptest:
                stress = [imaptest(server, port, args.imaptest, args.mbox, args.seconds) for _ in range(args.runs)]
                print(f"imaptest default profile, 10 clients, {args.seconds} s x {args.runs} runs:")
                print(f"  commands/s: {statistics.median(rate for rate, _ in stress):.0f}"
                      f" (runs: {', '.join(f'{rate:.0f}' for rate, _ in stress)})")
                print(f"  server CPU per command: {statistics.median(cpu for _, cpu in stress):.2f} ms")
            else:
                print(f"imaptest skipped (not found at {args.imaptest})")
        finally:
            server.terminate()
            server.wait(timeout=60)
    if args.profile:
        print_profile(args.profile, 40)
    return 0


if __name__ == "__main__":
    sys.exit(main())
