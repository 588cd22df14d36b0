"""IMAP flag names and the store's flag bits: the one mapping between them."""

from __future__ import annotations

from collections.abc import Iterable

from cyrusmail.store.records import NO_FLAGS, Flag, MessageRecord

SYSTEM_FLAGS: dict[str, Flag] = {
    "\\Seen": Flag.SEEN,
    "\\Answered": Flag.ANSWERED,
    "\\Flagged": Flag.FLAGGED,
    "\\Deleted": Flag.DELETED,
    "\\Draft": Flag.DRAFT,
}
_BY_FOLDED = {name.lower(): (name, bit) for name, bit in SYSTEM_FLAGS.items()}
RECENT = "\\Recent"

#: What SELECT announces in FLAGS and PERMANENTFLAGS (the latter adds \*).
FLAG_LIST = tuple(SYSTEM_FLAGS)

#: The longest keyword a client may set.  A keyword is repeated in every
#: FLAGS response of every message that has it and in SELECT's FLAGS, so a
#: 60 KB one would be paid for on every FETCH; no real client uses more
#: than a few dozen characters.
MAX_KEYWORD_LENGTH = 250


class BadFlag(ValueError):
    """A flag a client may not set (\\Recent, an unknown \\-flag, an over-long keyword)."""


def split_flags(names: Iterable[str]) -> tuple[Flag, list[str]]:
    """Client flag names -> (system flag bits, keywords); BadFlag for \\Recent, \\Unknown or a too long keyword."""
    bits, keywords = NO_FLAGS, []
    for name in names:
        system = _BY_FOLDED.get(name.lower())
        if system is not None:
            bits |= system[1]
        elif name.startswith("\\"):
            raise BadFlag(f"{name[:MAX_KEYWORD_LENGTH]} cannot be set")
        elif len(name) > MAX_KEYWORD_LENGTH:
            raise BadFlag(f"keyword longer than {MAX_KEYWORD_LENGTH} characters")
        else:
            keywords.append(name)
    return bits, keywords


# The system-flag names of every bit combination, worked out once (FETCH FLAGS is hot).
_NAMES_OF_BITS = tuple(
    tuple(name for name, bit in SYSTEM_FLAGS.items() if bits & bit) for bits in range(1 << len(SYSTEM_FLAGS))
)
_WIRE_OF_BITS = tuple(" ".join(names).encode("ascii") for names in _NAMES_OF_BITS)


def flag_names(record: MessageRecord, recent: bool = False) -> list[str]:
    """The flag list of a message as FETCH FLAGS shows it."""
    names = list(_NAMES_OF_BITS[int(record.flags)])
    if recent:
        names.append(RECENT)
    names.extend(sorted(record.keywords))
    return names


def flags_wire(record: MessageRecord, recent: bool = False) -> bytes:
    """``(\\Seen $Work)``: flag names are atoms, so no quoting is needed."""
    if not recent and not record.keywords:
        return b"(" + _WIRE_OF_BITS[int(record.flags)] + b")"
    return ("(" + " ".join(flag_names(record, recent)) + ")").encode("utf-8")


def system_flag(name: str) -> Flag | None:
    """The bit of a system flag name (any case), else None."""
    found = _BY_FOLDED.get(name.lower())
    return found[1] if found else None
