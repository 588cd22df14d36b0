"""The mail store: interfaces, records and errors, and the embedded backend.

Protocols reach it through the account layer; it speaks no protocol.
"""

from cyrusmail.store.errors import StoreError
from cyrusmail.store.interfaces import IMailbox, IMailboxList, IStagedMessage, IStore
from cyrusmail.store.records import (
    Changes,
    Flag,
    FlagChange,
    MailboxAttribute,
    MailboxListing,
    MailboxStatus,
    MessageRecord,
)

__all__ = [
    "Changes", "Flag", "FlagChange", "IMailbox", "IMailboxList", "IStagedMessage", "IStore",
    "MailboxAttribute", "MailboxListing", "MailboxStatus", "MessageRecord", "StoreError",
]
