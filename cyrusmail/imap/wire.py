"""Sans-IO IMAP command parser: bytes in, typed commands and events out.

:class:`CommandParser` knows nothing of sockets.  The protocol feeds it
whatever arrived and acts on the events it returns, in order:

* a :class:`~cyrusmail.imap.commands.Command` (frozen dataclass);
* :class:`ContinuationNeeded`: the client announced an acceptable
  synchronizing literal and waits for ``+ ...``;
* :class:`ParseError`: send ``<tag> BAD``/``NO [code] message`` (``*`` if
  ``tag`` is None).  The parser has already resynchronised: the rest of the
  bad command line, and any non-synchronizing literal in it, is skipped; a
  refused synchronizing literal is never waited for;
* :class:`Line`: one raw line, in line mode (AUTHENTICATE responses,
  IDLE's ``DONE``).

Framing.  A command is one or more line fragments separated by literals:
a fragment ending in ``{n}`` / ``{n+}`` (or ``~{n}`` / ``~{n+}``, RFC 3516
literal8) is followed by ``n`` bytes of literal and then the next fragment.
Once the last fragment (one not ending in a literal) has arrived, the whole
command is parsed by a recursive-descent reader over the joined fragments,
which takes literal values from the side list in order; so a literal may
stand wherever the grammar allows a string (``a LOGIN {5}`` CRLF ``alice
{6}`` CRLF ``secret`` CRLF).

Bounds, all constructor parameters:

* ``max_line_length`` (64 KiB): the command text, all fragments, without
  literals; over it: ``BAD [TOOBIG]``, detected as soon as the buffer
  overflows, not at the end of the line;
* ``max_literal_size`` (64 KiB): a literal that is kept in memory (every
  literal except APPEND message data); ``max_command_size`` (1 MiB) caps
  text plus in-memory literals of one command;
* ``max_message_size``: an APPEND message literal, which is written chunk
  by chunk into a sink from ``sink_factory`` (called with ``binary=True``
  for a ``literal8``; default
  :class:`SpooledLiteral`: memory, then a temporary file) and never held
  as one growing bytes object; over it: ``NO [TOOBIG]``;
* ``max_depth`` (100): parenthesis / NOT / OR nesting; over it: BAD;
* ``max_search_keys`` (1000): the keys of one SEARCH, each NOT, OR and
  parenthesised list counting one; over it: ``BAD [LIMIT]`` (each key may
  cost a scan of every message, so their number bounds a search's work);
* with ``literal_minus`` (RFC 7888 LITERAL-), a non-synchronizing literal
  over 4096 bytes is ``BAD [TOOBIG]`` (the bytes are skipped).

UTF-8.  Once the session sets :attr:`CommandParser.utf8` (RFC 6855
UTF8=ACCEPT enabled), mailbox names and patterns are read as UTF-8 and
handed on in modified UTF-7 (so ``&`` is an ordinary character), and APPEND
takes ``UTF8 (literal8)`` data; without it ``UTF8`` is BAD.

Pausing.  With ``pause_after_commands`` the parser stops after every
command, so that a session parses no further ahead than it executes (an
APPEND literal is then announced only once the commands before it have
run, and the sink factory sees the session's current state).  After
emitting AUTHENTICATE, IDLE, STARTTLS or COMPRESS the parser always stops
and keeps later input buffered (:attr:`CommandParser.paused`), so that a
pipelined ``DONE`` or SASL response is not mistaken for a command,
plaintext injected before TLS can be thrown away (:meth:`discard_buffered`)
and what follows COMPRESS, already compressed, can be taken out to be
inflated (:meth:`take_buffered`).
The session then calls :meth:`read_lines` (each following line comes out as
one :class:`Line`, or a ``TOOBIG`` :class:`ParseError` if over the line
limit, the parser pausing again after each) or
:meth:`read_commands`.  While paused the protocol should stop reading from
the transport (``pauseProducing``); :attr:`buffered` says how much is held.

Deliberately liberal, because real clients do it: a bare LF ends a line
like CRLF; empty lines between commands are ignored; quoted strings may
hold 8-bit bytes (UTF8=ACCEPT clients send them); the day of an APPEND
date-time may be one digit without the leading space; ``ID ()`` is taken as
``ID NIL``.  Everything else is RFC 3501 section 9: exactly one SP between
arguments, atom-specials excluded from atoms, no ``+`` in tags.
"""

from __future__ import annotations

import datetime
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, ClassVar, NoReturn

from cyrusmail.imap import commands as c
from cyrusmail.imap import mutf7
from cyrusmail.imap.sequence import SequenceSet, SequenceSetError

# -- events -------------------------------------------------------------------


@dataclass(frozen=True)
class ContinuationNeeded:
    """Send ``+ ...``: the client waits before sending ``size`` bytes."""

    tag: str
    size: int


@dataclass(frozen=True)
class ParseError:
    """Answer ``tag status [code] message``; ``tag`` None means ``*``.

    ``status`` is ``"BAD"`` or ``"NO"``; ``code`` a response code such as
    ``"TOOBIG"`` or None.
    """

    tag: str | None
    message: str
    code: str | None = None
    status: str = "BAD"


@dataclass(frozen=True)
class Line:
    """One line read in line mode, without its line end."""

    data: bytes


Event = c.Command | ContinuationNeeded | ParseError | Line


