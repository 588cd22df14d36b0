"""Reading mail from an mbox file or a maildir folder, flags and dates kept.

Each source yields ``Imported`` messages: CRLF bytes, system flags, keywords
and the internal date. The admin command stages them all, then appends them
in one transaction, so a failed import adds nothing.

NUL octets are removed, and the command says from how many messages: no
protocol may carry them (delivery refuses such a message with 554 5.6.0,
APPEND with NO), but an old mailbox being migrated should not fail as a
whole for one damaged message.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cyrusmail.store.records import NO_FLAGS, Flag


class ImportError_(Exception):
    """The source is not an mbox file or a maildir folder we can read."""


@dataclass
class Imported:
    data: bytes
    flags: Flag
    internal_date: float | None
    nul_removed: int = 0  # NUL octets taken out of the source's message

    @classmethod
    def of(cls, raw: bytes, flags: Flag, internal_date: float | None) -> Imported:
        """The stored form of a source message: CRLF line endings, no NUL."""
        nuls = raw.count(b"\x00")
        return cls(to_crlf(raw.replace(b"\x00", b"") if nuls else raw), flags, internal_date, nuls)


def to_crlf(data: bytes) -> bytes:
    """Every line ending as CRLF (mail on the wire and in the store is CRLF)."""
    return re.sub(rb"\r?\n", b"\r\n", data)


# -- mbox -----------------------------------------------------------------------

_FROM_LINE = re.compile(rb"^From \S+ +(.*?)\s*$")
_ESCAPED_FROM = re.compile(rb"^>(>*From )", re.MULTILINE)
# Headers that belong to the mbox file, not to the message (as Dovecot strips them).
_MBOX_HEADERS = {b"status", b"x-status", b"x-keywords", b"x-uid", b"x-imap", b"x-imapbase", b"content-length"}


def _mbox_date(from_line: bytes) -> float | None:
    match = _FROM_LINE.match(from_line)
    if not match:
        return None
    text = match[1].decode("ascii", "replace")
    try:
        return time.mktime(time.strptime(" ".join(text.split()[:5]), "%a %b %d %H:%M:%S %Y"))
    except ValueError:
        return None


def _split_header(message: bytes) -> tuple[bytes, bytes]:
    end = message.find(b"\n\n")
    return (message, b"") if end < 0 else (message[: end + 1], message[end + 1:])


def _mbox_flags(header: bytes) -> tuple[Flag, bytes]:
    """Flags from ``Status:``/``X-Status:``, and the header without mbox fields."""
    flags = NO_FLAGS
    kept: list[bytes] = []
    skipping = False
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        name, colon, value = line.partition(b":")
        folded = name.strip().lower()
        skipping = bool(colon) and folded in _MBOX_HEADERS
        if not skipping:
            kept.append(line)
            continue
        letters = value.strip().upper()
        if folded == b"status" and b"R" in letters:
            flags |= Flag.SEEN
        if folded == b"x-status":
            for letter, flag in ((b"A", Flag.ANSWERED), (b"F", Flag.FLAGGED),
                                 (b"T", Flag.DRAFT), (b"D", Flag.DELETED)):
                if letter in letters:
                    flags |= flag
    return flags, b"".join(kept)


def read_mbox(path: Path) -> Iterator[Imported]:
    """Messages of an mbox (mboxrd/mboxo: ``>From`` lines are unescaped)."""
    data = path.read_bytes().replace(b"\r\n", b"\n")
    if data and not data.startswith(b"From "):
        raise ImportError_(f"{path} is not an mbox file (it does not start with 'From ')")
    # A message ends at the blank line before the next "From " line; that
    # blank line belongs to the separator, not the message.
    separators = [m.start() for m in re.finditer(rb"\n\nFrom ", data)]
    bounds = zip([0] + [at + 2 for at in separators], [at + 1 for at in separators] + [len(data)])
    for start, end in bounds:
        from_line, _, message = data[start:end].partition(b"\n")
        if end == len(data) and message.endswith(b"\n\n"):
            message = message[:-1]
        header, body = _split_header(message)
        flags, header = _mbox_flags(header)
        message = _ESCAPED_FROM.sub(rb"\1", header + body)
        yield Imported.of(message, flags, _mbox_date(from_line))


# -- maildir --------------------------------------------------------------------

_MAILDIR_FLAGS = {"D": Flag.DRAFT, "F": Flag.FLAGGED, "R": Flag.ANSWERED, "S": Flag.SEEN, "T": Flag.DELETED}


def _maildir_flags(name: str) -> Flag:
    flags = NO_FLAGS
    _, sep, info = name.rpartition(":2,")
    if sep:
        for letter in info:
            flags |= _MAILDIR_FLAGS.get(letter, NO_FLAGS)
    return flags


def _maildir_date(name: str, path: Path) -> float:
    head = name.split(".", 1)[0]
    return float(head) if head.isdigit() else os.stat(path).st_mtime


def read_maildir(path: Path) -> Iterator[Imported]:
    """Messages of a maildir folder (``cur/`` and ``new/``), in delivery order."""
    if not (path / "cur").is_dir() and not (path / "new").is_dir():
        raise ImportError_(f"{path} is not a maildir folder (no cur/ or new/)")
    entries = []
    for sub in ("cur", "new"):
        folder = path / sub
        if folder.is_dir():
            entries += [entry for entry in folder.iterdir() if entry.is_file() and not entry.name.startswith(".")]
    entries.sort(key=lambda entry: (_maildir_date(entry.name, entry), entry.name))
    for entry in entries:
        yield Imported.of(entry.read_bytes(), _maildir_flags(entry.name), _maildir_date(entry.name, entry))


def read_source(path: Path) -> Iterator[Imported]:
    if path.is_dir():
        return read_maildir(path)
    if path.is_file():
        return read_mbox(path)
    raise ImportError_(f"{path} does not exist")


def count_source(path: Path) -> tuple[int, int]:
    """(messages, octets) the source holds, found without parsing it, for a progress bar: the
    ``From`` lines after a blank line (or at the start) of an mbox file, the files of a maildir folder."""
    if path.is_dir():
        files = [entry for sub in ("cur", "new") if (path / sub).is_dir()
                 for entry in (path / sub).iterdir() if entry.is_file() and not entry.name.startswith(".")]
        return len(files), sum(entry.stat().st_size for entry in files)
    if path.is_file():
        separator = b"\n\nFrom "
        count, size, tail = 0, 0, b"\n\n"  # as if a blank line came before the first
        with path.open("rb") as source:
            while chunk := source.read(1 << 20):  # read in pieces: an mbox may be bigger than memory
                size += len(chunk)
                joined = tail + chunk
                count += joined.count(separator)
                tail = joined[-(len(separator) - 1):]
        return count, size
    return 0, 0

