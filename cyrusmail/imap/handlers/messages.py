"""FETCH, STORE, COPY, MOVE (RFC 6851), SEARCH, in plain and UID forms, and CANCELUPDATE.

Rendering FETCH items and matching SEARCH keys are the business of
:mod:`cyrusmail.imap.fetch` and :mod:`cyrusmail.imap.search`; this module
resolves the message set against the session's map, asks the store, and
streams the answer.  Messages another session expunged but this one has
not been told about (ghosts) are answered per RFC 2180 4.1.2 / 4.2.1: the
others are served and the tagged reply is ``OK [EXPUNGEISSUED]`` for FETCH
and STORE (as Dovecot; a NO reads as a failed command to clients and
imaptest, though the rest was done), ``NO [EXPUNGEISSUED]`` for COPY and
MOVE, which do nothing then (RFC 2180 4.4.1).
"""

from __future__ import annotations

from collections.abc import Iterator

from twisted.internet import defer

from cyrusmail.imap import codes, contexts
from cyrusmail.imap import commands as c
from cyrusmail.imap.codes import CommandFailed, Reply
from cyrusmail.imap.esearch import Returns, esearch_line, saved_positions
from cyrusmail.imap.flags import BadFlag, split_flags
from cyrusmail.imap.handlers.append import uids_shown
from cyrusmail.imap.handlers.select import writable
from cyrusmail.imap.naming import open_target
from cyrusmail.imap.output import FileRange
from cyrusmail.imap.qresync import range_lines, vanished_ranges
from cyrusmail.imap.sequence import SequenceSet
from cyrusmail.slices import Steps
from cyrusmail.store.errors import NoSuchMessage
from cyrusmail.store.records import Flag, FlagChange

BATCH = 200
_EXPUNGED = Reply("NO", "Some of the requested messages no longer exist", codes.EXPUNGEISSUED)
_PARTLY_EXPUNGED = Reply("OK", "Some of the requested messages no longer exist", codes.EXPUNGEISSUED)
_PARTLY_SEARCHED = Reply(code=codes.EXPUNGEISSUED)
_MODSEQ = c.FetchAttribute("MODSEQ")
_UID = c.FetchAttribute("UID")
_CHANGES = {"replace": FlagChange.REPLACE, "add": FlagChange.ADD, "remove": FlagChange.REMOVE}


def _batches(uids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(uids), BATCH):
        yield uids[start:start + BATCH]


# -- FETCH ---------------------------------------------------------------------


def fetch(session, command: c.Fetch) -> defer.Deferred:
    from cyrusmail.imap import fetch as rendering

    view = session.state.view
    if command.vanished and "QRESYNC" not in session.enabled:
        raise codes.bad("VANISHED needs ENABLE QRESYNC first")
    uids = view.resolve(command.sequence_set, command.uid)
    items = command.items
    if command.changedsince is not None:
        # CHANGEDSINCE implies MODSEQ (RFC 7162 3.1.4.1), and its answers carry UID (3.1); repeats are dropped
        items = (_UID, *items, _MODSEQ)
    if _MODSEQ in items:
        session.enable("CONDSTORE")
    try:
        plan = rendering.plan_fetch(items, command.uid)
        if plan.sets_seen and view.condstore and not view.read_only:
            # RFC 7162 3.1: a FETCH that sets \Seen tells UID and MODSEQ
            plan = rendering.plan_fetch((_UID, *items, _MODSEQ), command.uid)
    except rendering.FetchError as error:
        raise CommandFailed(str(error), getattr(error, "code", None) or codes.CLIENTBUG) from None
    if plan.sets_seen and not view.read_only and uids and view.mailbox.flag_mask & Flag.SEEN:
        # Only with the "s" right; without it the message is read, unmarked (RFC 4314 4).
        marked = view.mailbox.set_flags_async(uids, FlagChange.ADD, Flag.SEEN)
        return marked.addCallback(lambda result: _fetch(session, command, view, uids, plan, result[0]))
    return _fetch(session, command, view, uids, plan, [])


