"""Submission and LMTP: the two sets of callbacks on the one session engine, and their factories.

The registry names :func:`make_submission_factory` for ``submission``
(STARTTLS) and ``submissions`` (implicit TLS, wrapped by the service
builder), and :func:`make_lmtp_factory` for ``lmtp``.

Submission (RFC 6409): MAIL needs a login, and the sender must be one of the
account's addresses; so must every address of the header's From: and Sender:
(:mod:`cyrusmail.smtp.authorship`; ``[server] check_header_from``), else
nothing is delivered or queued.  Local recipients are delivered into the
store at once, remote ones go to the outbound queue
(:mod:`cyrusmail.delivery.queue`), durably, before the 250.  Messages get a
Received header, and a Message-ID, Date and From (the envelope sender) when
they have none (RFC 6409 section 8, RFC 5322 section 3.6).

LMTP (RFC 2033): for an MTA in front, no AUTH; every recipient must be a
local user; after the message, one reply per accepted recipient.  Messages
get Return-Path and Received (final delivery, RFC 5321 section 4.4).
"""

from __future__ import annotations

import email.utils
import ipaddress
import re
import secrets

from twisted.internet import defer
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import ServerFactory

from cyrusmail import logs
from cyrusmail.delivery.local import LocalDelivery, LocalTarget
from cyrusmail.protocols import REGISTRY, ServerContext
from cyrusmail.sieve.delivery import Envelope
from cyrusmail.smtp import codes, wire
from cyrusmail.smtp.authorship import check_authorship
from cyrusmail.smtp.codes import Reply
from cyrusmail.smtp.session import (
    IDLE_TIMEOUT,
    MAX_HEADER_SCAN,
    SMTPSession,
    Transaction,
)

_HAS_MESSAGE_ID = re.compile(rb"^message-id[ \t]*:", re.IGNORECASE | re.MULTILINE)
_HAS_DATE = re.compile(rb"^date[ \t]*:", re.IGNORECASE | re.MULTILINE)
_HAS_FROM = re.compile(rb"^from[ \t]*:", re.IGNORECASE | re.MULTILINE)


class RemoteTarget:
    """A submission recipient outside the local domains: it goes to the queue."""

    def __repr__(self) -> str:
        return "RemoteTarget()"


REMOTE = RemoteTarget()


def tls_description(transport) -> str | None:
    """``TLSv1.3 with cipher TLS_AES_256_GCM_SHA384`` for a TLS connection, else None."""
    for candidate in (transport, getattr(transport, "protocol", None)):
        get_handle = getattr(candidate, "getHandle", None)
        if get_handle is None:
            continue
        try:
            handle = get_handle()
        except (AttributeError, RuntimeError):  # not connected, or no handle
            continue
        if hasattr(handle, "get_cipher_name"):
            version = handle.get_protocol_version_name() or "TLS"
            cipher = handle.get_cipher_name()
            return f"{version} with cipher {cipher}" if cipher else version
    return None


