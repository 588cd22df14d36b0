"""POP3 on the wire, sans-IO: bytes in, commands out; replies and message octets out.

Nothing here touches a socket, a store or a reactor. The session feeds
received bytes to a :class:`LineReader`, parses each line with
:func:`parse_command`, and sends what :func:`ok`, :func:`err`,
:func:`multiline` and :class:`DotStuffer` make.

Limits (RFC 2449 section 4): a command line is at most 255 octets with its
CRLF; an AUTH line and a SASL continuation line may be longer (up to
:data:`AUTH_LINE_LIMIT`), because a PLAIN response carrying a long password
does not fit in 255. Anything longer is discarded up to its line feed and
reported once, as :data:`LINE_TOO_LONG`, so that the session answers it with
one ``-ERR`` and goes on.

Message octets: a multi-line response is the message as stored (CRLF kept),
with every line that starts with ``.`` stuffed with one more ``.`` and then
``.CRLF``; a message not ending in a line feed gets CRLF before the
terminating line. The sizes STAT and LIST report are the stored octets,
i.e. exactly what the client holds once it has removed the stuffing
(RFC 1939 section 11): our stored messages already have CRLF line ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: RFC 2449 section 4: a command line, CRLF included.
COMMAND_LINE_LIMIT: Final = 255
#: An AUTH command or SASL continuation line, CRLF included.
AUTH_LINE_LIMIT: Final = 12 * 1024
#: A message number or TOP line count is at most this many digits.
MAX_NUMBER_DIGITS: Final = 10

CRLF: Final = b"\r\n"
TERMINATOR: Final = b".\r\n"


class _LineTooLong:
    """The marker :meth:`LineReader.next_line` gives for a discarded long line."""

    def __repr__(self) -> str:
        return "LINE_TOO_LONG"


LINE_TOO_LONG: Final = _LineTooLong()


class LineReader:
    """Splits received bytes into lines (LF or CRLF ended), bounded by ``limit``.

    Bytes are held until the session asks for the next line, so that a
    pipelining client's commands wait while a reply is being sent. A line
    longer than ``limit`` (line end included) is thrown away as it arrives
    and reported once, when its line feed comes.
    """

    def __init__(self, limit: int = AUTH_LINE_LIMIT):
        self.limit = limit
        self._buffer = bytearray()
        self._discarding = False

    @property
    def pending(self) -> int:
        """Octets received and not yet taken as lines."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def clear(self) -> None:
        """Forget everything received so far (STLS: pipelined plaintext is void)."""
        self._buffer.clear()
        self._discarding = False

    def next_line(self) -> bytes | _LineTooLong | None:
        """The next line without its line end, LINE_TOO_LONG, or None for "need more"."""
        end = self._buffer.find(b"\n")
        if self._discarding:
            if end < 0:
                self._buffer.clear()
                return None
            del self._buffer[: end + 1]
            self._discarding = False
            return LINE_TOO_LONG
        if end < 0:
            if len(self._buffer) > self.limit:
                self._buffer.clear()
                self._discarding = True
            return None
        if end + 1 > self.limit:
            del self._buffer[: end + 1]
            return LINE_TOO_LONG
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return line[:-1] if line.endswith(b"\r") else line