def _fetch(session, command: c.Fetch, view, uids: list[int], plan, newly_seen: list) -> defer.Deferred:
    from cyrusmail.imap import fetch as rendering

    if command.vanished:
        for line in _vanished_earlier(view, command.sequence_set, command.changedsince):
            session.write(line)
    missing = [0]
    failure: list[Exception] = []

    shows_flags = any(_shows_flags(item) for item in plan.items)

    def pieces() -> Iterator:
        for batch in _batches(uids):
            records = view.mailbox.records(batch)
            caches = view.mailbox.mime_caches(batch) if plan.needs_mime else {}
            previews = view.mailbox.previews(batch) if plan.needs_preview else {}
            if shows_flags:
                # a keyword another session set since the last poll: FLAGS names it first
                yield from view.new_keywords(keyword for record in records for keyword in record.keywords)
            if not command.uid:
                missing[0] += len(batch) - len(records)
            for record in records:
                if command.changedsince is not None and record.modseq <= command.changedsince:
                    continue
                seq = view.seq_of(record.uid)
                message = rendering.MessageView(seq, record, view.mailbox, view.is_recent(record.uid),
                                                caches.get(record.uid), previews.get(record.uid))
                try:
                    rendered = rendering.render_fetch(plan, message)
                except rendering.FetchError as error:
                    failure.append(error)
                    continue
                if len(rendered) == 1 and isinstance(rendered[0], bytes):
                    yield rendered[0]  # the common case: no literal to stream
                else:
                    yield from _stream_message(view.mailbox, record.uid, rendered, missing)
                if shows_flags:
                    view.reported([record])

    def finished(_) -> Reply | None:
        if newly_seen and not any(_shows_flags(item) for item in plan.items):
            # RFC 3501 6.4.5: the \Seen FETCH set is reported.  Said here, not
            # left to the completion's poll, which cannot see a reader's own
            # \Seen on a shared folder (kept outside the mailbox's modseq).
            for record in newly_seen:
                seq = view.seq_of(record.uid)
                if seq is not None:
                    session.write(view.fetch_flags_line(record, seq, with_uid=command.uid))
            view.reported(newly_seen)
        refusals = [error for error in failure if getattr(error, "code", None) != codes.EXPUNGEISSUED]
        if refusals:
            return Reply("NO", str(refusals[0]), getattr(refusals[0], "code", None) or codes.UNKNOWN_CTE)
        return _PARTLY_EXPUNGED if missing[0] or failure else None

    return session.stream(_coalesced(pieces())).addCallback(finished)


def _vanished_earlier(view, sequence_set: SequenceSet, modseq: int) -> list[bytes]:
    """UID FETCH (CHANGEDSINCE n VANISHED): ``* VANISHED (EARLIER)`` for the
    UIDs of the set expunged since ``n`` (RFC 7162 3.2.6), ``*`` being the
    highest UID ever given.  Expunges this session has yet to report as
    VANISHED are left to that report."""
    mailbox = view.mailbox
    wanted = sequence_set.resolve(max(mailbox.status().uid_next - 1, 1))
    expunged = mailbox.expunged_since(modseq)
    present = mailbox.summary().uids if expunged is None else ()
    return range_lines(vanished_ranges(expunged, wanted, present, exclude=view.ghosts), earlier=True)


def _coalesced(pieces: Iterator, limit: int = 64 * 1024) -> Iterator:
    """Small responses joined into writes of up to ``limit`` bytes (one per message is costly)."""
    buffer = bytearray()
    for piece in pieces:
        if isinstance(piece, (bytes, bytearray)):
            buffer += piece
            if len(buffer) >= limit:
                yield bytes(buffer)
                buffer.clear()
            continue
        if buffer:
            yield bytes(buffer)
            buffer.clear()
        yield piece
    if buffer:
        yield bytes(buffer)


def _shows_flags(item) -> bool:
    return isinstance(item, c.FetchAttribute) and item.attribute == "FLAGS"


