"""Submission's header check: the From: and Sender: addresses must be the user's own.

MAIL FROM already has to be an address the logged-in user owns; this does
the same for what the recipient's mail program shows, as Postfix's
``reject_sender_login_mismatch`` does for the envelope and the big
providers do for the header.  Every address of every ``From:`` field (RFC
5322 section 3.6.2; groups as RFC 6854 allows them there) and of every
``Sender:`` field (exactly one mailbox) must be one of
``account.addresses``, compared as MAIL FROM is: the whole address,
case-insensitively.  A message without From: passes; the submission server
adds one with the (owned) envelope sender.

The address lists are read strictly, by our own RFC 5322 parser, because a
lenient one is a way around the check: ``From: alice@example.org
mallory@evil.example`` is read by some programs as one address and by
others as the other, so it is refused as unreadable, as is anything that is
not a well-formed address list.  Display names, comments and encoded words
(RFC 2047) are skipped; an encoded word is never an address.  Quoted local
parts compare by their meaning (``"alice"@example.org`` is
``alice@example.org``).  The parser is linear in the field's length and
never recurses, so a hostile header costs no more than reading it.
"""

from __future__ import annotations

from cyrusmail.mime.headers import iter_fields, unfold
from cyrusmail.smtp import codes
from cyrusmail.smtp.codes import Reply
from cyrusmail.smtp.wire import Path

#: Longest From:/Sender: value read (about 800 addresses); a longer one is refused unread.
MAX_FIELD = 16 * 1024
_SPECIALS = frozenset('()<>[]:;@\\,."')
_WORDS = ("atom", "quoted")


class UnreadableAddress(ValueError):
    """An address field that is not a well-formed RFC 5322 address list."""


def check_authorship(header: bytes, owned: frozenset[str] | set[str]) -> Reply | None:
    """None if every From:/Sender: address in ``header`` is in ``owned`` (lower-case), else the refusal."""
    for name, raw in iter_fields(header):
        if name not in (b"from", b"sender"):
            continue
        field = "From" if name == b"from" else "Sender"
        try:
            if len(raw) > MAX_FIELD:
                raise UnreadableAddress(f"is longer than {MAX_FIELD} octets")
            addresses = address_list(unfold(raw).decode("utf-8", "surrogateescape"))
            if not addresses:
                raise UnreadableAddress("names no address")
            if field == "Sender" and len(addresses) != 1:
                raise UnreadableAddress("must name exactly one address")
        except UnreadableAddress as error:
            return codes.HEADER_FROM_UNREADABLE.with_text(f"{field}: header {error}; cannot check its sender")
        for address in addresses:
            if address.lower() not in owned:
                return codes.HEADER_FROM_NOT_OWNED.with_text(
                    f"{field}: header address <{_shown(address)}> not owned by the authenticated user")
    return None


def address_list(value: str) -> list[str]:
    """The addresses (``local@domain``) of an unfolded address-list field value.

    Group members are included, group names are not.  Raises
    :class:`UnreadableAddress` for anything that is not RFC 5322 syntax
    (obsolete forms included: empty list elements, routes, dotted phrases).
    """
    tokens = _tokens(value)
    reader = _Reader(tokens)
    addresses: list[str] = []
    while not reader.at_end():
        if reader.take(","):
            continue  # RFC 5322 4.4: empty list elements
        reader.element(addresses, in_group=False)
        if not reader.at_end() and not reader.take(","):
            raise UnreadableAddress("has text after an address")
    return addresses


def _tokens(value: str) -> list[tuple[str, str]]:
    """(kind, text): ``atom``, ``quoted`` (unquoted text), ``literal`` (with brackets), or a special."""
    tokens: list[tuple[str, str]] = []
    position, length = 0, len(value)
    while position < length:
        char = value[position]
        if char in " \t":
            position += 1
        elif char < " " or char == "\x7f":
            raise UnreadableAddress("holds a control character")
        elif char == "(":
            position = _skip_comment(value, position)
        elif char == '"':
            text, position = _quoted(value, position)
            tokens.append(("quoted", text))
        elif char == "[":
            close = value.find("]", position)
            if close < 0 or any(c in "[\\" for c in value[position + 1:close]):
                raise UnreadableAddress("has a broken domain literal")
            tokens.append(("literal", value[position:close + 1]))
            position = close + 1
        elif char in _SPECIALS:
            if char in ")]\\":
                raise UnreadableAddress(f"has a stray {char!r}")
            tokens.append((char, char))
            position += 1
        else:
            start = position
            while position < length and value[position] not in _SPECIALS and value[position] > " " \
                    and value[position] != "\x7f":
                position += 1
            tokens.append(("atom", value[start:position]))
    return tokens


