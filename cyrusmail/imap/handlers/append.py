"""APPEND with MULTIAPPEND (RFC 3502, atomic), CATENATE (RFC 4469) and APPENDUID (RFC 4315).

The message literals were written by the parser straight into staged
store messages (the session's sink factory); here they are finished and
appended in one ``append_many`` transaction.  A literal holding a NUL octet
is refused (``NO [CANNOT]``), and then nothing is appended.  An RFC 3516
``literal8`` may hold NULs: each leaf part holding one is stored base64
encoded (:mod:`cyrusmail.mime.binary`), so ``FETCH BINARY`` gives back the
bytes appended while no other answer carries a NUL; a NUL that cannot be
kept so (in a header) is ``NO [UNKNOWN-CTE]``.

A CATENATE message is put together in a new staged message from its
``TEXT`` literals and what its ``URL`` parts name: a message or section
the user may read (``r``) on this server, as ``BODY.PEEK[section]<partial>``
would send it (:mod:`cyrusmail.imap.urls`).  A URL that is not such a
thing is ``NO [BADURL url]``; a result over the server's
``max_message_size`` is ``NO [TOOBIG]``.  Every URL is checked once the
whole command has arrived (RFC 4469 lets a server answer NO before later
literals; this one reads them first).
"""

from __future__ import annotations

from twisted.internet import defer

from cyrusmail.imap import codes, urls
from cyrusmail.imap import commands as c
from cyrusmail.imap.codes import CommandFailed, Reply
from cyrusmail.imap.fetch import FetchError, MessageView, body_source, without_nul
from cyrusmail.imap.flags import RECENT, BadFlag, split_flags
from cyrusmail.imap.naming import open_target
from cyrusmail.imap.sequence import SequenceSet
from cyrusmail.imap.state import Selected
from cyrusmail.mime.binary import encode_nul_parts
from cyrusmail.store import names
from cyrusmail.store.errors import StoreError

_COPY_CHUNK = 64 * 1024


def append(session, command) -> defer.Deferred:
    """Stage, check and append; answered once the messages are durable.

    The append itself (the files' fsyncs, the index's commit) runs off the
    reactor, grouped with other appends to the same user's index.
    """
    for message in command.messages:
        for sink in message.sinks():
            if getattr(sink, "has_nul", False) and not getattr(sink, "binary", False):
                raise CommandFailed("Message contains a NUL octet, which a literal cannot carry (RFC 3501)",
                                    codes.CANNOT)
    made = []  # CATENATE's staged messages, discarded at the end like the literals

    def clean_up(result):
        for staged in made:
            staged.discard()
        for message in command.messages:
            for sink in message.sinks():
                sink.close()
        return result

    try:
        target = open_target(session.state.account.mailboxes, command.mailbox)
        items = []
        for message in command.messages:
            flag_names = [name for name in message.flags or () if name.lower() != RECENT.lower()]
            try:
                bits, keywords = split_flags(flag_names)
            except BadFlag as error:
                raise codes.bad(str(error)) from None
            if message.parts is not None:
                staged = session.context.store.stage()
                made.append(staged)
                _catenate(session, message.parts, staged)
            else:
                staged = _storable(session, message.content)
            date = message.internal_date.timestamp() if message.internal_date else None
            items.append((staged, bits, keywords, date))
        appended = target.append_many_async(items)
    except BaseException:
        clean_up(None)
        raise

    def replied(uids: list[int]) -> Reply:
        if not uids_shown(session, target):
            return Reply(text="APPEND completed")
        uid_set = SequenceSet.from_numbers(uids)
        return Reply(code=f"{codes.APPENDUID} {target.uid_validity} {uid_set}", text="APPEND completed")

    return appended.addBoth(clean_up).addCallback(replied)


def uids_shown(session, target) -> bool:
    """Whether APPENDUID and COPYUID may tell the new UIDs in ``target``.

    Not to an IMAP4rev2 session that may put messages there but not read
    them (``i`` without ``r``): they tell something of a mailbox it may not
    SELECT (RFC 9051 6.3.12 MUST NOT, 11.4).  An IMAP4rev1 session is
    answered as before.
    """
    return not session.rev2 or "r" in target.rights


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
    return staged  # finished off the reactor, by the append


def _bad_url(url: str, why: str) -> CommandFailed:
    shown = "".join(char for char in url if char not in "]\r\n")  # RFC 4469: any TEXT-CHAR but "]"
    return CommandFailed(f"Bad URL: {why}", f"{codes.BADURL} {shown}")


def _resolve(session, url: str) -> tuple[MessageView, bytes | tuple[int, int] | None]:
    """The message a CATENATE URL names, and its data as FETCH BODY.PEEK would send it."""
    try:
        parsed = urls.parse(url)
    except urls.BadUrl as error:
        raise _bad_url(url, str(error)) from None
    account = session.state.account
    if parsed.host is not None and parsed.host != session.context.config.hostname.lower():
        raise _bad_url(url, "only messages on this server can be used")
    if parsed.port is not None and parsed.port != session.transport.getHost().port:
        raise _bad_url(url, "only messages on this server can be used")
    if parsed.user is not None and parsed.user.lower() != account.user.lower():
        raise _bad_url(url, "only the logged-in user's access can be used")
    try:
        if parsed.mailbox is None:
            if not isinstance(session.state, Selected):
                raise _bad_url(url, "a relative URL needs a selected mailbox")
            mailbox = session.state.view.mailbox
        else:
            mailbox = account.mailboxes.open(names.canonical(parsed.mailbox))
        if parsed.uid_validity is not None and parsed.uid_validity != mailbox.uid_validity:
            raise _bad_url(url, "UIDVALIDITY has changed")
        view = MessageView(0, mailbox.record(parsed.uid), mailbox, False)
        partial = None
        if parsed.partial is not None:
            origin, length = parsed.partial
            partial = (origin, view.record.size if length is None else length)
        return view, body_source(view, parsed.section, partial)
    except (StoreError, FetchError) as error:
        raise _bad_url(url, str(error)) from None


def _catenate(session, parts: tuple[c.CatenatePart, ...], staged) -> None:
    """Write the CATENATE message into ``staged``, once every part is known to be there."""
    sources = []
    total = 0
    for part in parts:
        if isinstance(part, c.CatenateText):
            sources.append(part)
            total += part.size
        else:
            view, data = _resolve(session, part.url)
            sources.append((view, data))
            total += 0 if data is None else len(data) if isinstance(data, bytes) else data[1] - data[0]
    limit = session.context.config["server"]["max_message_size"]
    if total > limit:
        raise CommandFailed(f"The message would be {total} octets, over the limit of {limit}", codes.TOOBIG)
    for source in sources:
        if isinstance(source, c.CatenateText):
            if getattr(source.content, "has_nul", False):  # a UTF8 (literal8) part
                raise CommandFailed("A CATENATE part contains a NUL octet", codes.CANNOT)
            text = source.content.staged
            text.finish()
            staged.write(text.read())
            continue
        view, data = source
        if isinstance(data, bytes):
            staged.write(without_nul(data))
        elif data is not None:
            with view.mailbox.open_file(view.record.uid) as file:
                file.seek(data[0])
                left = data[1] - data[0]
                while left > 0:
                    chunk = file.read(min(_COPY_CHUNK, left))
                    if not chunk:
                        break
                    left -= len(chunk)
                    staged.write(without_nul(chunk))
