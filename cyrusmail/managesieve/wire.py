"""The ManageSieve wire (RFC 5804 section 4), sans-IO: bytes in, lines of arguments out; responses to bytes.

A client line is a command name followed by arguments, each a quoted
string (``"..."`` with ``\\"`` and ``\\\\``, at most 1024 octets), a
literal (``{n+}`` CRLF and n octets; ``{n}`` is taken the same way,
since ManageSieve has no continuation to wait for), a number, or a bare
word (some clients send ``AUTHENTICATE PLAIN dGVzdA==`` unquoted; it is
read as a string).  A SASL response line is one string.

:class:`LineParser` hands out :class:`Line` objects (the arguments as
:class:`Atom`, ``bytes`` for strings, ``int`` for numbers) or
:class:`BadLine` with a reason; either way the rest of the line is read
and dropped, so the connection stays in step.  Bounds: a line's text
outside literals :data:`MAX_LINE` octets, one literal ``max_literal``
octets (longer ones are read and thrown away, the line answered with
``too_big`` set), all literals of one line together twice that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LINE = 8 * 1024
MAX_QUOTED = 1024
MAX_ARGUMENTS = 16
_LITERAL = re.compile(rb"\{([0-9]{1,10})(\+?)\}\r?$")
_ATOM_CHARS = re.compile(rb'[^\s"{}()\\]+')


@dataclass(frozen=True)
class Atom:
    text: str  # a bare word as sent (command names are compared upper-cased)


@dataclass(frozen=True)
class Line:
    arguments: tuple  # Atom, bytes (a string) or int


@dataclass(frozen=True)
class BadLine:
    reason: str
    too_big: bool = False  # a literal over the limit


class _LineError(Exception):
    pass


class LineParser:
    """Splits the client's bytes into lines of arguments (see the module docstring)."""

    def __init__(self, max_literal: int) -> None:
        self.max_literal = max_literal
        self._buffer = bytearray()
        self._arguments: list = []
        self._text = 0  # octets of this line outside literals so far
        self._literals = 0  # octets of this line's literals so far
        self._need = 0  # octets of a literal still to come
        self._discard = 0  # octets of a refused literal still to drop
        self._failure: BadLine | None = None
        self._skipping_line = False  # an over-long line: drop up to its LF

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Line | BadLine]:
        self._buffer += data
        out: list[Line | BadLine] = []
        while True:
            item = self._step()
            if item is None:
                return out
            if item is not True:
                out.append(item)

    def _step(self):
        """Consume what can be consumed: a finished line, True for progress, None for "need more"."""
        buffer = self._buffer
        if self._discard:
            taken = min(self._discard, len(buffer))
            del buffer[:taken]
            self._discard -= taken
            return True if taken else None
        if self._need:
            if len(buffer) < self._need:
                return None
            self._arguments.append(bytes(buffer[:self._need]))
            del buffer[:self._need]
            self._need = 0
            return True
        newline = buffer.find(b"\n")
        if self._skipping_line:
            if newline < 0:
                buffer.clear()
                return None
            del buffer[:newline + 1]
            self._skipping_line = False
            return self._finish()
        if newline < 0:
            if len(buffer) + self._text > MAX_LINE:
                self._fail(BadLine(f"Line too long (at most {MAX_LINE} octets)"))
                self._skipping_line = True
                buffer.clear()
            return None
        raw = bytes(buffer[:newline + 1])
        del buffer[:newline + 1]
        self._text += len(raw)
        if self._text > MAX_LINE:
            self._fail(BadLine(f"Line too long (at most {MAX_LINE} octets)"))
            return self._finish()
        content = raw[:-1].rstrip(b"\r") if raw.endswith(b"\n") else raw
        literal = _LITERAL.search(content)
        if literal is not None:
            content = content[:literal.start()]
        if self._failure is None:
            try:
                self._arguments.extend(_words(content))
            except _LineError as error:
                self._fail(BadLine(str(error)))
        if literal is None:
            return self._finish()
        size = int(literal.group(1))
        self._literals += size
        if self._failure is not None:
            self._discard = size
        elif size > self.max_literal or self._literals > 2 * self.max_literal:
            self._fail(BadLine(f"Literal too big (at most {self.max_literal} octets)", too_big=True))
            self._discard = size
        else:
            self._need = size
            if size == 0:
                self._arguments.append(b"")
        return True

    def _fail(self, failure: BadLine) -> None:
        if self._failure is None:
            self._failure = failure

    def _finish(self) -> Line | BadLine:
        arguments, failure = self._arguments, self._failure
        self._arguments, self._failure, self._text, self._literals = [], None, 0, 0
        if failure is not None:
            return failure
        if len(arguments) > MAX_ARGUMENTS:
            return BadLine("Too many arguments")
        return Line(tuple(arguments))


def _words(content: bytes) -> list:
    """The arguments in one piece of line text (between literals)."""
    words: list = []
    pos, length = 0, len(content)
    while pos < length:
        char = content[pos:pos + 1]
        if char in (b" ", b"\t"):
            pos += 1
            continue
        if char == b'"':
            value = bytearray()
            pos += 1
            while True:
                if pos >= length:
                    raise _LineError("Quoted string not closed")
                char = content[pos:pos + 1]
                if char == b'"':
                    pos += 1
                    break
                if char == b"\\":
                    pos += 1
                    char = content[pos:pos + 1]
                    if char not in (b'"', b"\\"):
                        raise _LineError("Only \\\" and \\\\ may be escaped in a quoted string")
                elif char in (b"\r", b"\n", b"\x00"):
                    raise _LineError("CR, LF and NUL may not be in a quoted string")
                value += char
                pos += 1
                if len(value) > MAX_QUOTED:
                    raise _LineError(f"Quoted string longer than {MAX_QUOTED} octets; send a literal")
            words.append(bytes(value))
            continue
        match = _ATOM_CHARS.match(content, pos)
        if match is None:
            raise _LineError(f"Unexpected {char.decode('latin-1')!r}")
        word = match.group()
        pos = match.end()
        if word.isdigit():
            if len(word) > 10 or int(word) > 2**32 - 1:
                raise _LineError("Number too large")
            words.append(int(word))
        else:
            words.append(Atom(word.decode("utf-8", "replace")))
    return words


# -- responses --------------------------------------------------------------------------


def string(value: str | bytes) -> bytes:
    """A string as the server sends it: quoted when it can be, else a literal ``{n}``."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    if len(data) <= MAX_QUOTED and not any(octet in data for octet in b"\r\n\x00"):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data


def response(kind: str, text: str | None = None, code: str | None = None) -> bytes:
    """``OK``, ``NO`` or ``BYE``, with an optional response code and human text."""
    out = kind.encode("ascii")
    if code:
        out += b" (" + code.encode("utf-8") + b")"
    if text:
        out += b" " + string(text)
    return out + b"\r\n"