class LiteralRefused(Exception):
    """Raised by a sink factory to refuse an APPEND literal before it is
    sent (e.g. ``NO [OVERQUOTA]``); becomes a :class:`ParseError`."""

    def __init__(
        self, message: str, code: str | None = None, status: str = "NO"
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


class SpooledLiteral:
    """The default APPEND sink: in memory up to ``threshold``, then a
    temporary file.  :meth:`open` rewinds and returns the file."""

    def __init__(self, size: int, threshold: int = 1 << 20, *, binary: bool = False) -> None:
        self.size = size
        self.binary = binary
        self._file: BinaryIO = tempfile.SpooledTemporaryFile(max_size=threshold)  # noqa: SIM115

    def write(self, data: bytes) -> int:
        return self._file.write(data)

    def close(self) -> None:
        self._file.close()

    def open(self) -> BinaryIO:
        self._file.seek(0)
        return self._file

    def getvalue(self) -> bytes:
        """All the bytes; for small literals and tests."""
        return self.open().read()


SinkFactory = Callable[..., c.LiteralSink]
"""``factory(size)`` for a literal, ``factory(size, binary=True)`` for a ``literal8``."""

# -- character classes (RFC 3501 section 9) -----------------------------------

_ATOM_CHAR = rb"[^\x00-\x20\x7f-\xff(){%*\"\\\]]"
_ATOM = re.compile(_ATOM_CHAR + rb"+")
_ASTRING_ATOM = re.compile(rb"(?:" + _ATOM_CHAR + rb"|\])+")
_LIST_MAILBOX = re.compile(rb"(?:" + _ATOM_CHAR + rb"|[\]%*])+")
_TAG = re.compile(rb"[^\x00-\x20\x7f-\xff(){%*\"\\+]+")
_QUOTED = re.compile(rb'"((?:[^"\\\r\n\x00]|\\["\\])*)"')
_NUMBER = re.compile(rb"[0-9]{1,20}")
_SEQUENCE = re.compile(rb"[0-9:*,$]+")
_LITERAL = re.compile(rb"(~?)\{([0-9]{1,20})(\+?)\}")
_LITERAL_AT_END = re.compile(rb"(~?)\{([0-9]{1,20})(\+?)\}\Z")
_FETCH_NAME = re.compile(rb"[A-Za-z0-9.]+")
_OBJECT_ID = re.compile(rb"[A-Za-z0-9_-]{1,255}(?![^ )])")  # RFC 8474 objectid
_SECTION_SPEC = re.compile(rb"[A-Za-z0-9.]*")
_DATE = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_DATE_TIME = re.compile(
    rb'" ?([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"'
)
_MONTHS = {
    name: number
    for number, name in enumerate(
        [
            b"JAN",
            b"FEB",
            b"MAR",
            b"APR",
            b"MAY",
            b"JUN",
            b"JUL",
            b"AUG",
            b"SEP",
            b"OCT",
            b"NOV",
            b"DEC",
        ],
        1,
    )
}
_SYSTEM_FLAGS = {
    flag.upper(): flag
    for flag in (
        "\\Answered",
        "\\Flagged",
        "\\Deleted",
        "\\Seen",
        "\\Draft",
        "\\Recent",
    )
}
_MAX_NUMBER = 4294967295
_MAX_NUMBER64 = 9223372036854775807
_LITERAL_MINUS_LIMIT = 4096


class _Syntax(Exception):
    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# -- the grammar ----------------------------------------------------------------


class _Reader:
    """Recursive descent over one command's joined fragments."""

    def __init__(
        self,
        text: bytes,
        boundaries: list[int],
        literals: list[bytes | c.LiteralSink],
        literal_sizes: list[int],
        max_depth: int,
        max_search_keys: int = 1000,
        utf8: bool = False,
    ) -> None:
        self.text = text
        self.pos = 0
        self.boundaries = boundaries
        self.literals = literals
        self.literal_sizes = literal_sizes
        self.next_literal = 0
        self.max_depth = max_depth
        self.search_keys_left = max_search_keys
        self.max_search_keys = max_search_keys
        self.utf8 = utf8

    # low level

    def fail(self, message: str) -> NoReturn:
        raise _Syntax(message)

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self, data: bytes) -> bool:
        return self.text.startswith(data, self.pos)

    def peek_upper(self, word: bytes) -> bool:
        """Whether the next token is ``word`` (case-insensitive) as a whole."""
        end = self.pos + len(word)
        if self.text[self.pos : end].upper() != word:
            return False
        return end == len(self.text) or self.text[end : end + 1] in (b" ", b")")

    def expect(self, data: bytes, what: str | None = None) -> None:
        if not self.text.startswith(data, self.pos):
            self.fail(f"expected {what or data.decode()}")
        self.pos += len(data)

    def sp(self) -> None:
        self.expect(b" ", "a space")

    def end(self) -> None:
        if not self.at_end():
            self.fail("unexpected characters at end of command")

    def match(self, pattern: re.Pattern[bytes], what: str) -> bytes:
        found = pattern.match(self.text, self.pos)
        if found is None:
            self.fail(f"expected {what}")
        self.pos = found.end()
        return found.group()

    def depth_check(self, depth: int) -> None:
        if depth > self.max_depth:
            raise _Syntax(f"too deeply nested (over {self.max_depth} levels)", "LIMIT")

    # tokens

    def atom(self) -> str:
        return self.match(_ATOM, "an atom").decode("ascii")

    def keyword(self) -> str:
        return self.atom().upper()

    def number(self, limit: int = _MAX_NUMBER) -> int:
        value = int(self.match(_NUMBER, "a number"))
        if value > limit:
            self.fail("number too big")
        return value

    def nz_number(self) -> int:
        value = self.number()
        if value == 0:
            self.fail("zero is not allowed here")
        return value

    def literal(self, allow_sink: bool = False) -> bytes | c.LiteralSink:
        found = _LITERAL.match(self.text, self.pos)
        if found is None:
            self.fail("bad literal")
        index = self.next_literal
        if index >= len(self.boundaries) or found.end() != self.boundaries[index]:
            self.fail("a literal must end its line")
        self.pos = found.end()
        self.next_literal += 1
        value = self.literals[index]
        if isinstance(value, bytes):
            if found.group(1):
                self.fail("literal8 is allowed only for APPEND data")
            return value
        if not allow_sink:
            self.fail("a message literal is not allowed here")
        return value

    def quoted(self) -> bytes:
        found = _QUOTED.match(self.text, self.pos)
        if found is None:
            self.fail("bad quoted string")
        self.pos = found.end()
        return re.sub(rb'\\(["\\])', rb"\1", found.group(1))

    def string(self) -> bytes:
        if self.peek(b'"'):
            return self.quoted()
        if self.peek(b"{") or self.peek(b"~{"):
            value = self.literal()
            assert isinstance(value, bytes)
            return value
        self.fail("expected a string")

    def astring(self) -> bytes:
        if self.peek(b'"') or self.peek(b"{") or self.peek(b"~{"):
            return self.string()
        return self.match(_ASTRING_ATOM, "an astring")

    def nstring(self) -> bytes | None:
        if self.peek_upper(b"NIL"):
            self.pos += 3
            return None
        return self.string()

    def text_of(self, value: bytes) -> str:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            self.fail("invalid UTF-8")

    def mailbox(self) -> str:
        name = self.text_of(self.astring())
        return mutf7.encode(name) if self.utf8 else name

    def ascii_astring(self) -> str:
        value = self.astring()
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            self.fail("8-bit characters not allowed here")

    def list_mailbox(self) -> str:
        if self.peek(b'"') or self.peek(b"{"):
            pattern = self.text_of(self.string())
        else:
            pattern = self.match(_LIST_MAILBOX, "a mailbox pattern").decode("ascii")
        return mutf7.encode(pattern) if self.utf8 else pattern

    def flag(self) -> str:
        if self.peek(b"\\"):
            self.pos += 1
            name = "\\" + self.atom()
            return _SYSTEM_FLAGS.get(name.upper(), name)
        return self.atom()

    def flag_list(self) -> tuple[str, ...]:
        self.expect(b"(")
        flags: list[str] = []
        if not self.peek(b")"):
            flags.append(self.flag())
            while self.peek(b" "):
                self.pos += 1
                flags.append(self.flag())
        self.expect(b")")
        return tuple(flags)

    def sequence_set(self) -> SequenceSet:
        try:
            return SequenceSet.parse(self.match(_SEQUENCE, "a sequence set"))
        except SequenceSetError as error:
            self.fail(str(error))

    def date(self) -> datetime.date:
        quoted = self.peek(b'"')
        if quoted:
            self.pos += 1
        found = _DATE.match(self.text, self.pos)
        if found is None:
            self.fail("bad date")
        self.pos = found.end()
        if quoted:
            self.expect(b'"')
        day, month, year = found.groups()
        try:
            return datetime.date(int(year), _MONTHS[month.upper()], int(day))
        except (KeyError, ValueError):
            self.fail("bad date")

    def date_time(self) -> datetime.datetime:
        found = _DATE_TIME.match(self.text, self.pos)
        if found is None:
            self.fail("bad date-time")
        self.pos = found.end()
        day, month, year, hour, minute, second, sign, zone_hours, zone_minutes = (
            found.groups()
        )
        offset = datetime.timedelta(hours=int(zone_hours), minutes=int(zone_minutes))
        try:
            value = datetime.datetime(
                int(year),
                _MONTHS[month.upper()],
                int(day),
                int(hour),
                int(minute),
                int(second),
                tzinfo=datetime.timezone(-offset if sign == b"-" else offset),
            )
        except (KeyError, ValueError):
            self.fail("bad date-time")
        try:  # 31-Dec-9999 23:59:59 -2359 is in the year 10000 in UTC, as the index keeps it
            value.astimezone(datetime.UTC)
        except OverflowError:
            self.fail("date-time out of range")
        return value

    def parenthesised(self, item: Callable[[], object]) -> tuple:
        """``"(" item *(SP item) ")"``, one or more items."""
        self.expect(b"(")
        items = [item()]
        while self.peek(b" "):
            self.pos += 1
            items.append(item())
        self.expect(b")")
        return tuple(items)

    def parameter_value(self, depth: int) -> c.ParameterValue:
        """An RFC 4466 tagged-ext-val, or a generic value in a list."""
        self.depth_check(depth)
        if self.peek(b"("):
            self.pos += 1
            values: list[c.ParameterValue] = []
            if not self.peek(b")"):
                values.append(self.parameter_value(depth + 1))
                while self.peek(b" "):
                    self.pos += 1
                    values.append(self.parameter_value(depth + 1))
            self.expect(b")")
            return tuple(values)
        if self.peek(b'"') or self.peek(b"{"):
            return self.string()
        if self.peek_upper(b"NIL"):
            self.pos += 3
            return None
        token = self.match(_LIST_MAILBOX, "a value")
        if token.isdigit() and len(token) <= 20:
            return int(token)
        return token.decode("ascii")

    def parameters(self) -> tuple[tuple[str, c.ParameterValue], ...]:
        """``"(" label [SP value] *(SP label [SP value]) ")"``."""
        self.expect(b"(")
        result: list[tuple[str, c.ParameterValue]] = []
        while True:
            label = self.keyword()
            value: c.ParameterValue = None
            if self.peek(b" ") and not self.text[self.pos + 1 : self.pos + 2].isalpha():
                self.pos += 1
                value = self.parameter_value(2)
            result.append((label, value))
            if self.peek(b")"):
                break
            self.sp()
        self.pos += 1
        return tuple(result)

    # APPEND

    def message_literal(self) -> tuple[int, c.LiteralSink]:
        """An APPEND literal (or literal8): its size and the sink it went to."""
        index = self.next_literal
        if not (self.peek(b"{") or self.peek(b"~{")):
            self.fail("expected a message literal")
        content = self.literal(allow_sink=True)
        if isinstance(content, bytes):
            self.fail("expected a message literal")
        return self.literal_sizes[index], content

    def utf8_literal(self) -> tuple[int, c.LiteralSink]:
        """RFC 6855 ``UTF8 (literal8)``, only once UTF8=ACCEPT is enabled."""
        self.pos += len(b"UTF8")
        if not self.utf8:
            self.fail("UTF8 data needs ENABLE UTF8=ACCEPT")
        self.sp()
        self.expect(b"(")
        if not self.peek(b"~"):
            self.fail("UTF8 data is a literal8")
        found = self.message_literal()
        self.expect(b")")
        return found

    def cat_part(self) -> c.CatenatePart:
        """RFC 4469 ``TEXT literal`` or ``URL astring``; RFC 6855 ``UTF8 (literal8)``."""
        if self.peek_upper(b"UTF8"):
            return c.CatenateText(*self.utf8_literal())
        kind = self.keyword()
        self.sp()
        if kind == "TEXT":
            if self.peek(b"~"):
                self.fail("CATENATE TEXT takes a literal, not a literal8")
            return c.CatenateText(*self.message_literal())
        if kind == "URL":
            if self.peek(b"{"):
                self.fail("a CATENATE URL must be an atom or a quoted string")
            return c.CatenateUrl(self.ascii_astring())
        self.fail(f"unknown CATENATE part {kind}")

    # FETCH

    def section_part(self, spec: bytes) -> tuple[tuple[int, ...], list[bytes]]:
        pieces = spec.split(b".") if spec else []
        part: list[int] = []
        while pieces and pieces[0].isdigit():
            number = pieces.pop(0)
            if number.startswith(b"0") or len(number) > 10 or int(number) > _MAX_NUMBER:
                self.fail("bad section part")
            part.append(int(number))
        return tuple(part), pieces

    def section(self) -> c.Section:
        self.expect(b"[")
        spec = self.match(_SECTION_SPEC, "a section")
        part, rest = self.section_part(spec)
        text = b".".join(rest).upper().decode("ascii") if rest else None
        fields: tuple[str, ...] = ()
        allowed = {"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT"} | (
            {"MIME"} if part else set()
        )
        if text is not None and (text not in allowed or "" in rest):
            self.fail("bad section")
        if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            self.sp()
            fields = tuple(
                name.upper() for name in self.parenthesised(self.ascii_astring)
            )
        self.expect(b"]")
        return c.Section(part, text, fields)

    def binary_part(self) -> tuple[int, ...]:
        self.expect(b"[")
        spec = self.match(_SECTION_SPEC, "a section")
        part, rest = self.section_part(spec)
        if rest:
            self.fail("bad binary section")
        self.expect(b"]")
        return part

    def partial(self) -> tuple[int, int] | None:
        if not self.peek(b"<"):
            return None
        self.pos += 1
        origin = self.number()
        self.expect(b".")
        length = self.nz_number()
        self.expect(b">")
        return origin, length

    _SIMPLE_FETCH = frozenset(
        {
            "ENVELOPE",
            "FLAGS",
            "INTERNALDATE",
            "RFC822",
            "RFC822.HEADER",
            "RFC822.SIZE",
            "RFC822.TEXT",
            "BODY",
            "BODYSTRUCTURE",
            "UID",
            "MODSEQ",
            "SAVEDATE",
            "EMAILID",
            "THREADID",
        }
    )
    _MACROS: ClassVar[dict[str, tuple[str, ...]]] = {
        "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
        "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
        "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
    }

    def fetch_att(self) -> c.FetchItem:
        name = self.match(_FETCH_NAME, "a fetch item").upper().decode("ascii")
        if name in ("BODY", "BODY.PEEK") and self.peek(b"["):
            section = self.section()
            return c.FetchBody(section, name == "BODY.PEEK", self.partial())
        if name in ("BINARY", "BINARY.PEEK"):
            part = self.binary_part()
            return c.FetchBinary(part, name == "BINARY.PEEK", self.partial())
        if name == "BINARY.SIZE":
            return c.FetchBinarySize(self.binary_part())
        if name == "PREVIEW":
            if self.peek(b" ("):  # RFC 8970 modifiers: only LAZY is defined
                self.pos += 1
                for modifier in self.parenthesised(self.keyword):
                    if modifier != "LAZY":
                        self.fail(f"unknown PREVIEW modifier {modifier}")
            return c.FetchAttribute(name)
        if name in self._SIMPLE_FETCH:
            return c.FetchAttribute(name)
        self.fail(f"unknown fetch item {name}")

    def fetch_items(self) -> tuple[c.FetchItem, ...]:
        if self.peek(b"("):
            return self.parenthesised(self.fetch_att)
        for macro, names in self._MACROS.items():
            if self.peek_upper(macro.encode()):
                self.pos += len(macro)
                return tuple(c.FetchAttribute(name) for name in names)
        return (self.fetch_att(),)

    # SEARCH

    _FLAG_KEYS: ClassVar[dict[str, str]] = {
        "ANSWERED": "\\Answered",
        "DELETED": "\\Deleted",
        "DRAFT": "\\Draft",
        "FLAGGED": "\\Flagged",
        "RECENT": "\\Recent",
        "SEEN": "\\Seen",
    }
    _ADDRESS_KEYS = frozenset({"BCC", "CC", "FROM", "TO"})
    _DATE_KEYS: ClassVar[dict[str, tuple[str, bool]]] = {
        "BEFORE": ("before", False),
        "ON": ("on", False),
        "SINCE": ("since", False),
        "SENTBEFORE": ("before", True),
        "SENTON": ("on", True),
        "SENTSINCE": ("since", True),
    }

    def search_key(self, depth: int) -> c.SearchKey:
        self.depth_check(depth)
        self.search_keys_left -= 1
        if self.search_keys_left < 0:
            raise _Syntax(f"too many search keys (over {self.max_search_keys})", "LIMIT")
        if self.peek(b"("):
            keys = self.parenthesised(lambda: self.search_key(depth + 1))
            return keys[0] if len(keys) == 1 else c.SearchAnd(keys)
        if (
            self.text[self.pos : self.pos + 1] in (b"*", b"$")
            or self.text[self.pos : self.pos + 1].isdigit()
        ):
            return c.SearchSequence(self.sequence_set())
        name = self.keyword()
        if name == "ALL":
            return c.SearchAll()
        if name in self._FLAG_KEYS:
            return c.SearchFlag(self._FLAG_KEYS[name])
        if name.startswith("UN") and name[2:] in self._FLAG_KEYS and name != "UNRECENT":
            return c.SearchNot(c.SearchFlag(self._FLAG_KEYS[name[2:]]))
        if name == "NEW":
            return c.SearchAnd(
                (c.SearchFlag("\\Recent"), c.SearchNot(c.SearchFlag("\\Seen")))
            )
        if name == "OLD":
            return c.SearchNot(c.SearchFlag("\\Recent"))
        if name in ("KEYWORD", "UNKEYWORD"):
            self.sp()
            keyword = c.SearchFlag(self.atom())
            return keyword if name == "KEYWORD" else c.SearchNot(keyword)
        if name in self._ADDRESS_KEYS:
            self.sp()
            return c.SearchAddress(name, self.astring())
        if name == "SUBJECT":
            self.sp()
            return c.SearchHeader(name, self.astring())
        if name == "HEADER":
            self.sp()
            field = self.ascii_astring().upper()
            self.sp()
            return c.SearchHeader(field, self.astring())
        if name == "BODY":
            self.sp()
            return c.SearchBody(self.astring())
        if name == "TEXT":
            self.sp()
            return c.SearchText(self.astring())
        if name in self._DATE_KEYS:
            relation, sent = self._DATE_KEYS[name]
            self.sp()
            return c.SearchDate(relation, self.date(), sent)  # type: ignore[arg-type]
        if name in ("SAVEDBEFORE", "SAVEDON", "SAVEDSINCE"):
            self.sp()
            return c.SearchSaveDate(name[5:].lower(), self.date())  # type: ignore[arg-type]
        if name == "SAVEDATESUPPORTED":
            return c.SearchAll()  # every mailbox here keeps save dates (RFC 8514)
        if name in ("EMAILID", "THREADID"):
            self.sp()
            return c.SearchObjectId(name, self.match(_OBJECT_ID, "an object id").decode("ascii"))  # type: ignore[arg-type]
        if name in ("LARGER", "SMALLER"):
            self.sp()
            return c.SearchSize(name.lower(), self.number())  # type: ignore[arg-type]
        if name == "UID":
            self.sp()
            return c.SearchSequence(self.sequence_set(), uid=True)
        if name == "NOT":
            self.sp()
            return c.SearchNot(self.search_key(depth + 1))
        if name == "OR":
            self.sp()
            left = self.search_key(depth + 1)
            self.sp()
            return c.SearchOr(left, self.search_key(depth + 1))
        if name in ("OLDER", "YOUNGER"):
            self.sp()
            return c.SearchWithin(name.lower(), self.nz_number())  # type: ignore[arg-type]
        if name == "MODSEQ":
            self.sp()
            entry = None
            if self.peek(b'"'):
                entry_name = self.quoted().decode("ascii", "replace")
                self.sp()
                entry_type = self.keyword().lower()
                if entry_type not in ("priv", "shared", "all"):
                    self.fail("bad MODSEQ entry type")
                entry = (entry_name, entry_type)
                self.sp()
            return c.SearchModSeq(self.number(_MAX_NUMBER64), entry)
        self.fail(f"unknown search key {name}")

    def search_keys(self) -> c.SearchKey:
        keys = [self.search_key(1)]
        while self.peek(b" "):
            self.pos += 1
            keys.append(self.search_key(1))
        self.end()
        return keys[0] if len(keys) == 1 else c.SearchAnd(tuple(keys))


