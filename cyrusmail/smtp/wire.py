"""Sans-IO SMTP/LMTP wire parser: client bytes in, typed events out.

One parser serves submission (RFC 6409) and LMTP (RFC 2033): it parses
HELO, EHLO and LHLO alike and leaves it to the session to say which it
accepts.  It knows nothing of sockets, the reactor or the store.  The session
feeds it bytes and gets back a list of events, in the order the client sent
them (so pipelining, RFC 2920, needs nothing special):

* a :class:`Command` (a frozen dataclass per verb: :class:`Mail`,
  :class:`Rcpt`, :class:`Bdat`, ...);
* a :class:`CommandError` naming the reply from :mod:`cyrusmail.smtp.codes`
  for a line that could not be parsed; the session sends it and goes on;
* :class:`DataChunk` pieces of the message, then one :class:`DataEnd` (DATA)
  or :class:`ChunkEnd` (BDAT) that says whether the message is acceptable;
* :class:`AuthResponse` / :class:`AuthCancelled` for SASL continuation lines.

Modes.  After a command whose next bytes mean something that only the
session can decide (DATA, BDAT, AUTH, STARTTLS), the parser *pauses*: it
stops at that command and keeps what follows buffered until the session
calls :meth:`SMTPParser.start_data` (354 sent, or BDAT accepted),
:meth:`~SMTPParser.start_auth` (334 sent), :meth:`~SMTPParser.discard_buffered`
(220 sent to STARTTLS) or :meth:`~SMTPParser.resume` (the command was
refused), and then ``feed(b"")`` to parse what was buffered.  After QUIT,
and after a BDAT it cannot read, it reads nothing more.

Limits (:class:`Limits`).  A command line is at most 512 octets with its
CRLF (RFC 5321 section 4.5.3.1.4); MAIL and RCPT may have 2048 for their
ESMTP parameters (RFC 1870, 3461, 6531); AUTH and SASL continuation lines
12288 (RFC 4954 section 4).  A longer line is discarded as it arrives, never
buffered whole, and answered with 500 5.5.6 when its CRLF comes; nothing of
it is read as a command.  A text line of the message is at most 1000 octets
with its CRLF (section 4.5.3.1.6).

Line endings: the one rule.  Only CR LF ends a line, in commands and in
message data alike, and the end of DATA is recognised only as CR LF "." CR
LF.  A CR not followed by LF, or an LF not preceded by CR ("bare" CR/LF), is
never a line end:

* in a command line, it makes that line a :data:`codes.BARE_NEWLINE` error;
* in DATA (and in non-BINARYMIME BDAT chunks) it marks the message failed
  with :data:`codes.BARE_NEWLINE`, reported after the end of data; the rest
  of the message is still read as message, so ``\\n.\\n``, ``\\r.\\r``,
  ``\\n.\\r\\n`` and ``\\r\\n.\\n`` never end the data and what follows them is
  never read as commands.

Refusing (rather than normalising bare LF to CRLF) is Postfix's
``smtpd_forbid_bare_newline`` answer to SMTP smuggling (CVE-2023-51766 and
kin): no byte sequence can mean "end of message" to one hop and "more
message" to another, and a stored message is always in canonical CRLF form.
Legitimate clients never send bare newlines in SMTP.

NUL.  A message holding a NUL octet fails with :data:`codes.NUL_IN_MESSAGE`
(554 5.6.0), in DATA and in BDAT alike: RFC 5322 text excludes it, IMAP
cannot send it in a literal (RFC 3501 CHAR8), and the MIME layer and many
clients treat it as the end of a string.  Cyrus refuses such messages too.

A failed message (bare CR/LF, NUL, over-long line, over ``max_size``) is still
consumed to its end, but no more of it is handed out as :class:`DataChunk`;
the session drops what it had and sends the reply in :attr:`DataEnd.error`.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import string
from dataclasses import dataclass
from typing import ClassVar

from cyrusmail import sasl
from cyrusmail.smtp import codes
from cyrusmail.smtp.codes import Reply

__all__ = [
    "Auth",
    "AuthCancelled",
    "AuthResponse",
    "Bdat",
    "BodyType",
    "ChunkEnd",
    "Command",
    "CommandError",
    "Data",
    "DataChunk",
    "DataEnd",
    "Ehlo",
    "Event",
    "Helo",
    "Help",
    "Lhlo",
    "Limits",
    "Mail",
    "Mode",
    "Noop",
    "Notify",
    "OriginalRecipient",
    "Path",
    "Quit",
    "Rcpt",
    "Ret",
    "Rset",
    "SMTPParser",
    "Starttls",
    "Vrfy",
    "hello_domain",
    "parse_path",
]


# ---------------------------------------------------------------------------
# Limits and modes


@dataclass(frozen=True)
class Limits:
    """Line limits in octets, each counting the line's CRLF."""

    command_line: int = 512
    mail_rcpt_line: int = 2048
    auth_line: int = 12288
    data_line: int = 1000


class Mode(enum.Enum):
    """What the parser does with the next bytes."""

    COMMAND = "command"
    PAUSED = "paused"  # waiting for the session after DATA/BDAT/AUTH/STARTTLS
    DATA = "data"  # dot-stuffed message text up to CRLF.CRLF
    CHUNK = "chunk"  # exactly n octets of a BDAT chunk
    AUTH = "auth"  # one SASL response line
    CLOSED = "closed"  # after QUIT or an unreadable BDAT: nothing more is read


# ---------------------------------------------------------------------------
# Addresses and parameter values


