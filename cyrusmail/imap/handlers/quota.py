"""GETQUOTA, GETQUOTAROOT, SETQUOTA (RFC 9208).

Roots are named ``user/NAME`` and ``shared/PATH`` (:mod:`cyrusmail.quota`);
the account decides which ones a user may see and that only admins set
limits.  Resources: STORAGE (KiB), MESSAGE, MAILBOX.
"""

from __future__ import annotations

from cyrusmail.imap import codes
from cyrusmail.imap.naming import from_wire, root_from_wire, root_to_wire, to_wire


def _quota_line(report, utf8: bool = False) -> bytes:
    """``QUOTA root (STORAGE used limit MESSAGE used limit ...)``"""
    items = " ".join(f"{resource} {usage} {limit}" for resource, (usage, limit) in report.resources.items())
    return b"QUOTA " + root_to_wire(report.root, utf8) + b" (" + items.encode("ascii") + b")"


def getquota(session, command) -> None:
    report = session.state.account.quota(root_from_wire(command.root))
    session.untagged(_quota_line(report, session.utf8))


def getquotaroot(session, command) -> None:
    """``* QUOTAROOT mailbox root ...`` then a ``* QUOTA`` for each root."""
    account = session.state.account
    name = from_wire(command.mailbox)
    roots = account.quota_roots(name)
    utf8 = session.utf8
    session.untagged(b" ".join([b"QUOTAROOT", to_wire(name, utf8), *(root_to_wire(root, utf8) for root in roots)]))
    for root in roots:
        session.untagged(_quota_line(account.quota(root), utf8))


def setquota(session, command) -> None:
    """Replace the root's limits (an empty list removes them); ``* QUOTA`` with the result."""
    account = session.state.account
    root = root_from_wire(command.root)
    limits = dict(command.limits)
    try:
        account.set_quota(root, limits)
    except ValueError as error:  # a resource we do not have (RFC 9208 4.1.3: the command fails)
        raise codes.CommandFailed(str(error), codes.CANNOT) from None
    if limits:
        session.untagged(_quota_line(account.quota(root), session.utf8))