def _skip_comment(value: str, position: int) -> int:
    """Past the (possibly nested) comment that starts at ``position``."""
    depth = 0
    while position < len(value):
        char = value[position]
        if char == "\\":
            position += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return position + 1
        elif char < " " and char != "\t":
            raise UnreadableAddress("holds a control character")
        position += 1
    raise UnreadableAddress("has an unterminated comment")


def _quoted(value: str, position: int) -> tuple[str, int]:
    """The text of the quoted string at ``position`` and the position after it."""
    out = []
    position += 1
    while position < len(value):
        char = value[position]
        if char == '"':
            return "".join(out), position + 1
        if char == "\\":
            position += 1
            if position >= len(value):
                break
            char = value[position]
        if char < " " and char != "\t":
            raise UnreadableAddress("holds a control character")
        out.append(char)
        position += 1
    raise UnreadableAddress("has an unterminated quoted string")


class _Reader:
    """Descent over the tokens, one address-list element at a time (a group's members one level down)."""

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.position = 0

    def at_end(self) -> bool:
        return self.position >= len(self.tokens)

    def kind(self) -> str | None:
        return None if self.at_end() else self.tokens[self.position][0]

    def take(self, kind: str) -> bool:
        if self.kind() == kind:
            self.position += 1
            return True
        return False

    def expect(self, kind: str, what: str) -> None:
        if not self.take(kind):
            raise UnreadableAddress(f"lacks {what}")

    def element(self, addresses: list[str], in_group: bool) -> None:
        """One mailbox (``[phrase] <addr-spec>`` or ``addr-spec``) or, outside a group, a group."""
        start = self.position
        while self.kind() in (*_WORDS, "."):
            self.position += 1
        run = self.tokens[start:self.position]
        following = self.kind()
        if following == "<":
            if run and run[0][0] == ".":
                raise UnreadableAddress("has a display name starting with '.'")
            self.position += 1
            self._route()
            addresses.append(self._addr_spec(self._words()))
            self.expect(">", "the closing '>'")
        elif following == ":" and not in_group and run:
            self.position += 1
            while not self.take(";"):
                if self.at_end():
                    raise UnreadableAddress("has a group without its closing ';'")
                if self.take(","):
                    continue
                self.element(addresses, in_group=True)
                if self.kind() not in (",", ";"):
                    raise UnreadableAddress("has a group without its closing ';'" if self.at_end()
                                            else "has text after an address")
        elif following == "@":
            addresses.append(self._addr_spec(run))
        else:
            raise UnreadableAddress("has something that is not an address")

    def _words(self) -> list[tuple[str, str]]:
        start = self.position
        while self.kind() in (*_WORDS, "."):
            self.position += 1
        return self.tokens[start:self.position]

    def _route(self) -> None:
        """An obsolete source route (``<@a,@b:user@host>``) is read and dropped."""
        if self.kind() != "@":
            return
        while True:
            if self.take("@"):
                self._domain()
            if not self.take(","):
                break
        self.expect(":", "the ':' after a route")

    def _addr_spec(self, local: list[tuple[str, str]]) -> str:
        """``local@domain`` from the local part's tokens; the reader is at the ``@``."""
        if not local or len(local) % 2 == 0 or any(
            (kind in _WORDS) != (index % 2 == 0) for index, (kind, _) in enumerate(local)
        ):
            raise UnreadableAddress("has a malformed local part")
        self.expect("@", "the '@' of an address")
        text = "".join(text for _, text in local)
        return Path(text, self._domain()).address

    def _domain(self) -> str:
        if self.kind() == "literal":
            self.position += 1
            return self.tokens[self.position - 1][1]
        labels = []
        while True:
            if self.kind() != "atom":
                raise UnreadableAddress("has a malformed domain")
            labels.append(self.tokens[self.position][1])
            self.position += 1
            if not self.take("."):
                return ".".join(labels)


def _shown(address: str, limit: int = 100) -> str:
    """The address as it may appear in a reply: printable ASCII, short."""
    return "".join(ch if " " <= ch <= "~" else "?" for ch in address[:limit])
