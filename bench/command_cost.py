#!/usr/bin/env python3
"""What one IMAP command costs the server in CPU, with no network and no other load.

Drives real sessions (``IMAPServer`` over an in-memory transport, a real
store in a throwaway folder) through the commands of imaptest's stress
cycle, ``--rounds`` times, and prints the CPU time (``time.process_time``:
this process only, so other work on the machine disturbs it little) per
command, by command.  A second session keeps the same mailbox selected and
sees every change, as imaptest's clients on one user do.  LOGIN runs once
(its scrypt is the login path's own figure); the APPEND and STORE figures
include their fsyncs' CPU, not the wait.

    python bench/command_cost.py                  # 300 rounds
    python bench/command_cost.py --profile 30     # and cProfile's 30 costliest functions

Not part of ``make bench``; for before/after figures of per-command work.
"""

from __future__ import annotations

import argparse
import configparser
import cProfile
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: (label, command) per round; ``{uid}`` is a message that exists
CYCLE = [
    ("LIST", 'LIST "" *'),
    ("STATUS", "STATUS INBOX (MESSAGES UNSEEN UIDNEXT)"),
    ("SELECT", "SELECT INBOX"),
    ("FETCH flags", "FETCH 1:* (UID FLAGS)"),
    ("FETCH envelope", "UID FETCH {uid} (UID FLAGS RFC822.SIZE ENVELOPE BODYSTRUCTURE INTERNALDATE)"),
    ("FETCH header", "UID FETCH {uid} (BODY.PEEK[HEADER.FIELDS (FROM TO CC SUBJECT DATE MESSAGE-ID)])"),
    ("FETCH body", "UID FETCH {uid} (BODY.PEEK[])"),
    ("SEARCH", "UID SEARCH FLAGGED"),
    ("STORE", "UID STORE {uid} +FLAGS (\\Flagged $Label1)"),
    ("STORE -", "UID STORE {uid} -FLAGS (\\Flagged $Label1)"),
    ("NOOP", "NOOP"),
    ("APPEND", None),  # a message of the mbox, by literal
    ("STORE deleted", "UID STORE {last} +FLAGS.SILENT (\\Deleted)"),
    ("EXPUNGE", "EXPUNGE"),
]


def messages(count: int) -> list[bytes]:
    body = "".join(f"line {n} of a plain message body that is long enough to matter\r\n" for n in range(60))
    return [(f"From: Sender {n} <s{n}@example.org>\r\nTo: user1@example.org\r\nSubject: message {n}\r\n"
             f"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\nMessage-ID: <{n}@example.org>\r\n"
             f"Content-Type: text/plain; charset=us-ascii\r\n\r\n{body}").encode() for n in range(count)]


class Session:
    def __init__(self, context, clock: Clock) -> None:
        from cyrusmail.imap.server import IMAPServer

        self.clock = clock
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.server = IMAPServer(context, "imap", reactor=clock)
        self.server.makeConnection(self.transport)
        self.tag = 0

    def send(self, data: bytes) -> bytes:
        self.server.dataReceived(data)
        while any(call.getTime() <= self.clock.seconds() for call in self.clock.getDelayedCalls()):
            self.clock.advance(0)
        answer = self.transport.value()
        self.transport.clear()
        return answer

    def command(self, line: str) -> bytes:
        self.tag += 1
        tag = b"t%d" % self.tag
        answer = self.send(tag + b" " + line.encode() + b"\r\n")
        last = answer.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1]
        if not last.startswith(tag + b" OK"):
            raise SystemExit(f"{line!r} answered {answer[-300:]!r}")
        return answer

    def append(self, message: bytes) -> bytes:
        self.tag += 1
        return self.send(b"t%d APPEND INBOX {%d+}\r\n%s\r\n" % (self.tag, len(message), message))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--messages", type=int, default=30, help="messages in INBOX (default 30, as imaptest keeps)")
    parser.add_argument("--profile", type=int, metavar="N", help="also print cProfile's N costliest functions")
    parser.add_argument("--only", help="profile only the commands whose label starts with this")
    parser.add_argument("--sort", default="tottime", help="cProfile's order (tottime, cumulative)")
    args = parser.parse_args()

    from twisted.cred.credentials import IUsernamePassword

    from cyrusmail.config import SERVICES, from_parser
    from cyrusmail.service import open_context

    folder = Path(tempfile.mkdtemp(prefix="command-cost-"))
    try:
        config = configparser.ConfigParser(interpolation=None)
        config.read_dict({"server": {"data": str(folder / "data"), "hostname": "localhost", "domains": "localhost"},
                          **{name: {"enabled": "no"} for name in SERVICES}})
        clock = Clock()
        context = open_context(from_parser("bench.conf", config), clock)
        context.portal.checkers[IUsernamePassword].hash_in_thread = False
        context.portal.throttle.clock = clock
        context.users.add("user1", "pass")
        context.realm.account("user1")
        inbox = context.store.mailboxes("user1").open("INBOX")
        stock = messages(args.messages + 1)
        for data in stock[:-1]:
            inbox.append(data)
        main_session, watcher = Session(context, clock), Session(context, clock)
        for session in (main_session, watcher):
            session.command("LOGIN user1 pass")
        watcher.command("SELECT INBOX")
        costs: dict[str, list[float]] = defaultdict(list)
        profiler = cProfile.Profile(time.process_time) if args.profile else None
        for _ in range(args.rounds):
            uids = inbox.summary().uids
            for label, line in CYCLE:
                profiled = profiler and (not args.only or label.startswith(args.only))
                if profiled:
                    profiler.enable()
                started = time.process_time()
                if line is None:
                    main_session.append(stock[-1])
                else:
                    main_session.command(line.format(uid=uids[len(uids) // 2], last=uids[-1]))
                costs[label].append(time.process_time() - started)
                if profiled:
                    profiler.disable()
            watcher.command("NOOP")
            main_session.command("UNSELECT")
        context.store.close()
        context.users.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    print(f"CPU per command, {args.rounds} rounds, {args.messages} messages in INBOX (microseconds)")
    print(f"  {'command':16} {'median':>8} {'mean':>8}")
    for label, _ in CYCLE:
        values = costs[label]
        print(f"  {label:16} {1e6 * statistics.median(values):8.0f} {1e6 * statistics.mean(values):8.0f}")
    every = [value for values in costs.values() for value in values]
    print(f"  {'all (mean)':16} {'':8} {1e6 * statistics.mean(every):8.0f}")
    if profiler:
        stats = pstats.Stats(profiler).sort_stats(args.sort)
        stats.print_stats(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
