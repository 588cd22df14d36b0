"""What can go wrong in the store, as exceptions every protocol can map.

The store raises these; a protocol turns each into its own reply (IMAP
response codes, POP3 -ERR, SMTP 4xx/5xx). None of them carries a path.
"""


class StoreError(Exception):
    """Base of every error the store reports to a caller."""


class InvalidName(StoreError):
    """A mailbox name the store will not hold (empty, control characters, ...)."""


class MailboxNotFound(StoreError):
    """No such mailbox (or the caller may not know it exists)."""


class MailboxExists(StoreError):
    """A mailbox of that name is already there."""


class NotSelectable(StoreError):
    """The name is only a hierarchy node holding children (\\Noselect)."""


class HasChildren(StoreError):
    """The operation is refused because the mailbox has inferiors."""


class Refused(StoreError):
    """The operation makes no sense for this mailbox (e.g. deleting INBOX)."""


class NoSuchMessage(StoreError):
    """The UID names no message in the mailbox (expunged, or never there)."""


class PermissionDenied(StoreError):
    """The account lacks the right this operation needs."""


class OverQuota(StoreError):
    """The operation would take a quota root past one of its limits."""

    def __init__(self, message: str = "Quota exceeded", *, permanent: bool = False):
        super().__init__(message)
        #: True when the message alone is larger than the limit (SMTP 552).
        self.permanent = permanent


class UnknownUser(StoreError):
    """No account of that name."""


class UserExists(StoreError):
    """An account of that name is already there."""


class InvalidUserName(StoreError):
    """A user name that is not ``local`` or ``local@domain``."""


class InvalidRights(StoreError):
    """A rights string with a letter RFC 4314 does not define (IMAP answers BAD)."""


class InvalidIdentifier(StoreError):
    """An ACL identifier that names no user, group or ``anyone`` (IMAP answers BAD)."""


class NoSuchQuotaRoot(StoreError):
    """No quota root of that name (or none the caller may see)."""
