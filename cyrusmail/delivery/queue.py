"""The outbound queue: a persistent spool, delivery attempts with backoff, bounces.

Spool (``<data>/queue/``).  Each queued message is two files named by its
id: ``ID.msg``, the message (hard-linked from the staged message when it
can be, else copied and fsynced), and ``ID.json``, the envelope with each
recipient's state (``pending``, ``delivered``, ``failed``), the next attempt
time and the last error.  The JSON is always replaced whole (temp file,
fsync, rename, fsync of the folder), and it is written *after* the message
file, so an ``ID.json`` always has its ``ID.msg``; a ``.msg`` without
``.json`` was never acknowledged and is removed when the spool is scanned.
:meth:`Queue.enqueue` returns only once both are durable, before the 250.
That is the embedded store's spool (:class:`cyrusmail.delivery.spool.FileSpool`);
on the PostgreSQL store the queue is the database's ``queue`` table, shared
by every server, each attempt claiming its message first
(:mod:`cyrusmail.store.postgresql.queue`).

Attempts.  An attempt takes the pending recipients of one message and makes
one connection per destination carrying all of its recipients (domains
compared without case), up to :data:`PARALLEL_DESTINATIONS` at once: the
smarthost when ``[queue] smarthost`` is set, else each domain's MX hosts in
preference order (:func:`resolve_mx`: NXDOMAIN, no MX and no address, and a
null MX, RFC 7505, fail at once; other DNS trouble is temporary).
Recipients in local domains (a local mailbox that was full) are delivered
into the store.  A 4xx, a failed connection (refused, timed out, every MX
tried) or DNS trouble leaves the recipient pending: the next attempt comes
``retry_initial`` seconds later, doubling up to ``retry_max``, until
``give_up`` seconds after the message was queued, when every recipient
still pending fails (4.4.7, with its last error).  A 5xx fails the
recipient at once; once none is pending the files are removed.

Crash safety.  Each recipient's result is written durably (whole envelope:
temp file, fsync, rename, fsync of the folder) as soon as every recipient
of a connection has its reply, before QUIT is even sent, so a delivered
recipient is not sent again after a crash or restart.  One window cannot
be closed: a crash between the server's 250 to the end of data and that
write (or a connection lost while waiting for the 250) sends the message
again at the next attempt.  RFC 5321 section 6.1 prefers that duplicate to
a loss.  Likewise a DSN is made durable before the envelope records it as
sent: a crash in between sends it twice, never not at all.

TLS.  To MX hosts: STARTTLS when offered, unauthenticated (opportunistic,
RFC 7435; a plaintext reply injected after the 220 aborts the connection).
To the smarthost, ``smarthost_tls``: ``tls`` (implicit TLS) and
``starttls`` (required) verify the certificate against the system's trust
roots and the smarthost's name (``client_tls``, by default Twisted's
``optionsForClientTLS``); ``none`` uses no TLS at all, and sends
``smarthost_user``'s password in the clear (a warning is logged).

Reports (RFC 3461 DSN, in the RFC 3464 format of :mod:`cyrusmail.delivery.dsn`).
After each attempt the sender gets one DSN for the recipients that owe one
now, each recipient reported once (a flag in the envelope): "failed" for a
failed recipient (NOTIFY absent or with FAILURE); "delivered" for one put in
a local mailbox, "relayed" for one handed to a next hop that does not
advertise DSN (NOTIFY=SUCCESS; a next hop that does advertise it is given
NOTIFY, ORCPT, RET and ENVID and reports itself); one "delayed" for a
recipient still pending :data:`DELAY_NOTICE_AFTER` (4 hours) after arrival
(NOTIFY=DELAY).  NOTIFY=NEVER gets nothing.  Failure reports carry the whole
message on RET=FULL, else its header.  A DSN goes out with the null sender
and is never itself reported on.

The :class:`QueueRunner` service starts attempts: at once for new mail, at
the earliest retry time, and every ``poll_interval`` seconds it looks for
the admin's ``flush`` file (``cyrusmail-admin queue flush``) and for entries
the admin deleted (on the shared spool: for due rows, should a NOTIFY of
new mail have been missed).
"""

from __future__ import annotations

import inspect
import secrets
from collections.abc import Collection
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.ssl import CertificateOptions, optionsForClientTLS

