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

Sieve: a delivery that names its envelope (LMTP, submission, the queue)
to one of a user's own mailboxes first asks :mod:`cyrusmail.sieve.delivery`
for the user's active script's plan, before anything is written: a
refusal is answered as it is; otherwise each planned mailbox gets the
message with its flags, and only then go the redirects and the vacation
reply.  A fileinto that cannot be done goes where the message was
addressed instead; nothing a script does can lose the message.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet import defer
from twisted.python.failure import Failure

from cyrusmail import logs
from cyrusmail.acl.delivery import shared_folder_of
from cyrusmail.imap.flags import split_flags
from cyrusmail.sieve.delivery import (
    Envelope,
    Plan,
    SieveFilter,
    Store,
    system_flag_or_keyword,
)
from cyrusmail.smtp import codes
from cyrusmail.smtp.codes import Reply
from cyrusmail.smtp.wire import Path
from cyrusmail.store.errors import (
    InvalidName,
    MailboxExists,
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
        self.sieve: SieveFilter | None = sieve_filter(context)

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

    def deliver(self, staged, target: LocalTarget, envelope: Envelope | None = None) -> Reply:
        """Put the finished ``staged`` message where the target's Sieve script says
        (or in its mailbox), on this thread.

        Returns :data:`codes.MESSAGE_ACCEPTED` once the file and index entry
        are durable, or the reply that says why not.  Without ``envelope``
        (a DSN to a local sender) no script runs.
        """
        active = self._active_script(target, envelope)
        plan = None if active is None else self._plan(staged, target, envelope, active)
        if plan is None:
            return self._store(staged, target, Store(None))
        try:
            if plan.refusal is not None:
                return plan.refusal
            return self._outcome(plan, [self._store(plan.message, target, store) for store in plan.stores])
        finally:
            plan.close()

    def deliver_async(self, staged, target: LocalTarget, envelope: Envelope | None = None) -> defer.Deferred:
        """:meth:`deliver` with the appends off the reactor (grouped with others to
        the same user); a Deferred of the reply, fired once the message is durable.
        A user's script runs on the reactor once the message is on disk (it is
        bounded: ``[sieve] max_actions``, a header read of at most 256 KiB)."""
        active = self._active_script(target, envelope)
        if active is None:
            return self._store_async(staged, target, Store(None))
        ready = self.context.store.executor.prepare(staged.finish)  # the script reads the file
        return ready.addCallback(lambda _: self._filtered_async(staged, target, envelope, active))

    def _filtered_async(self, staged, target: LocalTarget, envelope: Envelope, active) -> defer.Deferred:
        plan = self._plan(staged, target, envelope, active)
        if plan is None:
            return self._store_async(staged, target, Store(None))
        if plan.refusal is not None:
            plan.close()
            return defer.succeed(plan.refusal)
        stores = [self._store_async(plan.message, target, store) for store in plan.stores]
        done = defer.gatherResults(stores, consumeErrors=True).addCallback(lambda replies: self._outcome(plan, replies))

        def closed(result):
            plan.close()
            return result

        return done.addBoth(closed)

    def _active_script(self, target: LocalTarget, envelope: Envelope | None) -> tuple[str, str] | None:
        """The recipient's active script when one applies (a stat and a small read; most users have none)."""
        if envelope is None or self.sieve is None or target.user == self.context.realm.SHARED:
            return None
        return self.sieve.active_script(target.user)

    def _plan(self, staged, target: LocalTarget, envelope: Envelope, active: tuple[str, str]) -> Plan | None:
        try:
            return self.sieve.plan(staged, target.user, envelope, active)
        except Exception:  # noqa: BLE001 - a fault in filtering must not cost the message
            logs.log.failure("sieve: filtering a message for {user} failed; delivered unfiltered", user=target.user)
            return None

    @staticmethod
    def _outcome(plan: Plan, replies: list[Reply]) -> Reply:
        """Accepted when one store (or none asked for: discard) worked; then the redirects and replies go."""
        if plan.stores and not any(reply.is_positive for reply in replies):
            return next(reply for reply in replies if not reply.is_positive)
        plan.after_stored()
        return codes.MESSAGE_ACCEPTED

    def _store(self, staged, target: LocalTarget, store: Store) -> Reply:
        """Append to ``store.folder`` of the target user (None: the target's own mailbox)."""
        try:
            self._mailbox(target, store).append(staged, *_flags_of(store))
        except Exception:
            reply = _refusal(Failure(), target, self.context.metrics)
            if reply is None:
                raise
            return reply
        return codes.MESSAGE_ACCEPTED

    def _store_async(self, staged, target: LocalTarget, store: Store) -> defer.Deferred:
        def refused(failure):
            reply = _refusal(failure, target, self.context.metrics)
            return failure if reply is None else reply

        appending = defer.maybeDeferred(lambda: self._mailbox(target, store).append_async(staged, *_flags_of(store)))
        return appending.addCallbacks(lambda _: codes.MESSAGE_ACCEPTED, refused)

    def _mailbox(self, target: LocalTarget, store: Store):
        """The mailbox a store goes to: a fileinto's own folder (made with :create), else the target's."""
        if store.folder is not None:
            tree = self.context.realm.access.tree(target.user)
            try:
                try:
                    return tree.open(store.folder)
                except MailboxNotFound:
                    if not store.create:
                        raise
                    tree.create(store.folder)
                    tree.subscribe(store.folder)
                    return tree.open(store.folder)
            except (MailboxNotFound, NotSelectable, InvalidName, MailboxExists, OverQuota) as error:
                logs.log.warn("sieve: fileinto {folder!r} for {user}: {error}; delivered to {target} instead",
                              folder=store.folder, user=target.user, error=str(error), target=target.folder)
        return self.context.realm.delivery_target(target.user, target.folder, target.poster)


def _flags_of(store: Store) -> tuple:
    """The append's (flags, keywords) for a store's IMAP flags; () for none."""
    if not store.flags:
        return ()
    return split_flags(flag for flag in map(system_flag_or_keyword, store.flags) if flag)


def _refusal(failure: Failure, target: LocalTarget, metrics) -> Reply | None:
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
        metrics.internal_error("delivery")
        return codes.TEMP_FAIL.with_text(f"Local delivery failed: {type(error).__name__}")
    return None


def sieve_filter(context) -> SieveFilter | None:
    """The server's Sieve filter (made once, kept in ``context.extras``), or None when Sieve is off."""
    if "sieve.filter" not in context.extras:
        settings = context.config["sieve"]
        if not settings["enabled"]:
            context.extras["sieve.filter"] = None
        else:
            from cyrusmail.sieve.interpreter import Limits
            from cyrusmail.sieve.scripts import scripts_of

            limits = Limits(max_actions=settings["max_actions"], max_redirects=settings["max_redirects"])
            context.extras["sieve.filter"] = SieveFilter(context, scripts_of(context), limits, context.reactor)
    return context.extras["sieve.filter"]