def parse_section(spec: bytes) -> c.Section:
    """The inside of ``BODY[...]`` (as an RFC 5092 URL's ``;SECTION=`` carries
    it) as a Section; ValueError if it is not one."""
    reader = _Reader(b"[" + spec + b"]", [], [], [], 10)
    try:
        section = reader.section()
        reader.end()
    except _Syntax as error:
        raise ValueError(error.message) from None
    return section


# -- commands ------------------------------------------------------------------


def _no_arguments(
    command: type[c.Command],
) -> Callable[[_Reader, str, bool], c.Command]:
    def parse(reader: _Reader, tag: str, uid: bool) -> c.Command:
        reader.end()
        return command(tag)

    return parse


def _one_mailbox(
    command: Callable[..., c.Command],
) -> Callable[[_Reader, str, bool], c.Command]:
    def parse(reader: _Reader, tag: str, uid: bool) -> c.Command:
        reader.sp()
        mailbox = reader.mailbox()
        reader.end()
        return command(tag, mailbox)

    return parse


def _authenticate(reader: _Reader, tag: str, uid: bool) -> c.Command:
    reader.sp()
    mechanism = reader.keyword()
    initial = None
    if not reader.at_end():
        reader.sp()
        initial = reader.match(
            re.compile(rb"[A-Za-z0-9+/]*={0,2}"), "a base64 response"
        )
        if not initial:
            reader.fail("expected a base64 response")
    reader.end()
    return c.Authenticate(tag, mechanism, initial)


