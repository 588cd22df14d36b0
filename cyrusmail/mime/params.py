"""Reading Content-Type and Content-Disposition values (RFC 2045, RFC 2183).

Lenient where real mail needs it and where Cyrus is too: an unquoted
parameter value runs to the next ``;`` (so ``boundary=----=_Part_1`` and
``name=This is a test.txt`` keep their whole value), and junk between
parameters is skipped.  Parameter names are upper-cased, values are kept as
sent.  RFC 2231 continuations (``name*0*=``, ``name*1*=``) are joined into
one ``NAME*`` (or ``NAME``) parameter, still percent-encoded, as Dovecot and
Cyrus both report them.
"""

from __future__ import annotations

import re

_TSPECIALS = frozenset(b'()<>@,;:\\"/[]?=')
_TOKEN_BYTES = frozenset(range(0x21, 0x7F)) - _TSPECIALS
_SPACE = frozenset(b" \t\r\n")

Params = list[tuple[bytes, bytes]]


def _skip_cfws(value: bytes, pos: int) -> int:
    """Skip white space and (possibly nested) comments."""
    length = len(value)
    while pos < length:
        char = value[pos]
        if char in _SPACE:
            pos += 1
        elif char == 0x28:  # "("
            depth = 0
            while pos < length:
                char = value[pos]
                if char == 0x5C:  # backslash quotes the next byte
                    pos += 2
                    continue
                if char == 0x28:
                    depth += 1
                elif char == 0x29:
                    depth -= 1
                    if depth == 0:
                        pos += 1
                        break
                pos += 1
        else:
            break
    return pos


def _token(value: bytes, pos: int) -> tuple[bytes, int]:
    start = pos
    length = len(value)
    while pos < length and value[pos] in _TOKEN_BYTES:
        pos += 1
    return value[start:pos], pos


def _quoted(value: bytes, pos: int) -> tuple[bytes, int]:
    """A quoted string starting at the opening quote; unterminated runs to the end."""
    pos += 1
    out = bytearray()
    length = len(value)
    while pos < length:
        char = value[pos]
        if char == 0x22:
            return bytes(out), pos + 1
        if char == 0x5C and pos + 1 < length:
            pos += 1
            char = value[pos]
        out.append(char)
        pos += 1
    return bytes(out), pos


def parse_params(value: bytes, pos: int) -> Params:
    """``;``-separated ``attribute=value`` pairs from ``pos`` on."""
    params: Params = []
    length = len(value)
    while pos < length:
        pos = _skip_cfws(value, pos)
        if pos >= length:
            break
        if value[pos] != 0x3B:  # not ";": skip junk up to the next one
            next_semicolon = value.find(b";", pos)
            if next_semicolon < 0:
                break
            pos = next_semicolon
        pos = _skip_cfws(value, pos + 1)
        name, pos = _token(value, pos)
        pos = _skip_cfws(value, pos)
        if not name or pos >= length or value[pos] != 0x3D:  # "="
            continue
        pos = _skip_cfws(value, pos + 1)
        if pos < length and value[pos] == 0x22:
            param_value, pos = _quoted(value, pos)
        else:
            next_semicolon = value.find(b";", pos)
            stop = length if next_semicolon < 0 else next_semicolon
            param_value = value[pos:stop].strip(b" \t\r\n")
            pos = stop
        params.append((name.upper(), param_value))
    return _join_continuations(params)


_SECTION = re.compile(rb"^(.+)\*([0-9]+)(\*?)$")


def _join_continuations(params: Params) -> Params:
    """Merge RFC 2231 sections ``NAME*0*``, ``NAME*1`` ... into ``NAME*``."""
    if not any(b"*" in name for name, _ in params):
        return params
    joined: Params = []
    sections: dict[bytes, list[tuple[int, bytes, bool]]] = {}
    for name, value in params:
        match = _SECTION.match(name)
        if match is None:
            joined.append((name, value))
            continue
        base = match.group(1)
        if base not in sections:
            sections[base] = []
            joined.append((base, b""))  # placeholder keeps the first position
        sections[base].append((int(match.group(2)), value, bool(match.group(3))))
    out: Params = []
    for name, value in joined:
        pieces = sections.get(name)
        if pieces is None or value:
            out.append((name, value))
            continue
        pieces.sort(key=lambda piece: piece[0])
        extended = pieces[0][2]
        out.append((name + b"*" if extended else name, b"".join(piece[1] for piece in pieces)))
    return out


def parse_content_type(value: bytes) -> tuple[bytes, bytes, Params] | None:
    """``(TYPE, SUBTYPE, params)`` upper-cased, or None if the value is unusable."""
    pos = _skip_cfws(value, 0)
    media_type, pos = _token(value, pos)
    pos = _skip_cfws(value, pos)
    if not media_type or pos >= len(value) or value[pos] != 0x2F:  # "/"
        return None
    pos = _skip_cfws(value, pos + 1)
    subtype, pos = _token(value, pos)
    if not subtype:
        return None
    return media_type.upper(), subtype.upper(), parse_params(value, pos)


def parse_disposition(value: bytes) -> tuple[bytes, Params] | None:
    """``(TYPE, params)`` of a Content-Disposition, or None if it has no valid type."""
    pos = _skip_cfws(value, 0)
    disposition, pos = _token(value, pos)
    if not disposition:
        return None
    pos = _skip_cfws(value, pos)
    if pos < len(value) and value[pos] != 0x3B:
        return None
    return disposition.upper(), parse_params(value, pos)


def transfer_encoding_token(value: bytes) -> bytes | None:
    """The single token a Content-Transfer-Encoding value holds, upper-cased, or None."""
    pos = _skip_cfws(value, 0)
    token, pos = _token(value, pos)
    if not token or _skip_cfws(value, pos) != len(value):
        return None
    return token.upper()


def param(params: Params, name: bytes) -> bytes | None:
    """The first value of the (upper-case) parameter ``name``."""
    for param_name, param_value in params:
        if param_name == name:
            return param_value
    return None
