"""RFC 5322 address lists as the ENVELOPE's address structures (RFC 3501 7.4.2).

Each address becomes ``(name, adl, mailbox, host)`` of raw bytes or None;
a group becomes a start marker ``(None, None, group-name, None)``, its
members and an end marker of four Nones.  Encoded words are left as sent.

The parser never fails.  Its choices on broken lists (see
``tests/data/mime_divergences.json`` for how they compare to Dovecot and
Cyrus):

* empty list elements (``, ,``) are skipped, as RFC 5322 4.4 obs-addr-list
  says;
* comments are dropped, except that the last one after a bare addr-spec
  is its name; a display name is the phrase's words joined by one space,
  quoted strings unquoted, and an empty one is NIL;
* when an element has an angle address, everything before ``<`` is the
  display name, even if it holds ``@`` (``Mikel@Lindsaar <r@g.com>``);
* in an addr-spec, the local part is every word before ``@`` (joined by a
  space, as Cyrus does for ``Big Bug bb@bug.com``); the domain is dot-atoms
  and domain literals, and junk after it up to the next comma is dropped;
* a missing domain is ``unspecified-domain`` and an empty angle address
  ``<>`` has the mailbox ``""``, as Cyrus writes them.
"""

from __future__ import annotations

Address = tuple[bytes | None, bytes | None, bytes | None, bytes | None]

MISSING_DOMAIN = b"unspecified-domain"

_SPECIALS = frozenset(b'()<>[]:;@\\,."')
_SPACE = frozenset(b" \t\r\n")

# Token kinds.
_WORD = 0      # atom or quoted string (value unquoted)
_SPECIAL = 1   # one of the specials, value is the byte
_LITERAL = 2   # domain literal, value with its brackets
_COMMENT = 3   # a comment's text, used only as a fallback display name


def _tokens(value: bytes) -> list[tuple[int, bytes]]:
    tokens: list[tuple[int, bytes]] = []
    pos = 0
    length = len(value)
    while pos < length:
        char = value[pos]
        if char in _SPACE:
            pos += 1
        elif char == 0x28:  # comment, possibly nested
            depth = 0
            comment_start = pos
            while pos < length:
                char = value[pos]
                if char == 0x5C:
                    pos += 2
                    continue
                if char == 0x28:
                    depth += 1
                elif char == 0x29:
                    depth -= 1
                    if depth == 0:
                        break
                pos += 1
            tokens.append((_COMMENT, value[comment_start + 1:pos].strip(b" \t")))
            pos += 1
        elif char == 0x22:  # quoted string
            pos += 1
            out = bytearray()
            while pos < length and value[pos] != 0x22:
                if value[pos] == 0x5C and pos + 1 < length:
                    pos += 1
                out.append(value[pos])
                pos += 1
            pos += 1
            tokens.append((_WORD, bytes(out)))
        elif char == 0x5B:  # domain literal
            close = value.find(b"]", pos)
            stop = length if close < 0 else close + 1
            tokens.append((_LITERAL, value[pos:stop]))
            pos = stop
        elif char in _SPECIALS:
            tokens.append((_SPECIAL, value[pos:pos + 1]))
            pos += 1
        else:
            start = pos
            while pos < length and value[pos] not in _SPECIALS and value[pos] not in _SPACE:
                pos += 1
            tokens.append((_WORD, value[start:pos]))
    return tokens


def _phrase(tokens: list[tuple[int, bytes]]) -> bytes | None:
    """Display name: words joined by one space.

    A dot sticks to the word before it (``Joe Q. Public``); other specials
    found in broken names stick to both neighbours (``Mikel@Lindsaar``).
    """
    if not tokens:
        return None
    out = bytearray()
    space_before_word = False
    for kind, text in tokens:
        if kind == _SPECIAL:
            out += text
            space_before_word = text == b"."
        else:
            if space_before_word:
                out += b" "
            out += text
            space_before_word = True
    return bytes(out)


def _local_part(tokens: list[tuple[int, bytes]]) -> bytes:
    """Words and dots before ``@``: dots glue, other gaps become one space."""
    out = bytearray()
    previous_was_word = False
    for kind, text in tokens:
        if kind == _WORD or kind == _LITERAL:
            if previous_was_word:
                out += b" "
            out += text
            previous_was_word = True
        else:
            out += text
            previous_was_word = False
    return bytes(out)


def _domain(tokens: list[tuple[int, bytes]], pos: int, end: int) -> tuple[bytes, int]:
    """Dot-atoms and domain literals from ``pos``; stops at anything else."""
    out = bytearray()
    expect_word = True
    while pos < end:
        kind, text = tokens[pos]
        if expect_word and kind in (_WORD, _LITERAL):
            out += text
            expect_word = False
        elif not expect_word and kind == _SPECIAL and text == b".":
            out += text
            expect_word = True
        else:
            break
        pos += 1
    return bytes(out), pos