from cyrusmail import logs
from cyrusmail.delivery import dsn
from cyrusmail.delivery.local import LocalDelivery
from cyrusmail.delivery.spool import FLUSH_FILE, FileSpool, open_spool
from cyrusmail.sieve import delivery as sieve_delivery
from cyrusmail.smtp import client as smtp_client
from cyrusmail.smtp import wire
from cyrusmail.smtp.client import ClientReply, ConnectionFailed, Envelope
from cyrusmail.smtp.codes import Reply

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
__all__ = ["FLUSH_FILE"]  # the admin's flush request (cyrusmail.delivery.spool)
# NOTIFY=DELAY (RFC 3461): a recipient that asked for it gets one "delayed"
# DSN once its message has waited this long and is still being retried.
DELAY_NOTICE_AFTER = 4 * 3600
POLL_INTERVAL = 5.0
#: Seconds a spool file without its envelope must be untouched before a scan while running removes it.
ORPHAN_AGE = 3600.0
MAX_CONCURRENT = 10  # messages in attempts at once
PARALLEL_DESTINATIONS = 5  # connections at once for one message's domains
SMTP_PORT = 25


# -- the spool's records ----------------------------------------------------------------


@dataclass
class QueuedRecipient:
    address: str
    state: str = PENDING
    status: str = ""  # RFC 3463 code of the latest result
    diagnostic: str = ""  # the latest reply or error, for the DSN and the admin
    remote_mta: str = ""
    notify: list[str] | None = None  # RFC 3461 NOTIFY values
    orcpt: str | None = None  # "rfc822;addr"
    # How a delivery is reported on NOTIFY=SUCCESS: "delivered" (local),
    # "relayed" (a next hop without DSN), "" (a next hop with DSN reports).
    success_action: str = ""
    last_attempt: float = 0.0
    reported: bool = False  # the final state has been reported (or needed no report)
    delay_reported: bool = False  # the one NOTIFY=DELAY report has been sent

    def wants(self, kind: str) -> bool:
        """Whether NOTIFY asks for ``kind`` (SUCCESS, FAILURE, DELAY); default: FAILURE only."""
        if self.notify is None:
            return kind == "FAILURE"
        return kind in self.notify

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2].lower()


@dataclass
class QueueEntry:
    id: str
    sender: str | None  # None: the null reverse path <>
    arrival: float
    recipients: list[QueuedRecipient]
    next_attempt: float
    attempts: int = 0
    last_error: str = ""
    size: int = 0
    body: str | None = None
    smtputf8: bool = False
    ret: str | None = None
    envid: str | None = None
    is_bounce: bool = False  # a DSN: never bounced
    dsn_sent: bool = False  # from spools before per-recipient reports: its failures were reported

    def pending(self) -> list[QueuedRecipient]:
        return [r for r in self.recipients if r.state == PENDING]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict) -> QueueEntry:
        """The entry saved as ``value``; fields this version does not know are ignored."""
        known = {f.name for f in fields(cls)}
        known_rcpt = {f.name for f in fields(QueuedRecipient)}
        value = {k: v for k, v in value.items() if k in known}
        value["recipients"] = [QueuedRecipient(**{k: v for k, v in r.items() if k in known_rcpt})
                               for r in value["recipients"]]
        return cls(**value)


def _rcpt_fields(rcpt: wire.Rcpt | str) -> QueuedRecipient:
    if isinstance(rcpt, str):
        return QueuedRecipient(rcpt)
    notify = sorted(n.value for n in rcpt.notify) if rcpt.notify else None
    orcpt = f"{rcpt.orcpt.addr_type};{rcpt.orcpt.address}" if rcpt.orcpt else None
    return QueuedRecipient(rcpt.forward_path.address, notify=notify, orcpt=orcpt)


# -- the queue ----------------------------------------------------------------------------


