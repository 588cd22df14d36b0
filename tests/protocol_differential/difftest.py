#!/usr/bin/env python3
"""Differential protocol runner: the same raw bytes to Dovecot, Cyrus and cyrusmail.

Not collected by pytest (no ``test_`` prefix).  Usage::

    python tests/protocol_differential/difftest.py setup          # fill the POP3 maildrops
    python tests/protocol_differential/difftest.py pop3 [NAME...]
    python tests/protocol_differential/difftest.py lmtp [NAME...]
    python tests/protocol_differential/difftest.py submission [NAME...]
    add -v to print whole replies, -d to print only scenarios that differ.

Each scenario is a list of steps; a step is the raw bytes sent in one write
(several lines in one step = pipelining).  After each step the replies are
read until the server has been quiet for a moment.  Replies are normalised
(POP3: status and response code, and the number of lines of a multi-line
reply; SMTP: each line's code and enhanced code) and printed side by side;
``!!`` marks a step where cyrusmail's normalised reply differs from every
reference server's.

The reference servers are those of /work/shared/bench/README.md; cyrusmail
is expected on the ports given by CYRUSMAIL_* below (a temporary config).
"""

from __future__ import annotations

import base64
import os
import re
import socket
import sys
import threading
import time

HOST = "127.0.0.1"
CYRUS_LMTP = os.environ.get("CYRUS_LMTP", "/srv/reference/cyrus/run/socket/lmtp")
OURS = lambda var, default: ("tcp", HOST, int(os.environ.get(var, default)))

SERVERS = {
    "pop3": [("dovecot", ("tcp", HOST, 10110)), ("cyrus", ("tcp", HOST, 11110)),
             ("cyrusmail", OURS("CYRUSMAIL_POP3", 13110))],
    "lmtp": [("dovecot", ("tcp", HOST, 10024)), ("cyrus", ("unix", CYRUS_LMTP)),
             ("cyrusmail", OURS("CYRUSMAIL_LMTP", 13024))],
    "submission": [("dovecot", ("tcp", HOST, 10587)), ("cyrusmail", OURS("CYRUSMAIL_SUBMISSION", 13587))],
}

QUIET = float(os.environ.get("DIFF_QUIET", "0.35"))
FIRST = float(os.environ.get("DIFF_FIRST", "6.0"))