def _login(reader: _Reader, tag: str, uid: bool) -> c.Command:
    reader.sp()
    username = reader.astring()
    reader.sp()
    password = reader.astring()
    reader.end()
    return c.Login(tag, username, password)


def _opening(
    command: type[c.Select | c.Examine],
) -> Callable[[_Reader, str, bool], c.Command]:
    def parse(reader: _Reader, tag: str, uid: bool) -> c.Command:
        reader.sp()
        mailbox = reader.mailbox()
        parameters: tuple[tuple[str, c.ParameterValue], ...] = ()
        qresync = None
        if not reader.at_end():
            reader.sp()
            parameters = reader.parameters()
        for label, value in parameters:
            if label == "QRESYNC":
                qresync = _qresync_parameters(reader, value)
            elif label != "CONDSTORE" or value is not None:
                reader.fail(f"bad {command.name} parameter {label}")
        reader.end()
        return command(tag, mailbox, parameters, qresync)

    return parse


def _qresync_parameters(reader: _Reader, value: c.ParameterValue) -> c.QresyncParameters:
    """RFC 7162 ``qresync-param``'s value: ``(uidvalidity modseq [known-uids] [seq-match-data])``."""
    if not isinstance(value, tuple) or not 2 <= len(value) <= 4:
        reader.fail("QRESYNC needs (uidvalidity modseq [known-uids [seq-match-data]])")
    uid_validity, modseq, *rest = value
    if not (isinstance(uid_validity, int) and 0 < uid_validity <= _MAX_NUMBER):
        reader.fail("bad QRESYNC UIDVALIDITY")
    if not (isinstance(modseq, int) and 0 < modseq <= _MAX_NUMBER64):
        reader.fail("bad QRESYNC mod-sequence")
    known_uids = seq_match = None
    if rest and not isinstance(rest[0], tuple):
        known_uids = _explicit_set(reader, rest.pop(0))
    if rest:
        pair = rest.pop(0)
        if rest or not isinstance(pair, tuple) or len(pair) != 2:
            reader.fail("bad QRESYNC seq-match-data")
        numbers, uids = (_explicit_set(reader, item) for item in pair)
        if _size(numbers) != _size(uids):
            reader.fail("QRESYNC seq-match-data sets differ in size")
        seq_match = (numbers, uids)
    return c.QresyncParameters(uid_validity, modseq, known_uids, seq_match)


