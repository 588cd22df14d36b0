"""Mail-in figures: submission messages/s (one and ten connections) and LMTP deliveries/s.

The server (submission and LMTP on loopback, a real store in a temporary
folder) runs in this process on a reactor thread; the clients are smtplib
(submission, TCP_NODELAY, loopback so AUTH PLAIN needs no TLS) and a small
pipelining LMTP client over a socket.  Every 250 means the message is
durable (fsynced file and index).  Medians of a few runs.
"""

from __future__ import annotations

import smtplib
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twisted.internet import reactor

from bench.delivery_bench import rate
from cyrusmail.smtp.server import make_lmtp_factory, make_submission_factory
from tests.helpers import add_user, make_context

MESSAGE = (b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: bench\r\n"
           b"Message-ID: <bench@example.org>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n"
           + (b"x" * 76 + b"\r\n") * 64)
RUNS = 3


def start_server(folder: str) -> tuple[int, int]:
    context = make_context(folder, reactor, server={"domains": "example.org"})
    for name in ["alice", "bob"] + [f"user{n}" for n in range(10)]:
        add_user(context, name)
    ports = []

    def listen() -> None:
        for maker, service in ((make_submission_factory, "submission"), (make_lmtp_factory, "lmtp")):
            ports.append(reactor.listenTCP(0, maker(context, service), interface="127.0.0.1").getHost().port)

    reactor.callFromThread(listen)
    while len(ports) < 2:
        time.sleep(0.01)
    return ports[0], ports[1]


def submit(port: int, count: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.ehlo("bench")
        client.login("alice", "secret")
        for _ in range(count):
            client.sendmail("alice@example.org", ["bob@example.org"], MESSAGE)


def submission_rate(port: int, connections: int, per_connection: int) -> float:
    return rate(submit, port, connections, per_connection)


def read_replies(reader, count: int) -> list[bytes]:
    replies = []
    while len(replies) < count:
        line = reader.readline()
        if not line:
            raise ConnectionError("server closed")
        if line[3:4] == b" ":
            replies.append(line)
    return replies


def lmtp_rate(port: int, messages: int) -> float:
    recipients = [f"user{n}@example.org" for n in range(10)]
    envelope = b"MAIL FROM:<x@remote.example>\r\n" + b"".join(
        f"RCPT TO:<{r}>\r\n".encode() for r in recipients) + b"DATA\r\n"
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = sock.makefile("rb")
        read_replies(reader, 1)
        sock.sendall(b"LHLO bench\r\n")
        read_replies(reader, 1)
        start = time.perf_counter()
        for _ in range(messages):
            sock.sendall(envelope)
            read_replies(reader, 12)
            sock.sendall(MESSAGE + b".\r\n")
            replies = read_replies(reader, 10)
            if not all(r.startswith(b"250") for r in replies):
                raise RuntimeError(replies)
        elapsed = time.perf_counter() - start
        sock.sendall(b"QUIT\r\n")
    return messages * len(recipients) / elapsed


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        thread = threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True)
        thread.start()
        submission_port, lmtp_port = start_server(folder)
        one = statistics.median(submission_rate(submission_port, 1, 100) for _ in range(RUNS))
        print(f"submission, 1 connection: {one:.0f} messages/s ({len(MESSAGE)} octets, one local recipient)")
        ten = statistics.median(submission_rate(submission_port, 10, 30) for _ in range(RUNS))
        print(f"submission, 10 connections: {ten:.0f} messages/s")
        lmtp = statistics.median(lmtp_rate(lmtp_port, 50) for _ in range(RUNS))
        print(f"LMTP, 10 local recipients per message: {lmtp:.0f} deliveries/s ({lmtp / 10:.0f} messages/s)")
        reactor.callFromThread(reactor.stop)
        thread.join(timeout=10)


if __name__ == "__main__":
    main()
