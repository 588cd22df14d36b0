"""The maildrop a POP3 session works on: INBOX as it was at login.

Message numbers 1..n are fixed at login over ``messages()`` (the index
alone, no file is read). DELE marks a number, RSET unmarks them all; only
QUIT's :meth:`Maildrop.commit` touches the store: it sets ``\\Deleted`` on
the marked UIDs and expunges exactly those, so IMAP sessions see EXPUNGE
and any message an IMAP client flagged meanwhile is left alone. A message
expunged by someone else meanwhile is no error: reading it says so, and
deleting it again is a no-op.
"""

from __future__ import annotations

import sqlite3
from typing import BinaryIO

from cyrusmail.store.errors import NoSuchMessage, StoreError
from cyrusmail.store.interfaces import IMailbox
from cyrusmail.store.records import Flag, FlagChange, MessageRecord

INBOX = "INBOX"

#: What the store can raise when it cannot do its work now: its own errors, a
#: file it cannot read, or (until the backend maps them) an index busy beyond
#: its timeout, or a PostgreSQL store's database error. The session answers
#: these with ``-ERR [SYS/TEMP]`` and goes on.
STORE_FAILURES: tuple[type[Exception], ...] = (StoreError, OSError, sqlite3.Error)
try:
    from psycopg import Error as _DatabaseError
except ImportError:  # no PostgreSQL store without it
    pass
else:
    STORE_FAILURES += (_DatabaseError,)


class MaildropError(Exception):
    """A message number the session cannot use, with the reason to give the client."""


class Maildrop:
    """A snapshot of INBOX with the session's deletion marks."""

    def __init__(self, mailbox: IMailbox, records: list[MessageRecord]):
        self.mailbox = mailbox
        self.records = records
        self.deleted: set[int] = set()
        self.retrieved: set[int] = set()

    @classmethod
    def open(cls, account) -> Maildrop:
        """The INBOX of ``account``, numbered from the index (StoreError if it cannot be)."""
        mailbox = account.mailboxes.open(INBOX)
        return cls(mailbox, mailbox.messages())

    # -- reading -------------------------------------------------------------

    def listing(self) -> list[tuple[int, MessageRecord]]:
        """(number, record) of every message not marked deleted, ascending."""
        return [(number, record) for number, record in enumerate(self.records, 1)
                if number not in self.deleted]

    def stat(self) -> tuple[int, int]:
        """How many messages are not marked deleted, and their octets."""
        live = self.listing()
        return len(live), sum(record.size for _, record in live)

    def get(self, number: int) -> MessageRecord:
        if not 1 <= number <= len(self.records):
            raise MaildropError(f"No message {number}")
        if number in self.deleted:
            raise MaildropError(f"Message {number} is deleted")
        return self.records[number - 1]

    def open_file(self, number: int) -> BinaryIO:
        """The stored file of message ``number`` (MaildropError if it was expunged meanwhile)."""
        record = self.get(number)
        try:
            return self.mailbox.open_file(record.uid)
        except (NoSuchMessage, FileNotFoundError):
            raise MaildropError(f"Message {number} no longer exists") from None

    # -- marking -------------------------------------------------------------

    def delete(self, number: int) -> None:
        self.get(number)
        self.deleted.add(number)

    def reset(self) -> None:
        self.deleted.clear()

    def commit(self) -> int:
        """UPDATE state: mark retrieved messages seen, expunge the deleted ones; how many are left.

        Raises the store's errors (the caller answers ``-ERR [SYS/TEMP]``).
        """
        doomed = [self.records[number - 1].uid for number in sorted(self.deleted)]
        seen = [self.records[number - 1].uid for number in sorted(self.retrieved - self.deleted)]
        if seen:
            self.mailbox.set_flags(seen, FlagChange.ADD, Flag.SEEN)
        if doomed:
            self.mailbox.set_flags(doomed, FlagChange.ADD, Flag.DELETED)
            self.mailbox.expunge(doomed)
        return len(self.records) - len(self.deleted)

    def commit_async(self):
        """:meth:`commit` off the reactor, in the queue of the mailbox's index; a Deferred of its result."""
        return self.mailbox.later(self.commit)