def _explicit_set(reader: _Reader, value: c.ParameterValue) -> SequenceSet:
    """A sequence set without ``*`` (RFC 7162 known-uids and seq-match-data)."""
    try:
        numbers = SequenceSet.parse(str(value)) if isinstance(value, (int, str)) else None
    except SequenceSetError:
        numbers = None
    if numbers is None or numbers.star_from is not None:
        reader.fail("bad QRESYNC set")
    return numbers


def _size(numbers: SequenceSet) -> int:
    return sum(high - low + 1 for low, high in numbers.ranges)


def _create(reader: _Reader, tag: str, uid: bool) -> c.Command:
    reader.sp()
    mailbox = reader.mailbox()
    special_use: tuple[str, ...] = ()
    if not reader.at_end():
        reader.sp()
        reader.expect(b"(")
        while True:
            label = reader.keyword()
            if label != "USE":
                reader.fail(f"unknown CREATE parameter {label}")
            reader.sp()
            special_use += reader.flag_list()
            if reader.peek(b")"):
                break
            reader.sp()
        reader.pos += 1
    reader.end()
    return c.Create(tag, mailbox, special_use)


def _rename(reader: _Reader, tag: str, uid: bool) -> c.Command:
    reader.sp()
    old = reader.mailbox()
    reader.sp()
    new = reader.mailbox()
    reader.end()
    return c.Rename(tag, old, new)


_LIST_SELECTION = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
_LIST_RETURN = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"})


def _status_items(reader: _Reader) -> tuple[str, ...]:
    items = reader.parenthesised(reader.keyword)
    for item in items:
        if item not in c.STATUS_ITEMS:
            reader.fail(f"unknown status item {item}")
    return items


def _list(reader: _Reader, tag: str, uid: bool) -> c.Command:
    reader.sp()
    selection: tuple[str, ...] = ()
    if reader.peek(b"("):
        if reader.peek(b"()"):
            reader.pos += 2
        else:
            selection = reader.parenthesised(reader.keyword)
        for option in selection:
            if option not in _LIST_SELECTION:
                reader.fail(f"unknown LIST selection option {option}")
        if "RECURSIVEMATCH" in selection and not set(selection) - {"RECURSIVEMATCH", "REMOTE"}:
            # RFC 5258 3: never alone, nor with only REMOTE (which selects nothing by itself)
            reader.fail("RECURSIVEMATCH needs another selection option than REMOTE")
        reader.sp()
    reference = reader.mailbox()
    reader.sp()
    if reader.peek(b"("):
        patterns = reader.parenthesised(reader.list_mailbox)
    else:
        patterns = (reader.list_mailbox(),)
    return_options: list[str] = []
    return_status: tuple[str, ...] = ()
    if not reader.at_end():
        reader.sp()
        if reader.keyword() != "RETURN":
            reader.fail("expected RETURN")
        reader.sp()
        reader.expect(b"(")
        while not reader.peek(b")"):
            if return_options:
                reader.sp()
            option = reader.keyword()
            if option not in _LIST_RETURN:
                reader.fail(f"unknown LIST return option {option}")
            if option == "STATUS":
                reader.sp()
                return_status = _status_items(reader)
            return_options.append(option)
        reader.pos += 1
    reader.end()
    return c.List(
        tag, reference, patterns, selection, tuple(return_options), return_status
    )


def _lsub(reader: _Reader, tag: str, uid: bool) -> c.Command:
    reader.sp()
    reference = reader.mailbox()
    reader.sp()
    pattern = reader.list_mailbox()
    reader.end()
    return c.Lsub(tag, reference, pattern)


def _status(reader: _Reader, tag: str, uid: bool) -> c.Command:
    reader.sp()
    mailbox = reader.mailbox()
    reader.sp()
    items = _status_items(reader)
    reader.end()
    return c.Status(tag, mailbox, items)


def _append(reader: _Reader, tag: str, uid: bool) -> c.Command:
    reader.sp()
    mailbox = reader.mailbox()
    messages: list[c.AppendMessage] = []
    while not reader.at_end() or not messages:
        reader.sp()
        flags = None
        internal_date = None
        if reader.peek(b"("):
            flags = reader.flag_list()
            reader.sp()
        if reader.peek(b'"'):
            internal_date = reader.date_time()
            reader.sp()
        if reader.peek_upper(b"CATENATE"):
            reader.pos += len(b"CATENATE")
            reader.sp()
            parts = reader.parenthesised(reader.cat_part)
            messages.append(c.AppendMessage(flags, internal_date, 0, None, parts=parts))
            continue
        if reader.peek_upper(b"UTF8"):
            size, content = reader.utf8_literal()
            messages.append(c.AppendMessage(flags, internal_date, size, content, True, utf8=True))
            continue
        binary = reader.peek(b"~")
        size, content = reader.message_literal()
        messages.append(c.AppendMessage(flags, internal_date, size, content, binary))
    return c.Append(tag, mailbox, tuple(messages))


def _fetch(reader: _Reader, tag: str, uid: bool) -> c.Command:
    reader.sp()
    sequence_set = reader.sequence_set()
    reader.sp()
    items = reader.fetch_items()
    changedsince = None
    vanished = False
    if not reader.at_end():
        reader.sp()
        for label, value in reader.parameters():
            if (
                label == "CHANGEDSINCE"
                and isinstance(value, int)
                and value <= _MAX_NUMBER64
            ):
                changedsince = value
            elif label == "VANISHED" and value is None and uid:
                vanished = True
            else:
                reader.fail(f"bad FETCH modifier {label}")
        if vanished and changedsince is None:
            reader.fail("VANISHED needs CHANGEDSINCE")
    reader.end()
    return c.Fetch(tag, uid, sequence_set, items, changedsince, vanished)


_STORE_MODES = {"": "replace", "+": "add", "-": "remove"}