@dataclass(frozen=True)
class Path:
    """A mailbox from a MAIL or RCPT path (RFC 5321 section 4.1.2).

    ``local_part`` is unquoted (``"a b"@x`` gives ``a b``); ``domain`` is a
    domain or an address literal with its brackets (``[192.0.2.1]``), and is
    None only for RCPT's bare ``<Postmaster>``.  Source routes are dropped.
    """

    local_part: str
    domain: str | None

    @property
    def address(self) -> str:
        """The mailbox as it would be written in a path, re-quoted if needed."""
        local = self.local_part
        if not _DOT_STRING.fullmatch(local):
            local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return local if self.domain is None else f"{local}@{self.domain}"

    @property
    def utf8(self) -> bool:
        """Whether the address needs SMTPUTF8 (RFC 6531)."""
        return not self.address.isascii()

    def __str__(self) -> str:
        return self.address


class BodyType(enum.Enum):
    """MAIL's BODY= parameter (RFC 6152, RFC 3030)."""

    SEVEN_BIT = "7BIT"
    EIGHT_BIT_MIME = "8BITMIME"
    BINARY_MIME = "BINARYMIME"


class Ret(enum.Enum):
    """MAIL's RET= parameter (RFC 3461): what a DSN returns."""

    FULL = "FULL"
    HDRS = "HDRS"


class Notify(enum.Enum):
    """RCPT's NOTIFY= values (RFC 3461)."""

    NEVER = "NEVER"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    DELAY = "DELAY"


@dataclass(frozen=True)
class OriginalRecipient:
    """RCPT's ORCPT= parameter (RFC 3461): address type and xtext-decoded address."""

    addr_type: str
    address: str


# ---------------------------------------------------------------------------
# Events


class Command:
    """Base of the parsed commands; ``verb`` is the upper-case command name."""

    verb: ClassVar[str]


@dataclass(frozen=True)
class Helo(Command):
    verb: ClassVar[str] = "HELO"
    domain: str


@dataclass(frozen=True)
class Ehlo(Command):
    verb: ClassVar[str] = "EHLO"
    domain: str


@dataclass(frozen=True)
class Lhlo(Command):
    verb: ClassVar[str] = "LHLO"
    domain: str


@dataclass(frozen=True)
class Mail(Command):
    """MAIL FROM; ``reverse_path`` None is the null sender ``<>``."""

    verb: ClassVar[str] = "MAIL"
    reverse_path: Path | None
    size: int | None = None
    body: BodyType | None = None
    smtputf8: bool = False
    ret: Ret | None = None
    envid: str | None = None
    auth: str | None = None  # RFC 4954 AUTH=, xtext-decoded; "<>" if unknown


@dataclass(frozen=True)
class Rcpt(Command):
    verb: ClassVar[str] = "RCPT"
    forward_path: Path
    notify: frozenset[Notify] | None = None
    orcpt: OriginalRecipient | None = None


@dataclass(frozen=True)
class Data(Command):
    verb: ClassVar[str] = "DATA"


@dataclass(frozen=True)
class Bdat(Command):
    """BDAT (RFC 3030): exactly ``size`` octets follow the command line."""

    verb: ClassVar[str] = "BDAT"
    size: int
    last: bool = False


@dataclass(frozen=True)
class Rset(Command):
    verb: ClassVar[str] = "RSET"


@dataclass(frozen=True)
class Noop(Command):
    verb: ClassVar[str] = "NOOP"


@dataclass(frozen=True)
class Quit(Command):
    verb: ClassVar[str] = "QUIT"


@dataclass(frozen=True)
class Vrfy(Command):
    verb: ClassVar[str] = "VRFY"
    argument: str


@dataclass(frozen=True)
class Help(Command):
    verb: ClassVar[str] = "HELP"
    topic: str | None = None


@dataclass(frozen=True)
class Starttls(Command):
    verb: ClassVar[str] = "STARTTLS"


@dataclass(frozen=True)
class Auth(Command):
    """AUTH (RFC 4954); ``initial_response`` is base64-decoded, b"" for ``=``."""

    verb: ClassVar[str] = "AUTH"
    mechanism: str
    initial_response: bytes | None = None


@dataclass(frozen=True)
class CommandError:
    """A line that could not be parsed; the session sends ``reply``.

    ``verb`` is the command's name when it was recognised (so a session can
    count failed AUTHs, say), ``detail`` says what was wrong, for logs or
    for the reply text.  ``fatal`` means the parser reads nothing more (an
    unreadable BDAT): the session sends the reply and closes.
    """

    reply: Reply
    verb: str | None = None
    detail: str = ""
    fatal: bool = False


@dataclass(frozen=True)
class DataChunk:
    """The next octets of the message: dot-unstuffed DATA text, or BDAT octets."""

    data: bytes


@dataclass(frozen=True)
class DataEnd:
    """End of DATA.  ``error`` None: the message is whole and within limits."""

    size: int
    error: Reply | None = None


@dataclass(frozen=True)
class ChunkEnd:
    """End of one BDAT chunk of ``size`` octets; ``error`` as in DataEnd."""

    size: int
    last: bool
    error: Reply | None = None


@dataclass(frozen=True)
class AuthResponse:
    """One SASL continuation line, base64-decoded."""

    response: bytes


@dataclass(frozen=True)
class AuthCancelled:
    """The client answered a 334 challenge with ``*``."""


Event = (
    Command
    | CommandError
    | DataChunk
    | DataEnd
    | ChunkEnd
    | AuthResponse
    | AuthCancelled
)