# -- commands ------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """A parsed command: its upper-case name and its checked arguments.

    Message numbers and line counts are ints; other arguments are text.
    """

    name: str
    args: tuple = ()


@dataclass(frozen=True)
class BadCommand:
    """A line that is not a command we can run, with the reason to give."""

    reason: str


# Argument kinds.
NUMBER = "number"  # a message number: digits, at least 1
COUNT = "count"  # a line count: digits, may be 0
WORD = "word"  # one space-free argument
REST = "rest"  # the rest of the line, spaces and all (PASS)


@dataclass(frozen=True)
class Syntax:
    """The arguments a command takes: the kinds, and how many are required."""

    kinds: tuple[str, ...] = ()
    required: int = 0


#: Every command we know, with its arguments (RFC 1939, 2449, 2595, 5034).
SYNTAX: Final[dict[str, Syntax]] = {
    "USER": Syntax((WORD,), 1),
    "PASS": Syntax((REST,), 1),
    "STAT": Syntax(),
    "LIST": Syntax((NUMBER,), 0),
    "RETR": Syntax((NUMBER,), 1),
    "DELE": Syntax((NUMBER,), 1),
    "NOOP": Syntax(),
    "RSET": Syntax(),
    "QUIT": Syntax(),
    "TOP": Syntax((NUMBER, COUNT), 2),
    "UIDL": Syntax((NUMBER,), 0),
    "CAPA": Syntax(),
    "STLS": Syntax(),
    "AUTH": Syntax((WORD, WORD), 0),
}


def _number(text: str, minimum: int) -> int | None:
    if not text.isascii() or not text.isdigit() or len(text) > MAX_NUMBER_DIGITS:
        return None
    value = int(text)
    return value if value >= minimum else None


def parse_command(line: bytes) -> Command | BadCommand:
    """Turn one command line (without its line end) into a Command or a BadCommand."""
    keyword, _, rest = line.partition(b" ")
    try:
        name = keyword.decode("ascii").upper()
    except UnicodeDecodeError:
        return BadCommand("Unknown command")
    if not name:
        return BadCommand("Empty command line")
    if len(line) + 2 > COMMAND_LINE_LIMIT and name != "AUTH":
        return BadCommand(f"Line too long (at most {COMMAND_LINE_LIMIT} octets)")
    syntax = SYNTAX.get(name)
    if syntax is None:
        return BadCommand(f"Unknown command {name[:20]}" if name.isprintable() else "Unknown command")
    text = rest.decode("utf-8", "replace")
    if syntax.kinds == (REST,):
        args_text = [text] if text else []
    else:
        args_text = text.split()
    if len(args_text) < syntax.required:
        return BadCommand(f"{name}: missing argument")
    if len(args_text) > len(syntax.kinds):
        return BadCommand(f"{name}: too many arguments")
    args: list = []
    for kind, value in zip(syntax.kinds, args_text):
        if kind == NUMBER:
            number = _number(value, 1)
            if number is None:
                return BadCommand(f"{name}: invalid message number")
            args.append(number)
        elif kind == COUNT:
            count = _number(value, 0)
            if count is None:
                return BadCommand(f"{name}: invalid line count")
            args.append(count)
        else:
            args.append(value)
    return Command(name, tuple(args))


# -- replies -------------------------------------------------------------------

# RFC 2449 / 3206 / 5034 response codes.
IN_USE: Final = "IN-USE"
LOGIN_DELAY: Final = "LOGIN-DELAY"
SYS_TEMP: Final = "SYS/TEMP"
SYS_PERM: Final = "SYS/PERM"
AUTH: Final = "AUTH"


def _clean(text: str) -> bytes:
    """One reply line's text: no line breaks, bounded (RFC 2449: 512 octets a line)."""
    return text.replace("\r", " ").replace("\n", " ")[:500].encode("utf-8", "replace")


def ok(text: str = "") -> bytes:
    return b"+OK " + _clean(text) + CRLF if text else b"+OK" + CRLF


def err(text: str, code: str | None = None) -> bytes:
    prefix = f"[{code}] " if code else ""
    return b"-ERR " + _clean(prefix + text) + CRLF


def challenge(data: bytes) -> bytes:
    """A SASL continuation: ``+ `` and the base64 challenge (RFC 5034)."""
    return b"+ " + data + CRLF


def multiline(first: str, lines: list[bytes] | list[str]) -> bytes:
    """A whole multi-line reply: ``+OK first``, the stuffed lines, ``.``."""
    body = [line.encode("ascii") if isinstance(line, str) else line for line in lines]
    stuffed = [b"." + line if line.startswith(b".") else line for line in body]
    return ok(first) + b"".join(line + CRLF for line in stuffed) + TERMINATOR


# -- message octets ----------------------------------------------------------


def stuff(chunk: bytes, at_line_start: bool) -> tuple[bytes, bool]:
    """Dot-stuff one chunk of a message; the output and whether the next byte starts a line.

    Pure and incremental: feed a message in chunks split anywhere, passing the
    flag returned for the previous chunk (True before the first), and the
    concatenated output equals the stuffing of the whole message. A line
    starts after every LF (so a stored bare LF line end is treated as a line
    end too, as clients reading LF-ended lines will).
    """
    if not chunk:
        return b"", at_line_start
    out = chunk.replace(b"\n.", b"\n..")
    if at_line_start and chunk[:1] == b".":
        out = b"." + out
    return out, chunk.endswith(b"\n")


def terminator(at_line_start: bool) -> bytes:
    """The end of a multi-line reply after a message (CRLF first if it did not end a line)."""
    return TERMINATOR if at_line_start else CRLF + TERMINATOR


class DotStuffer:
    """:func:`stuff` with its state held, for a producer sending a message in chunks."""

    def __init__(self) -> None:
        self.at_line_start = True

    def feed(self, chunk: bytes) -> bytes:
        out, self.at_line_start = stuff(chunk, self.at_line_start)
        return out

    def finish(self) -> bytes:
        return terminator(self.at_line_start)


class TopFilter:
    """Passes a message's header, the blank line, then ``lines`` body lines (TOP).

    Fed the message in chunks; :attr:`done` turns True once nothing more is
    wanted, so the reader can stop reading the file.
    """

    def __init__(self, lines: int):
        self.remaining = lines
        self.in_header = True
        self.line_empty = True  # nothing but CR seen since the last LF
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        if self.done:
            return b""
        position = 0
        while position < len(chunk):
            if not self.in_header and self.remaining == 0:
                self.done = True
                return chunk[:position]
            end = chunk.find(b"\n", position)
            if end < 0:
                if chunk[position:].strip(b"\r"):
                    self.line_empty = False
                return chunk
            if self.in_header:
                if self.line_empty and not chunk[position:end].strip(b"\r"):
                    self.in_header = False
            else:
                self.remaining -= 1
            self.line_empty = True
            position = end + 1
        if not self.in_header and self.remaining == 0:
            self.done = True
        return chunk