def _stream_message(mailbox, uid: int, rendered: list, missing: list[int]) -> Iterator:
    """The pieces of one FETCH response; the file is opened before the first
    byte goes out, so an expunge in between drops the whole message.  Only a
    literal8 may carry a NUL octet; every other file range is read NUL-free.
    A BINARY part is decoded chunk by chunk as the client reads it."""
    from cyrusmail.imap.fetch import DecodedSlice, NulFree, stream_decoded

    if all(isinstance(piece, (bytes, bytearray)) for piece in rendered):
        yield b"".join(rendered)
        return
    try:
        source = mailbox.open_file(uid)
    except (OSError, NoSuchMessage):
        missing[0] += 1
        return
    with source:
        for piece in rendered:
            if isinstance(piece, (bytes, bytearray)):
                yield piece
            elif isinstance(piece, DecodedSlice):
                yield from stream_decoded(source, piece)
            else:
                yield FileRange(source if piece.binary else NulFree(source), piece.start, piece.end)


# -- STORE ---------------------------------------------------------------------


def store(session, command: c.Store) -> defer.Deferred:
    view = session.state.view
    writable(view)
    try:
        bits, keywords = split_flags(command.flags)
    except BadFlag as error:
        raise codes.bad(str(error)) from None
    if command.mode != "remove" and not view.keyword_room(keywords):
        raise CommandFailed("Too many distinct keywords in this mailbox", codes.LIMIT)
    uids = view.resolve(command.sequence_set, command.uid)
    if command.unchangedsince is not None:
        session.enable("CONDSTORE")
    live = [uid for uid in uids if uid not in view.ghosts]
    changing = view.mailbox.set_flags_async(live, _CHANGES[command.mode], bits, keywords, command.unchangedsince)
    return changing.addCallback(lambda result: _stored(session, view, command, uids, live, keywords, *result))


def _stored(session, view, command: c.Store, uids: list[int], live: list[int], keywords,
            changed, refused) -> Reply | None:
    """STORE's answer, once the change is durable: the FETCH responses, then the tagged reply."""
    refused_set = set(refused)
    changed_uids = {record.uid for record in changed}
    records = view.mailbox.records(live)
    view.reported(record for record in records if record.uid not in refused_set)
    if command.mode != "remove":
        for line in view.new_keywords(keywords):
            session.write(line)
    if not command.silent or view.condstore:
        for record in records:
            if record.uid in refused_set:
                continue
            seq = view.seq_of(record.uid)
            if command.silent:  # under CONDSTORE: what changed, for its new MODSEQ (RFC 7162 3.1.3, example 3)
                if record.uid in changed_uids:
                    session.write(b"* %d FETCH (UID %d MODSEQ (%d))\r\n" % (seq, record.uid, record.modseq))
                continue
            session.write(view.fetch_flags_line(record, seq, with_uid=command.uid))
    gone = len(uids) - len(records) if not command.uid else 0
    if refused:
        numbers = refused if command.uid else [view.seq_of(uid) for uid in refused]
        return Reply(code=f"{codes.MODIFIED} {SequenceSet.from_numbers(numbers)}", text="Conditional STORE failed")
    return _PARTLY_EXPUNGED if gone else None


# -- COPY / MOVE -----------------------------------------------------------------


def _target(session, wire_name: str):
    return open_target(session.state.account.mailboxes, wire_name)


def _copyuid(target, pairs: list[tuple[int, int]]) -> str:
    sources = SequenceSet.from_numbers(old for old, _ in pairs)
    # RFC 4315: the two sets correspond in order; both ascend here.
    destinations = SequenceSet.from_numbers(new for _, new in pairs)
    return f"{codes.COPYUID} {target.uid_validity} {sources} {destinations}"


def copy(session, command: c.Copy) -> Reply | defer.Deferred:
    view = session.state.view
    uids = view.resolve(command.sequence_set, command.uid)
    target = _target(session, command.mailbox)
    if any(uid in view.ghosts for uid in uids):
        return _EXPUNGED  # COPY is all or nothing (RFC 2180 4.4.1)

    def copied(pairs: list[tuple[int, int]]) -> Reply | None:
        if not pairs:
            return Reply(text="No messages copied")
        if not uids_shown(session, target):
            return None
        return Reply(code=_copyuid(target, pairs))

    return view.mailbox.copy_async(uids, target).addCallback(copied)