# ---------------------------------------------------------------------------
# Path and parameter grammar (RFC 5321 section 4.1.2, RFC 6531 section 3.3)


class _Refused(Exception):
    """Raised inside the argument parsers; becomes a CommandError."""

    def __init__(self, reply: Reply, detail: str) -> None:
        super().__init__(detail)
        self.reply = reply
        self.detail = detail


_ATEXT = "A-Za-z0-9!#$%&'*+/=?^_`{|}~\\-"
# Non-ASCII characters are atext/qtext/label characters under RFC 6531; the
# SMTPUTF8 check is done on the whole address afterwards.
_ATOM = f"[{_ATEXT}\u0080-\U0010ffff]+"
_DOT_STRING = re.compile(f"{_ATOM}(?:\\.{_ATOM})*")
_LABEL = "[A-Za-z0-9\u0080-\U0010ffff](?:[A-Za-z0-9\u0080-\U0010ffff-]*[A-Za-z0-9\u0080-\U0010ffff])?"
_DOMAIN = re.compile(f"{_LABEL}(?:\\.{_LABEL})*")
_LDH_TAG = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
_DCONTENT = re.compile(r"[\x21-\x5a\x5e-\x7e]+")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_PARAM_VALUE = re.compile("[\x21-\x3c\x3e-\x7e\u0080-\U0010ffff]+")
_XCHAR = frozenset(chr(c) for c in range(0x21, 0x7F)) - {"+", "="}
_HEX = frozenset(string.hexdigits)
_SASL_MECH = re.compile(r"[A-Za-z0-9_-]{1,20}")
_MAX_DIGITS = 20


def _address_literal(text: str) -> str:
    inner = text[1:-1]
    if inner[:5].upper() == "IPV6:":
        try:
            ipaddress.IPv6Address(inner[5:])
        except ValueError:
            raise ValueError(f"bad IPv6 address literal {text!r}") from None
        return text
    if re.fullmatch(r"[0-9.]+", inner):
        try:
            ipaddress.IPv4Address(inner)
        except ValueError:
            raise ValueError(f"bad IPv4 address literal {text!r}") from None
        return text
    tag, colon, content = inner.partition(":")
    if colon and _LDH_TAG.fullmatch(tag) and _DCONTENT.fullmatch(content):
        return text
    raise ValueError(f"bad address literal {text!r}")


def _domain(text: str) -> str:
    if text.startswith("[") and text.endswith("]"):
        return _address_literal(text)
    if not _DOMAIN.fullmatch(text):
        raise ValueError(f"bad domain {text!r}")
    return text


_ASCII_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def hello_domain(text: str) -> str | None:
    """The HELO/EHLO/LHLO argument if it is a domain or an IP address literal, else None.

    RFC 5321 sections 4.1.4 and 4.1.3: an ASCII host name (labels of letters,
    digits and inner hyphens, at most 63 octets each, 255 in all) or
    ``[IPv4]`` / ``[IPv6:...]``.  The session accepts any one-word greeting,
    as Postfix and Dovecot do (clients send names such as ``my_pc``); only a
    name that passes this check is written into a Received header, so no
    client bytes can add header content there (no CR, LF, parentheses,
    semicolons or non-ASCII).  General address literals are not taken: their
    content may hold such characters, and no client uses them.
    """
    if len(text) > 255:
        return None
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1]
        try:
            if inner[:5].upper() == "IPV6:":
                return f"[IPv6:{ipaddress.IPv6Address(inner[5:]).compressed}]"
            return f"[{ipaddress.IPv4Address(inner)}]"
        except ValueError:
            return None
    labels = text.split(".")
    if all(_ASCII_LABEL.fullmatch(label) for label in labels):
        return text
    return None


def _quoted_local_part(text: str) -> tuple[str, int]:
    """Unquote the quoted string at the start of ``text``; return it and its length."""
    out = []
    index = 1
    while index < len(text):
        char = text[index]
        if char == '"':
            return "".join(out), index + 1
        if char == "\\":
            index += 1
            if index >= len(text) or not (" " <= text[index] <= "~"):
                raise ValueError("bad quoted-pair in local part")
            out.append(text[index])
        elif (" " <= char <= "~") or ord(char) >= 0x80:
            out.append(char)
        else:
            raise ValueError("control character in quoted local part")
        index += 1
    raise ValueError("unterminated quoted local part")


def parse_path(text: str, *, postmaster: bool = False) -> Path:
    """Parse ``<...>`` (without the null path) into a :class:`Path`.

    ``postmaster`` allows RCPT's domainless ``<Postmaster>``.  Raises
    ValueError naming what is wrong.
    """
    if len(text) < 2 or text[0] != "<" or text[-1] != ">":
        raise ValueError("address must be enclosed in <>")
    inner = text[1:-1]
    if postmaster and inner.lower() == "postmaster":
        return Path(inner, None)
    if inner.startswith("@"):
        route, colon, inner = inner.partition(":")
        if not colon:
            raise ValueError("source route without ':'")
        for hop in route.split(","):
            if not hop.startswith("@"):
                raise ValueError("bad source route")
            _domain(hop[1:])
    if inner.startswith('"'):
        local, length = _quoted_local_part(inner)
        rest = inner[length:]
    else:
        local, at, domain = inner.partition("@")
        if not at:
            raise ValueError("address has no domain")
        if not _DOT_STRING.fullmatch(local):
            raise ValueError(f"bad local part {local!r}")
        rest = at + domain
    if not rest.startswith("@"):
        raise ValueError("address has no domain")
    return Path(local, _domain(rest[1:]))


