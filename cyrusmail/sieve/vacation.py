"""Vacation replies (RFC 5230, with RFC 3834's rules for automatic responses).

:func:`refusal` says why a message gets no reply, or None: no reply to
the null sender, to MAILER-DAEMON, list and bounce addresses
(``owner-*``, ``*-request``), to the user's own addresses, to anything
Auto-Submitted, to ``Precedence: bulk/list/junk`` and to mailing-list
mail (``List-Id`` and the other RFC 2369 fields), nor when none of the
user's addresses (or the script's ``:addresses``) is in To, Cc, Bcc or
their Resent- forms (section 4.5).  The "already answered" record is the
caller's (:meth:`~cyrusmail.sieve.scripts.ScriptStore.vacation_due`),
once per sender and handle every ``:days`` days (default 7, at least 1,
at most :data:`MAX_DAYS`).

:func:`build_reply` writes the reply: to the envelope sender, from the
address the message was sent to (or ``:from``; with ``[server]
check_header_from``, the default, only one of the user's own addresses,
as submission demands of the user), ``Subject: Auto: ...``
(or ``:subject``), In-Reply-To and References, ``Auto-Submitted:
auto-replied``; the reason as UTF-8 text (quoted-printable), or as a whole
MIME entity with ``:mime``.  It goes out with the null reverse-path.
"""

from __future__ import annotations

import email.utils
import hashlib
import quopri
import secrets

from cyrusmail.sieve.interpreter import Vacation
from cyrusmail.sieve.message import SieveMessage, addresses_of, encode_value

DEFAULT_DAYS = 7
MAX_DAYS = 365
_RECIPIENT_FIELDS = ("to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc")
_LIST_FIELDS = ("list-id", "list-help", "list-subscribe", "list-unsubscribe", "list-post", "list-owner",
                "list-archive")


def period_of(action: Vacation) -> float:
    days = DEFAULT_DAYS if action.days is None else min(max(action.days, 1), MAX_DAYS)
    return days * 86400.0


def handle_of(action: Vacation) -> str:
    """The :handle, or (RFC 5230 section 4.2) one made from what makes the reply what it is."""
    if action.handle is not None:
        return "h:" + action.handle
    made = "\x00".join([action.reason, action.subject or "", action.sender or "", "mime" if action.mime else ""])
    return "d:" + hashlib.sha256(made.encode("utf-8")).hexdigest()


def refusal(message: SieveMessage, sender: str, own_addresses: frozenset[str], action: Vacation) -> str | None:
    """Why no reply goes to ``sender`` (the envelope's reverse-path), or None."""
    if not sender:
        return "the sender is the null reverse-path"
    local = sender.rpartition("@")[0].lower()
    if local in ("mailer-daemon", "postmaster", "listserv", "majordomo") or local.startswith("owner-") \
            or local.endswith("-request"):
        return f"the sender <{sender}> is a mail system or list address"
    mine = {address.lower() for address in own_addresses} | {address.lower() for address in action.addresses}
    if sender.lower() in mine:
        return "the sender is the user"
    for value in message.values("auto-submitted"):
        if value.split(";")[0].strip().lower() != "no":
            return "the message is Auto-Submitted"
    for value in message.values("precedence"):
        if value.strip().lower() in ("bulk", "list", "junk"):
            return f"the message has Precedence: {value.strip().lower()}"
    if any(message.exists(name) for name in _LIST_FIELDS):
        return "the message came through a mailing list"
    if _addressed_to(message, mine) is None:
        return "none of the user's addresses is in To, Cc or Bcc"
    return None


def _addressed_to(message: SieveMessage, mine: set[str]) -> str | None:
    for name in _RECIPIENT_FIELDS:
        for raw in message.raw_values(name):
            for address in addresses_of(raw):
                if address.all.lower() in mine:
                    return address.all
    return None


def sends_as(text: str, own_addresses: frozenset[str]) -> bool:
    """Whether ``text`` (``addr`` or ``Name <addr>``) is one of the user's own addresses."""
    found = addresses_of(text.encode("utf-8"))
    own = {address.lower() for address in own_addresses}
    return len(found) == 1 and found[0].all.lower() in own


def build_reply(message: SieveMessage, action: Vacation, sender: str, own_addresses: frozenset[str],
                default_from: str, hostname: str, now: float, any_from: bool = True) -> bytes:
    """The reply's octets (see the module docstring).  Unless ``any_from``, the From: address
    is one of ``own_addresses`` (the caller has checked ``:from``), never only an ``:addresses`` one."""
    own = {address.lower() for address in own_addresses}
    mine = own | {address.lower() for address in action.addresses}
    from_field = action.sender or _addressed_to(message, mine if any_from else own) or default_from
    subjects = message.values("subject")
    subject = action.subject if action.subject is not None else "Auto: " + (subjects[0] if subjects else "")
    lines = [
        b"Date: " + email.utils.formatdate(now, localtime=True).encode("ascii"),
        b"From: " + (encode_value(from_field) if "<" in from_field else b"<" + encode_value(from_field) + b">"),
        b"To: <" + encode_value(sender) + b">",
        b"Subject: " + encode_value(subject),
        f"Message-ID: <{int(now)}.{secrets.token_hex(8)}@{hostname}>".encode("ascii"),
    ]
    message_ids = message.raw_values("message-id")
    if message_ids:
        original = message_ids[0].strip()
        references = b" ".join(value.strip() for value in message.raw_values("references"))
        lines.append(b"In-Reply-To: " + original)
        lines.append(b"References: " + (references + b" " if references else b"") + original)
    lines.append(b"Auto-Submitted: auto-replied (vacation)")
    lines.append(b"MIME-Version: 1.0")
    reason = action.reason.replace("\r\n", "\n").replace("\r", "\n")
    if action.mime:
        entity = reason.replace("\n", "\r\n").encode("utf-8")
        if not entity.startswith(b"\r\n") and b"\r\n\r\n" not in entity:
            entity = b"\r\n" + entity  # a reason with no header of its own
        return b"\r\n".join(lines) + b"\r\n" + entity
    lines.append(b"Content-Type: text/plain; charset=utf-8")
    lines.append(b"Content-Transfer-Encoding: quoted-printable")
    body = quopri.encodestring(reason.encode("utf-8")).replace(b"\n", b"\r\n")
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
