"""CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST (RFC 5258/6154), LSUB, STATUS."""

from __future__ import annotations

import dataclasses

from cyrusmail.imap import codes
from cyrusmail.imap.codes import CommandFailed, Reply
from cyrusmail.imap.naming import (
    from_wire,
    new_name_from_wire,
    pattern_from_wire,
    to_wire,
)
from cyrusmail.imap.state import Selected
from cyrusmail.store import names
from cyrusmail.store.records import SPECIAL_USES, Flag, MailboxAttribute

_ATTRIBUTES = {
    MailboxAttribute.NOSELECT: "\\Noselect",
    MailboxAttribute.HAS_CHILDREN: "\\HasChildren",
    MailboxAttribute.HAS_NO_CHILDREN: "\\HasNoChildren",
    MailboxAttribute.SUBSCRIBED: "\\Subscribed",
}


def _special_use_attribute(use: str | None) -> list[str]:
    return [f"\\{use.capitalize()}"] if use else []


def create(session, command) -> Reply:
    name = new_name_from_wire(command.mailbox, session.utf8)
    uses = [use.lstrip("\\").lower() for use in command.special_use]
    if any(use not in SPECIAL_USES for use in uses) or len(uses) > 1:
        raise CommandFailed("Unsupported special-use attribute", codes.USEATTR)
    object_id = session.state.account.mailboxes.create(name, special_use=uses[0] if uses else None)
    return Reply(code=f"{codes.MAILBOXID} ({object_id})", text="CREATE completed")


def delete(session, command) -> None:
    name = from_wire(command.mailbox)
    session.state.account.mailboxes.delete(name)
    state = session.state
    if isinstance(state, Selected) and state.view.mailbox.name == name:
        session.leave_mailbox()
        session.untagged("OK [CLOSED] Selected mailbox deleted")


def rename(session, command) -> None:
    session.state.account.mailboxes.rename(from_wire(command.mailbox),
                                           new_name_from_wire(command.new_name, session.utf8))


def subscribe(session, command) -> None:
    name = from_wire(command.mailbox)
    if not session.state.account.mailboxes.exists(name):
        raise CommandFailed(f"Mailbox {name} does not exist", codes.NONEXISTENT)
    session.state.account.mailboxes.subscribe(name)


def unsubscribe(session, command) -> None:
    session.state.account.mailboxes.unsubscribe(from_wire(command.mailbox))


def _list_line(kind: str, attributes: list[str], name: str, utf8: bool = False) -> bytes:
    return b"%s (%s) \"/\" %s" % (kind.encode(), " ".join(attributes).encode(), to_wire(name, utf8))


def list_(session, command) -> None:
    mailboxes = session.state.account.mailboxes
    reference = pattern_from_wire(command.reference)
    if reference is None:
        return  # not modified UTF-7: no name is under it, an empty OK
    if command.patterns == ("",) and not command.selection:
        # RFC 3501 6.3.8: the hierarchy delimiter and the root of the reference.
        root = reference.split(names.SEPARATOR, 1)[0] + names.SEPARATOR if names.SEPARATOR in reference else ""
        session.untagged(b"LIST (\\Noselect) \"/\" " + to_wire(root, session.utf8) if root else b"LIST (\\Noselect) \"/\" \"\"")
        return
    patterns = [reference + pattern for pattern in map(pattern_from_wire, command.patterns) if pattern is not None]
    subscribed_only = "SUBSCRIBED" in command.selection
    special_only = "SPECIAL-USE" in command.selection
    show_subscribed = subscribed_only or "SUBSCRIBED" in command.return_options
    subscriptions = set(mailboxes.subscriptions()) if show_subscribed else set()
    parents: set[str] = set()  # RECURSIVEMATCH: names with subscribed descendants no pattern lists
    if subscribed_only and "RECURSIVEMATCH" in command.selection:
        parents = _unmatched_parents(subscriptions, [names.pattern_regex(pattern) for pattern in patterns])
    seen: set[str] = set()
    lines: list[tuple[bytes, str | None]] = []  # each LIST line, with the name to give a STATUS for
    for pattern in patterns:
        listings = {listing.name: listing for listing in mailboxes.list(pattern)}
        if subscribed_only:  # subscribed names that no longer exist are listed too
            matcher = names.pattern_regex(pattern)
            wanted = {name for name in subscriptions | parents if matcher.match(name)}
            found = [listings.get(name) or name for name in sorted(wanted)]
        else:
            found = list(listings.values())
        for listing in found:
            name = listing if isinstance(listing, str) else listing.name
            if name in seen:
                continue
            seen.add(name)
            if isinstance(listing, str):
                attributes = ["\\NonExistent"] + (["\\Subscribed"] if name in subscriptions else [])
            else:
                if special_only and not listing.special_use:
                    continue
                attributes = _attributes(listing, show_subscribed)
            line = _list_line("LIST", attributes, name, session.utf8)
            if name in parents:
                line += b' (CHILDINFO ("SUBSCRIBED"))'
            selectable = not isinstance(listing, str) and MailboxAttribute.NOSELECT not in listing.attributes
            lines.append((line, name if selectable else None))
    # RFC 5819: a STATUS after the LIST line of each selectable mailbox the user may read (r),
    # all read from the index at once.
    counts = mailboxes.statuses([name for _, name in lines if name is not None], "DELETED" in command.return_status) \
        if command.return_status else {}
    for line, name in lines:
        session.untagged(line)
        if name in counts:
            session.untagged(_status_response(session, name, counts[name], command.return_status))