def _split_path(text: str) -> tuple[str, str]:
    """Split ``<path> params`` at the path's closing ``>``, honouring quotes."""
    if not text.startswith("<"):
        raise ValueError("address must be enclosed in <>")
    quoted = False
    index = 1
    while index < len(text):
        char = text[index]
        if quoted and char == "\\":
            index += 2
            continue
        if char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            path, rest = text[: index + 1], text[index + 1 :]
            if rest and not rest.startswith(" "):
                raise ValueError("no space between address and parameters")
            return path, rest.strip(" ")
        index += 1
    raise ValueError("address is missing its closing '>'")


def _xtext(value: str) -> str:
    """Decode RFC 3461 xtext; ``+`` takes two hex digits (either case)."""
    out = []
    index = 0
    while index < len(value):
        char = value[index]
        if char == "+":
            digits = value[index + 1 : index + 3]
            if len(digits) != 2 or not _HEX.issuperset(digits):
                raise _Refused(codes.PARAM_SYNTAX, f"bad xtext escape in {value!r}")
            out.append(chr(int(digits, 16)))
            index += 3
        elif char in _XCHAR:
            out.append(char)
            index += 1
        else:
            raise _Refused(codes.PARAM_SYNTAX, f"bad xtext character in {value!r}")
    return "".join(out)


def _parameters(text: str) -> dict[str, str | None]:
    """Split ESMTP parameters into {KEYWORD: value or None}."""
    params: dict[str, str | None] = {}
    for token in text.split():
        keyword, equals, value = token.partition("=")
        if not _KEYWORD.fullmatch(keyword):
            raise _Refused(codes.PARAM_SYNTAX, f"bad parameter {token!r}")
        if equals and not _PARAM_VALUE.fullmatch(value):
            raise _Refused(codes.PARAM_SYNTAX, f"bad value in {token!r}")
        keyword = keyword.upper()
        if keyword in params:
            raise _Refused(codes.PARAM_SYNTAX, f"{keyword} given twice")
        params[keyword] = value if equals else None
    return params


def _need_value(keyword: str, value: str | None) -> str:
    if value is None:
        raise _Refused(codes.PARAM_SYNTAX, f"{keyword} needs a value")
    return value


def _no_value(keyword: str, value: str | None) -> None:
    if value is not None:
        raise _Refused(codes.PARAM_SYNTAX, f"{keyword} takes no value")


def _enum_value(keyword: str, value: str | None, kind: type[enum.Enum]) -> enum.Enum:
    text = _need_value(keyword, value).upper()
    try:
        return kind(text)
    except ValueError:
        raise _Refused(codes.PARAM_SYNTAX, f"bad {keyword} value {value!r}") from None


def _mail_parameters(params: dict[str, str | None]) -> dict[str, object]:
    fields: dict[str, object] = {}
    for keyword, value in params.items():
        if keyword == "SIZE":
            digits = _need_value(keyword, value)
            if (
                not digits.isdigit()
                or not digits.isascii()
                or len(digits) > _MAX_DIGITS
            ):
                raise _Refused(codes.PARAM_SYNTAX, f"bad SIZE value {value!r}")
            fields["size"] = int(digits)
        elif keyword == "BODY":
            fields["body"] = _enum_value(keyword, value, BodyType)
        elif keyword == "SMTPUTF8":
            _no_value(keyword, value)
            fields["smtputf8"] = True
        elif keyword == "RET":
            fields["ret"] = _enum_value(keyword, value, Ret)
        elif keyword == "ENVID":
            envid = _xtext(_need_value(keyword, value))
            if len(envid) > 100 or not envid.isprintable():
                raise _Refused(codes.PARAM_SYNTAX, "ENVID too long or not printable")
            fields["envid"] = envid
        elif keyword == "AUTH":
            fields["auth"] = _xtext(_need_value(keyword, value))
        else:
            raise _Refused(
                codes.PARAM_UNRECOGNIZED, f"unknown MAIL parameter {keyword}"
            )
    return fields


def _rcpt_parameters(params: dict[str, str | None]) -> dict[str, object]:
    fields: dict[str, object] = {}
    for keyword, value in params.items():
        if keyword == "NOTIFY":
            items = _need_value(keyword, value).upper().split(",")
            try:
                notify = frozenset(Notify(item) for item in items)
            except ValueError:
                raise _Refused(
                    codes.PARAM_SYNTAX, f"bad NOTIFY value {value!r}"
                ) from None
            if len(notify) != len(items) or (
                Notify.NEVER in notify and len(notify) > 1
            ):
                raise _Refused(codes.PARAM_SYNTAX, f"bad NOTIFY value {value!r}")
            fields["notify"] = notify
        elif keyword == "ORCPT":
            addr_type, semicolon, encoded = _need_value(keyword, value).partition(";")
            if not semicolon or not _KEYWORD.fullmatch(addr_type) or not encoded:
                raise _Refused(codes.PARAM_SYNTAX, f"bad ORCPT value {value!r}")
            address = _xtext(encoded)
            if len(address) > 500:
                raise _Refused(codes.PARAM_SYNTAX, "ORCPT address too long")
            fields["orcpt"] = OriginalRecipient(addr_type.lower(), address)
        else:
            raise _Refused(
                codes.PARAM_UNRECOGNIZED, f"unknown RCPT parameter {keyword}"
            )
    return fields


