"""SELECT, EXAMINE, CLOSE, UNSELECT (RFC 3691), CHECK, EXPUNGE / UID EXPUNGE (RFC 4315).

SELECT and EXAMINE take the RFC 7162 parameters: CONDSTORE, and QRESYNC
(after ENABLE QRESYNC) whose VANISHED (EARLIER) and FETCH responses come
before the tagged OK (see :mod:`cyrusmail.imap.qresync`).  Selecting while
a mailbox is selected first says ``* OK [CLOSED]``.  After ``ENABLE
IMAP4rev2`` the mailbox's LIST line takes the place of RECENT and
``[UNSEEN n]`` (RFC 9051 6.3.2, Appendix E).

A SELECT is answered READ-ONLY when the user's rights allow no change
(RFC 4314 5.2), and PERMANENTFLAGS lists only the flags those rights let
them change, ``\\*`` only with ``w``.  A write refused for want of a
right is ``NO [NOPERM]``; ``NO [READ-ONLY]`` is kept for EXAMINE.
"""

from __future__ import annotations

from twisted.internet import defer

from cyrusmail.imap import codes
from cyrusmail.imap.codes import CommandFailed, Reply
from cyrusmail.imap.flags import FLAG_LIST
from cyrusmail.imap.handlers.mailboxes import list_line
from cyrusmail.imap.naming import from_wire
from cyrusmail.imap.qresync import resync_lines
from cyrusmail.imap.selected import SelectedMailbox, permanent_flags
from cyrusmail.imap.state import Selected
from cyrusmail.store.errors import PermissionDenied


def _open(session, command, examine: bool) -> Reply | defer.Deferred:
    if isinstance(session.state, Selected):
        # RFC 7162 3.2.11: what follows is about the new mailbox (said even if it cannot be opened)
        session.untagged(f"OK [{codes.CLOSED}] Previous mailbox closed")
    session.leave_mailbox()  # a failed SELECT leaves no mailbox selected either
    resync = command.qresync
    if resync is not None and "QRESYNC" not in session.enabled:
        raise codes.bad("QRESYNC parameter needs ENABLE QRESYNC first")
    mailbox = session.state.account.mailboxes.open(from_wire(command.mailbox))
    if command.condstore or resync is not None:
        session.enable("CONDSTORE")
    read_only = examine or mailbox.read_only
    view = SelectedMailbox(mailbox, read_only, condstore="CONDSTORE" in session.enabled, examined=examine,
                           qresync="QRESYNC" in session.enabled, rev2=session.rev2)
    flags = " ".join([*FLAG_LIST, *sorted(view.keywords)])
    session.untagged(f"FLAGS ({flags})")
    session.untagged(f"{view.exists} EXISTS")
    if session.rev2:
        # RFC 9051 6.3.2: the mailbox's LIST line; RECENT and UNSEEN are IMAP4rev1's (Appendix E 11, 12)
        session.untagged(list_line(session, mailbox.name))
    else:
        session.untagged(f"{view.recent_count()} RECENT")
        if view.first_unseen is not None:
            session.untagged(f"OK [{codes.UNSEEN} {view.first_unseen}] First unseen")
    session.untagged(f"OK [{codes.UIDVALIDITY} {mailbox.uid_validity}] UIDs valid")
    session.untagged(f"OK [{codes.UIDNEXT} {view.uid_next}] Predicted next UID")
    session.untagged(f"OK [{codes.HIGHESTMODSEQ} {view.highest_modseq}] Highest")
    session.untagged(f"OK [{codes.MAILBOXID} ({mailbox.object_id})] Ok")
    permanent = "" if read_only else " ".join(permanent_flags(mailbox, view.keywords))
    session.untagged(f"OK [{codes.PERMANENTFLAGS} ({permanent})] Flags permitted")
    session.select(view)
    access = codes.READ_ONLY if read_only else codes.READ_WRITE
    reply = Reply(code=access, text=f"{command.name} completed")
    if resync is None or resync.uid_validity != mailbox.uid_validity:
        return reply  # another UIDVALIDITY: the client must start over (RFC 7162 3.2.5.1)
    # Only what this view knows: later changes come with the completion's poll.
    changes = mailbox.changes_since(resync.modseq)
    lines = resync_lines(view, changes, resync.known_uids, resync.seq_match, view.uid_next)
    return session.stream(lines).addCallback(lambda _: reply)


def select(session, command) -> Reply:
    return _open(session, command, examine=False)


def examine(session, command) -> Reply:
    return _open(session, command, examine=True)


def check(session, command) -> None:
    """Every change is durable when made; CHECK only reports updates."""


def close(session, command: Selected) -> defer.Deferred:
    view = session.state.view
    expunged = defer.succeed(None) if view.read_only else view.mailbox.expunge_async()  # silently (RFC 3501 6.4.2)

    def without_e(failure):
        failure.trap(PermissionDenied)  # without "e" nothing is expunged, and CLOSE still succeeds (RFC 4314 4)

    return expunged.addErrback(without_e).addCallback(lambda _: session.leave_mailbox())


def unselect(session, command) -> None:
    session.leave_mailbox()


def writable(view) -> None:
    """EXAMINE'd mailboxes take no changes; otherwise the account checks the rights of each."""
    if view.examined:
        raise CommandFailed("Mailbox is read-only", codes.READ_ONLY)


def expunge(session, command) -> defer.Deferred:
    view = session.state.view
    writable(view)
    uids = view.resolve(command.sequence_set, uid=True) if command.uid else None
    # The EXPUNGE responses come from the completion's poll, with everyone else's.
    return view.mailbox.expunge_async(uids).addCallback(lambda _: None)
