"""Plain values the store hands out: message records, flags, status counts.

These are protocol-neutral. System flags are a bit set (the five flags every
mail protocol knows); user keywords are strings kept as the client gave them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NamedTuple


class Flag(enum.IntFlag):
    """The system flags a message can carry, stored as a bit set."""

    SEEN = 1
    ANSWERED = 2
    FLAGGED = 4
    DELETED = 8
    DRAFT = 16


NO_FLAGS = Flag(0)


class FlagChange(enum.Enum):
    """How a flag update combines with the flags a message has."""

    REPLACE = "replace"
    ADD = "add"
    REMOVE = "remove"


class MailboxAttribute(enum.Enum):
    """What a mailbox listing can say about a name."""

    NOSELECT = "noselect"
    HAS_CHILDREN = "haschildren"
    HAS_NO_CHILDREN = "hasnochildren"
    SUBSCRIBED = "subscribed"


SPECIAL_USES = frozenset({"all", "archive", "drafts", "flagged", "junk", "sent", "trash"})


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """What the index knows of one message."""

    uid: int
    size: int
    internal_date: float  # seconds since the epoch, UTC
    flags: Flag
    keywords: frozenset[str]
    modseq: int
    guid: str  # unique for ever; POP3 UIDL and reconstruct lean on it
    save_date: float | None = None  # when it was saved in this mailbox (RFC 8514 SAVEDATE)
    email_id: str | None = None  # its content's id (RFC 8474 EMAILID base): shared by copies


class SortData(NamedTuple):
    """What SORT and THREAD need of a message, made once from its header at delivery.

    Strings are already keys (i;unicode-casemap applied); see
    :mod:`cyrusmail.mime.sortkeys` for what each holds.
    """

    sent: float | None  # the Date: field, seconds since the epoch UTC; None: use the internal date
    subject: str  # base subject (RFC 5256 2.1)
    reply: bool  # the subject marked a reply or forward
    from_: str
    to: str
    cc: str
    display_from: str
    display_to: str
    message_id: str | None
    references: tuple[str, ...]


NO_SORT_DATA = SortData(None, "", False, "", "", "", "", "", None, ())
"""For a message whose keys cannot be made (no MIME layer, an unreadable cache)."""


@dataclass(frozen=True, slots=True)
class MailboxStatus:
    """Counts a mailbox keeps ready in its index (STATUS, SELECT)."""

    messages: int
    recent: int
    uid_next: int
    uid_validity: int
    unseen: int
    highest_modseq: int
    size: int
    object_id: str | None = None  # MAILBOXID, when read in a batch (IMailboxList.statuses)
    deleted: int | None = None  # messages flagged \Deleted, when asked for


@dataclass(frozen=True, slots=True)
class MailboxSummary:
    """What opening a mailbox needs, straight from the index (no records built)."""

    uids: list[int]  # ascending
    modseqs: list[int]  # of each UID, same order
    keywords: frozenset[str]  # every keyword in use
    first_unseen_uid: int | None


@dataclass(frozen=True, slots=True)
class MailboxListing:
    """One name found by a LIST-style pattern match."""

    name: str
    attributes: frozenset[MailboxAttribute] = frozenset()
    special_use: str | None = None


@dataclass(frozen=True, slots=True)
class Changes:
    """What happened in a mailbox since a given modseq."""

    changed: list[MessageRecord] = field(default_factory=list)  # new or flag-changed, by UID
    expunged: list[int] = field(default_factory=list)  # UIDs, ascending
    highest_modseq: int = 0
    #: False when the expunge history no longer reaches back to the modseq asked
    #: about: ``expunged`` then lacks some, and the caller must compare UID lists
    complete: bool = True
