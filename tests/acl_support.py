"""Two users over a real store, and a driver that speaks in protocol operations.

The RFC 4314 section 4 table in ``test_acl_rights.py`` is written against
``AccountDriver``'s methods (select, append, store, copy, ...), each of
which either returns or raises ``Denied`` (NO [NOPERM]) or ``NotFound``
(NO [NONEXISTENT] / [TRYCREATE]). An IMAP driver with the same methods,
over a real session, runs the same table once the IMAP commands are wired.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from cyrusmail.portal import MailRealm
from cyrusmail.store.errors import MailboxNotFound, PermissionDenied
from cyrusmail.store.maildir import MaildirStore
from cyrusmail.store.records import NO_FLAGS, Flag, FlagChange
from tests.helpers import another_store

MESSAGE = b"From: carol@example.org\r\nSubject: hello\r\n\r\nHello.\r\n"


class Denied(Exception):
    """The operation was refused for want of a right (NO [NOPERM])."""


class NotFound(Exception):
    """The operation was answered as if the mailbox did not exist (NO [NONEXISTENT])."""


class AccountDriver:
    """Protocol operations over an Account, mapping its errors to Denied/NotFound."""

    def __init__(self, account):
        self.account = account

    def __getattribute__(self, name):
        attribute = object.__getattribute__(self, name)
        if name.startswith("_") or not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            try:
                return attribute(*args, **kwargs)
            except PermissionDenied as error:
                raise Denied(str(error)) from error
            except MailboxNotFound as error:
                raise NotFound(str(error)) from error
        return call

    def list(self, pattern: str = "*") -> list[str]:
        return [listing.name for listing in self.account.mailboxes.list(pattern)]

    def select(self, name: str) -> int:
        return len(self.account.mailboxes.open(name).messages())

    def status(self, name: str) -> int:
        return self.account.mailboxes.status(name).messages

    def append(self, name: str, flags: Flag = NO_FLAGS, keywords=()) -> int:
        return self.account.mailboxes.open(name).append(MESSAGE, flags, keywords)

    def fetch_flags(self, name: str, uid: int):
        record = self.account.mailboxes.open(name).record(uid)
        return record.flags, record.keywords

    def store(self, name: str, uid: int, flags: Flag, keywords=(), change: FlagChange = FlagChange.ADD) -> None:
        self.account.mailboxes.open(name).set_flags([uid], change, flags, keywords)

    def copy(self, source: str, uids: list[int], target: str) -> list[tuple[int, int]]:
        return self.account.mailboxes.open(source).copy(uids, self.account.mailboxes.open(target))

    def move(self, source: str, uids: list[int], target: str) -> list[tuple[int, int]]:
        return self.account.mailboxes.open(source).move(uids, self.account.mailboxes.open(target))

    def expunge(self, name: str) -> list[int]:
        return self.account.mailboxes.open(name).expunge()

    def create(self, name: str) -> None:
        self.account.mailboxes.create(name)

    def delete(self, name: str) -> None:
        self.account.mailboxes.delete(name)

    def rename(self, old: str, new: str) -> None:
        self.account.mailboxes.rename(old, new)

    def getacl(self, name: str) -> dict[str, str]:
        return dict(self.account.acl(name))

    def setacl(self, name: str, identifier: str, rights: str) -> None:
        self.account.set_acl(name, identifier, rights)

    def deleteacl(self, name: str, identifier: str) -> None:
        self.account.delete_acl(name, identifier)

    def listrights(self, name: str, identifier: str):
        return self.account.list_rights(name, identifier)

    def myrights(self, name: str) -> str:
        return self.account.rights(name)


class TwoUsers:
    """A mixin: ``self.alice`` owns mailboxes, ``self.bob`` is given rights, ``self.root`` is an admin."""

    def setUp(self):
        super().setUp()
        folder = tempfile.mkdtemp(prefix="cyrusmail-acl-")
        self.addCleanup(shutil.rmtree, folder, True)
        self.store = self.make_store(os.path.join(folder, "data"))
        self.realm = MailRealm(self.store, ["root"], ["example.org"], {"Sent": "sent", "Trash": "trash"})
        self.addCleanup(self.store.close)
        self.addCleanup(self.realm.close)
        self.alice_account = self.realm.account("alice")
        self.bob_account = self.realm.account("bob")
        self.root_account = self.realm.account("root")
        self.alice = AccountDriver(self.alice_account)
        self.bob = AccountDriver(self.bob_account)
        self.root = AccountDriver(self.root_account)

    def make_store(self, data: str):
        """The store under test, over the data folder ``data`` (a backend's binding overrides it)."""
        return MaildirStore(data, analyser=None)

    def another_store(self):
        """A second store on the same mail, as another process or server would open it."""
        return another_store(self.store)