# ---------------------------------------------------------------------------
# Argument parsers: one per verb, in one table.


def _no_arguments(kind: type[Command]):
    def parse(argument: str, utf8_allowed: bool) -> Command:
        if argument:
            raise _Refused(codes.PARAM_SYNTAX, f"{kind.verb} takes no arguments")
        return kind()

    return parse


def _hello(kind: type[Helo | Ehlo | Lhlo]):
    def parse(argument: str, utf8_allowed: bool) -> Command:
        if not argument or " " in argument:
            raise _Refused(codes.PARAM_SYNTAX, f"{kind.verb} needs one domain argument")
        return kind(argument)

    return parse


def _mail(argument: str, utf8_allowed: bool) -> Mail:
    if argument[:5].upper() != "FROM:":
        raise _Refused(codes.PARAM_SYNTAX, "expected MAIL FROM:<address>")
    try:
        path_text, param_text = _split_path(argument[5:].lstrip(" "))
        reverse_path = None if path_text == "<>" else parse_path(path_text)
    except ValueError as error:
        raise _Refused(codes.SENDER_SYNTAX, str(error)) from None
    mail = Mail(reverse_path, **_mail_parameters(_parameters(param_text)))  # type: ignore[arg-type]
    if reverse_path is not None and reverse_path.utf8 and not mail.smtputf8:
        raise _Refused(codes.UTF8_NOT_ALLOWED, "non-ASCII sender without SMTPUTF8")
    if not mail.smtputf8 and not param_text.isascii():
        raise _Refused(codes.PARAM_SYNTAX, "non-ASCII parameter without SMTPUTF8")
    return mail


def _rcpt(argument: str, utf8_allowed: bool) -> Rcpt:
    if argument[:3].upper() != "TO:":
        raise _Refused(codes.PARAM_SYNTAX, "expected RCPT TO:<address>")
    try:
        path_text, param_text = _split_path(argument[3:].lstrip(" "))
        forward_path = parse_path(path_text, postmaster=True)
    except ValueError as error:
        raise _Refused(codes.RECIPIENT_SYNTAX, str(error)) from None
    if not utf8_allowed and (forward_path.utf8 or not param_text.isascii()):
        raise _Refused(codes.UTF8_NOT_ALLOWED, "non-ASCII recipient without SMTPUTF8")
    return Rcpt(forward_path, **_rcpt_parameters(_parameters(param_text)))  # type: ignore[arg-type]


def _bdat(argument: str, utf8_allowed: bool) -> Bdat:
    words = argument.split(" ")
    size_text = words[0]
    if (
        not size_text.isdigit()
        or not size_text.isascii()
        or len(size_text) > _MAX_DIGITS
        or len(words) > 2
        or (len(words) == 2 and words[1].upper() != "LAST")
    ):
        raise _Refused(codes.PARAM_SYNTAX, "expected BDAT <size> [LAST]")
    return Bdat(int(size_text), len(words) == 2)


def _vrfy(argument: str, utf8_allowed: bool) -> Vrfy:
    if not argument:
        raise _Refused(codes.PARAM_SYNTAX, "VRFY needs an argument")
    return Vrfy(argument)


def _help(argument: str, utf8_allowed: bool) -> Help:
    return Help(argument or None)


def _noop(argument: str, utf8_allowed: bool) -> Noop:
    return Noop()  # RFC 5321 4.1.1.9: a parameter is allowed and ignored


def _auth(argument: str, utf8_allowed: bool) -> Auth:
    words = argument.split(" ")
    if not _SASL_MECH.fullmatch(words[0]) or len(words) > 2:
        raise _Refused(
            codes.PARAM_SYNTAX, "expected AUTH <mechanism> [initial-response]"
        )
    initial = None
    if len(words) == 2:
        try:
            initial = sasl.decode_response(words[1].encode("ascii", "replace"))
        except sasl.SASLCancelled:
            raise _Refused(codes.AUTH_CANCELLED, "initial response was '*'") from None
        except sasl.SASLError as error:
            raise _Refused(codes.AUTH_BAD_BASE64, str(error)) from None
    return Auth(words[0].upper(), initial)


_COMMANDS = {
    "HELO": _hello(Helo),
    "EHLO": _hello(Ehlo),
    "LHLO": _hello(Lhlo),
    "MAIL": _mail,
    "RCPT": _rcpt,
    "DATA": _no_arguments(Data),
    "BDAT": _bdat,
    "RSET": _no_arguments(Rset),
    "NOOP": _noop,
    "QUIT": _no_arguments(Quit),
    "VRFY": _vrfy,
    "HELP": _help,
    "STARTTLS": _no_arguments(Starttls),
    "AUTH": _auth,
}
# Known verbs this server does not offer (RFC 5321 and old extensions).
_NOT_IMPLEMENTED = frozenset(
    {"EXPN", "TURN", "ETRN", "ATRN", "SEND", "SOML", "SAML", "VERB"}
)
# Commands after which the parser waits for the session to pick the next mode.
_PAUSING = (Data, Bdat, Auth, Starttls)
# Commands that end any BDAT message in progress.
_ENDS_BDAT = (Rset, Mail, Helo, Ehlo, Lhlo, Starttls, Data)
# Commands that end a mail transaction (and so its SMTPUTF8).
_ENDS_TRANSACTION = (Rset, Helo, Ehlo, Lhlo, Starttls)
# Returned by _line() for a line that was too long; a line never holds CRLF.
_OVERLONG = b"\r\n"
_VERB_PEEK = 16

