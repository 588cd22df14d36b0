"""Delivery status notifications (RFC 3464): the bounce a sender gets.

:func:`build_dsn` makes a ``multipart/report; report-type=delivery-status``
message (RFC 6522) with three parts: a human-readable explanation, the
``message/delivery-status`` fields (per message: Reporting-MTA,
Original-Envelope-Id, Arrival-Date; per recipient: Original-Recipient,
Final-Recipient, Action, Status, Remote-MTA, Diagnostic-Code,
Last-Attempt-Date), and the original message's header as
``text/rfc822-headers``.  It is sent with the null reverse path, so it is
never itself bounced (RFC 5321 section 6.1, RFC 3464 section 2).
"""

from __future__ import annotations

import email.utils
import re
import secrets
from dataclasses import dataclass

MAX_HEADER = 256 * 1024


@dataclass(frozen=True)
class FailedRecipient:
    """One recipient the report is about."""

    address: str
    status: str  # RFC 3463, e.g. 5.1.1
    diagnostic: str = ""  # the remote reply, e.g. "550 5.1.1 No such user"
    remote_mta: str = ""
    original: str | None = None  # ORCPT, "rfc822;addr"
    action: str = "failed"


def header_of(message: bytes) -> bytes:
    """The header block of ``message`` (up to its blank line), CRLF ended."""
    end = message.find(b"\r\n\r\n")
    header = message[: end + 2] if end >= 0 else message[:MAX_HEADER]
    if header and not header.endswith(b"\r\n"):
        header += b"\r\n"
    return header


def read_header(path) -> bytes:
    """The header block of the message file at ``path``."""
    with open(path, "rb") as source:
        return header_of(source.read(MAX_HEADER))


def _field_text(text: str) -> str:
    """One line of printable text for a header field."""
    return re.sub(r"[\x00-\x1f\x7f]+", " ", text).strip()


def build_dsn(*, reporting_mta: str, sender: str, arrival: float, now: float,
              recipients: list[FailedRecipient], original_header: bytes,
              envid: str | None = None) -> bytes:
    """The DSN message for ``sender`` about ``recipients``, as CRLF bytes."""
    boundary = f"=_cyrusmail_{secrets.token_hex(12)}"
    date = email.utils.formatdate(now, localtime=True)
    delayed = all(r.action == "delayed" for r in recipients)
    subject = ("Delayed Mail (still being retried)" if delayed
               else "Undelivered Mail Returned to Sender")
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{sender}>",
        f"Subject: {subject}",
        f"Date: {date}",
        f"Message-ID: <{int(now)}.{secrets.token_hex(8)}@{reporting_mta}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="{boundary}"',
    ]
    human = [
        f"This is the mail system at host {reporting_mta}.",
        "",
        ("Your message has not been delivered yet to the following recipients;"
         " delivery is still being attempted." if delayed else
         "Your message could not be delivered to one or more recipients."
         " It has been returned below (its header only)."),
        "",
    ]
    for recipient in recipients:
        line = f"<{recipient.address}>"
        if recipient.diagnostic:
            line += f": {_field_text(recipient.diagnostic)}"
        human.append(line)
    status = [f"Reporting-MTA: dns; {reporting_mta}"]
    if envid:
        status.append(f"Original-Envelope-Id: {_field_text(envid)}")
    status.append(f"Arrival-Date: {email.utils.formatdate(arrival, localtime=True)}")
    for recipient in recipients:
        status.append("")
        if recipient.original:
            status.append(f"Original-Recipient: {_field_text(recipient.original)}")
        status.append(f"Final-Recipient: rfc822; {recipient.address}")
        status.append(f"Action: {recipient.action}")
        status.append(f"Status: {recipient.status}")
        if recipient.remote_mta:
            status.append(f"Remote-MTA: dns; {recipient.remote_mta}")
        if recipient.diagnostic:
            status.append(f"Diagnostic-Code: smtp; {_field_text(recipient.diagnostic)}")
        status.append(f"Last-Attempt-Date: {date}")
    parts = [
        "\r\n".join(head),
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Description: Notification",
        "",
        "\r\n".join(human),
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "Content-Description: Delivery report",
        "",
        "\r\n".join(status),
        "",
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "Content-Description: Undelivered message headers",
        "",
    ]
    text = "\r\n".join(parts).encode("utf-8") + b"\r\n" + original_header
    return text + f"\r\n--{boundary}--\r\n".encode("ascii")
