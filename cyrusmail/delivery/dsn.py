"""Delivery status notifications (RFC 3464): what a sender is told.

A DSN is a ``multipart/report; report-type=delivery-status`` message
(RFC 6522) with three parts: a human-readable explanation, the
``message/delivery-status`` fields (per message: Reporting-MTA,
Original-Envelope-Id, Arrival-Date; per recipient: Original-Recipient,
Final-Recipient, Action, Status, Remote-MTA, Diagnostic-Code,
Last-Attempt-Date, Will-Retry-Until), and the original message: the whole of
it as ``message/rfc822`` in a failure report when the sender asked for
RET=FULL (RFC 3461 section 4.3), else only its header as
``text/rfc822-headers`` (RET=HDRS, no RET, and every report that is not
about a failure: delivered, relayed, delayed).  A message larger than
:data:`MAX_RETURN_FULL` is returned by its header only, which RFC 3461
section 4.3 allows.

:func:`dsn_envelope` gives the report's bytes before and after the returned
content, so a caller can stream a large original between them
(:func:`write_dsn`); :func:`build_dsn` gives the whole report as bytes.  A
DSN is sent with the null reverse path, so it is never itself reported on
(RFC 5321 section 6.1, RFC 3461 section 6.2, RFC 3464 section 2).
"""

from __future__ import annotations

import email.utils
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

MAX_HEADER = 256 * 1024
MAX_RETURN_FULL = 10 * 1024 * 1024  # larger originals come back as their header only
COPY_CHUNK = 1 << 20

FAILED, DELAYED, DELIVERED, RELAYED, EXPANDED = "failed", "delayed", "delivered", "relayed", "expanded"


@dataclass(frozen=True)
class ReportRecipient:
    """One recipient the report is about."""

    address: str
    status: str  # RFC 3463, e.g. 5.1.1
    diagnostic: str = ""  # the remote reply, e.g. "550 5.1.1 No such user"
    remote_mta: str = ""
    original: str | None = None  # ORCPT, "rfc822;addr"
    action: str = FAILED
    last_attempt: float | None = None  # default: the report's date
    will_retry_until: float | None = None  # for "delayed"


FailedRecipient = ReportRecipient  # its earlier name


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


def _date(when: float) -> str:
    return email.utils.formatdate(when, localtime=True)


def returns_full(recipients: list[ReportRecipient], ret: str | None, size: int) -> bool:
    """Whether the report carries the whole original (RFC 3461 section 4.3)."""
    return (ret or "").upper() == "FULL" and size <= MAX_RETURN_FULL and any(
        r.action == FAILED for r in recipients)


def dsn_envelope(*, reporting_mta: str, sender: str, arrival: float, now: float,
                 recipients: list[ReportRecipient], full: bool = False,
                 envid: str | None = None) -> tuple[bytes, bytes]:
    """The report's bytes before and after the returned content, CRLF ended.

    The content between them is the original's header block (CRLF ended),
    or with ``full`` the whole original message (CRLF line ends).
    """
    boundary = f"=_cyrusmail_{secrets.token_hex(12)}"
    actions = {r.action for r in recipients}
    if actions <= {DELAYED}:
        subject = "Delayed Mail (still being retried)"
        summary = ("Your message has not been delivered yet to the following recipients;"
                   " delivery is still being attempted. You do not need to send it again.")
    elif FAILED not in actions and DELAYED not in actions:
        subject = "Successful Mail Delivery Report"
        summary = ("Your message was delivered to the following recipients, or handed on to a"
                   " system that does not report delivery (relayed).")
    else:
        subject = "Undelivered Mail Returned to Sender"
        summary = ("Your message could not be delivered to one or more recipients."
                   + (" It is returned below." if full else " Its header is returned below."))
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{sender}>",
        f"Subject: {subject}",
        f"Date: {_date(now)}",
        f"Message-ID: <{int(now)}.{secrets.token_hex(8)}@{reporting_mta}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="{boundary}"',
    ]
    human = [f"This is the mail system at host {reporting_mta}.", "", summary, ""]
    for recipient in recipients:
        line = f"<{recipient.address}> ({recipient.action})"
        if recipient.diagnostic:
            line += f": {_field_text(recipient.diagnostic)}"
        human.append(line)
    status = [f"Reporting-MTA: dns; {reporting_mta}"]
    if envid:
        status.append(f"Original-Envelope-Id: {_field_text(envid)}")
    status.append(f"Arrival-Date: {_date(arrival)}")
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
        status.append(f"Last-Attempt-Date: {_date(recipient.last_attempt or now)}")
        if recipient.action == DELAYED and recipient.will_retry_until:
            status.append(f"Will-Retry-Until: {_date(recipient.will_retry_until)}")
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
        "Content-Type: message/rfc822" if full else "Content-Type: text/rfc822-headers",
        "Content-Description: Undelivered message" if full else "Content-Description: Message headers",
        "",
    ]
    before = "\r\n".join(parts).encode("utf-8") + b"\r\n"
    return before, f"\r\n--{boundary}--\r\n".encode("ascii")


def write_dsn(out, original: Path, *, full: bool, **fields) -> None:
    """Write the report to ``out`` (``.write(bytes)``), streaming the original from its file."""
    before, after = dsn_envelope(full=full, **fields)
    out.write(before)
    if full:
        last = b""
        with open(original, "rb") as source:
            while piece := source.read(COPY_CHUNK):
                out.write(piece)
                last = piece
        if last and not last.endswith(b"\r\n"):
            out.write(b"\r\n")
    else:
        out.write(read_header(original))
    out.write(after)


def build_dsn(*, reporting_mta: str, sender: str, arrival: float, now: float,
              recipients: list[ReportRecipient], original_header: bytes = b"",
              original_message: bytes | None = None, envid: str | None = None) -> bytes:
    """The whole report as CRLF bytes: the original's header, or all of ``original_message``."""
    full = original_message is not None
    before, after = dsn_envelope(reporting_mta=reporting_mta, sender=sender, arrival=arrival, now=now,
                                 recipients=recipients, full=full, envid=envid)
    content = original_message if full else original_header
    if content and not content.endswith(b"\r\n"):
        content += b"\r\n"
    return before + content + after