def _attributes(listing, show_subscribed: bool = False) -> list[str]:
    """A listed mailbox's attributes as LIST writes them, ``\\Subscribed`` only when asked."""
    attributes = [
        text for flag, text in _ATTRIBUTES.items()
        if flag in listing.attributes and (flag is not MailboxAttribute.SUBSCRIBED or show_subscribed)
    ]
    return attributes + _special_use_attribute(listing.special_use)


def list_line(session, name: str) -> bytes:
    """``LIST (attributes) "/" name`` for one mailbox, as ``LIST "" name`` would
    write it: the line RFC 9051 6.3.2 has SELECT send.  A mailbox LIST does not
    show (read but not looked up, ``r`` without ``l``) gets no attributes."""
    for listing in session.state.account.mailboxes.list(name):
        if listing.name == name:  # a name holding "%" or "*" matched others too
            return _list_line("LIST", _attributes(listing), name, session.utf8)
    return _list_line("LIST", [], name, session.utf8)


def _unmatched_parents(subscriptions: set[str], matchers: list) -> set[str]:
    """Superiors some pattern matches of subscribed names no pattern matches.

    RFC 5258 3.5: those get CHILDINFO. A superior whose matching
    descendants are all listed themselves (``*`` patterns, or a second
    pattern naming the child) gets none: it would only repeat them.
    """
    def listed(name: str) -> bool:
        return any(matcher.match(name) for matcher in matchers)

    return {
        superior
        for name in subscriptions if not listed(name)
        for superior in names.superiors(name) if listed(superior)
    }


def lsub(session, command) -> None:
    """Subscribed names matching the pattern.  Where a ``%`` stops at a level
    above a subscribed name, that level is listed as ``\\Noselect`` unless
    itself subscribed (RFC 3501 6.3.9: ``foo/bar`` subscribed, ``LSUB "" %``
    answers ``foo``)."""
    mailboxes = session.state.account.mailboxes
    reference, pattern = pattern_from_wire(command.reference), pattern_from_wire(command.pattern)
    if reference is None or pattern is None:
        return  # not modified UTF-7: it matches no name
    pattern = reference + pattern
    if pattern == "":
        return  # only LIST answers an empty pattern with the delimiter
    matcher = names.pattern_regex(pattern)
    through = names.pattern_regex(pattern.replace("%", "*")) if "%" in pattern else None
    subscribed = mailboxes.subscriptions()
    listed: set[str] = set()
    for name in subscribed:
        if matcher.match(name):
            attributes = [] if mailboxes.exists(name) else ["\\Noselect"]
            session.untagged(_list_line("LSUB", attributes, name, session.utf8))
            listed.add(name)
    if through is None:
        return
    wanted = set(subscribed)
    for name in subscribed:
        if not through.match(name):
            continue
        for superior in names.superiors(name):
            if superior not in wanted and superior not in listed and matcher.match(superior):
                session.untagged(_list_line("LSUB", ["\\Noselect"], superior, session.utf8))
                listed.add(superior)


def _status_response(session, name: str, counts, items: tuple[str, ...]) -> bytes:
    """``STATUS name (item value ...)`` from a MailboxStatus (with its object_id, and
    deleted when DELETED is asked)."""
    if "HIGHESTMODSEQ" in items:
        session.enable("CONDSTORE")  # a CONDSTORE enabling command (RFC 7162 3.1)
    values = {
        "MESSAGES": counts.messages,
        "RECENT": counts.recent + _recent_here(session, name),
        "UIDNEXT": counts.uid_next,
        "UIDVALIDITY": counts.uid_validity,
        "UNSEEN": counts.unseen,
        "HIGHESTMODSEQ": counts.highest_modseq,
        "SIZE": counts.size,
        "DELETED": counts.deleted,
        "APPENDLIMIT": session.context.config["server"]["max_message_size"],
        "MAILBOXID": f"({counts.object_id})",
    }
    out = []
    for item in items:
        if values.get(item) is None:
            raise codes.bad(f"STATUS {item} is not supported")
        out.append(f"{item} {values[item]}".encode())
    return b"STATUS " + to_wire(name, session.utf8) + b" (" + b" ".join(out) + b")"


def _recent_here(session, name: str) -> int:
    """The messages this session holds as \\Recent in ``name`` if it is the
    selected mailbox: the store counts only those nobody has claimed yet."""
    state = session.state
    if not isinstance(state, Selected) or state.view.mailbox.name != name or state.view.read_only:
        return 0
    return len(state.view.recent - state.view.ghosts)


def status(session, command) -> None:
    mailbox = session.state.account.mailboxes.open(from_wire(command.mailbox))
    counts = dataclasses.replace(mailbox.status(), object_id=mailbox.object_id)
    if "DELETED" in command.items:
        counts = dataclasses.replace(counts, deleted=sum(1 for record in mailbox.messages()
                                                         if record.flags & Flag.DELETED))
    session.untagged(_status_response(session, mailbox.name, counts, command.items))