_CR = 0x0D
_LF = 0x0A
_DOT = 0x2E
_CR_OR_LF = re.compile(rb"[\r\n]")


# ---------------------------------------------------------------------------
# Message bodies


class _LineCheck:
    """Bare CR/LF and line-length checks over raw octets, across BDAT chunks."""

    def __init__(self, data_line: int) -> None:
        self._max_content = data_line - 2
        self._line_length = 0
        self._pending_cr = False

    def feed(self, data: bytes) -> Reply | None:
        if self._pending_cr and data:
            if data[0] != _LF:
                return codes.BARE_NEWLINE
            self._pending_cr = False
            if self._line_length > self._max_content:
                return codes.DATA_LINE_TOO_LONG
            self._line_length = 0
            data = data[1:]
        if not data:
            return None
        self._pending_cr = data[-1] == _CR
        body = data[:-1] if self._pending_cr else data
        crlf = body.count(b"\r\n")
        if body.count(b"\r") != crlf or body.count(b"\n") != crlf:
            return codes.BARE_NEWLINE
        lines = body.split(b"\r\n")
        self._line_length += len(lines[0])
        if len(lines) > 1:
            longest = max(self._line_length, max(map(len, lines[1:])))
            self._line_length = len(lines[-1])
        else:
            longest = self._line_length
        if longest > self._max_content:
            return codes.DATA_LINE_TOO_LONG
        return None

    def finish(self) -> Reply | None:
        return codes.BARE_NEWLINE if self._pending_cr else None


class _DataMessage:
    """State of one DATA message being read."""

    def __init__(self, max_size: int | None, data_line: int) -> None:
        self.max_size = max_size
        self.max_content = data_line - 2
        self.size = 0
        self.error: Reply | None = None
        self.at_line_start = True
        self.line_length = 0  # wire octets of the current line, without CRLF
        self.clean_from = 0  # buffer offset below which the fast path failed

    def fail(self, reply: Reply) -> None:
        if self.error is None:
            self.error = reply

    def keep(self, out: list[bytes], data: bytes) -> None:
        if self.error is not None or not data:
            return
        if self.max_size is not None and self.size + len(data) > self.max_size:
            self.fail(codes.TOO_BIG)
            return
        if b"\x00" in data:
            self.fail(codes.NUL_IN_MESSAGE)
            return
        self.size += len(data)
        out.append(data)


# ---------------------------------------------------------------------------
# The parser