def _store(reader: _Reader, tag: str, uid: bool) -> c.Command:
    reader.sp()
    sequence_set = reader.sequence_set()
    reader.sp()
    unchangedsince = None
    if reader.peek(b"("):
        for label, value in reader.parameters():
            if (
                label == "UNCHANGEDSINCE"
                and isinstance(value, int)
                and value <= _MAX_NUMBER64
            ):
                unchangedsince = value
            else:
                reader.fail(f"bad STORE modifier {label}")
        reader.sp()
    found = reader.match(
        re.compile(rb"([+-]?)FLAGS(\.SILENT)?(?= )", re.IGNORECASE),
        "FLAGS, +FLAGS or -FLAGS",
    )
    sign = found[:1].decode() if found[:1] in (b"+", b"-") else ""
    silent = found.upper().endswith(b".SILENT")
    reader.sp()
    if reader.peek(b"("):
        flags = reader.flag_list()
    else:
        flags_list = [reader.flag()]
        while reader.peek(b" "):
            reader.pos += 1
            flags_list.append(reader.flag())
        flags = tuple(flags_list)
    reader.end()
    return c.Store(
        tag, uid, sequence_set, _STORE_MODES[sign], silent, flags, unchangedsince
    )  # type: ignore[arg-type]


def _copy_or_move(
    command: type[c.Copy | c.Move],
) -> Callable[[_Reader, str, bool], c.Command]:
    def parse(reader: _Reader, tag: str, uid: bool) -> c.Command:
        reader.sp()
        sequence_set = reader.sequence_set()
        reader.sp()
        mailbox = reader.mailbox()
        reader.end()
        return command(tag, uid, sequence_set, mailbox)

    return parse


_PARTIAL_RANGE = re.compile(rb"(-?)([0-9]{1,10}):(-?)([0-9]{1,10})(?=[ )])")


def search_return(reader: _Reader) -> tuple[tuple[str, ...], tuple[int, int] | None]:
    """``RETURN (...)`` of SEARCH (and of SORT, RFC 5267 ESORT): the options
    of :data:`~cyrusmail.imap.commands.SEARCH_RETURN_OPTIONS` and the PARTIAL range."""
    reader.expect(b"(")
    options: list[str] = []
    partial = None
    while not reader.peek(b")"):
        if options:
            reader.sp()
        option = reader.keyword()
        if option not in c.SEARCH_RETURN_OPTIONS:
            reader.fail(f"unknown SEARCH return option {option}")
        if option == "PARTIAL":
            if partial is not None:
                reader.fail("PARTIAL may be given once")
            reader.sp()
            partial = _partial_range(reader)
        elif option == "UPDATE" and option in options:
            reader.fail("UPDATE may be given once")
        if option not in options:
            options.append(option)
    reader.pos += 1
    if "PARTIAL" in options and "ALL" in options:
        reader.fail("PARTIAL and ALL exclude each other")
    return tuple(options), partial


def _partial_range(reader: _Reader) -> tuple[int, int]:
    """RFC 5267 ``nz-number ":" nz-number`` (either order), or RFC 9394's
    ``-n:-m`` counted from the last result; never ``*``."""
    found = _PARTIAL_RANGE.match(reader.text, reader.pos)
    if found is None:
        reader.fail("PARTIAL needs a range n:m or -n:-m")
    first_sign, first, last_sign, last = found.groups()
    low, high = sorted((int(first), int(last)))
    if first_sign != last_sign or low == 0 or high > _MAX_NUMBER:
        reader.fail("bad PARTIAL range")
    reader.pos = found.end()
    return (-low, -high) if first_sign else (low, high)


def _search(reader: _Reader, tag: str, uid: bool) -> c.Command:
    reader.sp()
    return_options = None
    partial = None
    charset = None
    if reader.peek_upper(b"RETURN"):
        reader.pos += 6
        reader.sp()
        return_options, partial = search_return(reader)
        reader.sp()
    if reader.peek_upper(b"CHARSET"):
        reader.pos += 7
        reader.sp()
        charset = reader.ascii_astring().upper()
        reader.sp()
    criteria = reader.search_keys()
    return c.Search(tag, uid, criteria, charset, return_options, partial)


def _cancelupdate(reader: _Reader, tag: str, uid: bool) -> c.Command:
    tags: list[str] = []
    while not tags or not reader.at_end():
        reader.sp()
        if not reader.peek(b'"'):
            reader.fail("expected a quoted tag")
        tags.append(reader.quoted().decode("ascii", "replace"))
    return c.CancelUpdate(tag, tuple(dict.fromkeys(tags)))


def _sort_criterion(reader: _Reader) -> c.SortCriterion:
    key = reader.keyword()
    reverse = key == "REVERSE"
    if reverse:
        reader.sp()
        key = reader.keyword()
    if key not in c.SORT_KEYS:
        reader.fail(f"unknown sort key {key}")
    return c.SortCriterion(key, reverse)


def _sort(reader: _Reader, tag: str, uid: bool) -> c.Command:
    """``SORT [RETURN (...)] (criteria) charset search-key...`` (RFC 5256, the
    charset required; RETURN from RFC 5267 ESORT)."""
    reader.sp()
    return_options = partial = None
    if reader.peek_upper(b"RETURN"):
        reader.pos += 6
        reader.sp()
        return_options, partial = search_return(reader)
        reader.sp()
    criteria = reader.parenthesised(lambda: _sort_criterion(reader))
    reader.sp()
    charset = reader.ascii_astring().upper()
    reader.sp()
    return c.Sort(tag, uid, criteria, charset, reader.search_keys(), return_options, partial)


def _thread(reader: _Reader, tag: str, uid: bool) -> c.Command:
    """``THREAD algorithm charset search-key...`` (RFC 5256)."""
    reader.sp()
    algorithm = reader.keyword()
    if algorithm not in c.THREAD_ALGORITHMS:
        reader.fail(f"unknown threading algorithm {algorithm}")
    reader.sp()
    charset = reader.ascii_astring().upper()
    reader.sp()
    return c.Thread(tag, uid, algorithm, charset, reader.search_keys())


def _expunge(reader: _Reader, tag: str, uid: bool) -> c.Command:
    sequence_set = None
    if uid:
        reader.sp()
        sequence_set = reader.sequence_set()
    reader.end()
    return c.Expunge(tag, uid, sequence_set)


def _enable(reader: _Reader, tag: str, uid: bool) -> c.Command:
    capabilities = []
    while True:
        reader.sp()
        capabilities.append(reader.keyword())
        if reader.at_end():
            return c.Enable(tag, tuple(capabilities))


def _compress(reader: _Reader, tag: str, uid: bool) -> c.Command:
    reader.sp()
    mechanism = reader.keyword()
    reader.end()
    return c.Compress(tag, mechanism)


def _id(reader: _Reader, tag: str, uid: bool) -> c.Command:
    reader.sp()
    if reader.peek_upper(b"NIL") or reader.peek(b"()"):
        reader.pos += 3 if reader.peek_upper(b"NIL") else 2
        reader.end()
        return c.Id(tag, None)

    def pair() -> tuple[str, bytes | None]:
        key = reader.string().decode("utf-8", "replace")
        reader.sp()
        return key, reader.nstring()

    parameters = reader.parenthesised(pair)
    if len(parameters) > 30:
        reader.fail("too many ID parameters")
    reader.end()
    return c.Id(tag, parameters)


def _getquota(reader: _Reader, tag: str, uid: bool) -> c.Command:
    reader.sp()
    root = reader.mailbox()
    reader.end()
    return c.GetQuota(tag, root)


def _setquota(reader: _Reader, tag: str, uid: bool) -> c.Command:
    reader.sp()
    root = reader.mailbox()
    reader.sp()
    limits: list[tuple[str, int]] = []
    reader.expect(b"(")
    while not reader.peek(b")"):
        if limits:
            reader.sp()
        resource = reader.keyword()
        reader.sp()
        limits.append((resource, reader.number(_MAX_NUMBER64)))
    reader.pos += 1
    reader.end()
    return c.SetQuota(tag, root, tuple(limits))


