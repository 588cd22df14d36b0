"""Fuzzing the IMAP, POP3, submission and LMTP sessions end to end.

Each test drives a real session (a real store in a temporary folder, a
StringTransport, a Clock) with plausible but malformed input chosen by
Hypothesis: real command names with garbage arguments, literals of the
wrong size, huge numbers, NUL and 8-bit bytes, line ends split anywhere,
pipelined bursts, commands in every state, disconnects.  After every step:

* nothing was logged as an error (an unhandled exception in a handler is
  logged by the session, so this is "no traceback");
* the connection is still up, unless the client said LOGOUT/QUIT or the
  server said why (``* BYE``, ``421``);
* what the parser holds unparsed stays under the session's bound, or the
  session has stopped reading;
* each command got exactly one completion (IMAP: one tagged reply per tag,
  in order; POP3: one status line per command; SMTP: one reply per command,
  pipelined or not);
* a refused command changed nothing in the store.

:class:`HugeInputTests` sends the biggest single things a client can
(a 10 MB line, a million-number sequence set, 5,000 nested NOTs, a
10,000-part section, 100,000 keywords, a 4 GiB literal, a 1 MB SASL
response, TOP with a 20-digit count, 100,000 RCPTs, a 100 KB sender) and
checks each is answered at once, in bounded memory.

Example counts are small so that the file runs in well under a minute;
raise ``FUZZ_EXAMPLES`` in the environment to hunt for longer.
"""

from __future__ import annotations

import base64
import itertools
import os
import re
import time
import tracemalloc

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.helpers import add_user
from tests.imap_support import Client, deliver, session_context
from tests.test_pop3_support import Pop3Server, message
from tests.test_smtp_session_support import (
    Conversation,
    lmtp_factory,
    make_server,
    submission_factory,
)

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


class LoggedErrors:
    """Collects every log event that is an error (a Failure or isError)."""

    def __init__(self, test: TestCase) -> None:
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self)
        test.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event: dict) -> None:
        if event.get("log_failure") is not None or event.get("isError"):
            self.events.append(event)

    def take(self) -> list[str]:
        found = []
        for event in self.events:
            failure = event.get("log_failure")
            found.append(failure.getTraceback() if failure is not None else str(event.get("log_format")))
        self.events.clear()
        return found


# -- pieces of input ----------------------------------------------------------------

NASTY_BYTES = st.sampled_from([b"\x00", b"\xff", b"\xc3\xa9", b"\r", b"\x7f", b"\t", b"\x1b", b"\xfe\xff"])
HUGE_NUMBERS = st.sampled_from([
    b"0", b"1", b"2", b"3", b"4294967295", b"4294967296", b"18446744073709551616",
    b"99999999999999999999", b"9" * 40, b"-1", b"00001",
])


def garbage(max_size: int = 12) -> st.SearchStrategy[bytes]:
    """Bytes with no line end in them."""
    return st.binary(max_size=max_size).map(lambda data: data.replace(b"\n", b"").replace(b"\r", b""))


# -- IMAP ------------------------------------------------------------------------------

