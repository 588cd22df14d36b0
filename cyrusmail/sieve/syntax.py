"""The Sieve grammar (RFC 5228 section 8): script text -> a tree of commands.

This module knows only the grammar, not what any command means: the
lexer turns UTF-8 text into tokens (identifiers, tags, numbers with their
K/M/G quantifiers, quoted and multi-line strings, punctuation, comments
skipped), and the parser builds :class:`Command` and :class:`Test` nodes
whose arguments are :class:`Tag`, :class:`Number` and :class:`StringList`.
Which commands exist, and whether their arguments fit, is
:mod:`cyrusmail.sieve.commands`' business.

Every error is a :class:`SieveSyntaxError` naming the line.  Limits are
fixed here: nesting of blocks and tests (:data:`MAX_NESTING`), numbers up
to 2**31 - 1 after the quantifier (the RFC's minimum).  Line ends may be
CRLF or a bare LF (scripts edited on Unix); a bare CR is an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: Blocks within blocks, and tests within tests (allof(anyof(not(...)))).
MAX_NESTING = 32
MAX_NUMBER = 2**31 - 1
_QUANTIFIERS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


class SieveSyntaxError(Exception):
    """A script that cannot be run: ``line`` is where the problem is (1-based)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


# -- the tree -------------------------------------------------------------------


@dataclass(frozen=True)
class Tag:
    name: str  # lower case, with its colon: ":is"
    line: int


@dataclass(frozen=True)
class Number:
    value: int
    line: int


@dataclass(frozen=True)
class StringList:
    values: tuple[str, ...]
    line: int
    bracketed: bool = False  # written as [...]; a single string otherwise


Argument = Tag | Number | StringList


@dataclass
class Test:
    name: str  # lower case
    line: int
    arguments: list[Argument] = field(default_factory=list)
    tests: list[Test] = field(default_factory=list)
    test_list: bool = False  # tests were written as (t1, t2): allof/anyof


@dataclass
class Command:
    name: str  # lower case
    line: int
    arguments: list[Argument] = field(default_factory=list)
    tests: list[Test] = field(default_factory=list)
    test_list: bool = False
    block: list[Command] | None = None