def _mailbox_identifier(
    command: Callable[..., c.Command], rights: bool = False
) -> Callable[[_Reader, str, bool], c.Command]:
    def parse(reader: _Reader, tag: str, uid: bool) -> c.Command:
        reader.sp()
        mailbox = reader.mailbox()
        reader.sp()
        identifier = reader.text_of(reader.astring())
        arguments = [mailbox, identifier]
        if rights:
            reader.sp()
            arguments.append(reader.ascii_astring())
        reader.end()
        return command(tag, *arguments)

    return parse


_Grammar = Callable[[_Reader, str, bool], c.Command]

COMMANDS: dict[str, _Grammar] = {
    "CAPABILITY": _no_arguments(c.Capability),
    "NOOP": _no_arguments(c.Noop),
    "LOGOUT": _no_arguments(c.Logout),
    "STARTTLS": _no_arguments(c.StartTLS),
    "UNAUTHENTICATE": _no_arguments(c.Unauthenticate),
    "AUTHENTICATE": _authenticate,
    "LOGIN": _login,
    "SELECT": _opening(c.Select),
    "EXAMINE": _opening(c.Examine),
    "CREATE": _create,
    "DELETE": _one_mailbox(c.Delete),
    "RENAME": _rename,
    "SUBSCRIBE": _one_mailbox(c.Subscribe),
    "UNSUBSCRIBE": _one_mailbox(c.Unsubscribe),
    "LIST": _list,
    "LSUB": _lsub,
    "NAMESPACE": _no_arguments(c.Namespace),
    "STATUS": _status,
    "APPEND": _append,
    "IDLE": _no_arguments(c.Idle),
    "CHECK": _no_arguments(c.Check),
    "CLOSE": _no_arguments(c.Close),
    "UNSELECT": _no_arguments(c.Unselect),
    "EXPUNGE": _expunge,
    "SEARCH": _search,
    "CANCELUPDATE": _cancelupdate,
    "SORT": _sort,
    "THREAD": _thread,
    "FETCH": _fetch,
    "STORE": _store,
    "COPY": _copy_or_move(c.Copy),
    "MOVE": _copy_or_move(c.Move),
    "ENABLE": _enable,
    "COMPRESS": _compress,
    "ID": _id,
    "GETQUOTA": _getquota,
    "GETQUOTAROOT": _one_mailbox(c.GetQuotaRoot),
    "SETQUOTA": _setquota,
    "SETACL": _mailbox_identifier(c.SetAcl, rights=True),
    "DELETEACL": _mailbox_identifier(c.DeleteAcl),
    "GETACL": _one_mailbox(c.GetAcl),
    "LISTRIGHTS": _mailbox_identifier(c.ListRights),
    "MYRIGHTS": _one_mailbox(c.MyRights),
}
"""Command name -> grammar; the parser's whole vocabulary."""

UID_COMMANDS = frozenset({"FETCH", "STORE", "COPY", "MOVE", "SEARCH", "SORT", "THREAD", "EXPUNGE"})
"""What may follow ``UID``."""

PAUSING_COMMANDS = (c.Authenticate, c.Idle, c.StartTLS, c.Compress)
"""After these the parser pauses until told how to read on."""

_HEAD = re.compile(
    rb"([^\x00-\x20\x7f-\xff(){%*\"\\+]+) ([A-Za-z]+)(?= |\Z)(?: ([A-Za-z]+)(?= |\Z))?"
)


#: Longer tags are answered with ``*``: no real client sends one.
MAX_TAG_LENGTH = 64


def _head(text: bytes) -> tuple[str | None, str | None, int]:
    """Tag, command name (``UID FETCH`` for UID commands) and where the
    arguments start, from the beginning of a command."""
    found = _TAG.match(text)
    if found is None or found.end() < len(text) and text[found.end()] != 0x20:
        return None, None, 0
    if found.end() > MAX_TAG_LENGTH:  # never echo a client's megabyte back as a "tag"
        return None, None, 0
    tag = found.group().decode("ascii")
    found = _HEAD.match(text)
    if found is None:
        return tag, None, 0
    name = found.group(2).upper().decode()
    if name == "UID" and found.group(3):
        return tag, "UID " + found.group(3).upper().decode(), found.end()
    return tag, name, found.end(2)


# -- the framer -----------------------------------------------------------------