IMAP_NAMES = [
    b"CAPABILITY", b"NOOP", b"ID", b"LOGIN", b"ENABLE", b"NAMESPACE", b"SELECT", b"EXAMINE",
    b"CREATE", b"DELETE", b"RENAME", b"SUBSCRIBE", b"UNSUBSCRIBE", b"LIST", b"LSUB", b"STATUS",
    b"APPEND", b"SETACL", b"DELETEACL", b"GETACL", b"LISTRIGHTS", b"MYRIGHTS", b"GETQUOTA",
    b"GETQUOTAROOT", b"SETQUOTA", b"CHECK", b"CLOSE", b"UNSELECT", b"EXPUNGE", b"SEARCH", b"FETCH",
    b"STORE", b"COPY", b"MOVE", b"UID FETCH", b"UID STORE", b"UID SEARCH", b"UID COPY",
    b"UID MOVE", b"UID EXPUNGE", b"UID", b"XYZZY", b"fetch", b"Select",
]
IMAP_ATOMS = st.sampled_from([
    b"INBOX", b"inbox", b"Sent", b"Trash", b"Nope", b"INBOX/Sub", b"a/b/c", b"&AOk-", b"&Jjo", b"*", b"%",
    b"1", b"1:*", b"*:1", b"1,2,3", b"2:4294967295", b"$", b"1:", b",", b"::",
    b"FLAGS", b"+FLAGS", b"-FLAGS.SILENT", b"(\\Seen)", b"(\\Recent)", b"(\\Bogus)", b"($Work \\Deleted)",
    b"()", b"(", b")", b"((", b"))", b"[", b"]", b"<", b">", b"NIL", b"nil",
    b"BODY[]", b"BODY.PEEK[HEADER.FIELDS (Subject)]", b"BODY[1.2.3]", b"BODY[0]", b"BODY[1.MIME]",
    b"BODY[]<0.10>", b"BODY[]<4294967295.4294967295>", b"BINARY[1]", b"BINARY.SIZE[1]", b"BODYSTRUCTURE",
    b"ENVELOPE", b"RFC822", b"ALL", b"FAST", b"FULL", b"(FLAGS UID)", b"(UID", b"(CHANGEDSINCE 1)",
    b"(CHANGEDSINCE 1 VANISHED)", b"(UNCHANGEDSINCE 0)", b"(CONDSTORE)", b"(QRESYNC (1 1))",
    b"NOT", b"OR", b"UNSEEN", b"SUBJECT", b"HEADER", b"LARGER", b"BEFORE", b"1-Jan-2020", b"31-Feb-2020",
    b"CHARSET", b"UTF-8", b"KOI8-R", b"RETURN", b"(MIN MAX COUNT)", b"(SAVE)", b"MODSEQ",
    b"(MESSAGES UIDNEXT UNSEEN)", b"(BOGUS)", b"(STORAGE 10)", b"(STORAGE 99999999999999999999)",
    b"(USE (\\Sent))", b"alice", b"bob", b"anyone", b"lrswipkxtea", b"-x", b"+", b'""', b'"', b'"\\"',
    b'"a b"', b'"\\q"', b"\"\x00\"", b'"17-Jul-1996 02:44:25 -0700"', b'"1-Jan-9999 99:99:99 +9999"',
    b"secret", b"(\"name\" \"x\")", b"~{3}",
])


@st.composite
def imap_literal(draw) -> bytes:
    """A non-synchronizing literal, exactly framed (so the client alone
    decides where each command ends), holding anything."""
    content = draw(st.one_of(
        st.binary(max_size=30),
        st.just(b"Subject: x\r\n\r\nbody\r\n"),
        st.just(b"a1 NOOP\r\n"),
    ))
    binary = draw(st.sampled_from([b"", b"", b"~"]))
    return binary + b"{%d+}\r\n" % len(content) + content


def imap_argument() -> st.SearchStrategy[bytes]:
    return st.one_of(IMAP_ATOMS, IMAP_ATOMS, HUGE_NUMBERS, garbage(), NASTY_BYTES, imap_literal(),
                     st.builds(lambda a, b: a + b, IMAP_ATOMS, NASTY_BYTES))


@st.composite
def imap_command(draw, tag: bytes) -> bytes:
    """One whole command line (literals included), ending in CRLF or LF."""
    name = draw(st.sampled_from(IMAP_NAMES))
    arguments = draw(st.lists(imap_argument(), max_size=6))
    separators = [draw(st.sampled_from([b" ", b" ", b" ", b"  ", b""])) for _ in arguments]
    line = tag + b" " + name + b"".join(sep + arg for sep, arg in zip(separators, arguments))
    if re.search(rb"~?\{[0-9]+\+?\}\Z", line):
        line += b" x"  # an unintended literal announcement would swallow what follows
    return line + draw(st.sampled_from([b"\r\n", b"\r\n", b"\n"]))