def move(session, command: c.Move) -> defer.Deferred:
    view = session.state.view
    writable(view)
    uids = view.resolve(command.sequence_set, command.uid)
    target = _target(session, command.mailbox)
    live = [uid for uid in uids if uid not in view.ghosts]

    def moved(pairs: list[tuple[int, int]]) -> None:
        if pairs and uids_shown(session, target):
            # RFC 6851: COPYUID before the EXPUNGEs, which the completion sends.
            session.untagged(f"OK [{_copyuid(target, pairs)}] Moved")

    return view.mailbox.move_async(live, target).addCallback(moved)


# -- SEARCH ----------------------------------------------------------------------


def search(session, command: c.Search) -> defer.Deferred:
    """The matches are found in slices (:meth:`IMAPServer.run_in_slices`): other
    sessions are served while the message files are read.  A message expunged
    meanwhile is not reported, though the client is told of the expunge only
    by a later command (never an EXPUNGE during SEARCH).

    With RETURN, and always once IMAP4rev2 is enabled (RFC 9051 6.4.4), the
    answer is an ESEARCH response (:mod:`cyrusmail.imap.esearch`);
    SAVE keeps the result as ``$`` (a NO empties it, a BAD leaves it), UPDATE
    keeps a search context (:mod:`cyrusmail.imap.contexts`)."""
    return searching(session, command, _search)


def searching(session, command: c.Search | c.Sort, run) -> defer.Deferred:
    """``run(session, view, command)`` with the rules of RETURN around it:
    UPDATE with a tag a context already has is BAD (RFC 5267 4.3); with
    SAVE, an answer NO leaves ``$`` empty, one BAD leaves it as it was
    (RFC 5182 2.1)."""
    view = session.state.view
    returns = command.return_options or ()
    if "UPDATE" in returns and command.tag in view.contexts:
        raise codes.bad(f"Tag {command.tag} already names a search context")
    result = defer.maybeDeferred(run, session, view, command)
    if "SAVE" in returns:
        def forget(failure):
            if codes.reply_for(failure.value).status == "NO":
                view.saved = []
            return failure

        result.addErrback(forget)
    return result


def _search(session, view, command: c.Search) -> defer.Deferred:
    if command.charset is not None and "UTF8=ACCEPT" in session.enabled:
        # RFC 6855 3 (and its erratum 4029): every string is UTF-8 now, so a label conflicts.
        # (IMAP4rev2 assumes UTF-8 too, but lets a client say CHARSET UTF-8: RFC 9051 6.4.4.)
        raise codes.bad("SEARCH CHARSET is not allowed once UTF8=ACCEPT is enabled")
    check_charset(command.charset)
    if uses_modseq(command.criteria):
        session.enable("CONDSTORE")  # a CONDSTORE enabling command, even with no match (RFC 7162 3.1)
    seqs = view.seqs()
    start_modseq = view.highest_modseq
    steps = matches(view, command.criteria, seqs, now=session.reactor.seconds())
    return_options = command.return_options
    if return_options is None and session.rev2:
        return_options = ()  # RFC 9051 6.4.4: an ESEARCH response, ALL when nothing else is asked

    def report(found: list) -> Reply | None:
        gone = expunged_meanwhile(view)
        if gone:
            found = [record for record in found if record.uid not in gone]
        # Messages the client still sees but another session expunged are in no
        # result, whatever they matched: the tagged OK says so (as Dovecot).
        partly = _PARTLY_SEARCHED if gone or view.ghosts else None
        with_modseq = uses_modseq(command.criteria)
        if return_options is None:
            numbers = [record.uid if command.uid else seqs[record.uid] for record in found]
            line = "SEARCH" + "".join(f" {number}" for number in numbers)
            if found and with_modseq:
                line += f" (MODSEQ {max(record.modseq for record in found)})"
            session.untagged(line)
            return partly
        returns = Returns.of(return_options, command.partial)
        numbers = [record.uid if command.uid else seqs[record.uid] for record in found]
        modseqs = [record.modseq for record in found] if with_modseq else None
        line = esearch_line(command.tag, command.uid, returns, numbers, modseqs)
        if line is not None:
            session.write(line)
        if "SAVE" in returns.options:
            view.saved = [found[position].uid for position in saved_positions(returns, len(found))]
        if "UPDATE" in returns.options:
            keep_context(session, view, contexts.SearchContext(
                command.tag, command.uid, command.criteria, {record.uid for record in found}, start_modseq))
        return partly

    return session.run_in_slices(steps).addCallback(report)


