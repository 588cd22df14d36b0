"""Building IMAP server responses (RFC 3501 section 7) as bytes.

Small on purpose: status responses with an optional response code, other
untagged data, and continuation requests.  Strings inside response data
are written with :mod:`cyrusmail.imapform` (``imapform.string`` etc.); the
text here is the human-readable ``text`` of the grammar, which may hold no
CR or LF.
"""

from __future__ import annotations

from cyrusmail.imap.wire import ParseError

STATUSES = frozenset({"OK", "NO", "BAD", "PREAUTH", "BYE"})


def _bytes(value: bytes | str) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def _text(value: bytes | str) -> bytes:
    data = _bytes(value)
    if b"\r" in data or b"\n" in data:
        raise ValueError("response text may not contain CR or LF")
    return data


def status(
    tag: str | None,
    state: str,
    text: bytes | str = b"",
    code: bytes | str | None = None,
) -> bytes:
    """``tag OK [code] text`` CRLF; ``tag`` None gives an untagged ``*``.

    ``code`` is the inside of the brackets, e.g. ``"UIDNEXT 5"``.
    """
    if state not in STATUSES:
        raise ValueError(f"unknown status {state!r}")
    line = b"* " if tag is None else _text(tag) + b" "
    line += state.encode("ascii")
    if code is not None:
        line += b" [" + _text(code) + b"]"
    text = _text(text)
    # resp-text needs text after the code; RFC 3501 text is 1*TEXT-CHAR.
    return line + b" " + (text or state.encode("ascii").capitalize()) + b"\r\n"


def tagged(
    tag: str, state: str, text: bytes | str = b"", code: bytes | str | None = None
) -> bytes:
    """``tag OK|NO|BAD [code] text`` CRLF."""
    return status(tag, state, text, code)


def untagged(data: bytes | str) -> bytes:
    """``* data`` CRLF for response data (``5 EXISTS``, ``FLAGS (...)``).

    ``data`` is already serialised; it may contain literals, so it is not
    checked for line ends.
    """
    return b"* " + _bytes(data) + b"\r\n"


def continuation(text: bytes | str = b"") -> bytes:
    """``+ text`` CRLF (``+ `` alone when there is no text)."""
    return b"+ " + _text(text) + b"\r\n"


def parse_error(error: ParseError) -> bytes:
    """The response for a :class:`~cyrusmail.imap.wire.ParseError`."""
    return status(error.tag, error.status, error.message, error.code)