class SMTPParser:
    """Bytes from an SMTP or LMTP client in, :data:`Event` objects out.

    ``feed(data)`` returns the events that ``data`` completed, in order.  See
    the module docstring for modes, limits and the line-ending rule.
    """

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._buffer = bytearray()
        self._mode = Mode.COMMAND
        self._paused_on: Event | None = None
        self._scan_from = 0  # where to resume looking for CRLF in the buffer
        self._discarding = False  # inside an over-long line
        self._overlong_head = b""  # its first octets, to name its verb
        self._smtputf8 = False  # the latest MAIL had SMTPUTF8
        self._message: _DataMessage | None = None
        self._chunk: Bdat | None = None
        self._chunk_remaining = 0
        self._chunk_keep = False
        self._chunk_error: Reply | None = None
        self._bdat_check: _LineCheck | None = None

    # -- state the session may look at --------------------------------------

    @property
    def mode(self) -> Mode:
        """What the next bytes will be read as."""
        return self._mode

    @property
    def paused_on(self) -> Event | None:
        """The event the parser paused after, while :attr:`mode` is PAUSED."""
        return self._paused_on if self._mode is Mode.PAUSED else None

    @property
    def buffered(self) -> int:
        """Octets received but not yet parsed (e.g. pipelined while paused)."""
        return len(self._buffer)

    # -- mode switches, called by the session -------------------------------

    def start_data(self, max_size: int | None = None, *, binary: bool = False) -> None:
        """Read the message after DATA (354 sent) or the accepted BDAT chunk.

        ``max_size`` bounds the message (DATA) or what this chunk may add to
        it (BDAT: the session passes what is left of its size limit).
        ``binary`` (BDAT with BODY=BINARYMIME only) turns off the line checks.
        """
        if binary and isinstance(self._paused_on, Data):
            raise ValueError("DATA cannot carry BINARYMIME")
        event = self._require_pause(Data, Bdat)
        if isinstance(event, Data):
            self._message = _DataMessage(max_size, self.limits.data_line)
            self._mode = Mode.DATA
            return
        assert isinstance(event, Bdat)
        if binary:
            self._bdat_check = None
        elif self._bdat_check is None:
            self._bdat_check = _LineCheck(self.limits.data_line)
        self._start_chunk(event, keep=True, max_size=max_size)

    def start_auth(self) -> None:
        """Read one SASL response line (a 334 challenge was sent)."""
        self._require_pause(Auth, AuthResponse, AuthCancelled, CommandError)
        self._mode = Mode.AUTH

    def discard_buffered(self) -> int:
        """Drop what was pipelined after STARTTLS; return how many octets.

        Call it as soon as the 220 reply is written and TLS is started: what
        came in plaintext after STARTTLS must never be read as a command
        under TLS (the STARTTLS command injection attack, CVE-2011-0411).
        A non-zero answer means the client tried; a session may log it.
        """
        self._require_pause(Starttls)
        discarded = len(self._buffer)
        self._buffer.clear()
        self._scan_from = 0
        self._mode = Mode.COMMAND
        return discarded

    def close(self) -> None:
        """The session hangs up: drop what is buffered and read nothing more."""
        self._mode = Mode.CLOSED
        self._paused_on = None
        self._buffer.clear()
        self._scan_from = 0

    def resume(self) -> None:
        """Go back to reading commands: the paused-on command was refused.

        After a refused BDAT the chunk is still read, and dropped unseen, as
        RFC 3030 requires.
        """
        event = self._require_pause(
            Data, Bdat, Auth, Starttls, AuthResponse, AuthCancelled, CommandError
        )
        if isinstance(event, Bdat):
            self._start_chunk(event, keep=False, max_size=None)
        else:
            self._mode = Mode.COMMAND

    def _require_pause(self, *kinds: type) -> Event:
        event = self._paused_on
        if self._mode is not Mode.PAUSED or not isinstance(event, kinds):
            raise RuntimeError(
                f"parser is not paused on {' or '.join(k.__name__ for k in kinds)}"
            )
        self._paused_on = None
        return event

    def _start_chunk(self, bdat: Bdat, *, keep: bool, max_size: int | None) -> None:
        self._chunk = bdat
        self._chunk_remaining = bdat.size
        self._chunk_keep = keep
        self._chunk_error = None
        if keep and max_size is not None and bdat.size > max_size:
            self._chunk_error = codes.TOO_BIG
        self._mode = Mode.CHUNK

    def _pause(self, event: Event) -> None:
        self._paused_on = event
        self._mode = Mode.PAUSED

    # -- input ---------------------------------------------------------------

    def feed(self, data: bytes = b"") -> list[Event]:
        """Take ``data`` from the client; return the events it completed."""
        if self._mode is Mode.CLOSED:
            return []
        self._buffer += data
        events: list[Event] = []
        while True:
            mode = self._mode
            if mode is Mode.COMMAND:
                if not self._command(events):
                    break
            elif mode is Mode.AUTH:
                if not self._auth_line(events):
                    break
            elif mode is Mode.DATA:
                if not self._data(events):
                    break
            elif mode is Mode.CHUNK:
                if not self._read_chunk(events):
                    break
            else:  # PAUSED, CLOSED
                break
        if self._mode is Mode.CLOSED:
            self._buffer.clear()
        return events

    def _line(self, limit: int) -> bytes | None:
        """Take the next CRLF-terminated line, without its CRLF.

        Returns None if more input is needed.  A line longer than ``limit``
        (with CRLF) is discarded as it comes and, once its CRLF arrives,
        returned as :data:`_OVERLONG`, which no real line can be.
        """
        buffer = self._buffer
        end = buffer.find(b"\r\n", self._scan_from)
        if end < 0:
            if self._discarding or len(buffer) + 1 > limit:
                if not self._discarding:
                    self._overlong_head = bytes(buffer[:_VERB_PEEK])
                self._discarding = True
                keep = 1 if buffer.endswith(b"\r") else 0
                del buffer[: len(buffer) - keep]
            self._scan_from = max(0, len(buffer) - 1)
            return None
        self._scan_from = 0
        line = bytes(buffer[:end])
        del buffer[: end + 2]
        if self._discarding or end + 2 > limit:
            if not self._discarding:
                self._overlong_head = line[:_VERB_PEEK]
            self._discarding = False
            return _OVERLONG
        return line

    def _command(self, events: list[Event]) -> bool:
        line = self._line(self.limits.auth_line)
        if line is None:
            return False
        event = self._parse_command(line)
        events.append(event)
        if isinstance(event, Mail):
            self._smtputf8 = event.smtputf8
        elif isinstance(event, _ENDS_TRANSACTION) or (
            isinstance(event, CommandError) and event.verb == "MAIL"
        ):
            self._smtputf8 = False
        if isinstance(event, _ENDS_BDAT):
            self._bdat_check = None
        if isinstance(event, _PAUSING):
            self._pause(event)
        elif isinstance(event, Quit) or (
            isinstance(event, CommandError) and event.fatal
        ):
            self._mode = Mode.CLOSED
        return True

    def _parse_command(self, line: bytes) -> Event:
        if line == _OVERLONG:
            word = self._overlong_head.partition(b" ")[0].upper().decode("latin-1")
            verb = word if word in _COMMANDS else None
            reply = codes.AUTH_LINE_TOO_LONG if verb == "AUTH" else codes.LINE_TOO_LONG
            return CommandError(reply, verb, "command line too long")
        if b"\r" in line or b"\n" in line:
            return CommandError(
                codes.BARE_NEWLINE, None, "bare CR or LF in command line"
            )
        if b"\x00" in line:
            return CommandError(codes.SYNTAX_ERROR, None, "NUL in command line")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return CommandError(codes.SYNTAX_ERROR, None, "command line is not UTF-8")
        word, _, argument = text.rstrip(" ").partition(" ")
        verb = word.upper()
        if not (verb.isascii() and verb.isalpha()):
            return CommandError(codes.SYNTAX_ERROR, None, "command unrecognized")
        parse = _COMMANDS.get(verb)
        if parse is None:
            reply = (
                codes.NOT_IMPLEMENTED
                if verb in _NOT_IMPLEMENTED
                else codes.SYNTAX_ERROR
            )
            return CommandError(reply, verb, f"{verb} not recognized")
        limits = self.limits
        limit = {
            "AUTH": limits.auth_line,
            "MAIL": limits.mail_rcpt_line,
            "RCPT": limits.mail_rcpt_line,
        }.get(verb, limits.command_line)
        if len(line) + 2 > limit:
            reply = codes.AUTH_LINE_TOO_LONG if verb == "AUTH" else codes.LINE_TOO_LONG
            return CommandError(reply, verb, f"{verb} line longer than {limit} octets")
        if not argument.isascii() and verb not in (
            "MAIL",
            "RCPT",
            "EHLO",
            "HELO",
            "LHLO",
            "VRFY",
        ):
            return CommandError(codes.PARAM_SYNTAX, verb, "non-ASCII argument")
        try:
            return parse(argument.strip(" "), self._smtputf8)
        except _Refused as refusal:
            return CommandError(
                refusal.reply, verb, refusal.detail, fatal=verb == "BDAT"
            )

    def _auth_line(self, events: list[Event]) -> bool:
        line = self._line(self.limits.auth_line)
        if line is None:
            return False
        event: Event
        if line == _OVERLONG:
            event = CommandError(
                codes.AUTH_LINE_TOO_LONG, "AUTH", "SASL response too long"
            )
        else:
            try:
                event = AuthResponse(sasl.decode_response(line))
            except sasl.SASLCancelled:
                event = AuthCancelled()
            except sasl.SASLError as error:
                event = CommandError(codes.AUTH_BAD_BASE64, "AUTH", str(error))
        events.append(event)
        self._pause(event)
        return True

    def _read_chunk(self, events: list[Event]) -> bool:
        buffer = self._buffer
        take = min(self._chunk_remaining, len(buffer))
        if take:
            piece = bytes(buffer[:take])
            del buffer[:take]
            self._chunk_remaining -= take
            if self._chunk_keep and self._chunk_error is None:
                if self._bdat_check is not None:
                    self._chunk_error = self._bdat_check.feed(piece)
                if self._chunk_error is None and b"\x00" in piece:
                    # Even BINARYMIME: the store serves IMAP, whose literals carry no NUL.
                    self._chunk_error = codes.NUL_IN_MESSAGE
                if self._chunk_error is None:
                    events.append(DataChunk(piece))
        if self._chunk_remaining:
            return False
        chunk = self._chunk
        assert chunk is not None
        self._chunk = None
        self._mode = Mode.COMMAND
        if self._chunk_keep:
            if (
                chunk.last
                and self._bdat_check is not None
                and self._chunk_error is None
            ):
                self._chunk_error = self._bdat_check.finish()
            events.append(ChunkEnd(chunk.size, chunk.last, self._chunk_error))
        if chunk.last:
            self._bdat_check = None
            self._smtputf8 = False
        return True

    def _data(self, events: list[Event]) -> bool:
        """Read DATA text; True once the end of data was reached."""
        message = self._message
        assert message is not None
        buffer = self._buffer
        size = len(buffer)
        out: list[bytes] = []
        position = 0
        ended = False
        max_content = message.max_content
        while position < size:
            if message.at_line_start and buffer[position] == _DOT:
                head = bytes(buffer[position : position + 3])
                if head == b".\r\n":
                    position += 3
                    ended = True
                    break
                if len(head) < 3 and b".\r\n".startswith(head):
                    break  # wait: this may be the end of data
                # RFC 5321 4.5.2: a leading dot on any other line is dropped;
                # it does not count towards the line limit (4.5.3.1.6).
                position += 1
                message.line_length = 0
                message.at_line_start = False
                continue
            if message.error is not None:
                # A failed message is only skipped: find the real end fast.
                found = buffer.find(b"\r\n.\r\n", position)
                if found >= 0:
                    position = found + 5
                    ended = True
                    break
                cut = max(position, size - 4)  # the end may straddle reads
                if cut > position:
                    message.at_line_start = (
                        cut >= 2 and buffer[cut - 2 : cut] == b"\r\n"
                    )
                    position = cut
                break
            if message.at_line_start and position >= message.clean_from:
                # Fast path: whole lines up to the next line that starts
                # with a dot, checked with a few scans of C code.
                dot = buffer.find(b"\r\n.", position)
                end = dot if dot >= 0 else buffer.rfind(b"\r\n", position)
                end = end + 2 if end >= 0 else position
                if end > position:
                    region = bytes(buffer[position:end])
                    crlf = region.count(b"\r\n")
                    if (
                        region.count(b"\r") == crlf
                        and region.count(b"\n") == crlf
                        and max(map(len, region.split(b"\r\n"))) <= max_content
                    ):
                        message.keep(out, region)
                        position = end
                        continue
                    message.clean_from = end
            # Slow path: up to and including the next CR or LF.
            found = _CR_OR_LF.search(buffer, position)
            stop = size if found is None else found.start()
            message.line_length += stop - position
            if message.line_length > max_content:
                message.fail(codes.DATA_LINE_TOO_LONG)
            message.keep(out, bytes(buffer[position:stop]))
            message.at_line_start = False
            position = stop
            if found is None:
                break
            if buffer[stop] == _CR:
                if stop + 1 == size:
                    break  # a CR at the end of what we have: wait for the next octet
                if buffer[stop + 1] == _LF:
                    message.keep(out, b"\r\n")
                    message.line_length = 0
                    message.at_line_start = True
                    position = stop + 2
                    continue
            message.fail(codes.BARE_NEWLINE)
            position = stop + 1
        del buffer[:position]
        message.clean_from = max(0, message.clean_from - position)
        if out:
            events.append(DataChunk(b"".join(out)))
        if not ended:
            return False
        events.append(DataEnd(message.size, message.error))
        self._message = None
        self._smtputf8 = False
        self._mode = Mode.COMMAND
        return True
