"""Password guessing against the real server: 100 IMAP connections from rotating 127.x addresses.

Starts ``twistd cyrusmail`` (IMAP only) on a free loopback port with one user,
then has 100 connections, each from its own source address in 127.0.0.0/8,
send ``LOGIN alice <wrong>`` again as soon as the last one is answered, for
``--seconds``. Prints the failure replies per second and the password checks
per second, estimated from the CPU time of the server's thread pool (where
scrypt runs) over the cost of one scrypt check; replies refused by the
throttle cost no check. A figure, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path.cwd()
sys.path.insert(0, str(ROOT))

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of the reactor thread, and of all other threads (the pool that runs scrypt)."""
    reactor = cpu_seconds(Path(f"/proc/{pid}/task/{pid}/stat"))
    return reactor, cpu_seconds(Path(f"/proc/{pid}/stat")) - reactor


def scrypt_seconds(samples: int = 10) -> float:
    started = time.process_time()
    for _ in range(samples):
        hashlib.scrypt(b"wrong", salt=b"0" * 16, n=1 << 14, r=8, p=1, dklen=32, maxmem=64 * 1024 * 1024)
    return (time.process_time() - started) / samples


async def guesser(port: int, source: str, until: float, replies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    await reader.readline()
    number = 0
    try:
        while time.monotonic() < until:
            number += 1
            writer.write(f"g{number} LOGIN alice guess{number}\r\n".encode())
            await writer.drain()
            while True:
                line = await asyncio.wait_for(reader.readline(), max(0.1, until - time.monotonic()))
                if line.startswith(f"g{number} ".encode()):
                    break
            replies.append(time.monotonic())
    except (TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()


async def attack(port: int, connections: int, seconds: float) -> list[float]:
    replies: list[float] = []
    until = time.monotonic() + seconds
    sources = [f"127.{1 + n // 65536}.{n // 256 % 256}.{n % 256 + 1}" for n in range(connections)]
    await asyncio.gather(*(guesser(port, source, until, replies) for source in sources))
    return replies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--connections", type=int, default=100)
    args = parser.parse_args()

    from cyrusmail.auth.userdb import UserDatabase

    with tempfile.TemporaryDirectory() as folder:
        data, port = Path(folder) / "data", free_port()
        data.mkdir()
        users = UserDatabase(data / "users.sqlite")
        users.add("alice", "the right one")
        users.close()
        config = Path(folder) / "cyrusmail.conf"
        disabled = "".join(f"[{name}]\nenabled = no\n" for name in
                           ("imaps", "pop3", "pop3s", "submission", "submissions", "lmtp"))
        config.write_text(f"[server]\ndata = {data}\nhostname = mail.example.org\n"
                          f"[imap]\nlisten = tcp:{port}:interface=127.0.0.1\n{disabled}")
        server = subprocess.Popen([*TWISTD, "--pidfile=", "-n", "cyrusmail", "--config", str(config)],
                                  cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with socket.socket() as sock:
                    if sock.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.1)
            before = server_cpu(server.pid)
            replies = asyncio.run(attack(port, args.connections, args.seconds))
            after = server_cpu(server.pid)
            reactor, pool = after[0] - before[0], after[1] - before[1]
        finally:
            server.terminate()
            server.wait(timeout=30)
    check = scrypt_seconds()
    print(f"{args.connections} connections from rotating 127.x addresses, {args.seconds:.0f} s, one account:")
    print(f"  failure replies: {len(replies)} ({len(replies) / args.seconds:.1f}/s)")
    print(f"  server CPU: reactor thread {reactor:.1f} s, scrypt threads {pool:.1f} s")
    print(f"  one scrypt check {check * 1000:.0f} ms, so about {pool / check:.0f} password checks"
          f" ({pool / check / args.seconds:.1f}/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
