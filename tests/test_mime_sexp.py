"""An IMAP response s-expression reader for the MIME tests, and its own tests.

``read_sexp`` turns a wire value (ENVELOPE, BODYSTRUCTURE, BODY) into
nested Python lists of ``None`` (NIL), ``int`` (numbers), ``bytes``
(quoted strings and literals) and :class:`Atom`, so tests compare values
rather than quoting style.  ``normalise_body`` upper-cases the tokens
RFC 3501 treats as case-insensitive (type, subtype, encoding, parameter
names, disposition type) so Dovecot's answers compare with ours.
"""

from __future__ import annotations

import re
import unittest
from typing import Any


class Atom(bytes):
    """An unquoted token that is neither NIL nor a number."""


_NUMBER = re.compile(rb"[0-9]+")
_ATOM_END = re.compile(rb"[ ()\r\n\"{]")


def read_sexp(wire: bytes) -> Any:
    """The value of one s-expression; raises ValueError on malformed input."""
    value, pos = _read(wire, 0)
    if pos != len(wire):
        raise ValueError(f"trailing bytes at {pos}: {wire[pos:pos + 20]!r}")
    return value


def _read(wire: bytes, pos: int) -> tuple[Any, int]:
    if pos >= len(wire):
        raise ValueError("unexpected end")
    char = wire[pos:pos + 1]
    if char == b"(":
        items = []
        pos += 1
        while True:
            while wire[pos:pos + 1] == b" ":
                pos += 1
            if wire[pos:pos + 1] == b")":
                return items, pos + 1
            item, pos = _read(wire, pos)
            items.append(item)
    if char == b'"':
        out = bytearray()
        pos += 1
        while True:
            byte = wire[pos:pos + 1]
            if not byte:
                raise ValueError("unterminated quoted string")
            if byte == b'"':
                return bytes(out), pos + 1
            if byte == b"\\":
                pos += 1
                byte = wire[pos:pos + 1]
            elif byte in (b"\r", b"\n"):
                raise ValueError("CR or LF in quoted string")
            out += byte
            pos += 1
    if char == b"{":
        close = wire.index(b"}\r\n", pos)
        length = int(wire[pos + 1:close])
        start = close + 3
        if start + length > len(wire):
            raise ValueError("short literal")
        return wire[start:start + length], start + length
    match = _ATOM_END.search(wire, pos)
    end = match.start() if match else len(wire)
    token = wire[pos:end]
    if not token:
        raise ValueError(f"unexpected {char!r} at {pos}")
    if token.upper() == b"NIL":
        return None, end
    if _NUMBER.fullmatch(token):
        return int(token), end
    return Atom(token), end


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, bytes) else value


def _params(value: Any) -> Any:
    if not isinstance(value, list):
        return value
    return [_upper(item) if index % 2 == 0 else item for index, item in enumerate(value)]


def _disposition(value: Any) -> Any:
    if not isinstance(value, list) or len(value) < 2:
        return value
    return [_upper(value[0]), _params(value[1]), *value[2:]]


def normalise_body(body: Any) -> Any:
    """A BODY/BODYSTRUCTURE with its case-insensitive tokens upper-cased."""
    if not isinstance(body, list) or not body:
        return body
    if isinstance(body[0], list):  # multipart
        children = []
        index = 0
        while index < len(body) and isinstance(body[index], list):
            children.append(normalise_body(body[index]))
            index += 1
        rest = body[index:]
        out = [*children]
        if rest:
            out.append(_upper(rest[0]))
        if len(rest) > 1:
            out.append(_params(rest[1]))
        if len(rest) > 2:
            out.append(_disposition(rest[2]))
        out.extend(rest[3:])
        return out
    out = [_upper(body[0]), _upper(body[1]), _params(body[2]), body[3], body[4],
           _upper(body[5]), *body[6:]]
    is_message = out[0] == b"MESSAGE" and out[1] == b"RFC822"
    if is_message and len(out) > 8:
        out[8] = normalise_body(out[8])
        extension_at = 10
    elif out[0] == b"TEXT":
        extension_at = 8
    else:
        extension_at = 7
    if len(out) > extension_at + 1:
        out[extension_at + 1] = _disposition(out[extension_at + 1])
    return out


class ReadSexpTests(unittest.TestCase):
    """The reader itself: every wire form it must understand."""

    def test_atoms_numbers_nil(self) -> None:
        self.assertEqual(read_sexp(b"(NIL 12 FOO nil)"), [None, 12, b"FOO", None])
        self.assertIsInstance(read_sexp(b"(FOO)")[0], Atom)

    def test_quoted_with_escapes(self) -> None:
        self.assertEqual(read_sexp(b'("a \\"b\\" \\\\c")'), [b'a "b" \\c'])

    def test_literal(self) -> None:
        self.assertEqual(read_sexp(b'({5}\r\nab)\r\n "x")'), [b"ab)\r\n", b"x"])

    def test_nested_lists_without_spaces(self) -> None:
        self.assertEqual(read_sexp(b'((1)(2) "MIXED")'), [[1], [2], b"MIXED"])

    def test_malformed_input_is_rejected(self) -> None:
        for wire in (b'("abc)', b"(1 2", b"{9}\r\nab", b"(1) x"):
            with self.subTest(wire=wire), self.assertRaises((ValueError, IndexError)):
                read_sexp(wire)

    def test_normalise_upper_cases_only_tokens(self) -> None:
        dovecot = read_sexp(b'(("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 3 1 NIL '
                            b'("inline" ("filename" "a.txt")) NIL NIL) "mixed" ("boundary" "b") NIL NIL NIL)')
        self.assertEqual(normalise_body(dovecot), [
            [b"TEXT", b"PLAIN", [b"CHARSET", b"utf-8"], None, None, b"7BIT", 3, 1, None,
             [b"INLINE", [b"FILENAME", b"a.txt"]], None, None],
            b"MIXED", [b"BOUNDARY", b"b"], None, None, None])
