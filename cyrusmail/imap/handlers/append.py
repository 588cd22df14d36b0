"""APPEND with MULTIAPPEND (RFC 3502, atomic) and APPENDUID (RFC 4315).

The message literals were written by the parser straight into staged
store messages (the session's sink factory); here they are finished and
appended in one ``append_many`` transaction.  A message holding a NUL octet
is refused (``NO [CANNOT]``; ``NO [UNKNOWN-CTE]`` for an RFC 3516 literal8,
whose binary content this store does not keep), and then nothing is
appended.
"""

from __future__ import annotations

from cyrusmail.imap import codes
from cyrusmail.imap.codes import CommandFailed, Reply
from cyrusmail.imap.flags import RECENT, BadFlag, split_flags
from cyrusmail.imap.naming import open_target
from cyrusmail.imap.sequence import SequenceSet


def append(session, command) -> Reply:
    for message in command.messages:
        if getattr(message.content, "has_nul", False):
            raise CommandFailed("Message contains a NUL octet, which IMAP cannot carry (RFC 3501)",
                                codes.UNKNOWN_CTE if message.binary else codes.CANNOT)
    target = open_target(session.state.account.mailboxes, command.mailbox)
    items = []
    for message in command.messages:
        names = [name for name in message.flags or () if name.lower() != RECENT.lower()]
        try:
            bits, keywords = split_flags(names)
        except BadFlag as error:
            raise codes.bad(str(error)) from None
        staged = message.content.staged
        staged.finish()
        date = message.internal_date.timestamp() if message.internal_date else None
        items.append((staged, bits, keywords, date))
    try:
        uids = target.append_many(items)
    finally:
        for message in command.messages:
            message.content.close()
    uid_set = SequenceSet.from_numbers(uids)
    return Reply(code=f"{codes.APPENDUID} {target.uid_validity} {uid_set}", text="APPEND completed")