def keep_context(session, view, context: contexts.SearchContext) -> None:
    """RFC 5267 4.3: keep the search (or sort) updated, its criteria frozen, or
    say ``NO [NOUPDATE]`` why not."""
    if len(view.contexts) >= contexts.MAX_CONTEXTS:
        session.untagged(f'NO [{codes.NOUPDATE} "{context.tag}"] Too many search contexts')
        return
    if not contexts.updatable(context.criteria):
        session.untagged(f'NO [{codes.NOUPDATE} "{context.tag}"] OLDER and YOUNGER change with time')
        return
    context.criteria = contexts.freeze(context.criteria, view)
    view.contexts[context.tag] = context


def cancelupdate(session, command: c.CancelUpdate) -> Reply:
    """RFC 5267 4.3.5; an unknown tag cancels nothing."""
    view = session.state.view
    unknown = [tag for tag in command.tags if tag not in view.contexts]
    if unknown:
        raise CommandFailed(f"No search context has the tag {unknown[0]}", codes.CLIENTBUG)
    for tag in command.tags:
        del view.contexts[tag]
    return Reply(text="Updates cancelled")


def check_charset(charset: str | None) -> None:
    """SEARCH, SORT and THREAD know UTF-8 and US-ASCII: ``NO [BADCHARSET]`` for others."""
    from cyrusmail.imap import search as matching

    try:
        matching.check_charset(charset)
    except matching.BadCharset:
        raise CommandFailed("Unsupported charset", f"{codes.BADCHARSET} (UTF-8 US-ASCII)") from None


def matches(view, criteria, seqs: dict[int, int], now: float | None = None) -> Steps[list]:
    """The records of the session's view that match ``criteria``, ascending, as
    work for :meth:`IMAPServer.run_in_slices`; ``seqs`` is ``view.seqs()``,
    ``now`` the time OLDER and YOUNGER count from (default: the clock)."""
    from cyrusmail.imap import search as matching

    # Only what the client knows of: not messages it has not been told exist yet.
    candidates = matching.header_candidates(criteria, view.mailbox)
    if candidates is None:
        records = [record for record in view.mailbox.messages() if record.uid in seqs]
    else:  # the index already ruled most messages out: read only the rest
        records = view.mailbox.records(sorted(uid for uid in candidates if uid in seqs))
    return matching.search(criteria, view.mailbox, records, seqs, view.recent,
                           highest_uid=view.uids[-1] if view.uids else 0, saved=view.saved, now=now)


def matching_uids(view, criteria, seqs: dict[int, int], now: float | None = None) -> Steps[list[int]]:
    """The UIDs of :func:`matches`, found without the search when it is ALL."""
    if isinstance(criteria, c.SearchAll):
        yield 0
        return list(seqs)  # the view's UIDs, ascending
    found = yield from matches(view, criteria, seqs, now)
    return [record.uid for record in found]


def expunged_meanwhile(view) -> set[int]:
    """The UIDs another session expunged since this one was last told (while work ran)."""
    return view.expunged_since_poll()


def uses_modseq(key) -> bool:
    if isinstance(key, c.SearchModSeq):
        return True
    children = ()
    if isinstance(key, c.SearchAnd):
        children = key.keys
    elif isinstance(key, c.SearchOr):
        children = (key.left, key.right)
    elif isinstance(key, c.SearchNot):
        children = (key.key,)
    return any(uses_modseq(child) for child in children)