VALID_IMAP = {
    "selected": [b"EXAMINE INBOX", b"SELECT INBOX", b"FETCH 1:* (FLAGS UID)", b"STORE 1 +FLAGS (\\Seen)",
                 b"SEARCH ALL", b"UID SEARCH 1:*", b"COPY 1 Trash", b"CLOSE", b"UNSELECT", b"EXPUNGE", b"CHECK"],
    "authenticated": [b"SELECT INBOX", b"LIST \"\" *", b"CREATE Fuzz", b"DELETE Fuzz", b"STATUS INBOX (MESSAGES)",
                      b"APPEND INBOX {5+}\r\nHi\r\n\r\n", b"NAMESPACE", b"ENABLE CONDSTORE"],
}


@st.composite
def imap_script(draw) -> tuple[str, list[bytes]]:
    """A starting state and commands with unique tags t0, t1, ..."""
    state = draw(st.sampled_from(["not authenticated", "authenticated", "selected"]))
    commands = []
    for number in range(draw(st.integers(1, 12))):
        tag = b"t%d" % number
        if draw(st.integers(0, 4)) == 0:
            pool = VALID_IMAP["selected"] + VALID_IMAP["authenticated"] + [b"LOGIN alice secret"]
            commands.append(tag + b" " + draw(st.sampled_from(pool)) + b"\r\n")
        else:
            commands.append(draw(imap_command(tag)))
    return state, commands