POP_USER = "user5"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def connect(address):
    if address[0] == "unix":
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(address[1])
    else:
        sock = socket.create_connection(address[1:], timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return sock


def read_quiet(sock, first=FIRST, quiet=QUIET) -> bytes:
    """Everything received until ``quiet`` seconds pass with nothing new."""
    data = b""
    sock.settimeout(first)
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return data
        except OSError as error:
            return data + f"<{type(error).__name__}>".encode()
        if not chunk:
            return data + b"<EOF>"
        data += chunk
        sock.settimeout(quiet)


def expand(steps):
    for step in steps:
        if step == LOGIN:
            yield L(f"USER {POP_USER}")
            yield L("PASS pass")
        else:
            yield step


def run(address, steps):
    """The greeting and each step's replies, raw."""
    out = []
    try:
        sock = connect(address)
    except OSError as error:
        return [f"<connect failed: {error}>".encode()]
    with sock:
        out.append(read_quiet(sock))
        for step in expand(steps):
            if isinstance(step, tuple) and step[0] == "sleep":
                time.sleep(step[1])
                continue
            try:
                sock.sendall(step)
            except OSError as error:
                out.append(f"<send failed: {type(error).__name__}>".encode())
                break
            out.append(read_quiet(sock))
    return out


# -- normalising ------------------------------------------------------------------------------


def norm_pop(raw: bytes) -> str:
    """Status and response code of each reply; a multi-line body as its line count,
    or, if it holds a blank line (a message), as H (the header) and the body lines."""
    parts = []
    lines = raw.split(b"\r\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if line.startswith((b"+OK", b"-ERR")):
            status = line.split(b" ", 1)[0].decode()
            code = re.match(rb"[+-]\w+ (\[[^\]]*\])", line)
            parts.append(status + (" " + code.group(1).decode() if code else ""))
            if status == "+OK" and parts == [status] and b"\r\n.\r\n" in b"\r\n" + b"\r\n".join(lines[i:]):
                body = []
                while i < len(lines) and lines[i] != b".":
                    body.append(lines[i])
                    i += 1
                if i < len(lines):
                    i += 1
                    if b"" in body:
                        blank = body.index(b"")
                        shown = [b.decode(errors="replace") for b in body[blank + 1:]]
                        parts.append("{H|" + "/".join(shown) + "}.")
                    elif any(b.startswith(b"Subject:") for b in body):
                        parts.append("{H-only}.")
                    else:
                        parts.append(f"#{len(body)}.")
                else:
                    i -= len(body)
        elif line.startswith(b"+ ") or line == b"+":
            parts.append("+cont")
        elif line.startswith(b"<"):
            parts.append(line.decode(errors="replace"))
        elif line:
            parts.append("?" + line[:20].decode(errors="replace"))
    return " ".join(parts) or "(nothing)"


def norm_smtp(raw: bytes) -> str:
    parts = []
    for line in raw.split(b"\r\n"):
        if not line:
            continue
        m = re.match(rb"(\d{3})([ -])(\d\.\d{1,3}\.\d{1,3})?", line)
        if m:
            text = m.group(1).decode() + (" " + m.group(3).decode() if m.group(3) else "")
            if m.group(2) == b"-":
                text += "-"
            parts.append(text)
        else:
            parts.append(line[:40].decode(errors="replace"))
    # collapse multi-line replies: 250- 250- 250 -> 250x3
    collapsed = []
    for part in parts:
        if collapsed and collapsed[-1][0].endswith("-") and collapsed[-1][0].rstrip("-").split()[0] == part.rstrip("-").split()[0]:
            collapsed[-1] = (part, collapsed[-1][1] + 1)
        else:
            collapsed.append((part, 1))
    return " | ".join(p if n == 1 else f"{p}(x{n})" for p, n in collapsed) or "(nothing)"


# -- scenarios --------------------------------------------------------------------------------

L = lambda *lines: b"".join(x.encode() + b"\r\n" for x in lines)
LOGIN = ("login",)  # USER and PASS, as two steps

POP3 = {
    "greeting-capa": [L("CAPA")],
    "noop-auth-state": [L("NOOP"), L("STAT"), L("LIST"), L("RETR 1")],
    "user-pass": [L("USER " + POP_USER), L("PASS pass"), L("STAT")],
    "pass-without-user": [L("PASS pass")],
    "user-no-arg": [L("USER"), L("PASS")],
    "user-twice": [L("USER user5"), L("USER user5"), L("PASS pass")],
    "user-bad-then-pass": [L("USER nosuch"), L("PASS pass")],
    "bad-password": [L("USER " + POP_USER), L("PASS wrong"), L("PASS pass")],
    "pass-then-user-again": [LOGIN, L("USER user5"), L("PASS pass"), L("AUTH")],
    "apop": [L("APOP user5 c4c9334bac560ecc979e58001b3e22fb")],
    "quit-auth": [L("QUIT")],
    "quit-transaction": [LOGIN, L("QUIT")],
    "stat-list-uidl": [LOGIN, L("STAT"), L("LIST"), L("UIDL"), L("LIST 1"), L("UIDL 2")],
    "bad-numbers": [LOGIN, L("LIST 0"), L("LIST -1"), L("LIST 99999"), L("LIST 1 2"), L("LIST x"),
                    L("LIST 99999999999999999999"), L("LIST +1"), L("LIST 01")],
    "bad-numbers-retr": [LOGIN, L("RETR 0"), L("RETR"), L("RETR x"), L("RETR 99"), L("RETR 1 2")],
    "bad-numbers-dele": [LOGIN, L("DELE 0"), L("DELE"), L("DELE 99"), L("DELE 1 2")],
    "top-bad": [LOGIN, L("TOP"), L("TOP 1"), L("TOP 1 -1"), L("TOP 1 x"), L("TOP 0 1"), L("TOP 99 1"),
                L("TOP 1 1 1")],
    "dele-twice": [LOGIN, L("DELE 1"), L("DELE 1"), L("RETR 1"), L("LIST 1"), L("UIDL 1"), L("TOP 1 0"),
                   L("STAT"), L("LIST"), L("RSET"), L("STAT"), L("RETR 1")],
    "top": [LOGIN, L("TOP 1 0"), L("TOP 1 1"), L("TOP 1 100"), L("TOP 3 0"), L("TOP 3 5")],
    "retr-dots": [LOGIN, L("RETR 2"), L("TOP 2 2")],
    "retr-all": [LOGIN, L("RETR 1"), L("RETR 3")],
    "noop-trans": [LOGIN, L("NOOP"), L("NOOP x")],
    "stat-args": [LOGIN, L("STAT x"), L("RSET x"), L("QUIT x")],
    "case": [L("user user5"), L("pass pass"), L("stat"), L("uIdL 1")],
    "unknown": [L("FOO"), L("XYZZY bar"), L(""), LOGIN, L("FOO"), L("")],
    "capa-trans": [LOGIN, L("CAPA")],
    "auth-list": [L("AUTH")],
    "auth-unknown": [L("AUTH FOO")],
    "auth-plain-ir": [L("AUTH PLAIN " + b64("\0user5\0pass")), L("STAT")],
    "auth-plain-ir-bad": [L("AUTH PLAIN " + b64("\0user5\0wrong"))],
    "auth-plain-cont": [L("AUTH PLAIN"), L(b64("\0user5\0pass")), L("STAT")],
    "auth-plain-cancel": [L("AUTH PLAIN"), L("*"), L("NOOP")],
    "auth-plain-empty": [L("AUTH PLAIN"), L("="), L("NOOP")],
    "auth-plain-ir-empty": [L("AUTH PLAIN ="), L("NOOP")],
    "auth-plain-badb64": [L("AUTH PLAIN"), L("!!!notbase64")],
    "auth-login": [L("AUTH LOGIN"), L(b64("user5")), L(b64("pass")), L("STAT")],
    "auth-login-ir": [L("AUTH LOGIN " + b64("user5")), L(b64("pass")), L("STAT")],
    "auth-in-trans": [LOGIN, L("AUTH PLAIN " + b64("\0user5\0pass"))],
    "auth-lowercase": [L("auth plain " + b64("\0user5\0pass"))],
    "auth-plain-authzid": [L("AUTH PLAIN " + b64("user6\0user5\0pass"))],
    "stls-not-offered": [L("STLS"), L("CAPA")],
    "stls-trans": [LOGIN, L("STLS")],
    "long-line": [L("NOOP " + "x" * 300), L("USER " + "u" * 300), L("NOOP")],
    "very-long-line": [L("X" * 20000), L("QUIT")],
    "pipelined": [L("CAPA", "USER user5", "PASS pass", "STAT", "LIST", "UIDL 1", "RETR 2", "NOOP", "QUIT")],
    "in-use": [LOGIN, ("open2",)],
    "bare-lf": [b"USER user5\nPASS pass\nSTAT\n"],
    "space-variants": [b"USER  user5\r\n", b"PASS pass \r\n", b"STAT \r\n", b"LIST  1\r\n", b"LIST 1 \r\n"],
    "pass-spaces": [b"USER user5\r\n", b"PASS  pass\r\n"],
    "nul": [b"NO\x00OP\r\n", b"USER us\x00er5\r\n"],
    "8bit": [b"USER \xc3\xa9\r\n", b"PASS \xff\r\n"],
    "rset-retrieved": [LOGIN, L("RETR 1"), L("RSET"), L("LIST 1")],
    "list-after-auth-fail": [L("USER user5"), L("PASS no"), L("STAT")],
    "auth-pipelined-cont": [L("AUTH PLAIN", b64("\0user5\0pass"), "STAT", "QUIT")],
    "auth-long-ir": [L("AUTH PLAIN " + b64("\0user5\0" + "p" * 400)), L("NOOP")],
    "auth-login-pipelined": [L("AUTH LOGIN", b64("user5"), b64("pass"), "STAT")],
    "auth-ir-for-login": [L("AUTH LOGIN " + b64("user5")), L(b64("wrong")), L("USER user5"), L("PASS pass")],
    "auth-then-user": [L("AUTH PLAIN"), L("USER user5"), L("NOOP")],
    "user-then-auth": [L("USER user5"), L("AUTH PLAIN " + b64("\0user5\0pass")), L("STAT")],
    "quit-after-retr-list": [LOGIN, L("RETR 1"), L("QUIT")],
    "top-deleted-and-noop": [LOGIN, L("DELE 3"), L("TOP 3 0"), L("NOOP"), L("LIST 3"), L("UIDL"), L("RSET")],
    "capa-case-args": [L("capa"), L("CAPA x")],
}

LMTP_MSG = "Subject: difftest\r\nFrom: a@example.org\r\n\r\nhello\r\n"
LH = L("LHLO client.example")
MF = L("MAIL FROM:<sender@example.org>")


def rcpt(user, domain="localhost"):
    return L(f"RCPT TO:<{user}@{domain}>")


LMTP = {
    "lhlo": [LH],
    "helo-ehlo-refused": [L("HELO client.example"), L("EHLO client.example"), MF, LH],
    "lhlo-no-arg": [L("LHLO"), L("LHLO ")],
    "mail-before-lhlo": [MF, rcpt("user7"), L("DATA")],
    "simple": [LH, MF, rcpt("user7"), L("DATA"), L(LMTP_MSG.rstrip("\r\n"), ".")],
    "mixed": [LH, MF, rcpt("user7"), rcpt("nosuchuser"), rcpt("user8"), L("DATA"), L("hi", ".")],
    "unknown-only": [LH, MF, rcpt("nosuchuser"), L("DATA"), L("RSET")],
    "no-rcpt-data": [LH, MF, L("DATA"), L("RSET")],
    "data-no-mail": [LH, L("DATA")],
    "rcpt-no-mail": [LH, rcpt("user7")],
    "nested-mail": [LH, MF, MF],
    "mail-params": [LH, L("MAIL FROM:<a@example.org> BODY=8BITMIME SIZE=100"), rcpt("user7"), L("RSET"),
                    L("MAIL FROM:<a@example.org> FOO=BAR"), L("RSET"), L("MAIL FROM:<a@example.org> BODY=BINARYMIME"),
                    L("RSET"), L("MAIL FROM:<a@example.org> SIZE=999999999999"), L("RSET"),
                    L("MAIL FROM:<a@example.org> SMTPUTF8"), L("RSET"), L("MAIL FROM:<a@example.org> BODY=FOO"),
                    L("RSET"), L("MAIL FROM:<a@example.org> SIZE=abc")],
    "mail-syntax": [LH, L("MAIL FROM:"), L("MAIL FROM:a@example.org"), L("MAIL FROM: <a@example.org>"),
                    L("RSET"), L("MAIL TO:<a@example.org>"), L("MAIL"), L("MAIL FROM:<>"), L("RSET"),
                    L("MAIL FROM:<a@b@c>")],
    "rcpt-params": [LH, MF, L("RCPT TO:<user7@localhost> NOTIFY=NEVER"), L("RCPT TO:<user8@localhost> FOO=BAR"),
                    L("RCPT TO:<user8@localhost> ORCPT=rfc822;x@y"), L("RCPT TO:user8@localhost"),
                    L("RCPT TO:<>"), L("RCPT TO:<postmaster>"), L("RCPT TO:<user9>")],
    "rcpt-domain": [LH, MF, rcpt("user7", "example.org"), rcpt("user7", "other.invalid"), rcpt("USER7", "LOCALHOST")],
    "rset": [LH, MF, rcpt("user7"), L("RSET"), L("DATA"), rcpt("user7"), L("RSET x")],
    "vrfy-expn-help": [LH, L("VRFY user7"), L("VRFY"), L("EXPN list"), L("HELP"), L("HELP MAIL")],
    "noop-quit": [LH, L("NOOP"), L("NOOP x"), L("QUIT")],
    "unknown-cmd": [LH, L("FOO"), L("MAIL"), L(""), L("DATAX")],
    "bare-lf-data": [LH, MF, rcpt("user7"), L("DATA"), b"Subject: x\r\n\r\nbare\nlf\r\n.\r\n"],
    "bare-lf-cmd": [b"LHLO x\n", b"NOOP\r\n"],
    "dot-stuff": [LH, MF, rcpt("user7"), L("DATA"), L("Subject: d", "", "..dot", "...", "end", ".")],
    "bdat": [LH, MF, rcpt("user7"), rcpt("user8"), b"BDAT 12\r\nSubject: x\r\n", b"BDAT 6 LAST\r\n\r\nhi\r\n"],
    "bdat-last-0": [LH, MF, rcpt("user7"), b"BDAT 14\r\nSubject: x\r\n\r\n", L("BDAT 0 LAST")],
    "bdat-then-data": [LH, MF, rcpt("user7"), b"BDAT 3\r\nabc", L("DATA")],
    "bdat-no-rcpt": [LH, MF, b"BDAT 3 LAST\r\nabc", L("NOOP")],
    "bdat-bad": [LH, MF, rcpt("user7"), L("BDAT"), L("BDAT x"), L("BDAT 3 FOO"), L("NOOP")],
    "starttls-auth": [LH, L("STARTTLS"), L("AUTH PLAIN " + b64("\0user7\0pass"))],
    "data-pipelined": [LH + MF + rcpt("user7") + rcpt("user8") + L("DATA"), L("hi", ".", "QUIT")],
    "long-line": [LH, L("NOOP " + "x" * 600), L("MAIL FROM:<" + "a" * 600 + "@example.org>"), L("NOOP")],
    "long-data-line": [LH, MF, rcpt("user7"), L("DATA"), L("Subject: x", "", "y" * 1200, ".")],
    "size-param": [LH, L("MAIL FROM:<a@example.org> SIZE=100"), rcpt("user7"), L("DATA"), L("x" * 500, ".")],
    "empty-data": [LH, MF, rcpt("user7"), L("DATA"), L(".")],
    "rcpt-quoted": [LH, MF, L('RCPT TO:<"user7"@localhost>'), L("RCPT TO:<@a.example:user8@localhost>")],
    "mail-null-rcpts": [LH, L("MAIL FROM:<>"), rcpt("user7"), L("DATA"), L("Subject: null", "", "x", ".")],
    "utf8": [LH, L("MAIL FROM:<ü@example.org>"), L("RSET"), L("MAIL FROM:<ü@example.org> SMTPUTF8"),
             L("RCPT TO:<üser7@localhost>")],
    "quota-ish": [LH, L("MAIL FROM:<a@example.org> SIZE=0"), L("RSET")],
    "auth-in-lmtp": [LH, L("AUTH PLAIN")],
}

SUB_EHLO = L("EHLO client.example")
AUTH_OK = L("AUTH PLAIN " + b64("\0user7\0pass"))
SF = L("MAIL FROM:<user7@localhost>")

SUBMISSION = {
    "ehlo": [SUB_EHLO],
    "helo": [L("HELO client.example"), L("AUTH PLAIN " + b64("\0user7\0pass")), SF],
    "ehlo-no-arg": [L("EHLO"), L("HELO")],
    "lhlo-refused": [L("LHLO x")],
    "mail-before-ehlo": [SF],
    "mail-before-auth": [SUB_EHLO, SF, L("RCPT TO:<user8@localhost>"), L("DATA")],
    "auth-plain-ir": [SUB_EHLO, AUTH_OK, L("AUTH PLAIN " + b64("\0user7\0pass"))],
    "auth-plain-bad": [SUB_EHLO, L("AUTH PLAIN " + b64("\0user7\0wrong"))],
    "auth-plain-cont": [SUB_EHLO, L("AUTH PLAIN"), L(b64("\0user7\0pass"))],
    "auth-plain-empty-ir": [SUB_EHLO, L("AUTH PLAIN ="), L("NOOP")],
    "auth-plain-cancel": [SUB_EHLO, L("AUTH PLAIN"), L("*"), L("NOOP")],
    "auth-plain-badb64": [SUB_EHLO, L("AUTH PLAIN"), L("!!!!"), L("NOOP")],
    "auth-plain-ir-badb64": [SUB_EHLO, L("AUTH PLAIN !!!!"), L("NOOP")],
    "auth-login": [SUB_EHLO, L("AUTH LOGIN"), L(b64("user7")), L(b64("pass"))],
    "auth-unknown": [SUB_EHLO, L("AUTH FOO"), L("AUTH"), L("AUTH CRAM-MD5")],
    "auth-before-ehlo": [L("AUTH PLAIN " + b64("\0user7\0pass"))],
    "auth-during-mail": [SUB_EHLO, AUTH_OK, SF, L("AUTH PLAIN " + b64("\0user7\0pass"))],
    "auth-lower": [SUB_EHLO, L("auth plain " + b64("\0user7\0pass"))],
    "simple": [SUB_EHLO, AUTH_OK, SF, L("RCPT TO:<user8@localhost>"), L("DATA"),
               L("Subject: sub", "", "body", ".")],
    "data-no-rcpt": [SUB_EHLO, AUTH_OK, SF, L("DATA"), L("NOOP")],
    "data-no-mail": [SUB_EHLO, AUTH_OK, L("DATA"), L("NOOP")],
    "rcpt-no-mail": [SUB_EHLO, AUTH_OK, L("RCPT TO:<user8@localhost>")],
    "nested-mail": [SUB_EHLO, AUTH_OK, SF, SF],
    "size-over": [SUB_EHLO, AUTH_OK, L("MAIL FROM:<user7@localhost> SIZE=999999999"), L("NOOP")],
    "size-bad": [SUB_EHLO, AUTH_OK, L("MAIL FROM:<user7@localhost> SIZE=abc"), L("MAIL FROM:<user7@localhost> SIZE=")],
    "body-params": [SUB_EHLO, AUTH_OK, L("MAIL FROM:<user7@localhost> BODY=8BITMIME"), L("RSET"),
                    L("MAIL FROM:<user7@localhost> BODY=7BIT"), L("RSET"),
                    L("MAIL FROM:<user7@localhost> BODY=BINARYMIME"), L("RSET"),
                    L("MAIL FROM:<user7@localhost> BODY=FOO"), L("RSET"),
                    L("MAIL FROM:<user7@localhost> SMTPUTF8"), L("RSET"),
                    L("MAIL FROM:<user7@localhost> SMTPUTF8=yes"), L("RSET"),
                    L("MAIL FROM:<user7@localhost> FOO=BAR"), L("RSET"),
                    L("MAIL FROM:<user7@localhost> BODY=8BITMIME BODY=8BITMIME")],
    "dsn-params": [SUB_EHLO, AUTH_OK, L("MAIL FROM:<user7@localhost> RET=HDRS ENVID=abc"),
                   L("RCPT TO:<user8@localhost> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;user8@localhost"),
                   L("RCPT TO:<user8@localhost> NOTIFY=NEVER,SUCCESS"), L("RCPT TO:<user8@localhost> NOTIFY=BOGUS"),
                   L("RSET"), L("MAIL FROM:<user7@localhost> RET=FOO"), L("RSET"),
                   L("MAIL FROM:<user7@localhost> RET=FULL RET=HDRS")],
    "rset": [SUB_EHLO, AUTH_OK, SF, L("RCPT TO:<user8@localhost>"), L("RSET"), L("DATA"), L("RCPT TO:<user8@localhost>"),
             L("RSET x")],
    "rset-keeps-auth": [SUB_EHLO, AUTH_OK, L("RSET"), SF],
    "ehlo-resets-transaction": [SUB_EHLO, AUTH_OK, SF, SUB_EHLO, L("RCPT TO:<user8@localhost>"), SF],
    "bdat-after-data-fail": [SUB_EHLO, AUTH_OK, SF, L("RCPT TO:<user8@localhost>"), b"BDAT 3\r\nabc", L("DATA")],
    "bdat": [SUB_EHLO, AUTH_OK, SF, L("RCPT TO:<user8@localhost>"), b"BDAT 14 LAST\r\nSubject: x\r\n\r\n"],
    "bdat-no-mail": [SUB_EHLO, AUTH_OK, b"BDAT 3 LAST\r\nabc", L("NOOP")],
    "bdat-before-auth": [SUB_EHLO, b"BDAT 3 LAST\r\nabc", L("NOOP")],
    "vrfy-expn-help": [SUB_EHLO, L("VRFY user8"), L("VRFY"), L("EXPN x"), L("HELP"), L("HELP DATA")],
    "vrfy-authed": [SUB_EHLO, AUTH_OK, L("VRFY user8"), L("VRFY <user8@localhost>")],
    "unknown": [SUB_EHLO, L("FOO"), L("FOO bar"), L(""), L("MAILX FROM:<a>"), L("TURN"), L("ETRN x")],
    "unknown-before-ehlo": [L("FOO"), L("NOOP"), L("RSET"), L("QUIT")],
    "long-line": [SUB_EHLO, L("NOOP " + "x" * 600), L("NOOP")],
    "long-line-huge": [SUB_EHLO, L("X" * 5000), L("NOOP")],
    "long-mail": [SUB_EHLO, AUTH_OK, L("MAIL FROM:<" + "a" * 300 + "@localhost>"),
                  L("MAIL FROM:<user7@" + "a" * 300 + ">")],
    "pipelining": [SUB_EHLO + AUTH_OK, SF + L("RCPT TO:<user8@localhost>", "RCPT TO:<nosuch@localhost>", "DATA"),
                   L("Subject: p", "", "x", ".", "QUIT")],
    "pipelining-with-ehlo": [SUB_EHLO + L("NOOP", "NOOP")],
    "rcpt-many": [SUB_EHLO, AUTH_OK, SF] + [L(f"RCPT TO:<user{i % 20 + 1}@localhost>") for i in range(3)],
    "rcpt-unknown-local": [SUB_EHLO, AUTH_OK, SF, L("RCPT TO:<nosuch@localhost>"), L("RCPT TO:<user8>"),
                           L("RCPT TO:<postmaster>"), L("RCPT TO:<>"), L("RCPT TO:user8@localhost")],
    "sender-not-owned": [SUB_EHLO, AUTH_OK, L("MAIL FROM:<user8@localhost>"), L("MAIL FROM:<>")],
    "mail-syntax": [SUB_EHLO, AUTH_OK, L("MAIL FROM:"), L("MAIL FROM:user7@localhost"), L("MAIL FROM: <user7@localhost>"),
                    L("RSET"), L("MAIL"), L("MAIL TO:<user7@localhost>")],
    "starttls": [SUB_EHLO, L("STARTTLS x"), L("STARTTLS")],
    "quit-args": [SUB_EHLO, L("QUIT x"), L("NOOP")],
    "noop-args": [SUB_EHLO, L("NOOP hello world")],
    "bare-lf-cmd": [b"EHLO x\n", b"NOOP\r\n"],
    "bare-lf-data": [SUB_EHLO, AUTH_OK, SF, L("RCPT TO:<user8@localhost>"), L("DATA"), b"Subject: x\r\n\r\nbare\nlf\r\n.\r\n",
                     L("NOOP")],
    "8bit-data": [SUB_EHLO, AUTH_OK, SF, L("RCPT TO:<user8@localhost>"), L("DATA"),
                  "Subject: é\r\n\r\nünïcode\r\n.\r\n".encode()],
    "utf8-addr": [SUB_EHLO, AUTH_OK, L("MAIL FROM:<user7@localhost>"), L("RCPT TO:<ü@localhost>"), L("RSET"),
                  L("MAIL FROM:<user7@localhost> SMTPUTF8"), L("RCPT TO:<ü@localhost>")],
    "empty-auth-line": [SUB_EHLO, L("AUTH PLAIN"), L(""), L("NOOP")],
    "mail-auth-param": [SUB_EHLO, AUTH_OK, L("MAIL FROM:<user7@localhost> AUTH=<>"), L("RSET"),
                        L("MAIL FROM:<user7@localhost> AUTH=user7@localhost"), L("RSET"),
                        L("MAIL FROM:<user7@localhost> AUTH=bad+zz")],
    "dup-params": [SUB_EHLO, AUTH_OK, L("MAIL FROM:<user7@localhost> SIZE=10 SIZE=20"), L("RSET"),
                   L("MAIL FROM:<user7@localhost> size=10 body=8bitmime"), L("RCPT TO:<user8@localhost> notify=never")],
    "pipelined-auth-cont": [SUB_EHLO, L("AUTH PLAIN", b64("\0user7\0pass"), "MAIL FROM:<user7@localhost>")],
    "auth-login-ir-pass": [SUB_EHLO, L("AUTH LOGIN " + b64("user7")), L(b64("pass")), SF],
    "rset-during-data-cmd": [SUB_EHLO, AUTH_OK, SF, L("RCPT TO:<user8@localhost>"), L("RSET"), L("RSET")],
    "ehlo-twice-auth": [SUB_EHLO, AUTH_OK, SUB_EHLO, SF],
    "data-too-big": [SUB_EHLO, AUTH_OK, L("MAIL FROM:<user7@localhost> SIZE=100"), L("RCPT TO:<user8@localhost>"),
                     L("DATA"), L("Subject: x", "", "y" * 200, ".")],
    "quit-during-auth": [SUB_EHLO, L("AUTH LOGIN"), L("QUIT")],
    "helo-twice": [L("HELO a"), L("HELO b"), L("EHLO c")],
    "ehlo-bad-domain": [L("EHLO [1.2.3.4]"), L("EHLO [IPv6:::1]"), L("EHLO -bad-"), L("EHLO a b")],
}

GROUPS = {"pop3": (POP3, norm_pop), "lmtp": (LMTP, norm_smtp), "submission": (SUBMISSION, norm_smtp)}


def run_scenario(group, steps):
    results = {}

    def one(name, address):
        expanded = []
        second = None
        for step in steps:
            if isinstance(step, tuple) and step[0] == "open2":
                second = True
            else:
                expanded.append(step)
        if second:  # hold a session open and try a second login
            sock = connect(address)
            read_quiet(sock)
            for step in expand(expanded):
                sock.sendall(step)
                read_quiet(sock)
            results[name] = run(address, [LOGIN])
            sock.close()
        else:
            results[name] = run(address, expanded)

    threads = [threading.Thread(target=one, args=server) for server in SERVERS[group]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def show(group, name, steps, results, norm, verbose, only_diff):
    servers = [n for n, _ in SERVERS[group]]
    rows = []
    differs = False
    labels = ["<greeting>"] + [repr(s)[2:-1][:60] if isinstance(s, bytes) else str(s) for s in expand(steps)
                               if not (isinstance(s, tuple) and s[0] in ("sleep", "open2"))]
    if any(isinstance(s, tuple) and s[0] == "open2" for s in steps):
        labels = ["<greeting>"] + ["second session: " + repr(x)[2:-1] for x in expand([LOGIN])]
    for index, label in enumerate(labels):
        cells = {}
        for server in servers:
            out = results[server]
            cells[server] = norm(out[index]) if index < len(out) else "(none)"
        ours = cells["cyrusmail"]
        mark = "  "
        if all(ours != cells[s] for s in servers if s != "cyrusmail"):
            mark = "!!"
            differs = True
        rows.append((mark, label, cells, index))
    if only_diff and not differs:
        return
    print(f"=== {group}/{name}")
    for mark, label, cells, index in rows:
        print(f"{mark} {label}")
        for server in servers:
            print(f"     {server:10} {cells[server]}")
            if verbose or mark == "!!":
                raw = results[server][index] if index < len(results[server]) else b""
                for line in raw.split(b"\r\n")[:12]:
                    if line:
                        print(f"         | {line[:150].decode(errors='replace')}")


# -- setup: the same POP3 maildrop everywhere -------------------------------------------------

POP_MESSAGES = [
    "Subject: one\r\nFrom: a@example.org\r\n\r\nline1\r\nline2\r\nline3\r\n",
    "Subject: dots\r\nFrom: a@example.org\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n",
    "Subject: short\r\nFrom: a@example.org\r\n\r\nonly line",
]


def lmtp_deliver(address, user, message):
    body = message if message.endswith("\r\n") else message + "\r\n"
    stuffed = "".join(("." + line if line.startswith(".") else line) for line in body.splitlines(True))
    steps = [LH, MF, rcpt(user), L("DATA"), stuffed.encode() + b".\r\n", L("QUIT")]
    return [norm_smtp(r) for r in run(address, steps)]


def setup():
    for name, address in SERVERS["pop3"]:
        sock = connect(address)
        read_quiet(sock)
        for step in expand([LOGIN]):
            sock.sendall(step)
            read_quiet(sock)
        sock.sendall(L("STAT"))
        stat = read_quiet(sock).split()
        count = int(stat[1]) if stat[:1] == [b"+OK"] else 0
        sock.sendall(b"".join(L(f"DELE {i}") for i in range(1, count + 1)) + L("QUIT"))
        read_quiet(sock)
        sock.close()
    for name, address in SERVERS["lmtp"]:
        for message in POP_MESSAGES:
            print(name, lmtp_deliver(address, POP_USER, message))


def main(argv):
    verbose = "-v" in argv
    only_diff = "-d" in argv
    argv = [a for a in argv if not a.startswith("-")]
    if not argv:
        print(__doc__)
        return 2
    if argv[0] == "setup":
        setup()
        return 0
    group = argv[0]
    scenarios, norm = GROUPS[group]
    names = argv[1:] or list(scenarios)
    for name in names:
        steps = scenarios[name]
        results = run_scenario(group, steps)
        show(group, name, steps, results, norm, verbose, only_diff)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
