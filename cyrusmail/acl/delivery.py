"""Where a delivered message goes, decided by the ``p`` (post) right.

LMTP and submission hand a recipient (a user, or the shared-folder
posting address) and the folder its ``+detail`` names. Delivery to a
folder other than INBOX needs ``p`` on that folder for the poster: the
authenticated sender on submission, nobody (``anyone`` only) on LMTP. A
user's folder that is missing or not postable falls back to their INBOX;
a shared folder has no INBOX, so the recipient is refused (SMTP 550).

Quota is enforced by the store when the message is appended to the
mailbox returned here (OverQuota, ``permanent`` when the message alone
is larger than the limit: 552 5.2.2, else 452 4.2.2).
"""

from __future__ import annotations

from cyrusmail.acl.control import AccessControl
from cyrusmail.store import names
from cyrusmail.store.errors import (
    InvalidName,
    MailboxNotFound,
    NotSelectable,
    PermissionDenied,
)
from cyrusmail.store.maildir.store import SHARED_OWNER

#: ``shared+news/daily@example.org`` posts to the shared folder ``news/daily``.
SHARED_POSTING_LOCAL_PART = "shared"


def shared_folder_of(local_part: str) -> str | None:
    """The shared folder a posting address's local part names, or None."""
    base, plus, folder = local_part.partition("+")
    if base.lower() != SHARED_POSTING_LOCAL_PART or not plus or not folder:
        return None
    try:
        return names.check(folder)
    except InvalidName:
        return None


def delivery_target(access: AccessControl, recipient: str, folder: str | None = None, poster: str | None = None):
    """The store mailbox (an IMailbox) a message for ``recipient`` goes into.

    ``recipient`` is a user name or ``SHARED_OWNER``; ``folder`` the
    ``+detail`` (None or "INBOX" for a user's INBOX); ``poster`` the
    authenticated sender, None when anonymous (LMTP). For the shared tree:
    MailboxNotFound when there is no such folder, PermissionDenied without
    ``p``; both are a 550 to the sender.
    """
    tree = access.tree(recipient)
    if recipient == SHARED_OWNER:
        if not folder:
            raise MailboxNotFound("No shared folder named")
        try:
            held = access.rights(poster, SHARED_OWNER, tree.acl(folder))
        except InvalidName:
            raise MailboxNotFound(f"No shared folder {folder}") from None
        if "p" not in held:
            raise PermissionDenied(f"Posting to shared folder {folder} is not allowed")
        return tree.open(folder)
    if folder and names.canonical(folder) != names.INBOX:
        try:
            if "p" in access.rights(poster, recipient, tree.acl(folder)):
                return tree.open(folder)
        except (MailboxNotFound, NotSelectable, InvalidName):
            pass
    return tree.open(names.INBOX)