def received_header(session: SMTPSession, transaction: Transaction, protocol: str) -> bytes:
    """A Received trace field (RFC 5321 section 4.4), with RFC 3848 ``with`` names.

    Nothing a client chose goes in unchecked: the greeting's name only if it
    is a domain or an IP literal (:func:`~cyrusmail.smtp.wire.hello_domain`,
    else ``unknown``), the peer only as a parsed IP address, comment text
    (the user name, a Kerberos principal, the TLS description) without parentheses, backslashes
    or control characters, and the ``for`` clause only for an address with
    nothing in it that could end the clause.
    """
    lines = [f"Received: from {wire.hello_domain(session.helo or '') or 'unknown'} ({_peer_literal(session.peer)})",
             f"\tby {session.hostname} (cyrusmail) with {protocol} id {transaction.id}"]
    if session.tls:
        description = tls_description(session.transport)
        lines.append(f"\t({_comment_text(description or 'TLS')})")
    if session.authenticated_user:
        principal = session.principal  # a GSSAPI login: the Kerberos principal that sent it
        by = f" by GSSAPI as {_comment_text(principal)}" if principal else ""
        lines.append(f"\t(authenticated user {_comment_text(session.authenticated_user)}{by})")
    when = email.utils.formatdate(session.clock.seconds(), localtime=True)
    recipient = transaction.recipients[0].address if len(transaction.recipients) == 1 else None
    if recipient is not None and _clause_safe(recipient, transaction.mail.smtputf8):
        lines.append(f"\tfor <{recipient}>; {when}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{when}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _peer_literal(peer: str) -> str:
    """``[192.0.2.1]``, ``[IPv6:2001:db8::1]``, ``local`` for a unix socket (LMTP from the MTA)."""
    if peer == "local":
        return "local"
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return "unknown"
    return f"[IPv6:{address.compressed}]" if address.version == 6 else f"[{address}]"


def _comment_text(text: str) -> str:
    """``text`` as it may stand in a header comment: printable ASCII, no ``(``, ``)`` or ``\\``."""
    return "".join(ch if " " <= ch <= "~" and ch not in "()\\" else "?" for ch in text[:200])


def _clause_safe(address: str, utf8: bool) -> bool:
    """Whether ``for <address>`` can be written as is (non-ASCII only in an SMTPUTF8 transaction)."""
    return len(address) <= 320 and all(
        ch.isprintable() and not ch.isspace() and ch not in '<>();\\"' and (utf8 or ch.isascii())
        for ch in address
    )


def with_name(base: str, session: SMTPSession) -> str:
    """ESMTP, ESMTPS, ESMTPA, ESMTPSA, LMTP, LMTPS... (RFC 3848)."""
    if base == "ESMTP" and not session.esmtp:
        base = "SMTP"
    return base + ("S" if session.tls else "") + ("A" if session.authenticated_user else "")


def ehlo_keywords(session: SMTPSession) -> list[str]:
    keywords = ["PIPELINING", f"SIZE {session.max_size}", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"]
    if session.callbacks.dsn:
        keywords.append("DSN")
    return keywords + ["CHUNKING"]


class SubmissionCallbacks:
    """Message submission (RFC 6409) for logged-in users."""

    lmtp = False
    dsn = True  # RFC 3461: the queue reports delivery to the sender

    def __init__(self, context: ServerContext, service: str, local: LocalDelivery) -> None:
        self.context = context
        self.service = service
        self.local = local

    @property
    def queue(self):
        from cyrusmail.delivery.queue import queue_of

        return queue_of(self.context)

    def ehlo_keywords(self, session: SMTPSession) -> list[str]:
        keywords = ehlo_keywords(session)
        if session.can_starttls():
            keywords.append("STARTTLS")
        mechanisms = session.auth_mechanisms()
        if mechanisms:
            keywords.append("AUTH " + " ".join(mechanisms))
        return keywords

    def check_mail(self, session: SMTPSession, mail: wire.Mail) -> Reply:
        if session.account is None:
            if not session.auth_mechanisms() and session.can_starttls():
                return codes.STARTTLS_REQUIRED
            return codes.AUTH_REQUIRED
        if mail.reverse_path is None:
            return codes.SENDER_NOT_OWNED.with_text("The null sender is not allowed in submission")
        if mail.reverse_path.address.lower() not in session.account.addresses:
            return codes.SENDER_NOT_OWNED
        return codes.SENDER_OK

    def check_rcpt(self, session: SMTPSession, rcpt: wire.Rcpt) -> tuple[Reply, object]:
        path = rcpt.forward_path
        if self.local.is_local(path):
            target = self.local.resolve(path, poster=session.account.user if session.account else None)
            if target is None:
                return codes.NO_SUCH_USER, None
            return codes.RECIPIENT_OK, target
        return codes.RECIPIENT_OK, REMOTE

    def trace_headers(self, session: SMTPSession, transaction: Transaction, header: bytes) -> bytes:
        added = received_header(session, transaction, with_name("ESMTP", session))
        if not _HAS_MESSAGE_ID.search(header):
            token = secrets.token_hex(8)
            added += f"Message-ID: <{int(session.clock.seconds())}.{token}@{session.hostname}>\r\n".encode()
        if not _HAS_DATE.search(header):
            added += f"Date: {email.utils.formatdate(session.clock.seconds(), localtime=True)}\r\n".encode()
        if not _HAS_FROM.search(header) and transaction.message.header_complete and transaction.sender:
            added += f"From: <{transaction.sender}>\r\n".encode()  # MAIL FROM: owned by the user
        return added

    def authorship_refusal(self, session: SMTPSession, transaction: Transaction) -> Reply | None:
        """Why the header's From:/Sender: may not be sent by this user, or None (see the module docstring)."""
        if not self.context.config["server"]["check_header_from"]:
            return None
        message = transaction.message
        if not message.header_complete:
            return codes.HEADER_FROM_UNREADABLE.with_text(
                f"Header block over {MAX_HEADER_SCAN} octets; cannot check its From: address")
        return check_authorship(message.header, session.account.addresses)

    def deliver(self, session: SMTPSession, transaction: Transaction, staged) -> list[Reply] | defer.Deferred:
        """Queue the remote recipients, then deliver the local ones; one reply.

        Remote recipients are made durable in the queue first, so that a
        failure there (answered 451) has delivered nothing.  A local
        recipient that fails temporarily is queued for a retry; one that
        fails for good gets a DSN.  If every recipient is local and all fail
        alike, the client gets that failure instead.  A message whose
        From: or Sender: the user does not own goes nowhere.  The message's
        fsync and the local appends run off the reactor.
        """
        refusal = self.authorship_refusal(session, transaction)
        if refusal is not None:
            logs.log.info("{service}: {id} by {user} refused: {reason}", service=self.service,
                          id=transaction.id, user=session.authenticated_user, reason=refusal.text)
            self.context.metrics.delivered(self.service, "refused", len(transaction.recipients))
            return [refusal]
        remote = [r for r in transaction.recipients if r.target is REMOTE]
        local = [r for r in transaction.recipients if isinstance(r.target, LocalTarget)]
        ready = self.context.store.executor.prepare(staged.finish)  # before the queue or a DSN uses it

        def local_now(_) -> defer.Deferred:
            deliveries = [self.local.deliver_async(staged, r.target, Envelope(transaction.sender, r.address))
                          for r in local]
            return defer.gatherResults(deliveries, consumeErrors=True)

        if remote:
            ready.addCallback(lambda _: self.queue.enqueue_async(transaction.mail, [r.rcpt for r in remote], staged))
        ready.addCallback(local_now)
        return ready.addCallback(lambda replies: self._delivered(session, transaction, staged, local, replies))

    def _delivered(self, session: SMTPSession, transaction: Transaction, staged, local: list,
                   replies: list[Reply]) -> list[Reply]:
        """The reply once the local recipients are answered: retries queued, reports sent."""
        queue = self.queue
        results = list(zip(local, replies))
        failed = [(r, reply) for r, reply in results if not reply.is_positive]
        metrics = self.context.metrics
        metrics.delivered(self.service, "delivered", len(results) - len(failed))
        metrics.delivered(self.service, "queued", sum(r.target is REMOTE for r in transaction.recipients))
        if failed and len(failed) == len(transaction.recipients):
            first = failed[0][1]
            if all(reply.code // 100 == first.code // 100 for _, reply in failed):
                metrics.delivered(self.service, "deferred" if first.is_transient else "refused", len(failed))
                return [first]
        retry = [r.rcpt for r, reply in failed if reply.is_transient]
        metrics.delivered(self.service, "queued", len(retry))
        metrics.delivered(self.service, "refused", len(failed) - len(retry))
        if retry:
            queue.enqueue(transaction.mail, retry, staged)
        reports = [(r.rcpt, reply) for r, reply in results if not reply.is_transient]
        if reports:
            queue.report_now(transaction.mail, reports, staged)  # NOTIFY=SUCCESS, bounces
        logs.log.info("{service}: {id} from <{sender}> by {user}: {n} recipients",
                      service=self.service, id=transaction.id, sender=transaction.sender,
                      user=session.authenticated_user, n=len(transaction.recipients))
        return [codes.MESSAGE_ACCEPTED.with_text(f"Message accepted, id {transaction.id}")]


class LMTPCallbacks:
    """LMTP (RFC 2033): final delivery for an MTA, one reply per recipient."""

    lmtp = True
    # Final delivery for an MTA, which keeps the DSN duty itself (as with
    # Dovecot's and Cyrus's LMTP): DSN is not offered, its parameters refused.
    dsn = False

    def __init__(self, context: ServerContext, service: str, local: LocalDelivery) -> None:
        self.context = context
        self.service = service
        self.local = local

    def ehlo_keywords(self, session: SMTPSession) -> list[str]:
        return ehlo_keywords(session)

    def check_mail(self, session: SMTPSession, mail: wire.Mail) -> Reply:
        return codes.SENDER_OK

    def check_rcpt(self, session: SMTPSession, rcpt: wire.Rcpt) -> tuple[Reply, object]:
        path = rcpt.forward_path
        if not self.local.is_local(path):
            return codes.NO_SUCH_USER.with_text("Not a local domain"), None
        target = self.local.resolve(path)
        if target is None:
            return codes.NO_SUCH_USER, None
        return codes.RECIPIENT_OK, target

    def trace_headers(self, session: SMTPSession, transaction: Transaction, header: bytes) -> bytes:
        return_path = f"Return-Path: <{transaction.sender or ''}>\r\n".encode()
        return return_path + received_header(session, transaction, with_name("LMTP", session))

    def deliver(self, session: SMTPSession, transaction: Transaction, staged) -> defer.Deferred:
        """Each recipient's append off the reactor (all at once); one reply each, once durable."""
        deliveries = [self.local.deliver_async(staged, recipient.target, Envelope(transaction.sender, recipient.address))
                      for recipient in transaction.recipients]
        return defer.gatherResults(deliveries, consumeErrors=True).addCallback(self._replies, transaction)

    def _replies(self, results: list[Reply], transaction: Transaction) -> list[Reply]:
        replies = []
        for recipient, reply in zip(transaction.recipients, results):
            if reply.is_positive:
                reply = reply.with_text(f"<{recipient.address}> delivered, id {transaction.id}")
            replies.append(reply)
            result = "delivered" if reply.is_positive else "deferred" if reply.is_transient else "refused"
            self.context.metrics.delivered(self.service, result)
        logs.log.info("{service}: {id} from <{sender}>: {ok} of {n} recipients delivered",
                      service=self.service, id=transaction.id, sender=transaction.sender,
                      ok=sum(r.is_positive for r in replies), n=len(replies))
        return replies


class SMTPFactory(ServerFactory):
    """One :class:`SMTPSession` per connection, with this service's callbacks."""

    def __init__(self, context: ServerContext, callbacks, *, implicit_tls: bool = False,
                 clock=None, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.context = context
        self.callbacks = callbacks
        self.implicit_tls = implicit_tls
        self.idle_timeout = idle_timeout
        if clock is None:
            clock = context.reactor
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock

    def buildProtocol(self, addr) -> SMTPSession:
        session = SMTPSession(self.context, self.callbacks, self.clock,
                              implicit_tls=self.implicit_tls, idle_timeout=self.idle_timeout)
        session.factory = self
        return session

    def refusal(self, text: str) -> bytes:
        """The greeting of a connection over a cap (RFC 5321 3.1)."""
        hostname = self.context.config.hostname
        return codes.TOO_MANY_CONNECTIONS.with_text(f"{hostname} {text}").to_bytes()


def make_submission_factory(context: ServerContext, service: str) -> IProtocolFactory:
    """The registry's builder for ``submission`` and ``submissions``."""
    from cyrusmail.delivery.queue import queue_of

    queue_of(context)  # the queue and its runner start with the server
    callbacks = SubmissionCallbacks(context, service, LocalDelivery(context))
    return SMTPFactory(context, callbacks, implicit_tls=REGISTRY[service].implicit_tls)


def make_lmtp_factory(context: ServerContext, service: str) -> IProtocolFactory:
    """The registry's builder for ``lmtp``."""
    if context.config["sieve"]["enabled"]:
        from cyrusmail.delivery.queue import queue_of

        queue_of(context)  # Sieve's redirects and vacation replies go through the queue
    return SMTPFactory(context, LMTPCallbacks(context, service, LocalDelivery(context)))