class Queue:
    """The spool, and delivery attempts over it.

    ``resolver(domain)`` (a coroutine function or one returning a Deferred)
    gives the hosts to try for a domain, raising :class:`DestinationError`;
    the default asks DNS for MX records.  ``client_tls(host)`` gives the TLS
    client options for a smarthost; the default verifies its certificate.
    """

    def __init__(self, context, *, clock=None, spool: Path | None = None, local: LocalDelivery | None = None,
                 resolver=None, client_tls=None, timeouts: smtp_client.Timeouts | None = None) -> None:
        self.context = context
        self.config = context.config
        settings = context.config["queue"]
        self.smarthost: tuple[str, int] | None = settings["smarthost"]
        self.smarthost_tls: str = settings["smarthost_tls"]
        self.smarthost_user: str = settings["smarthost_user"]
        self.smarthost_password: str = settings["smarthost_password"]
        self.retry_initial: int = settings["retry_initial"]
        self.retry_max: int = settings["retry_max"]
        self.give_up: int = settings["give_up"]
        self.delay_notice_after: float = DELAY_NOTICE_AFTER
        if self.smarthost is not None and self.smarthost_user and self.smarthost_tls == "none":
            logs.log.warn("queue: smarthost_tls is none: the smarthost password is sent in the clear")
        if clock is None:
            clock = context.reactor
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self.reactor = context.reactor or clock
        #: where the entries are kept: files in the data folder, or the shared PostgreSQL tables
        self.storage = FileSpool(spool) if spool is not None else open_spool(context.config, lambda: context.store)
        #: the file spool's folder (None on the shared spool)
        self.spool: Path | None = getattr(self.storage, "folder", None)
        self.local = local or LocalDelivery(context)
        self.resolver = resolver or resolve_mx
        self.client_tls = client_tls or (lambda host: optionsForClientTLS(host))
        self.timeouts = timeouts or smtp_client.Timeouts()
        self.entries: dict[str, QueueEntry] = {}
        self.on_change = lambda: None  # the runner's wake-up
        #: False in a worker process whose queue runs in another: it only writes the spool; and on the
        #: shared spool, where ``entries`` holds only this queue's attempts under way (the rows are the queue)
        self.keeps_entries = not self.storage.shared

    # -- the spool ---------------------------------------------------------------

    def message_path(self, entry: QueueEntry) -> Path:
        return self.storage.message_file(entry)

    def load(self, orphan_age: float = 0.0) -> list[QueueEntry]:
        """Read every queued entry (the file spool: scan, removing what was never acknowledged).

        A message file without its envelope, or a half-written file, is
        removed only once untouched for ``orphan_age`` seconds: another
        worker process (or a thread) may be writing it right now.
        """
        self.storage.load(self.entries, orphan_age)
        return list(self.entries.values())

    def _new_id(self) -> str:
        return f"{int(self.clock.seconds() * 1000):012X}{secrets.token_hex(5).upper()}"

    def enqueue(self, mail: wire.Mail | None, recipients: list, message, *, sender: str | None = None,
                is_bounce: bool = False, body: str | None = None, smtputf8: bool = False) -> QueueEntry:
        """Put ``message`` (a finished staged message, or bytes) in the spool, durably.

        ``mail`` gives the sender and its parameters; without it, ``sender``
        (None for ``<>``), ``body`` and ``smtputf8``.  ``recipients`` are
        wire.Rcpt or addresses.
        """
        return self._admit(self._spool(mail, recipients, message, sender=sender, is_bounce=is_bounce,
                                       body=body, smtputf8=smtputf8))

    def enqueue_async(self, mail: wire.Mail, recipients: list, message) -> defer.Deferred:
        """:meth:`enqueue` with the spool written (fsynced, committed) off the reactor; a Deferred of the entry."""
        spooled = self.context.store.executor.prepare(self._spool, mail, recipients, message)
        return spooled.addCallback(self._admit)

    def _spool(self, mail: wire.Mail | None, recipients: list, message, *, sender: str | None = None,
               is_bounce: bool = False, body: str | None = None, smtputf8: bool = False) -> QueueEntry:
        """Write the entry and its message durably (any thread)."""
        size = len(message) if isinstance(message, (bytes, bytearray)) else message.size
        now = self.clock.seconds()
        if mail is not None:
            sender = None if mail.reverse_path is None else mail.reverse_path.address
        entry = QueueEntry(
            id=self._new_id(), sender=sender, arrival=now, recipients=[_rcpt_fields(r) for r in recipients],
            next_attempt=now, size=size, is_bounce=is_bounce or sender is None,
            body=(mail.body.value if mail.body else None) if mail is not None else body,
            smtputf8=bool(mail.smtputf8) if mail is not None else smtputf8, ret=mail.ret.value if mail and mail.ret else None,
            envid=mail.envid if mail else None,
        )
        self.storage.write(entry, message)
        return entry

    def _admit(self, entry: QueueEntry) -> QueueEntry:
        """A spooled entry joins the queue (on the reactor thread); a worker
        that runs no queue only spools it and tells the runner."""
        if self.keeps_entries:
            self.entries[entry.id] = entry
        logs.log.info("queue: {id} queued from <{sender}> for {n} recipients",
                      id=entry.id, sender=entry.sender or "", n=len(entry.recipients))
        self.on_change()
        return entry

    def save(self, entry: QueueEntry) -> bool:
        """Record ``entry`` durably; False if the admin deleted it meanwhile (or, on a
        shared spool, another server's runner took it over)."""
        if not self.storage.save(entry):
            self._forget(entry)
            return False
        return True

    def _forget(self, entry: QueueEntry) -> None:
        self.entries.pop(entry.id, None)
        self.storage.remove(entry.id)

    def delete(self, entry_id: str) -> bool:
        """Remove a queued message without delivering it (the admin's ``queue delete``)."""
        known = self.entries.pop(entry_id, None) is not None
        return self.storage.delete(entry_id) or known

    def flush(self) -> None:
        """Make every queued message due now."""
        self.storage.flush(self.entries, self.clock.seconds())
        self.on_change()

    def due(self) -> list[QueueEntry]:
        now = self.clock.seconds()
        return sorted((e for e in self.entries.values() if e.next_attempt <= now), key=lambda e: e.next_attempt)

    def next_due(self, busy: Collection[str] = ()) -> float | None:
        """When the next attempt of an entry not in ``busy`` falls due (None: nothing queued)."""
        return self.storage.next_due(self.entries, busy)

    def claim_due(self, limit: int, busy: Collection[str] = ()) -> list[QueueEntry]:
        """Up to ``limit`` due entries not in ``busy``, each now this queue's to attempt
        (on a shared spool, claimed in the database: no other server attempts them)."""
        claimed = self.storage.claim_due(self.entries, self.clock.seconds(), limit, busy)
        for entry in claimed:
            self.entries[entry.id] = entry
        return claimed

    def listing(self) -> list[QueueEntry]:
        """Every queued message (on a shared spool, every server's), oldest first."""
        return self.storage.listing(self.entries)

    # -- delivery status notifications (RFC 3461, RFC 3464) -------------------------

    def report_now(self, mail: wire.Mail, results: list[tuple[wire.Rcpt, Reply]], staged) -> None:
        """Report the final results of recipients delivered locally during submission.

        A recipient delivered (positive reply) gets a "delivered" DSN if its
        NOTIFY asked for SUCCESS; one that failed for good (5xx) a "failed"
        DSN unless its NOTIFY left FAILURE out.  Transient failures are the
        queue's business, not reported here.
        """
        if mail.reverse_path is None:
            return
        now = self.clock.seconds()
        recipients = []
        for rcpt, reply in results:
            queued = _rcpt_fields(rcpt)
            diagnostic = f"{reply.code} {reply.enhanced or ''} {reply.text}".replace("  ", " ")
            if reply.is_positive and queued.wants("SUCCESS"):
                recipients.append(dsn.ReportRecipient(
                    queued.address, reply.enhanced or "2.0.0", diagnostic, original=queued.orcpt,
                    action=dsn.DELIVERED, last_attempt=now))
            elif reply.is_permanent and queued.wants("FAILURE"):
                recipients.append(dsn.ReportRecipient(
                    queued.address, reply.enhanced or "5.0.0", diagnostic, original=queued.orcpt,
                    action=dsn.FAILED, last_attempt=now))
        if recipients:
            self._send_dsn(mail.reverse_path.address, now, mail.envid, recipients, Path(staged.path),
                           ret=mail.ret.value if mail.ret else None, size=staged.size,
                           body=mail.body.value if mail.body else None, smtputf8=mail.smtputf8)

    def bounce_now(self, mail: wire.Mail, failures: list[tuple[wire.Rcpt, Reply]], staged) -> None:
        """Send the sender a DSN for recipients that failed for good during submission."""
        self.report_now(mail, [(rcpt, reply) for rcpt, reply in failures if reply.is_permanent], staged)

    def _send_dsn(self, sender: str, arrival: float, envid: str | None,
                  recipients: list[dsn.ReportRecipient], message: Path, *, ret: str | None = None,
                  size: int = 0, body: str | None = None, smtputf8: bool = False) -> None:
        """Make the DSN (streaming the original from ``message``) and send it with ``<>``.

        A local sender gets it in the store at once (queued if that fails
        for now); a remote one through the queue, as a message that is
        never reported on itself.
        """
        full = dsn.returns_full(recipients, ret, size) and body != "BINARYMIME"
        path = _path_or_none(sender)
        local = path is not None and self.local.is_local(path)
        staged = self.context.store.stage()
        try:
            if local:
                staged.write(b"Return-Path: <>\r\n")  # final delivery here (RFC 5321 section 4.4)
            dsn.write_dsn(staged, message, full=full, reporting_mta=self.config.hostname, sender=sender,
                          arrival=arrival, now=self.clock.seconds(), recipients=recipients, envid=envid)
            staged.finish()
            if local:
                target = self.local.resolve(path)
                if target is None:
                    logs.log.warn("queue: DSN for unknown local sender <{sender}> dropped", sender=sender)
                    return
                reply = self.local.deliver(staged, target)
                if reply.is_positive:
                    logs.log.info("queue: DSN ({actions}) delivered to <{sender}>", sender=sender,
                                  actions=",".join(sorted({r.action for r in recipients})))
                    return
            eight_bit = "8BITMIME" if body in ("8BITMIME", "BINARYMIME") or smtputf8 else None
            self.enqueue(None, [sender], staged, sender=None, is_bounce=True, body=eight_bit,
                         smtputf8=smtputf8)
        finally:
            staged.discard()

    def _report(self, entry: QueueEntry) -> None:
        """Send the DSNs this entry's recipients are owed now; recorded once sent.

        Failed recipients get "failed" (NOTIFY default or FAILURE); delivered
        ones "delivered" or "relayed" (NOTIFY=SUCCESS; nothing when the next
        hop took the NOTIFY over); pending ones, once the message is older
        than ``delay_notice_after``, one "delayed" (NOTIFY=DELAY).  A DSN is
        never reported on.  It is sent before the entry records it: a crash
        in between sends it twice rather than never.
        """
        now = self.clock.seconds()
        done, delayed, report = [], [], []
        silent = entry.is_bounce or entry.sender is None
        for r in entry.recipients:
            if r.state in (DELIVERED, FAILED) and not r.reported:
                done.append(r)
                if silent or (r.state == FAILED and entry.dsn_sent):
                    continue
                if r.state == FAILED and r.wants("FAILURE"):
                    report.append(dsn.ReportRecipient(
                        r.address, r.status or "5.0.0", r.diagnostic, r.remote_mta, r.orcpt, dsn.FAILED,
                        r.last_attempt or None))
                elif r.state == DELIVERED and r.success_action and r.wants("SUCCESS"):
                    report.append(dsn.ReportRecipient(
                        r.address, r.status if r.status.startswith("2") else "2.0.0", r.diagnostic,
                        r.remote_mta, r.orcpt, r.success_action, r.last_attempt or None))
            elif (r.state == PENDING and not r.delay_reported
                  and now - entry.arrival >= self.delay_notice_after and r.wants("DELAY") and not silent):
                delayed.append(r)
                report.append(dsn.ReportRecipient(
                    r.address, r.status if r.status.startswith("4") else "4.0.0", r.diagnostic, r.remote_mta,
                    r.orcpt, dsn.DELAYED, r.last_attempt or None, entry.arrival + self.give_up))
        if report:
            self._send_dsn(entry.sender, entry.arrival, entry.envid, report, self.message_path(entry),
                           ret=entry.ret, size=entry.size, body=entry.body, smtputf8=entry.smtputf8)
        for r in done:
            r.reported = True
        for r in delayed:
            r.delay_reported = True
        if done or delayed:
            self.save(entry)

    # -- delivery attempts -----------------------------------------------------------

    def attempt(self, entry: QueueEntry) -> defer.Deferred:
        """One delivery attempt for ``entry``'s pending recipients."""
        return defer.Deferred.fromCoroutine(self._attempt(entry))

    async def _attempt(self, entry: QueueEntry) -> None:
        if not self.storage.claim(entry, self.clock.seconds()):
            return  # another server's runner has it (or it is gone)
        if self.storage.shared:
            self.entries[entry.id] = entry
        renewal = None
        if self.storage.lease:
            # Hold the claim for as long as the attempt lasts (several hosts, long timeouts).
            renewal = task.LoopingCall(lambda: self.storage.renew(entry.id, self.clock.seconds()))
            renewal.clock = self.clock
            renewal.start(self.storage.lease / 3, now=False).addErrback(
                lambda failure: logs.log.failure("queue: renewing the claim on {id} failed", failure, id=entry.id))
        try:
            await self._attempt_claimed(entry)
        finally:
            if renewal is not None and renewal.running:
                renewal.stop()
            self.storage.release(entry)
            if self.storage.shared:
                self.entries.pop(entry.id, None)

    async def _attempt_claimed(self, entry: QueueEntry) -> None:
        message = self.message_path(entry)
        errors = []
        try:
            groups = self._destinations(entry)
            local = groups.pop(None, None)
            if local:
                self._deliver_local(entry, local, message)
                if not self.save(entry):
                    return
            # Each remote destination (a domain, or the smarthost) on its own
            # connection, up to PARALLEL_DESTINATIONS at once: a dead domain
            # does not hold the others back.  Each records its own results.
            limit = defer.DeferredSemaphore(PARALLEL_DESTINATIONS)
            results = await defer.gatherResults([
                limit.run(lambda d=destination, r=recipients: defer.Deferred.fromCoroutine(
                    self._deliver_remote_safely(entry, d, r, message)))
                for destination, recipients in groups.items()])
            errors += [error for error in results if error]
            if entry.id not in self.entries or not self.save(entry):
                return
        except Exception as error:  # noqa: BLE001 -- a bug or a full disk: retry later, never spin
            logs.log.failure("queue: attempt for {id} failed", id=entry.id)
            errors.append(f"internal error: {type(error).__name__}")
        if entry.id in self.entries:
            self._after_attempt(entry, "; ".join(errors))

    async def _deliver_remote_safely(self, entry: QueueEntry, destination: tuple,
                                     recipients: list[QueuedRecipient], message: Path) -> str:
        if entry.id not in self.entries:
            return ""  # deleted meanwhile
        try:
            return await self._deliver_remote(entry, destination, recipients, message)
        except Exception as error:  # noqa: BLE001 -- one destination's bug leaves the others be
            logs.log.failure("queue: delivery of {id} to {destination} failed", id=entry.id,
                             destination=destination[-1])
            return f"internal error: {type(error).__name__}"

    def _destinations(self, entry: QueueEntry) -> dict:
        groups: dict = {}
        for recipient in entry.pending():
            path = _path_or_none(recipient.address)
            if path is not None and self.local.is_local(path):
                key = None
            elif self.smarthost is not None:
                key = ("smarthost",)
            else:
                key = ("domain", recipient.domain)
            groups.setdefault(key, []).append(recipient)
        return groups

    def _deliver_local(self, entry: QueueEntry, recipients: list[QueuedRecipient], message: Path) -> None:
        staged = self.context.store.stage()
        try:
            with open(message, "rb") as source:
                while piece := source.read(1 << 20):
                    staged.write(piece)
            staged.finish()
            for recipient in recipients:
                path = _path_or_none(recipient.address)
                target = self.local.resolve(path) if path is not None else None
                if target is None:
                    self._record(recipient, ClientReply(550, ("5.1.1 No such user",)), "")
                    continue
                reply = self.local.deliver(staged, target, sieve_delivery.Envelope(entry.sender, recipient.address))
                self._record(recipient, ClientReply(reply.code, (f"{reply.enhanced} {reply.text}",)), "",
                             success_action=dsn.DELIVERED)
        finally:
            staged.discard()

    def _record(self, recipient: QueuedRecipient, reply: ClientReply, host: str, *,
                success_action: str = "") -> None:
        recipient.status = reply.status()
        recipient.diagnostic = str(reply)
        recipient.remote_mta = host
        recipient.last_attempt = self.clock.seconds()
        if reply.is_positive:
            recipient.state = DELIVERED
            recipient.success_action = success_action
        elif reply.is_permanent:
            recipient.state = FAILED

    async def _hosts(self, destination: tuple) -> list[tuple[str, int]]:
        if destination[0] == "smarthost":
            return [self.smarthost]
        hosts = self.resolver(destination[1])
        if inspect.isawaitable(hosts):
            hosts = await hosts
        return [(host, SMTP_PORT) if isinstance(host, str) else tuple(host) for host in hosts]

    async def _deliver_remote(self, entry: QueueEntry, destination: tuple,
                              recipients: list[QueuedRecipient], message: Path) -> str:
        """Try the destination's hosts in turn; the error text if none answered."""
        try:
            hosts = await self._hosts(destination)
        except DestinationError as error:
            for recipient in recipients:
                recipient.status, recipient.diagnostic = error.status, str(error)
                recipient.last_attempt = self.clock.seconds()
                if error.permanent:
                    recipient.state = FAILED
            return str(error)
        smarthost = destination[0] == "smarthost"
        envelope = Envelope(
            sender=entry.sender, recipients=tuple(r.address for r in recipients), body=entry.body,
            smtputf8=entry.smtputf8, size=entry.size, ret=entry.ret, envid=entry.envid,
            notify={r.address: ",".join(r.notify) for r in recipients if r.notify},
            orcpt={r.address: r.orcpt for r in recipients if r.orcpt},
        )
        problems = []
        for host, port in hosts:
            implicit = smarthost and self.smarthost_tls == "tls"
            if smarthost:
                tls_creator = self.client_tls(host) if self.smarthost_tls != "none" else None
                starttls = "required" if self.smarthost_tls == "starttls" else "never"
            else:
                tls_creator = CertificateOptions()  # opportunistic, unauthenticated (RFC 7435)
                starttls = "opportunistic"

            def connect(host=host, port=port, implicit=implicit, tls_creator=tls_creator):
                return smtp_client.connect_tcp(self.reactor, host, port, self.clock, self.timeouts.connect,
                                               tls_creator if implicit else None)

            recorded = []

            def record(result: smtp_client.DeliveryResult, host=host, recorded=recorded) -> None:
                """Record and save every recipient's reply: called before QUIT is even sent."""
                if recorded:
                    return
                recorded.append(True)
                # A next hop that speaks DSN was given the NOTIFY and reports
                # itself; one that does not leaves us a "relayed" to report.
                relayed = "" if result.dsn else dsn.RELAYED
                for recipient in recipients:
                    reply = result.replies.get(recipient.address)
                    if reply is not None:
                        self._record(recipient, reply, host, success_action=relayed)
                self.save(entry)

            try:
                result = await smtp_client.send_message(
                    connect, host=host, helo=self.config.hostname, envelope=envelope, message=message,
                    starttls=starttls, tls_creator=tls_creator,
                    username=self.smarthost_user if smarthost else "",
                    password=self.smarthost_password if smarthost else "", timeouts=self.timeouts,
                    on_result=record)
            except ConnectionFailed as error:
                problems.append(str(error))
                continue
            record(result)
            logs.log.info("queue: {id} to {host}: {summary}", id=entry.id, host=host,
                          summary=", ".join(f"<{r.address}> {r.diagnostic}" for r in recipients))
            transient = [r for r in recipients if r.state == PENDING]
            return f"{host}: {transient[0].diagnostic}" if transient else ""
        for recipient in recipients:
            recipient.status, recipient.diagnostic = "4.4.1", "; ".join(problems)[:500]
            recipient.last_attempt = self.clock.seconds()
        return "; ".join(problems)[:500]

    def _after_attempt(self, entry: QueueEntry, error: str) -> None:
        now = self.clock.seconds()
        entry.attempts += 1
        entry.last_error = error
        pending = entry.pending()
        if pending and now - entry.arrival >= self.give_up:
            for recipient in pending:
                recipient.state = FAILED
                recipient.status = "4.4.7"  # RFC 3463: delivery time expired
            logs.log.warn("queue: {id}: gave up after {n} attempts", id=entry.id, n=entry.attempts)
            pending = []
        if pending:
            delay = min(self.retry_initial * 2 ** (entry.attempts - 1), self.retry_max)
            entry.next_attempt = min(now + delay, max(now, entry.arrival + self.give_up))
        else:
            entry.next_attempt = now + self.retry_initial  # if finishing fails (a full disk): not at once
        # next_attempt is set in memory before anything that can fail, so a
        # failing save or report is retried later, never in a tight loop.
        if not self.save(entry):
            return
        self._report(entry)
        if pending:
            logs.log.info("queue: {id}: {n} recipients deferred until the next attempt in {delay:.0f} s",
                          id=entry.id, n=len(pending), delay=entry.next_attempt - now)
            return
        self._finish(entry)

    def _finish(self, entry: QueueEntry) -> None:
        failed = [r for r in entry.recipients if r.state == FAILED]
        if failed and entry.is_bounce:
            logs.log.warn("queue: {id}: a DSN could not be delivered; not reported", id=entry.id)
        logs.log.info("queue: {id} done: {d} delivered, {f} failed", id=entry.id,
                      d=sum(r.state == DELIVERED for r in entry.recipients), f=len(failed))
        self._forget(entry)