def split_points(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (taken modulo its length)."""
    if not data:
        return [data]
    offsets = sorted({cut % len(data) for cut in cuts} | {0, len(data)})
    return [data[start:end] for start, end in itertools.pairwise(offsets)]


_TAGGED = re.compile(rb"^(t[0-9]+) (OK|NO|BAD)\b", re.MULTILINE)
_RESPONSE_LINE = re.compile(rb"(\* |\+ ?|t[0-9]+ (OK|NO|BAD) ).*")


class IMAPFuzzTests(TestCase):
    def setUp(self) -> None:
        self.errors = LoggedErrors(self)
        self.context = session_context(self)
        self.users = 0

    def start(self, state: str) -> Client:
        """A session in ``state``; each example gets a user of its own with
        three messages, so that no example inherits another's mailboxes."""
        self.users += 1
        self.user = add_user(self.context, f"fuzz{self.users}")
        for subject in ("one", "two", "three"):
            deliver(self.context, self.user, "INBOX", subject)
        client = Client(self.context, Clock())
        self.addCleanup(self.hang_up, client)
        if state != "not authenticated":
            client.login(self.user)
        if state == "selected":
            assert client.command("s SELECT INBOX")[-1].startswith("s OK")
        client.take()
        return client

    def hang_up(self, client: Client) -> None:
        if client.server.transport is not None and not client.transport.disconnecting:
            client.server.connectionLost(None)

    def store_snapshot(self) -> dict[tuple[str, str], int]:
        """Every mailbox of the example's user and of alice, with its message count."""
        snapshot = {}
        for user in (self.user, "alice"):
            mailboxes = self.context.store.mailboxes(user)
            for listing in mailboxes.list("*"):
                snapshot[user, listing.name] = len(mailboxes.open(listing.name).messages())
        return snapshot

    def check_alive(self, client: Client, output: bytes, what: bytes) -> None:
        self.assertEqual(self.errors.take(), [], f"logged an error after {what[:300]!r}")
        if client.transport.disconnecting:
            self.assertIn(b"* BYE", output, f"dropped without BYE after {what[:300]!r}")
        if client.server.parser.buffered > client.server.MAX_BUFFERED:
            self.assertEqual(client.transport.producerState, "paused", "buffering without pausing")

    def finish_pending(self, client: Client) -> bytes:
        """Let delayed answers (a failed login waits) come."""
        output = b""
        for _ in range(20):
            client.clock.advance(1)
            output += client.take()
        return output

    @FUZZ
    @given(imap_script(), st.lists(st.integers(0, 10_000), max_size=8))
    def test_one_tagged_reply_per_command_and_refusals_change_nothing(self, script, cuts) -> None:
        """Commands sent one at a time, each cut into random pieces."""
        state, commands = script
        client = self.start(state)
        for command in commands:
            before = self.store_snapshot()
            output = b""
            for piece in split_points(command, cuts):
                client.send(piece)
                output += client.take()
                self.check_alive(client, output, command)
            output += self.finish_pending(client)
            if client.transport.disconnecting:
                return
            tag = command.split(b" ", 1)[0]
            replies = _TAGGED.findall(output)
            self.assertEqual([found for found, _ in replies], [tag],
                             f"{command[:300]!r} got {output[-500:]!r}")
            for line in output.split(b"\r\n")[:-1]:
                self.assertRegex(line, _RESPONSE_LINE, f"after {command[:300]!r}")
            if replies[0][1] != b"OK":
                self.assertEqual(self.store_snapshot(), before, f"refused {command[:300]!r} changed the store")

    @FUZZ
    @given(imap_script(), st.lists(st.integers(0, 10_000), max_size=8))
    def test_pipelined_burst(self, script, cuts) -> None:
        """All the commands at once, cut anywhere: still one reply each, in order."""
        state, commands = script
        client = self.start(state)
        burst = b"".join(commands)
        output = b""
        for piece in split_points(burst, cuts):
            client.send(piece)
            output += client.take()
            self.check_alive(client, output, burst)
        output += self.finish_pending(client)
        self.check_alive(client, output, burst)
        if client.transport.disconnecting:
            return
        tags = [command.split(b" ", 1)[0] for command in commands]
        self.assertEqual([found for found, _ in _TAGGED.findall(output)], tags, f"{burst[:600]!r}")

    @FUZZ
    @given(st.sampled_from(["not authenticated", "authenticated", "selected"]),
           st.lists(st.one_of(
               st.sampled_from([b"a AUTHENTICATE PLAIN\r\n", b"a AUTHENTICATE LOGIN\r\n", b"a IDLE\r\n",
                                b"a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n", b"DONE\r\n", b"done\n", b"*\r\n",
                                b"=\r\n", b"AGFsaWNlAHNlY3JldA==\r\n", b"YWxpY2U=\r\n", b"c2VjcmV0\r\n",
                                b"a APPEND INBOX {10}\r\n", b"a LOGIN {5}\r\n", b"alice\r\n", b"{99999999}\r\n",
                                b"a APPEND INBOX {4294967296+}\r\n", b"a STARTTLS\r\n", b"\r\n", b"a LOGOUT\r\n",
                                b"a FETCH 1 BODY[]\r\n", b"a SEARCH TEXT {3}\r\n"]),
               garbage(40), NASTY_BYTES,
               st.builds(lambda size: b"x" * size, st.sampled_from([100, 70_000, 300_000])),
           ), max_size=15),
           st.lists(st.integers(0, 100_000), max_size=6), st.integers(0, 20))
    def test_chaos_in_every_state(self, state, pieces, cuts, hang_up_after) -> None:
        """Line-mode exchanges, literals of the wrong size, over-long lines,
        a disconnect anywhere: never a traceback, never a silent drop."""
        client = self.start(state)
        stream = b"".join(pieces)
        output = b""
        for index, piece in enumerate(split_points(stream, cuts)):
            if client.transport.disconnecting or client.transport.producerState == "paused":
                break
            client.send(piece)
            output += client.take()
            self.check_alive(client, output, stream)
            if index == hang_up_after:
                break
        self.hang_up(client)
        client.settle()
        self.assertEqual(self.errors.take(), [], f"logged an error after {stream[:300]!r}")
        leftovers = list((self.context.store.tmp_dir).iterdir()) if hasattr(self.context.store, "tmp_dir") else []
        self.assertEqual(leftovers, [], "a staged APPEND was left behind")


# -- POP3 ------------------------------------------------------------------------------

POP3_NAMES = [b"USER", b"PASS", b"STAT", b"LIST", b"RETR", b"DELE", b"NOOP", b"RSET", b"TOP", b"UIDL",
              b"CAPA", b"STLS", b"AUTH", b"XTND", b"list", b"Top", b""]
POP3_ARGUMENTS = st.one_of(HUGE_NUMBERS, garbage(), NASTY_BYTES, st.sampled_from([
    b"alice", b"secret", b"PLAIN", b"LOGIN", b"CRAM-MD5", b"=", b"*", b"AGFsaWNlAHNlY3JldA==", b"YWxpY2U=",
    b"c2VjcmV0", b"!!", b"x" * 300, b"1 2", b" ",
]))


@st.composite
def pop3_line(draw) -> bytes:
    """One line: a command with garbage arguments, or (for a SASL exchange) a bare response."""
    if draw(st.integers(0, 5)) == 0:
        return draw(POP3_ARGUMENTS) + b"\r\n"
    name = draw(st.sampled_from(POP3_NAMES))
    arguments = draw(st.lists(POP3_ARGUMENTS, max_size=3))
    return b" ".join([name, *arguments]) + draw(st.sampled_from([b"\r\n", b"\r\n", b"\n"]))


_POP3_STATUS = re.compile(rb"^(\+OK|-ERR|\+ |\+\r)", re.MULTILINE)


class POP3FuzzTests(TestCase):
    def setUp(self) -> None:
        self.errors = LoggedErrors(self)
        self.server = Pop3Server(self)
        self.server.deliver(message(1), message(2), b".starts with a dot\r\n\r\n.\r\n..\r\n")

    def inbox_count(self) -> int:
        return len(self.server.inbox().messages())

    def check_alive(self, conversation, what: bytes) -> None:
        self.assertEqual(self.errors.take(), [], f"logged an error after {what[:300]!r}")
        self.assertFalse(conversation.transport.disconnecting, f"dropped after {what[:300]!r}")
        self.assertLessEqual(conversation.protocol.reader.pending, 64 * 1024 + 12 * 1024)

    @FUZZ
    @given(st.booleans(), st.lists(pop3_line(), min_size=1, max_size=15),
           st.lists(st.integers(0, 10_000), max_size=8), st.booleans())
    def test_one_reply_per_line_and_nothing_changes_before_quit(self, logged_in, lines, cuts, at_once) -> None:
        conversation = self.server.connect()
        self.addCleanup(conversation.close)
        if logged_in:
            conversation.login()
        before = self.inbox_count()
        lines = [line for line in lines if not line.upper().startswith((b"QUIT", b"STLS"))]
        stream = b"".join(lines)
        output = b""
        for piece in split_points(stream, cuts) if at_once else lines:
            output += conversation.send(piece)
            self.check_alive(conversation, stream)
        for _ in range(30):  # a failed login answers after a delay
            self.server.clock.advance(1)
            output += conversation.take()
        self.check_alive(conversation, stream)
        self.assertEqual(len(_POP3_STATUS.findall(output)), stream.count(b"\n"),
                         f"{stream[:600]!r} got {output[-600:]!r}")
        self.assertEqual(self.inbox_count(), before, "the maildrop changed before QUIT")
        conversation.command("QUIT")
        self.assertTrue(conversation.transport.disconnecting)
        self.assertEqual(self.errors.take(), [])


# -- submission and LMTP ---------------------------------------------------------------

SMTP_NAMES = [b"EHLO", b"HELO", b"LHLO", b"MAIL FROM:", b"RCPT TO:", b"RSET", b"NOOP", b"VRFY", b"HELP",
              b"AUTH", b"ehlo", b"Mail From:", b"XCLIENT", b"", b"BDAT"]
SMTP_ARGUMENTS = st.one_of(HUGE_NUMBERS, garbage(), NASTY_BYTES, st.sampled_from([
    b"<alice@example.org>", b"<bob@example.org>", b"<>", b"<", b">", b"<@a,@b:c@example.org>", b"<\"a b\"@x>",
    b"<a@[127.0.0.1]>", b"<a@[IPv6:::1]>", b"<a@[300.1.1.1]>", b"<nobody@example.org>", b"<x@elsewhere.test>",
    b"SIZE=10", b"SIZE=99999999999999999999", b"SIZE=", b"BODY=8BITMIME", b"BODY=BINARYMIME", b"SMTPUTF8",
    b"RET=HDRS", b"ENVID=a+2Bb", b"NOTIFY=NEVER,SUCCESS", b"ORCPT=rfc822;a+2B@b", b"ORCPT=x", b"AUTH=<>",
    b"PLAIN", b"LOGIN", b"AGFsaWNlAHNlY3JldA==", b"=", b"*", b"client.example.org", b"[127.0.0.1]",
    "<é@example.org>".encode(), b"LAST", b"0",
]))


@st.composite
def smtp_line(draw) -> bytes:
    if draw(st.integers(0, 6)) == 0:
        return draw(SMTP_ARGUMENTS) + b"\r\n"
    name = draw(st.sampled_from(SMTP_NAMES))
    arguments = draw(st.lists(SMTP_ARGUMENTS, max_size=3))
    separator = b"" if name.endswith(b":") else b" "
    return name + separator + b" ".join(arguments) + b"\r\n"


def smtp_replies(output: bytes) -> list[bytes]:
    """The final line of each reply."""
    return [line for line in output.split(b"\r\n") if len(line) >= 4 and line[3:4] == b" "]


class SMTPFuzzTests(TestCase):
    def setUp(self) -> None:
        self.errors = LoggedErrors(self)
        self.context, self.clock = make_server(
            self.mktemp(), submission={"enabled": "yes", "listen": "tcp:0"}, lmtp={"enabled": "yes", "listen": "tcp:1:interface=127.0.0.1"})
        self.factories = {"submission": submission_factory(self.context, self.clock),
                          "lmtp": lmtp_factory(self.context, self.clock)}

    def connect(self, service: str):
        conversation = Conversation(self.factories[service])
        self.addCleanup(lambda: None if conversation.transport.disconnecting
                        else conversation.session.connectionLost(None))
        return conversation

    def counts(self) -> tuple[int, int]:
        return tuple(len(self.context.store.mailboxes(user).open("INBOX").messages()) for user in ("alice", "bob"))

    def check_alive(self, conversation, output: bytes, what: bytes) -> None:
        self.assertEqual(self.errors.take(), [], f"logged an error after {what[:300]!r}")
        if conversation.transport.disconnecting:
            # QUIT, a shutdown, or a BDAT whose size cannot be read (the
            # parser cannot find the next command; wire.CommandError.fatal).
            self.assertRegex(output, rb"(^|\n)(221|421|500|501) ", f"dropped without a reply after {what[:300]!r}")
        session = conversation.session
        if session.parser.buffered > 256 * 1024 or len(session._pending) > 1000:
            self.assertEqual(conversation.transport.producerState, "paused", "buffering without pausing")

    @FUZZ
    @given(st.sampled_from(["submission", "lmtp"]), st.booleans(),
           st.lists(smtp_line(), min_size=1, max_size=15), st.lists(st.integers(0, 10_000), max_size=8))
    def test_one_reply_per_command_pipelined(self, service, greeted, lines, cuts) -> None:
        """Commands (no DATA, BDAT or QUIT) pipelined and cut anywhere: one reply each."""
        conversation = self.connect(service)
        if greeted:
            hello = b"LHLO" if service == "lmtp" else b"EHLO"
            conversation.send(hello + b" client.example.org\r\n")
            if service == "submission":
                conversation.send(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")
        conversation.transport.clear()
        before = self.counts()
        lines = [line for line in lines if not line.upper().startswith((b"QUIT", b"DATA", b"BDAT", b"STARTTLS"))]
        stream = b"".join(lines)
        output = b""
        for piece in split_points(stream, cuts):
            conversation.session.dataReceived(piece)
            output += conversation.transport.value()
            conversation.transport.clear()
            self.check_alive(conversation, output, stream)
        for _ in range(30):  # a failed AUTH answers after a delay
            self.clock.advance(1)
        output += conversation.transport.value()
        self.check_alive(conversation, output, stream)
        if conversation.transport.disconnecting:
            return
        self.assertEqual(len(smtp_replies(output)), stream.count(b"\r\n"), f"{stream[:600]!r} got {output[-600:]!r}")
        self.assertEqual(self.counts(), before)

    @FUZZ
    @given(st.sampled_from(["submission", "lmtp"]),
           st.lists(st.one_of(
               smtp_line(),
               st.sampled_from([b"DATA\r\n", b"BDAT 5\r\nhello", b"BDAT 3 LAST\r\nabc", b"BDAT 99999999999999999999\r\n",
                                b"BDAT 0 LAST\r\n", b"Subject: x\r\n\r\nbody\r\n.\r\n", b".\r\n", b"\r\n.\r\n",
                                b"bare\nLF\r\n", b"bare\rCR\r\n", b"..dot\r\n", b"AUTH LOGIN\r\n", b"AUTH PLAIN\r\n",
                                b"*\r\n", b"YWxpY2U=\r\n", b"STARTTLS\r\n", b"EHLO x\r\n", b"LHLO x\r\n",
                                b"MAIL FROM:<alice@example.org>\r\n", b"RCPT TO:<alice@example.org>\r\n",
                                b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", b"QUIT\r\n"]),
               st.builds(lambda size: b"y" * size, st.sampled_from([10, 1200, 70_000, 300_000])),
           ), max_size=15),
           st.lists(st.integers(0, 400_000), max_size=6), st.integers(0, 20))
    def test_chaos(self, service, pieces, cuts, hang_up_after) -> None:
        """DATA, BDAT, AUTH and STARTTLS mixed with garbage, a disconnect
        anywhere: never a traceback, never a silent drop, nothing staged left."""
        conversation = self.connect(service)
        stream = b"".join(pieces)
        output = b""
        for index, piece in enumerate(split_points(stream, cuts)):
            if conversation.transport.disconnecting or conversation.transport.producerState == "paused":
                break
            conversation.session.dataReceived(piece)
            output += conversation.transport.value()
            conversation.transport.clear()
            self.check_alive(conversation, output, stream)
            if index == hang_up_after:
                break
        if not conversation.transport.disconnecting:
            conversation.session.connectionLost(None)
        for _ in range(30):
            self.clock.advance(1)
        self.assertEqual(self.errors.take(), [], f"logged an error after {stream[:300]!r}")
        self.assertEqual(list(self.context.store.tmp_dir.iterdir()), [], "a staged message was left behind")


# -- targeted: the biggest things a client can send in one go --------------------------


class HugeInputTests(TestCase):
    """Each answers at once with an error, holding no more than a few
    times the input in memory, and the session goes on."""

    def setUp(self) -> None:
        self.errors = LoggedErrors(self)

    def measure(self, send):
        tracemalloc.start()
        started = time.monotonic()
        try:
            output = send()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        self.assertLess(time.monotonic() - started, 60)  # a hang, not a speed, check
        self.assertEqual(self.errors.take(), [])
        return output, peak

    def imap(self, selected: bool = True) -> Client:
        context = session_context(self)
        deliver(context, "alice", "INBOX")
        client = Client(context, Clock())
        self.addCleanup(lambda: None if client.transport.disconnecting else client.server.connectionLost(None))
        client.login()
        if selected:
            client.command("s SELECT INBOX")
        return client

    def test_imap(self) -> None:
        client = self.imap()
        cases = [
            (b"a1 NOOP " + b"x" * 10_000_000 + b"\r\n", b"a1 BAD [TOOBIG]"),
            (b"a2 FETCH " + b",".join(b"%d" % n for n in range(1, 1_000_001)) + b" FLAGS\r\n", b"a2 BAD [TOOBIG]"),
            (b"a3 SEARCH " + b"NOT " * 5000 + b"ALL\r\n", b"a3 BAD [LIMIT]"),
            (b"a4 FETCH 1 BODY[" + b".".join([b"2"] * 10_000) + b"]\r\n", b"a4 OK"),
            (b"a5 STORE 1 +FLAGS (" + b" ".join(b"k%d" % n for n in range(100_000)) + b")\r\n", b"a5 BAD [TOOBIG]"),
            (b"a6 APPEND INBOX {4294967296}\r\n", b"a6 NO [TOOBIG]"),
            (b"a7 SEARCH " + b" ".join(b"SUBJECT w%d" % n for n in range(1000)) + b"\r\n", b"a7 OK"),
            (b"a9 SEARCH " + b" ".join(b"SUBJECT w%d" % n for n in range(1001)) + b"\r\n", b"a9 BAD [LIMIT]"),
            (b"a8 LIST \"\" " + b"*a" * 5000 + b"\r\n", b"a8 OK"),
        ]
        for data, answer in cases:
            output, peak = self.measure(lambda data=data: (client.send(data), client.take())[1])
            self.assertIn(b"\r\n" + answer, b"\r\n" + output, data[:60])
            self.assertLess(peak, 4 * len(data) + 16_000_000, data[:60])
            self.assertFalse(client.transport.disconnecting)
            self.assertLessEqual(client.server.parser.buffered, client.server.MAX_BUFFERED)
        self.assertEqual(client.command("z NOOP"), ["z OK NOOP completed"])

    def test_imap_authenticate_with_a_megabyte(self) -> None:
        client = Client(session_context(self), Clock())
        self.addCleanup(client.server.connectionLost, None)
        response = base64.b64encode(b"\0alice\0" + b"x" * 750_000)
        output, _ = self.measure(lambda: (client.send(b"a1 AUTHENTICATE PLAIN\r\n" + response + b"\r\n"),
                                          client.take())[1])
        self.assertTrue(output.endswith(b"a1 BAD Authentication line too long\r\n"), output)
        output, _ = self.measure(lambda: (client.send(b"a2 AUTHENTICATE PLAIN " + response + b"\r\n"),
                                          client.take())[1])
        self.assertEqual(output, b"a2 BAD [TOOBIG] command line too long\r\n")
        self.assertEqual(client.command("z NOOP"), ["z OK NOOP completed"])

    def test_pop3_top_with_a_huge_count(self) -> None:
        server = Pop3Server(self)
        server.deliver(message(1))
        conversation = server.connect()
        conversation.login()
        output, _ = self.measure(lambda: conversation.command("TOP 1 99999999999999999999"))
        self.assertEqual(output, b"-ERR TOP: invalid line count\r\n")
        output, _ = self.measure(lambda: conversation.send(b"NOOP " + b"x" * 10_000_000 + b"\r\n"))
        self.assertEqual(output, b"-ERR Line too long (at most 255 octets)\r\n")
        self.assertEqual(conversation.command("NOOP"), b"+OK\r\n")

    def test_smtp_hundred_thousand_recipients_and_a_long_sender(self) -> None:
        context, clock = make_server(self.mktemp(), submission={"enabled": "yes", "listen": "tcp:0"})
        conversation = Conversation(submission_factory(context, clock))
        self.addCleanup(conversation.session.connectionLost, None)
        conversation.send(b"EHLO client.example.org\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")
        output, _ = self.measure(lambda: conversation.send(b"MAIL FROM:<" + b"a" * 100_000 + b"@example.org>\r\n"))
        self.assertEqual([code for code, _, _ in output], [500])
        conversation.send(b"MAIL FROM:<alice@example.org>\r\n")
        started = time.monotonic()
        replies = conversation.send(b"RCPT TO:<bob@example.org>\r\n" * 100_000)
        self.assertLess(time.monotonic() - started, 90)  # a hang, not a speed, check
        self.assertEqual(len(replies), 100_000)
        self.assertEqual({code for code, _, _ in replies[1000:]}, {452})
        self.assertEqual(self.errors.take(), [])
        self.assertEqual([code for code, _, _ in conversation.send(b"RSET\r\n")], [250])


class ClosingSMTPTests(TestCase):
    """A session that hangs up holds nothing more of what the client sent (Hypothesis found
    ``BDAT 99999999999999999999`` plus 300 KB in one write: the 421 closed the session and
    the 300 KB stayed buffered with reading not paused)."""

    def test_input_after_a_fatal_bdat_is_dropped(self):
        context, clock = make_server(self.mktemp(), submission={"enabled": "yes", "listen": "tcp:0"})
        conversation = Conversation(submission_factory(context, clock))
        self.addCleanup(lambda: None if conversation.transport.disconnecting
                        else conversation.session.connectionLost(None))
        conversation.session.dataReceived(b"BDAT 99999999999999999999\r\n" + b"y" * 300_000)
        self.assertIn(b"421 ", conversation.transport.value())
        self.assertTrue(conversation.transport.disconnecting)
        self.assertEqual(conversation.session.parser.buffered, 0)
        conversation.session.dataReceived(b"z" * 300_000)
        self.assertEqual(conversation.session.parser.buffered, 0)