class CommandParser:
    """Turns the client's byte stream into :data:`Event` objects.

    See the module docstring for framing, limits, pausing and line mode.
    """

    def __init__(
        self,
        *,
        max_line_length: int = 64 * 1024,
        max_literal_size: int = 64 * 1024,
        max_command_size: int = 1024 * 1024,
        max_message_size: int = 50 * 1024 * 1024,
        max_depth: int = 100,
        max_search_keys: int = 1000,
        literal_minus: bool = False,
        sink_factory: SinkFactory = SpooledLiteral,
        pause_after_commands: bool = False,
    ) -> None:
        self.max_line_length = max_line_length
        self.max_literal_size = max_literal_size
        self.max_command_size = max_command_size
        self.max_message_size = max_message_size
        self.max_depth = max_depth
        self.max_search_keys = max_search_keys
        self.literal_minus = literal_minus
        self.sink_factory = sink_factory
        self.pause_after_commands = pause_after_commands
        #: RFC 6855 UTF8=ACCEPT is enabled: mailbox names are UTF-8 (``&`` is just
        #: ``&``) and come out in modified UTF-7, as without it; APPEND takes UTF8 data.
        self.utf8 = False
        self._buffer = bytearray()
        self._scanned = 0  # how much of _buffer is known to hold no LF
        self._line_mode = False
        self._paused = False
        # skipping the rest of a refused command
        self._skipping = False
        self._skip_tail = b""
        # a literal being received: bytes left, where they go
        self._literal_left: int | None = None
        self._literal_chunks: list[bytes] = []
        self._literal_sink: c.LiteralSink | None = None
        self._literal_discard = False
        self._reset_command()

    # -- public -----------------------------------------------------------

    @property
    def paused(self) -> bool:
        """True after AUTHENTICATE, IDLE, STARTTLS, COMPRESS or a line-mode line."""
        return self._paused

    @property
    def buffered(self) -> int:
        """Bytes received and not yet parsed."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Event]:
        """Take ``data`` and return the events it completes."""
        self._buffer += data
        return self._process()

    def read_lines(self) -> list[Event]:
        """Unpause in line mode: each line comes out as one :class:`Line`
        (pausing again after it), for AUTHENTICATE and IDLE."""
        self._line_mode = True
        self._paused = False
        return self._process()

    def read_commands(self) -> list[Event]:
        """Unpause in command mode."""
        self._line_mode = False
        self._paused = False
        return self._process()

    def close(self) -> None:
        """The connection is gone: close the sink of the literal being received
        and those of the unfinished command (a MULTIAPPEND's earlier messages),
        so that no staged file outlives it."""
        sink, self._literal_sink = self._literal_sink, None
        self._literal_left = None
        if sink is not None:
            sink.close()
        self._abandon_command()
        self._buffer.clear()
        self._scanned = 0

    def discard_buffered(self) -> int:
        """Throw away unparsed input (after STARTTLS); returns how much."""
        return len(self.take_buffered())

    def take_buffered(self) -> bytes:
        """Take out the unparsed input (after COMPRESS, where it is compressed)."""
        taken = bytes(self._buffer)
        self._buffer.clear()
        self._scanned = 0
        return taken

    # -- framing --------------------------------------------------------------

    def _reset_command(self) -> None:
        self._fragments: list[bytes] = []
        self._boundaries: list[int] = []
        self._literals: list[bytes | c.LiteralSink] = []
        self._literal_sizes: list[int] = []
        self._text_size = 0
        self._memory_size = 0

    def _abandon_command(self) -> None:
        for value in self._literals:
            if not isinstance(value, bytes):
                value.close()
        self._reset_command()

    def _current_tag(self, pending: bytes = b"") -> str | None:
        start = self._fragments[0] if self._fragments else pending
        return _head(start)[0]

    def _process(self) -> list[Event]:
        events: list[Event] = []
        buffer = self._buffer
        while not self._paused:
            if self._literal_left is not None:
                if not self._receive_literal():
                    break
                continue
            newline = buffer.find(b"\n", self._scanned)
            if newline < 0:
                self._scanned = len(buffer)
                self._overflow(events)
                break
            line = bytes(buffer[:newline])
            del buffer[: newline + 1]
            self._scanned = 0
            if self._skipping:
                # The line's CR may have come in an earlier read, in _skip_tail.
                line = self._skip_tail + line
            if line.endswith(b"\r"):
                line = line[:-1]
            if self._skipping:
                self._end_skipped_line(line)
            elif self._line_mode:
                if len(line) > self.max_line_length:
                    events.append(ParseError(None, "line too long", "TOOBIG"))
                else:
                    events.append(Line(line))
                self._paused = True  # line mode hands out one line (or its error) at a time
            else:
                self._command_line(line, events)
        return events

    def _overflow(self, events: list[Event]) -> None:
        """No line end yet: enforce the line limit on what is buffered."""
        buffer = self._buffer
        if self._skipping:
            self._skip_tail = (self._skip_tail + bytes(buffer))[-32:]
            buffer.clear()
            self._scanned = 0
            return
        if self._text_size + len(buffer) <= self.max_line_length:
            return
        tag = None if self._line_mode else self._current_tag(bytes(buffer[:256]))
        message = "line too long" if self._line_mode else "command line too long"
        events.append(ParseError(tag, message, "TOOBIG"))
        self._abandon_command()
        if self._line_mode:
            self._paused = True  # the session decides how to read on, as after a Line
        self._skipping = True
        self._skip_tail = bytes(buffer[-32:])
        buffer.clear()
        self._scanned = 0

    def _end_skipped_line(self, tail: bytes) -> None:
        self._skip_tail = b""
        self._skipping = False
        found = _LITERAL_AT_END.search(tail)
        if found and found.group(3):
            self._start_literal(int(found.group(2)), discard=True)

    def _start_literal(
        self, size: int, *, discard: bool = False, sink: c.LiteralSink | None = None
    ) -> None:
        self._literal_left = size
        self._literal_discard = discard
        self._literal_sink = sink
        self._literal_chunks = []

    def _receive_literal(self) -> bool:
        """Move literal bytes out of the buffer; False when it is empty."""
        assert self._literal_left is not None
        buffer = self._buffer
        if self._literal_left:
            if not buffer:
                return False
            chunk = bytes(buffer[: self._literal_left])
            del buffer[: len(chunk)]
            self._literal_left -= len(chunk)
            if self._literal_sink is not None:
                self._literal_sink.write(chunk)
            elif not self._literal_discard:
                self._literal_chunks.append(chunk)
        if self._literal_left:
            return False
        self._literal_left = None
        if self._literal_discard:
            self._skipping = True  # the rest of the refused command's line
        elif self._literal_sink is not None:
            self._literals.append(self._literal_sink)
        else:
            self._literals.append(b"".join(self._literal_chunks))
        self._literal_sink = None
        self._literal_chunks = []
        return True

    def _command_line(self, line: bytes, events: list[Event]) -> None:
        if not self._fragments and not line:
            return  # an empty line between commands
        if self._text_size + len(line) > self.max_line_length:
            events.append(
                ParseError(self._current_tag(line), "command line too long", "TOOBIG")
            )
            self._abandon_command()
            self._end_skipped_line(line)
            return
        self._fragments.append(line)
        self._text_size += len(line)
        self._memory_size += len(line)
        found = _LITERAL_AT_END.search(line)
        if found is None:
            self._complete(events)
            return
        self._boundaries.append(self._text_size)
        binary, size, sync = (
            bool(found.group(1)),
            int(found.group(2)),
            not found.group(3),
        )
        refusal = self._refusal(size, binary, sync, found.group())
        if isinstance(refusal, ParseError):
            events.append(refusal)
            self._abandon_command()
            if not sync:
                self._start_literal(size, discard=True)
            return
        self._literal_sizes.append(size)
        if sync:
            events.append(ContinuationNeeded(self._current_tag() or "*", size))
        if refusal is None:
            self._memory_size += size
        self._start_literal(size, sink=refusal)

    def _refusal(
        self, size: int, binary: bool, sync: bool, announcement: bytes
    ) -> ParseError | c.LiteralSink | None:
        """A ParseError to refuse the literal just announced, a sink for an
        APPEND message literal, or None for an in-memory literal."""
        tag, name, arguments_at = _head(self._fragments[0])
        if tag is None:
            return ParseError(None, "invalid tag")
        if name is None or (
            name not in COMMANDS and name.removeprefix("UID ") not in UID_COMMANDS
        ):
            return ParseError(tag, "unknown command")
        if not sync and self.literal_minus and size > _LITERAL_MINUS_LIMIT:
            return ParseError(
                tag, "non-synchronizing literal over 4096 bytes", "TOOBIG"
            )
        # In APPEND every literal but the mailbox name is message data: flags
        # are atoms and the date-time is quoted.
        mailbox_position = (
            len(self._fragments) == 1
            and self._fragments[0][arguments_at:] == b" " + announcement
        )
        if name == "APPEND" and not mailbox_position:
            if size > self.max_message_size:
                return ParseError(tag, "message too big", "TOOBIG", "NO")
            try:
                return self.sink_factory(size, binary=True) if binary else self.sink_factory(size)
            except LiteralRefused as refused:
                return ParseError(tag, refused.message, refused.code, refused.status)
        if binary:
            return ParseError(tag, "literal8 is allowed only for APPEND data")
        if (
            size > self.max_literal_size
            or self._memory_size + size > self.max_command_size
        ):
            return ParseError(tag, "literal too big", "TOOBIG")
        return None

    def _complete(self, events: list[Event]) -> None:
        text = b"".join(self._fragments)
        try:
            command = self._parse(text)
        except _Syntax as error:
            events.append(ParseError(_head(text)[0], error.message, error.code))
            self._abandon_command()
            return
        self._reset_command()
        events.append(command)
        if self.pause_after_commands or isinstance(command, PAUSING_COMMANDS):
            self._paused = True

    def _parse(self, text: bytes) -> c.Command:
        tag, name, arguments_at = _head(text)
        if tag is None:
            raise _Syntax("invalid tag")
        reader = _Reader(
            text, self._boundaries, self._literals, self._literal_sizes, self.max_depth,
            self.max_search_keys, self.utf8,
        )
        if name is None:
            raise _Syntax("missing or invalid command name")
        uid = name.startswith("UID ")
        if uid:
            name = name[4:]
            if name not in UID_COMMANDS:
                raise _Syntax("unknown UID command")
        if name not in COMMANDS:
            raise _Syntax("unknown command")
        reader.pos = arguments_at
        return COMMANDS[name](reader, tag, uid)