# -- the lexer --------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>[ \t]+|\r\n|\n)
  | (?P<hash>\#[^\r\n]*)
  | (?P<bracket>/\*)
  | (?P<text>text:[ \t]*(?:\#[^\r\n]*)?(?:\r\n|\n))
  | (?P<identifier>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<tag>:[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>[0-9]+[KkMmGg]?(?![A-Za-z0-9_]))
  | (?P<quote>")
  | (?P<special>[;,()\[\]{}])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str  # identifier, tag, number, string, special, end
    value: object
    line: int


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text``; SieveSyntaxError at the first thing that is not one."""
    tokens: list[Token] = []
    pos, line, length = 0, 1, len(text)
    while pos < length:
        match = _TOKEN.match(text, pos)
        if match is None:
            shown = text[pos]
            what = "a bare CR" if shown == "\r" else f"unexpected character {shown!r}"
            raise SieveSyntaxError(line, what)
        kind = match.lastgroup
        start_line = line
        if kind == "bracket":
            end = text.find("*/", match.end())
            if end < 0:
                raise SieveSyntaxError(line, "comment /* ... not closed")
            line += text.count("\n", pos, end)
            pos = end + 2
            continue
        if kind == "quote":
            value, pos, line = _quoted(text, match.end(), line)
            tokens.append(Token("string", value, start_line))
            continue
        if kind == "text":
            value, pos, line = _multiline(text, match.end(), line + 1)
            tokens.append(Token("string", value, start_line))
            continue
        token_text = match.group()
        pos = match.end()
        if kind == "space":
            line += token_text.count("\n")
        elif kind == "hash":
            continue
        elif kind == "identifier":
            tokens.append(Token("identifier", token_text.lower(), line))
        elif kind == "tag":
            tokens.append(Token("tag", token_text.lower(), line))
        elif kind == "number":
            unit = token_text[-1].upper() if token_text[-1].isalpha() else ""
            value = int(token_text.rstrip("KkMmGg")) * _QUANTIFIERS[unit]
            if value > MAX_NUMBER:
                raise SieveSyntaxError(line, f"number {token_text} is over {MAX_NUMBER}")
            tokens.append(Token("number", value, line))
        else:
            tokens.append(Token("special", token_text, line))
    tokens.append(Token("end", None, line))
    return tokens


def _quoted(text: str, pos: int, line: int) -> tuple[str, int, int]:
    """A quoted string from just after its opening quote: (value, position after it, line)."""
    out: list[str] = []
    length = len(text)
    start_line = line
    while pos < length:
        char = text[pos]
        if char == '"':
            return "".join(out), pos + 1, line
        if char == "\\":
            if pos + 1 >= length:
                break
            char = text[pos + 1]  # \" and \\ as the RFC says; any other escape is the character
            pos += 1
        if char == "\n":
            line += 1
        elif char == "\r" and text[pos + 1:pos + 2] != "\n":
            raise SieveSyntaxError(line, "a bare CR in a string")
        out.append(char)
        pos += 1
    raise SieveSyntaxError(start_line, "string not closed (a \" is missing)")


def _multiline(text: str, pos: int, line: int) -> tuple[str, int, int]:
    """A ``text:`` string from its first line: lines up to a lone ".", dot-stuffing undone."""
    out: list[str] = []
    length = len(text)
    start_line = line - 1
    while pos < length:
        newline = text.find("\n", pos)
        if newline < 0:
            break
        raw = text[pos:newline]
        body = raw.removesuffix("\r")
        if "\r" in body:
            raise SieveSyntaxError(line, "a bare CR in a text: string")
        pos, line = newline + 1, line + 1
        if body == ".":
            return "".join(out), pos, line
        body = body.removeprefix(".")
        out.append(body + "\r\n")
    raise SieveSyntaxError(start_line, "text: string not closed (a line holding only \".\" is missing)")


# -- the parser -------------------------------------------------------------------


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> Token:
        return self.tokens[self.pos]

    def take(self) -> Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def is_special(self, char: str) -> bool:
        token = self.peek()
        return token.kind == "special" and token.value == char

    def expect(self, char: str, after: str) -> Token:
        token = self.take()
        if token.kind != "special" or token.value != char:
            raise SieveSyntaxError(token.line, f"expected {char!r} {after}, found {_describe(token)}")
        return token

    def commands(self, depth: int, closing: bool) -> list[Command]:
        commands = []
        while True:
            token = self.peek()
            if token.kind == "end":
                if closing:
                    raise SieveSyntaxError(token.line, "a block is not closed (a '}' is missing)")
                return commands
            if closing and self.is_special("}"):
                self.take()
                return commands
            commands.append(self.command(depth))

    def command(self, depth: int) -> Command:
        token = self.take()
        if token.kind != "identifier":
            raise SieveSyntaxError(token.line, f"expected a command, found {_describe(token)}")
        command = Command(token.value, token.line)
        command.arguments, command.tests, command.test_list = self.arguments(depth)
        if self.is_special(";"):
            self.take()
        elif self.is_special("{"):
            brace = self.take()
            if depth + 1 > MAX_NESTING:
                raise SieveSyntaxError(brace.line, f"blocks nested more than {MAX_NESTING} deep")
            command.block = self.commands(depth + 1, closing=True)
        else:
            found = self.peek()
            raise SieveSyntaxError(found.line, f"expected ';' after {command.name}, found {_describe(found)}")
        return command

    def arguments(self, depth: int) -> tuple[list[Argument], list[Test], bool]:
        arguments: list[Argument] = []
        while True:
            token = self.peek()
            if token.kind == "tag":
                self.take()
                arguments.append(Tag(token.value, token.line))
            elif token.kind == "number":
                self.take()
                arguments.append(Number(token.value, token.line))
            elif token.kind == "string" or self.is_special("["):
                arguments.append(self.string_list())
            else:
                break
        if self.is_special("("):
            opening = self.take()
            if depth + 1 > MAX_NESTING:
                raise SieveSyntaxError(opening.line, f"tests nested more than {MAX_NESTING} deep")
            tests = [self.test(depth + 1)]
            while self.is_special(","):
                self.take()
                tests.append(self.test(depth + 1))
            self.expect(")", "to close the test list")
            return arguments, tests, True
        if self.peek().kind == "identifier":
            if depth + 1 > MAX_NESTING:
                raise SieveSyntaxError(self.peek().line, f"tests nested more than {MAX_NESTING} deep")
            return arguments, [self.test(depth + 1)], False
        return arguments, [], False

    def test(self, depth: int) -> Test:
        token = self.take()
        if token.kind != "identifier":
            raise SieveSyntaxError(token.line, f"expected a test, found {_describe(token)}")
        test = Test(token.value, token.line)
        test.arguments, test.tests, test.test_list = self.arguments(depth)
        return test

    def string_list(self) -> StringList:
        token = self.take()
        if token.kind == "string":
            return StringList((token.value,), token.line)
        values = []
        while True:
            item = self.take()
            if item.kind != "string":
                raise SieveSyntaxError(item.line, f"expected a string in the list, found {_describe(item)}")
            values.append(item.value)
            if self.is_special(","):
                self.take()
                continue
            self.expect("]", "to close the string list")
            return StringList(tuple(values), token.line, bracketed=True)


def _describe(token: Token) -> str:
    if token.kind == "end":
        return "the end of the script"
    if token.kind == "string":
        return "a string"
    if token.kind == "number":
        return f"the number {token.value}"
    return repr(token.value)


def parse(text: str | bytes) -> list[Command]:
    """The commands of a script; SieveSyntaxError (with a line) if it is not Sieve."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            line = text[:error.start].count(b"\n") + 1
            raise SieveSyntaxError(line, "the script is not UTF-8") from None
    if "\x00" in text:
        raise SieveSyntaxError(text[:text.index("\x00")].count("\n") + 1, "a NUL character")
    return _Parser(tokenize(text)).commands(0, closing=False)
