"""Differential IMAP testing: the same raw commands to cyrusmail, Dovecot and Cyrus.

Not a pytest module (pytest collects only ``test_*.py``).  Run by hand, with
the reference servers of ``/work/shared/bench/README.md`` up and a cyrusmail
listening (``--ours``)::

    python tests/imap_differential/run.py [--ours 23417] [--user user7] [SCENARIO ...]

Each scenario starts from a clean account (every mailbox but INBOX deleted,
INBOX emptied, nothing subscribed) and is a list of steps:

* ``"tag COMMAND ..."``: sent as is (``\\r\\n`` added); synchronizing
  literals ``{n}`` are sent after the server's ``+``; read to the tagged reply;
* ``("raw", bytes)``: sent without waiting; ``("read", seconds)``: what came;
* ``("other", "tag COMMAND")``: the same on a second connection.

Responses are normalised (texts after status codes, UIDVALIDITY, MODSEQs,
flag list order, quoting of plain mailbox names, server-specific codes) and
printed: ``=`` where all three agree, else each server's lines, with ``!!``
where cyrusmail differs from two references that agree.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
import time

SERVERS = {"dovecot": 10143, "cyrus": 11143, "ours": 23417}
CORPUS = "/work/shared/corpus/messages"


class Conn:
    def __init__(self, port: int, user: str, password: str = "pass") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.readline()
        if user:
            self.cmd(f"login LOGIN {user} {password}")

    def _fill(self, timeout: float | None = 10) -> bool:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            return False
        if not data:
            raise EOFError
        self.buf += data
        return True

    def readline(self, timeout: float | None = 10) -> bytes | None:
        """One response line, literals included."""
        out = b""
        while True:
            while b"\r\n" not in self.buf:
                if not self._fill(timeout):
                    return None
            line, self.buf = self.buf.split(b"\r\n", 1)
            out += line
            found = re.search(rb"\{(\d+)\}$", line)
            if not found:
                return out
            size = int(found.group(1))
            while len(self.buf) < size:
                self._fill()
            out += b"\r\n" + self.buf[:size]
            self.buf = self.buf[size:]

    def cmd(self, text: str | bytes) -> list[bytes]:
        data = text.encode() if isinstance(text, str) else text
        tag = data.split(b" ", 1)[0]
        pieces = re.split(rb"(\{\d+\}\r\n)", data)
        lines: list[bytes] = []
        chunk = b""
        try:
            for piece in pieces:
                chunk += piece
                if re.fullmatch(rb"\{\d+\}\r\n", piece):
                    self.sock.sendall(chunk)
                    chunk = b""
                    while True:
                        line = self.readline()
                        if line is None:
                            return lines + [b"<timeout waiting for +>"]
                        if line.startswith(b"+"):
                            lines.append(b"+")
                            break
                        lines.append(line)
                        if line.startswith(tag + b" "):
                            return lines
            self.sock.sendall(chunk + b"\r\n")
            while True:
                line = self.readline()
                if line is None:
                    return lines + [b"<timeout>"]
                lines.append(line)
                if line.startswith(tag + b" "):
                    return lines
        except (EOFError, OSError):
            return lines + [b"<closed>"]

    def raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, seconds: float) -> list[bytes]:
        lines = []
        end = time.time() + seconds
        try:
            while True:
                left = end - time.time()
                if left <= 0:
                    break
                line = self.readline(left)
                if line is None:
                    break
                lines.append(line)
        except EOFError:
            lines.append(b"<closed>")
        return lines

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def reset(port: int, user: str) -> None:
    conn = Conn(port, user)
    conn.cmd("r0 UNSELECT")
    names = []
    for line in conn.cmd('r1 LIST "" "*"'):
        found = re.match(rb'\* LIST \([^)]*\) (?:"."|NIL) (.*)$', line)
        if found:
            name = found.group(1)
            if name.startswith(b"{"):
                name = name.split(b"\r\n", 1)[1]
                name = b'"' + name + b'"'
            if name.strip(b'"').upper() != b"INBOX":
                names.append(name)
    for name in sorted(names, key=len, reverse=True):
        if port == SERVERS["cyrus"]:  # special-use folders are protected there
            conn.cmd(b"r2 SETMETADATA " + name + b" (/private/specialuse NIL)")
        conn.cmd(b"r2 DELETE " + name)
    for line in conn.cmd('r3 LSUB "" "*"'):
        found = re.match(rb'\* LSUB \([^)]*\) (?:"."|NIL) (.*)$', line)
        if found:
            conn.cmd(b"r4 UNSUBSCRIBE " + found.group(1))
    conn.cmd("r5 SELECT INBOX")
    conn.cmd("r6 STORE 1:* +FLAGS.SILENT (\\Deleted)")
    conn.cmd("r7 EXPUNGE")
    conn.cmd("r8 LOGOUT")
    conn.close()


_CODE_ONLY = re.compile(rb"^(\S+ (?:OK|NO|BAD|BYE|PREAUTH))(?: (\[[^\]]*(?:\([^)]*\))?[^\]]*\]))?.*$", re.DOTALL)
_DROP_CODES = (b"MAILBOXID", b"URLMECH", b"ANNOTATIONS", b"CAPABILITY")


def _sort_flags(match: re.Match) -> bytes:
    flags = sorted(match.group(2).split())
    return match.group(1) + b"(" + b" ".join(flags) + b")"


def normalise(line: bytes) -> bytes | None:
    if line.startswith(b"* OK Waiting for auth"):
        return None
    if line.startswith(b"* CAPABILITY"):
        return b"* CAPABILITY ..."
    found = _CODE_ONLY.match(line)
    if found and not line.startswith(b"* BYE"):
        code = found.group(2) or b""
        if any(code.startswith(b"[" + drop) for drop in _DROP_CODES):
            if line.startswith(b"* "):
                return None
            code = b""
        line = found.group(1) + (b" " + code if code else b"")
    elif line.startswith(b"* BYE"):
        line = b"* BYE"
    if re.match(rb"\* \d+ FETCH \(.*(BODYSTRUCTURE|BODY \()", line):
        line = line.upper()  # Dovecot writes types and parameter names in lower case
    line = re.sub(rb"(UIDVALIDITY|COPYUID|APPENDUID) \d+", rb"\1 <v>", line)
    line = re.sub(rb"(HIGHESTMODSEQ|MODSEQ) \(?\d+\)?", rb"\1 <m>", line)
    line = re.sub(rb"((?:PERMANENTFLAGS |FLAGS )\(?)\(([^)]*)\)", _sort_flags, line)
    if re.match(rb"\* (LIST|LSUB|STATUS) ", line):
        line = re.sub(rb'"([A-Za-z0-9_./&-]+)"(?=$| \()', rb"\1", line)
    return line


def run_scenario(name: str, steps: list, servers: dict[str, int], user: str) -> int:
    print(f"\n##### {name}")
    results: dict[str, list[list[bytes]]] = {}
    for server, port in servers.items():
        reset(port, user)
        main = Conn(port, user)
        other: Conn | None = None
        outputs = []
        for step in steps:
            if isinstance(step, (str, bytes)):
                out = main.cmd(step)
            elif step[0] == "raw":
                main.raw(step[1])
                out = []
            elif step[0] == "read":
                out = main.read(step[1])
            elif step[0] == "other":
                if other is None:
                    other = Conn(port, user)
                out = other.cmd(step[1])
            elif step[0] == "nologin":
                main.close()
                main = Conn(port, "")
                out = []
            else:
                raise ValueError(step)
            outputs.append([n for n in map(normalise, out) if n is not None])
        main.close()
        if other is not None:
            other.close()
        results[server] = outputs
    differing = 0
    for index, step in enumerate(steps):
        if isinstance(step, bytes):
            label = step.decode(errors="replace").replace("\r\n", "\\r\\n")
        else:
            label = step if isinstance(step, str) else f"{step[0]} {step[1]!r}"
        if isinstance(step, tuple) and step[0] == "raw":
            label = f"raw {step[1][:200]!r}"
        shown = {server: results[server][index] for server in servers}
        values = list(shown.values())
        if all(v == values[0] for v in values):
            print(f"= {label[:300]}")
            for line in values[0]:
                print("      " + _show(line))
            continue
        ref = [shown[s] for s in ("dovecot", "cyrus") if s in shown]
        mark = "!!" if len(ref) == 2 and ref[0] == ref[1] else "~~"
        differing += mark == "!!"
        print(f"{mark} {label[:300]}")
        for server, lines in shown.items():
            for line in lines or [b"<nothing>"]:
                print(f"  {server[:4]:4} {_show(line)}")
    return differing


def _show(line: bytes) -> str:
    text = line.decode("utf-8", "replace").replace("\r\n", "\\r\\n")
    return text if len(text) < 600 else text[:600] + "..."


def corpus(name: str) -> bytes:
    with open(os.path.join(CORPUS, name), "rb") as handle:
        data = handle.read()
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def append(tag: str, mailbox: str, data: bytes, extra: str = "") -> bytes:
    extra = f" {extra}" if extra else ""
    return f"{tag} APPEND {mailbox}{extra} {{{len(data)}}}\r\n".encode() + data


SIMPLE = (b"From: Alice <alice@example.org>\r\nTo: bob@example.org, \"Carl C\" <carl@example.org>\r\n"
          b"Cc: dan@example.org\r\nSubject: Hello world\r\nDate: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
          b"Message-ID: <m1@example.org>\r\nX-Odd: odd value\r\n\r\nHello Bob,\r\nthis is a test body.\r\n")
SECOND = (b"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: Re: Hello world\r\n"
          b"Date: Tue, 8 Feb 1994 10:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
          b"Short reply \xc3\xa9t\xc3\xa9.\r\n")
THIRD = (b"From: carl@example.org\r\nTo: alice@example.org\r\nSubject: =?utf-8?q?caf=C3=A9?= menu\r\n"
         b"Date: Wed, 9 Feb 1994 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
         b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\npreamble\r\n--XX\r\n"
         b"Content-Type: text/plain\r\n\r\npart one\r\n--XX\r\nContent-Type: message/rfc822\r\n\r\n"
         b"From: inner@example.org\r\nSubject: inner\r\n\r\ninner body\r\n--XX--\r\n")


def three(mailbox: str = "T") -> list:
    return [f"c1 CREATE {mailbox}", append("a1", mailbox, SIMPLE, '(\\Seen) "07-Feb-1994 21:52:25 -0800"'),
            append("a2", mailbox, SECOND, "(\\Flagged $Label1)"), append("a3", mailbox, THIRD)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ours", type=int, default=SERVERS["ours"])
    parser.add_argument("--user", default="user7")
    parser.add_argument("scenarios", nargs="*")
    args = parser.parse_args()
    from scenarios import SCENARIOS

    servers = dict(SERVERS, ours=args.ours)
    chosen = args.scenarios or list(SCENARIOS)
    total = 0
    for name in chosen:
        total += run_scenario(name, SCENARIOS[name], servers, args.user)
    print(f"\n{total} steps where cyrusmail differs from both references")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(__file__))
    main()
