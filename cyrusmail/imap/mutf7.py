"""Modified UTF-7, the mailbox-name encoding of RFC 3501 section 5.1.3.

Printable US-ASCII other than ``&`` stands for itself; ``&`` is ``&-``;
anything else is UTF-16BE in a modified base64 (``,`` for ``/``, no
padding) between ``&`` and ``-``.

:func:`decode` is strict: it accepts only what :func:`encode` produces, so
every mailbox has exactly one wire name.  It raises :class:`MUTF7Error`,
which the session turns into a tagged BAD or NO.
"""

from __future__ import annotations

import base64
import binascii
import re

_BASE64_CHARS = re.compile(r"[A-Za-z0-9+,]*")


class MUTF7Error(ValueError):
    """The name is not valid (canonical) modified UTF-7."""


def _printable(char: str) -> bool:
    return "\x20" <= char <= "\x7e"


def _encode_run(run: str) -> str:
    data = run.encode("utf-16-be")
    return "&" + base64.b64encode(data, b"+,").decode("ascii").rstrip("=") + "-"


def encode(name: str) -> str:
    """``name`` in modified UTF-7 (pure ASCII)."""
    out: list[str] = []
    run: list[str] = []
    for char in name:
        if _printable(char):
            if run:
                out.append(_encode_run("".join(run)))
                run = []
            out.append("&-" if char == "&" else char)
        else:
            run.append(char)
    if run:
        out.append(_encode_run("".join(run)))
    return "".join(out)


def _decode_run(encoded: str, position: int) -> str:
    if not encoded:
        raise MUTF7Error(f"empty shift sequence at {position}")
    if not _BASE64_CHARS.fullmatch(encoded):
        raise MUTF7Error(f"bad modified base64 at {position}")
    if len(encoded) % 4 == 1:
        raise MUTF7Error(f"truncated modified base64 at {position}")
    padded = encoded + "=" * (-len(encoded) % 4)
    try:
        data = base64.b64decode(padded, b"+,", validate=True)
    except binascii.Error as error:
        raise MUTF7Error(f"bad modified base64 at {position}") from error
    if len(data) % 2:
        raise MUTF7Error(f"odd number of UTF-16 bytes at {position}")
    # Leftover bits past the last whole byte must be zero (non-canonical else).
    if base64.b64encode(data, b"+,").decode("ascii").rstrip("=") != encoded:
        raise MUTF7Error(f"non-zero padding bits at {position}")
    try:
        text = data.decode("utf-16-be")
    except UnicodeDecodeError as error:
        raise MUTF7Error(f"unpaired UTF-16 surrogate at {position}") from error
    if any(_printable(char) for char in text):
        raise MUTF7Error(f"printable ASCII encoded in base64 at {position}")
    return text


def decode(wire: str | bytes) -> str:
    """The Unicode name for a modified UTF-7 wire name.

    Raises :class:`MUTF7Error` for 8-bit or control characters, a bare
    ``&`` without ``-``, bad base64, odd byte counts, non-zero pad bits,
    broken surrogates, encoded printable ASCII, and two encoded runs
    back to back (``&AOk-&AOk-``, which must be one run).
    """
    if isinstance(wire, bytes):
        try:
            wire = wire.decode("ascii")
        except UnicodeDecodeError as error:
            raise MUTF7Error("8-bit byte in modified UTF-7") from error
    out: list[str] = []
    position = 0
    previous_was_run = False
    while position < len(wire):
        char = wire[position]
        if char == "&":
            end = wire.find("-", position + 1)
            if end < 0:
                raise MUTF7Error(f"unterminated shift sequence at {position}")
            if end == position + 1:
                out.append("&")
                previous_was_run = False
            else:
                if previous_was_run:
                    raise MUTF7Error(f"adjacent shift sequences at {position}")
                out.append(_decode_run(wire[position + 1 : end], position))
                previous_was_run = True
            position = end + 1
        elif _printable(char):
            out.append(char)
            previous_was_run = False
            position += 1
        else:
            raise MUTF7Error(f"character {char!r} must be encoded (at {position})")
    return "".join(out)
