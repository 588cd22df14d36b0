"""Every SMTP/LMTP reply the engine sends, named once.

Each reply carries its basic code (RFC 5321 section 4.2), its enhanced status
code (RFC 3463, as used by RFC 2034's ENHANCEDSTATUSCODES) and a default
text.  The wire parser names its errors with these objects and tests assert
against them, so no three-digit string is copied around the code base.

Replies that RFC 2034 exempts from enhanced codes (the greeting, the answers
to HELO/EHLO/LHLO, the 334 SASL challenge and the 354 go-ahead) have
``enhanced=None``.

Note on X.5.6: RFC 4954 registered 5.5.6 as "Authentication Exchange line is
too long"; this table uses it for every over-long line (command, AUTH, and
message text), which is the nearest registered meaning.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

_ENHANCED_PARTS = 3


@dataclass(frozen=True)
class Reply:
    """One SMTP reply: ``code``, optional RFC 3463 ``enhanced`` code, text.

    ``more`` holds the further lines of a multi-line reply (the EHLO
    keywords, say).  Replies are values: customise one with
    :meth:`with_text`, which keeps the codes.
    """

    code: int
    enhanced: str | None
    text: str = ""
    more: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"reply code out of range: {self.code}")
        if self.enhanced is not None:
            parts = self.enhanced.split(".")
            if len(parts) != _ENHANCED_PARTS or not all(p.isdigit() for p in parts):
                raise ValueError(f"malformed enhanced status code: {self.enhanced!r}")
            if parts[0] != str(self.code // 100) or parts[0] not in "245":
                raise ValueError(
                    f"enhanced code {self.enhanced} does not match reply {self.code}"
                )
        for line in self.lines:
            if not line.isprintable():
                raise ValueError(f"reply text must be printable: {line!r}")

    @property
    def lines(self) -> tuple[str, ...]:
        """The text lines of the reply, first line first."""
        return (self.text, *self.more)

    @property
    def is_positive(self) -> bool:
        """2yz or 3yz: the command was accepted or may go on."""
        return self.code < 400

    @property
    def is_transient(self) -> bool:
        """4yz: the client may try again later."""
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        """5yz: the client must not repeat the same command."""
        return self.code >= 500

    def with_text(self, text: str, *more: str) -> Reply:
        """The same codes with another text (and further lines)."""
        return replace(self, text=text, more=tuple(more))

    def to_bytes(self, *, enhanced: bool = True) -> bytes:
        """The reply on the wire, ``250-...`` lines then ``250 ...``.

        ``enhanced=False`` leaves the enhanced code out, for a client that
        greeted with HELO and so never saw ENHANCEDSTATUSCODES.  The enhanced
        code is repeated on every line, as RFC 2034 section 4 asks.
        """
        prefix = ""
        if enhanced and self.enhanced is not None:
            prefix = self.enhanced + " "
        lines = self.lines
        out = []
        for index, line in enumerate(lines):
            separator = " " if index == len(lines) - 1 else "-"
            out.append(f"{self.code}{separator}{prefix}{line}\r\n")
        return "".join(out).encode("utf-8")


def ehlo_reply(greeting: str, keywords: Iterable[str]) -> Reply:
    """The multi-line 250 answer to EHLO or LHLO: greeting then keywords."""
    return Reply(250, None, greeting, tuple(keywords))


# Positive completion.
READY = Reply(220, None, "ESMTP ready")
TLS_READY = Reply(220, "2.0.0", "Ready to start TLS")
BYE = Reply(221, "2.0.0", "Bye")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
OK = Reply(250, "2.0.0", "OK")
HELLO = Reply(250, None, "Hello")
SENDER_OK = Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
MESSAGE_ACCEPTED = Reply(250, "2.0.0", "Message accepted")
CHUNK_OK = Reply(250, "2.0.0", "Chunk received")
HELP = Reply(214, "2.0.0", "See RFC 5321")
CANNOT_VRFY = Reply(
    252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery"
)

# Positive intermediate.
AUTH_CONTINUE = Reply(334, None, "")
START_DATA = Reply(354, None, "End data with <CR><LF>.<CR><LF>")

# Transient negative.
SERVICE_UNAVAILABLE = Reply(421, "4.3.2", "Service not available, closing channel")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections, closing channel")
TIMEOUT = Reply(421, "4.4.2", "Timeout, closing channel")
CLOSING_AFTER_BAD_BDAT = Reply(
    421, "4.5.0", "Cannot tell where the BDAT chunk ends, closing channel"
)
TEMP_FAIL = Reply(451, "4.3.0", "Local error in processing, try again later")
MAILBOX_FULL = Reply(452, "4.2.2", "Mailbox full")
INSUFFICIENT_STORAGE = Reply(452, "4.3.1", "Insufficient system storage")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
TLS_UNAVAILABLE = Reply(454, "4.7.0", "TLS not available")
TEMP_AUTH_FAILURE = Reply(454, "4.7.0", "Temporary authentication failure")

# Permanent negative: the command itself.
SYNTAX_ERROR = Reply(500, "5.5.2", "Syntax error, command unrecognized")
LINE_TOO_LONG = Reply(500, "5.5.6", "Line too long")
AUTH_LINE_TOO_LONG = Reply(500, "5.5.6", "Authentication exchange line is too long")
DATA_LINE_TOO_LONG = Reply(500, "5.5.6", "Message line too long")
BARE_NEWLINE = Reply(550, "5.5.2", "Bare CR or LF not allowed; lines end with CRLF")
PARAM_SYNTAX = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
SENDER_SYNTAX = Reply(501, "5.1.7", "Bad sender address syntax")
RECIPIENT_SYNTAX = Reply(501, "5.1.3", "Bad recipient address syntax")
AUTH_BAD_BASE64 = Reply(501, "5.5.2", "Cannot decode base64 response")
AUTH_CANCELLED = Reply(501, "5.7.0", "Authentication cancelled")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
PARAM_NOT_IMPLEMENTED = Reply(504, "5.5.4", "Command parameter not implemented")
MECHANISM_UNSUPPORTED = Reply(504, "5.5.4", "Unrecognized authentication type")
PARAM_UNRECOGNIZED = Reply(555, "5.5.4", "MAIL/RCPT parameter not recognized")

# Permanent negative: policy, authentication, mailboxes, the message.
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
STARTTLS_REQUIRED = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
MECHANISM_TOO_WEAK = Reply(534, "5.7.9", "Authentication mechanism is too weak")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
ENCRYPTION_REQUIRED = Reply(
    538, "5.7.11", "Encryption required for requested authentication mechanism"
)
NO_SUCH_USER = Reply(550, "5.1.1", "No such user")
MAILBOX_DISABLED = Reply(550, "5.2.1", "Mailbox disabled")
QUOTA_EXCEEDED_PERM = Reply(552, "5.2.2", "Mailbox full, quota exceeded")
TOO_BIG = Reply(552, "5.3.4", "Message too big")
SENDER_NOT_OWNED = Reply(553, "5.7.1", "Sender address not owned by authenticated user")
HEADER_FROM_NOT_OWNED = Reply(550, "5.7.1", "From: header address not owned by the authenticated user")
HEADER_FROM_UNREADABLE = Reply(550, "5.7.1", "From: header cannot be read, so its sender cannot be checked")
SIEVE_REJECTED = Reply(550, "5.7.1", "Message rejected by the recipient's filter")  # RFC 5429 section 2.1
UTF8_NOT_ALLOWED = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
TRANSACTION_FAILED = Reply(554, "5.0.0", "Transaction failed")
NUL_IN_MESSAGE = Reply(554, "5.6.0", "Message contains a NUL octet, which mail may not carry")
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")
