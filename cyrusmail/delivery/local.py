"""Local delivery: which recipients are ours, and putting a message in their mailbox.

One :class:`LocalDelivery` serves LMTP, submission and the queue (which
retries a local recipient whose mailbox was full, and delivers DSNs to local
senders).  A recipient is local when its domain is one of the config's
``domains``; it then must name a user (``context.users.resolve``), or it is
refused at RCPT.  ``user+folder@domain`` goes into ``folder`` when that
mailbox exists and the poster holds ``p`` on it, else into INBOX;
``shared+folder@domain`` posts to a shared folder (bulletin board), refused
at RCPT unless it exists and the poster holds ``p`` there (the decision is
the realm's ``delivery_target``, the same for every protocol).  ``postmaster`` (any local domain, or the
bare ``<Postmaster>`` of RFC 5321 section 4.5.1) goes to the user of that
name, else to the first admin.

The message arrives as one finished (fsynced) staged message: its file is
linked into each recipient's mailbox, and the store parses it only once.
Every outcome is an SMTP reply from :mod:`cyrusmail.smtp.codes`, so LMTP can
send one per recipient.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet import defer
from twisted.python.failure import Failure

from cyrusmail import logs
from cyrusmail.acl.delivery import shared_folder_of
from cyrusmail.smtp import codes
from cyrusmail.smtp.codes import Reply
from cyrusmail.smtp.wire import Path
from cyrusmail.store.errors import (
    InvalidName,
    MailboxNotFound,
    NotSelectable,
    OverQuota,
    PermissionDenied,
    StoreError,
    UnknownUser,
)

INBOX = "INBOX"


@dataclass(frozen=True)
class LocalTarget:
    """A resolved local recipient: the user, and the folder asked for (or INBOX)."""

    user: str  # a user name, or the shared tree's owner
    folder: str = INBOX
    poster: str | None = None  # the authenticated sender; None on LMTP


class LocalDelivery:
    """Resolve local recipients and deliver staged messages to them."""

    def __init__(self, context) -> None:
        self.context = context
        self.domains = [domain.lower() for domain in context.config.domains]

    def is_local(self, path: Path) -> bool:
        """Whether the address is in one of our domains (or a bare Postmaster)."""
        return path.domain is None or path.domain.lower() in self.domains

    def resolve(self, path: Path, poster: str | None = None) -> LocalTarget | None:
        """The local user (or shared folder) ``path`` names, or None if there is none.

        Only meaningful for a local address (:meth:`is_local`).
        """
        local = path.local_part
        domain = (path.domain or self.domains[0]).lower()
        user = self._user(local, domain)
        if user is not None:
            return LocalTarget(user, poster=poster)
        shared = shared_folder_of(local)
        if shared is not None:
            target = LocalTarget(self.context.realm.SHARED, shared, poster)
            try:
                self.context.realm.delivery_target(target.user, target.folder, poster)
            except (MailboxNotFound, NotSelectable, PermissionDenied, InvalidName):
                return None
            return target
        base, plus, folder = local.partition("+")
        if plus and base and folder:
            user = self._user(base, domain)
            if user is not None:
                return LocalTarget(user, folder, poster)
        if local.lower() == "postmaster" and self.context.config.admins:
            admin = self.context.users.resolve(self.context.config.admins[0], self.domains)
            if admin is not None:
                return LocalTarget(admin)
        return None

    def _user(self, local: str, domain: str) -> str | None:
        return self.context.users.resolve(f"{local}@{domain}", self.domains)

    def deliver(self, staged, target: LocalTarget) -> Reply:
        """Append the finished ``staged`` message to the target's mailbox, on this thread.

        Returns :data:`codes.MESSAGE_ACCEPTED` once the file and index entry
        are durable, or the reply that says why not.
        """
        try:
            self._mailbox(target).append(staged)
        except Exception:
            reply = _refusal(Failure(), target)
            if reply is None:
                raise
            return reply
        return codes.MESSAGE_ACCEPTED

    def deliver_async(self, staged, target: LocalTarget) -> defer.Deferred:
        """:meth:`deliver` with the append off the reactor (grouped with others to
        the same user); a Deferred of the reply, fired once the message is durable."""

        def refused(failure):
            reply = _refusal(failure, target)
            return failure if reply is None else reply

        appending = defer.maybeDeferred(lambda: self._mailbox(target).append_async(staged))
        return appending.addCallbacks(lambda _: codes.MESSAGE_ACCEPTED, refused)

    def _mailbox(self, target: LocalTarget):
        return self.context.realm.delivery_target(target.user, target.folder, target.poster)


def _refusal(failure: Failure, target: LocalTarget) -> Reply | None:
    """The reply for a delivery that failed so; None for a bug (raised on)."""
    error = failure.value
    if isinstance(error, OverQuota):
        return codes.QUOTA_EXCEEDED_PERM if error.permanent else codes.MAILBOX_FULL
    if isinstance(error, PermissionDenied):
        return codes.MAILBOX_DISABLED
    if isinstance(error, UnknownUser):  # deleted since RCPT
        return codes.NO_SUCH_USER
    if isinstance(error, (StoreError, OSError)):
        logs.log.failure("delivery to {user} failed", failure, user=target.user)
        return codes.TEMP_FAIL.with_text(f"Local delivery failed: {type(error).__name__}")
    return None