def _path_or_none(address: str) -> wire.Path | None:
    try:
        return wire.parse_path(f"<{address}>")
    except ValueError:
        return None


# -- finding the hosts of a domain ---------------------------------------------------------------


class DestinationError(Exception):
    """The domain's hosts cannot be found: for now (DNS trouble) or for good."""

    def __init__(self, message: str, *, permanent: bool, status: str) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.status = status


async def resolve_mx(domain: str, lookup=None) -> list[str]:
    """The hosts to try for ``domain``, best first (RFC 5321 section 5.1).

    ``lookup`` answers DNS queries like :mod:`twisted.names.client` (the
    default).  A domain that does not exist (NXDOMAIN) fails for good
    (5.1.2); so does one without MX records and without address records of
    its own, and one with a null MX (RFC 7505, 5.1.10).  Any other DNS
    trouble (timeout, SERVFAIL, refusal) is temporary (4.4.3): the message
    waits for the next attempt, and fails only when the queue gives up.
    Hosts of equal preference are tried in random order (section 5.1).
    """
    if domain.startswith("[") and domain.endswith("]"):
        literal = domain[1:-1]
        return [literal[5:] if literal.upper().startswith("IPV6:") else literal]
    from twisted.names import dns
    from twisted.names import error as dns_error

    if lookup is None:
        from twisted.names import client as lookup

    def trouble(error: Exception) -> DestinationError:
        return DestinationError(f"DNS lookup of {domain} failed: {type(error).__name__}",
                                permanent=False, status="4.4.3")

    try:
        answers, _authority, _additional = await lookup.lookupMailExchange(domain)
    except dns_error.DNSNameError:
        raise DestinationError(f"domain {domain} does not exist", permanent=True, status="5.1.2") from None
    except Exception as error:  # noqa: BLE001 -- timeouts, SERVFAIL, refused: try later
        raise trouble(error) from None
    records = [(a.payload.preference, str(a.payload.name).rstrip(".")) for a in answers if a.type == dns.MX]
    if not records:
        # The implicit MX: the domain's own address records, if it has any.
        for query, kind in ((lookup.lookupAddress, dns.A), (lookup.lookupIPV6Address, dns.AAAA)):
            try:
                found, _authority, _additional = await query(domain)
            except dns_error.DNSNameError:
                found = []
            except Exception as error:  # noqa: BLE001 -- as above
                raise trouble(error) from None
            if any(a.type == kind for a in found):
                return [domain]
        raise DestinationError(f"domain {domain} has no MX and no address records", permanent=True,
                               status="5.1.2")
    hosts = [(preference, name) for preference, name in records if name]
    if not hosts:  # only the null MX "0 ." (RFC 7505); next to real MX records it is ignored
        raise DestinationError(f"domain {domain} accepts no mail (null MX)", permanent=True, status="5.1.10")
    rng = secrets.SystemRandom()
    return [name for _, _, name in sorted((preference, rng.random(), name) for preference, name in hosts)]