def _addr_spec(tokens: list[tuple[int, bytes]], name: bytes | None,
               adl: bytes | None) -> Address | None:
    """An address from the tokens of ``local@domain`` (no brackets)."""
    at = next((i for i, (kind, text) in enumerate(tokens)
               if kind == _SPECIAL and text == b"@"), -1)
    if at < 0:
        if not tokens:
            return (name, adl, b"", MISSING_DOMAIN) if name is not None else None
        return (name, adl, _local_part(tokens), MISSING_DOMAIN)
    domain, _ = _domain(tokens, at + 1, len(tokens))
    return (name, adl, _local_part(tokens[:at]), domain or MISSING_DOMAIN)


def _angle_addr(tokens: list[tuple[int, bytes]], name: bytes | None) -> Address:
    """The inside of ``<...>``: an optional source route then an addr-spec."""
    adl = None
    if tokens and tokens[0] == (_SPECIAL, b"@"):
        colon = next((i for i, (kind, text) in enumerate(tokens)
                      if kind == _SPECIAL and text == b":"), -1)
        if colon > 0:
            adl = b"".join(text for _, text in tokens[:colon])
            tokens = tokens[colon + 1:]
    address = _addr_spec(tokens, name, adl)
    return address if address is not None else (name, adl, b"", MISSING_DOMAIN)


def _mailbox(tokens: list[tuple[int, bytes]]) -> Address | None:
    """One list element that is not a group; None if it is empty.

    Comments are dropped, but in an element without an angle address the
    last comment after the address begins names it
    (``MAILER-DAEMON@host (Mail Delivery System)``). A comment is never the
    name of an angle address (``(x) <a@b>``, ``<a@b> (x)``), nor one before
    the address (``(x) a@b``); an empty display name (``"" <a@b>``) is NIL.
    Dovecot and Cyrus answer all of these so.
    """
    plain = [token for token in tokens if token[0] != _COMMENT]
    for index, (kind, text) in enumerate(plain):
        if kind == _SPECIAL and text == b"<":
            close = next((j for j in range(index + 1, len(plain))
                          if plain[j] == (_SPECIAL, b">")), len(plain))
            return _angle_addr(plain[index + 1:close], _phrase(plain[:index]) or None)
    address = _addr_spec(plain, None, None)
    if address is not None:
        start = next((i for i, (kind, _) in enumerate(tokens) if kind != _COMMENT), len(tokens))
        comments = [text for kind, text in tokens[start:] if kind == _COMMENT]
        if comments and comments[-1]:
            address = (comments[-1], *address[1:])
    return address


def _split(tokens: list[tuple[int, bytes]], stops: bytes) -> list[list[tuple[int, bytes]]]:
    """Split at the special bytes in ``stops`` that are outside angle brackets."""
    pieces: list[list[tuple[int, bytes]]] = [[]]
    in_angle = False
    for token in tokens:
        kind, text = token
        if kind == _SPECIAL:
            if text == b"<":
                in_angle = True
            elif text == b">":
                in_angle = False
            elif not in_angle and text in stops:
                pieces.append([])
                continue
        pieces[-1].append(token)
    return pieces


def parse_address_list(value: bytes) -> list[Address]:
    """The ENVELOPE address structures of an unfolded address-list value."""
    tokens = _tokens(value)
    addresses: list[Address] = []
    pos = 0
    length = len(tokens)
    while pos < length:
        # One element runs to the next top-level comma, or is a group.
        element_end = pos
        in_angle = False
        group_colon = -1
        while element_end < length:
            kind, text = tokens[element_end]
            if kind == _SPECIAL:
                if text == b"<":
                    in_angle = True
                elif text == b">":
                    in_angle = False
                elif not in_angle and text == b",":
                    break
                elif not in_angle and text == b":" and group_colon < 0:
                    group_colon = element_end
                    break
            element_end += 1
        if group_colon >= 0:
            semicolon = next((i for i in range(group_colon + 1, length)
                              if tokens[i] == (_SPECIAL, b";")), length)
            group_name = [token for token in tokens[pos:group_colon] if token[0] != _COMMENT]
            addresses.append((None, None, _phrase(group_name) or b"", None))
            for member in _split(tokens[group_colon + 1:semicolon], b","):
                address = _mailbox(member)
                if address is not None:
                    addresses.append(address)
            addresses.append((None, None, None, None))
            pos = semicolon + 1
            continue
        address = _mailbox(tokens[pos:element_end])
        if address is not None:
            addresses.append(address)
        pos = element_end + 1
    return addresses
