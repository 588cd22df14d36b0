"""The four IMAP session states (RFC 3501 section 3), each carrying its data.

A handler that runs in the selected state receives a :class:`Selected`
holding the account and the session's view of the mailbox, so no handler
ever asks whether a mailbox "may be None".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cyrusmail.imap.selected import SelectedMailbox


@dataclass(frozen=True)
class NotAuthenticated:
    label = "not authenticated"


@dataclass(frozen=True)
class Authenticated:
    account: Any  # cyrusmail.account.IAccount
    label = "authenticated"


@dataclass(frozen=True)
class Selected:
    account: Any
    view: SelectedMailbox
    label = "selected"


@dataclass(frozen=True)
class LoggedOut:
    label = "logout"


State = NotAuthenticated | Authenticated | Selected | LoggedOut

ANY = frozenset({NotAuthenticated, Authenticated, Selected})
NOT_AUTHENTICATED = frozenset({NotAuthenticated})
AUTHENTICATED = frozenset({Authenticated, Selected})
SELECTED = frozenset({Selected})
