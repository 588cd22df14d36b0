"""APPEND with MULTIAPPEND (RFC 3502, atomic) and APPENDUID (RFC 4315).

The message literals were written by the parser straight into staged
store messages (the session's sink factory); here they are finished and
appended in one ``append_many`` transaction.  A literal holding a NUL octet
is refused (``NO [CANNOT]``), and then nothing is appended.  An RFC 3516
``literal8`` may hold NULs: each leaf part holding one is stored base64
encoded (:mod:`cyrusmail.mime.binary`), so ``FETCH BINARY`` gives back the
bytes appended while no other answer carries a NUL; a NUL that cannot be
kept so (in a header) is ``NO [UNKNOWN-CTE]``.
"""

from __future__ import annotations

from cyrusmail.imap import codes
from cyrusmail.imap.codes import CommandFailed, Reply
from cyrusmail.imap.flags import RECENT, BadFlag, split_flags
from cyrusmail.imap.naming import open_target
from cyrusmail.imap.sequence import SequenceSet
from cyrusmail.mime.binary import encode_nul_parts


def append(session, command) -> Reply:
    for message in command.messages:
        if getattr(message.content, "has_nul", False) and not message.binary:
            raise CommandFailed("Message contains a NUL octet, which a literal cannot carry (RFC 3501)",
                                codes.CANNOT)
    target = open_target(session.state.account.mailboxes, command.mailbox)
    items = []
    for message in command.messages:
        names = [name for name in message.flags or () if name.lower() != RECENT.lower()]
        try:
            bits, keywords = split_flags(names)
        except BadFlag as error:
            raise codes.bad(str(error)) from None
        staged = _storable(session, message.content)
        date = message.internal_date.timestamp() if message.internal_date else None
        items.append((staged, bits, keywords, date))
    try:
        uids = target.append_many(items)
    finally:
        for message in command.messages:
            message.content.close()
    uid_set = SequenceSet.from_numbers(uids)
    return Reply(code=f"{codes.APPENDUID} {target.uid_validity} {uid_set}", text="APPEND completed")


def _storable(session, content):
    """The finished staged message to append; a literal8's NUL parts re-encoded first."""
    staged = content.staged
    if content.binary and content.has_nul:
        staged.finish()
        pieces = encode_nul_parts(staged.read())
        if pieces is None:
            raise CommandFailed("A NUL octet outside a part's body cannot be stored", codes.UNKNOWN_CTE)
        content.staged = session.context.store.stage()  # what the command's end discards
        staged.discard()
        staged = content.staged
        for piece in pieces:
            staged.write(piece)
    staged.finish()
    return staged