# -- the runner service ------------------------------------------------------------------------


class QueueRunner(service.Service):
    """Starts delivery attempts when mail arrives, when retries fall due, and on flush."""

    name = "queue runner"

    def __init__(self, queue: Queue, *, poll_interval: float = POLL_INTERVAL,
                 max_concurrent: int = MAX_CONCURRENT, shared_spool: bool = False) -> None:
        self.queue = queue
        self.clock = queue.clock
        self.poll_interval = poll_interval
        self.max_concurrent = max_concurrent
        # Other worker processes write the spool too: what looks half-written may be in progress.
        self.orphan_age = ORPHAN_AGE if shared_spool else 0.0
        self.in_flight: dict[str, defer.Deferred] = {}
        self._timer = None
        self._poller: task.LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        if not self.queue.storage.shared:
            self.queue.load(self.orphan_age)
        self.queue.on_change = self.wake
        self.queue.storage.watch(self.wake)  # the shared spool: other servers' new mail (NOTIFY)
        self._poller = task.LoopingCall(self.poll)
        self._poller.clock = self.clock
        self._poller.start(self.poll_interval, now=False)
        logs.log.info("queue: {n} messages in the spool", n=len(self.queue.listing()))
        self.wake()

    def stopService(self):
        super().stopService()
        self.queue.on_change = lambda: None
        self.queue.storage.unwatch(self.wake)
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        # Attempts under way are not waited for: every recipient's result is
        # recorded as its destination answers, and what was not answered is
        # simply tried again after the restart.

    def poll(self) -> None:
        """Pick up the admin's flush and deletions, and what other worker processes queued
        (the shared spool: look for due entries, should a NOTIFY have been missed)."""
        if not self.queue.storage.shared:
            self.queue.load(ORPHAN_AGE)
            if self.queue.storage.take_flush():
                logs.log.info("queue: flush requested")
                self.queue.flush()
        self.wake()

    def wake(self) -> None:
        """Run what is due, soon (not inside the caller)."""
        if not self.running:
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self.clock.callLater(0, self._run)

    def _run(self) -> None:
        self._timer = None
        room = self.max_concurrent - len(self.in_flight)
        try:
            claimed = self.queue.claim_due(room, set(self.in_flight)) if room > 0 else []
        except Exception:  # noqa: BLE001 -- the database away: the poll tries again
            logs.log.failure("queue: looking for due messages failed")
            claimed = []
        for entry in claimed:
            attempt = self.queue.attempt(entry)
            self.in_flight[entry.id] = attempt
            attempt.addErrback(lambda failure, entry_id=entry.id: logs.log.failure(
                "queue: attempt for {id} failed", failure, id=entry_id))
            attempt.addBoth(self._attempt_done, entry.id)
        self._schedule()

    def _attempt_done(self, _: object, entry_id: str) -> None:
        self.in_flight.pop(entry_id, None)
        if self.running:
            self.wake()

    def _schedule(self) -> None:
        if not self.running or (self._timer is not None and self._timer.active()):
            return
        try:
            earliest = self.queue.next_due(set(self.in_flight))
        except Exception:  # noqa: BLE001 -- as in _run
            logs.log.failure("queue: looking for the next due message failed")
            return
        if earliest is None:
            return
        delay = max(0.0, earliest - self.clock.seconds())
        if delay == 0 and len(self.in_flight) >= self.max_concurrent:
            return  # an attempt finishing wakes us
        self._timer = self.clock.callLater(delay, self._run)


def queue_of(context) -> Queue:
    """The server's one queue; made on first use, its runner added to the services.

    With several worker processes one runs the queue (``extras["spool_shared"]``);
    in the others ``extras["queue_elsewhere"]`` tells it, through the
    supervisor, of each message queued, and the queue only writes the spool.
    On the PostgreSQL store's shared spool every process runs a runner: each
    attempt claims its entry, so no two attempt one message at once.
    """
    queue = context.extras.get("queue")
    if queue is None:
        queue = Queue(context)
        context.extras["queue"] = queue
        elsewhere = context.extras.get("queue_elsewhere")
        if elsewhere is None or queue.storage.shared:  # claims are exclusive: every process runs one
            runner = QueueRunner(queue, shared_spool=context.extras.get("spool_shared", False))
            context.extras["queue_runner"] = runner
            context.extras.setdefault("services", []).append(runner)
        else:
            queue.keeps_entries = False
            queue.on_change = elsewhere
    return queue
