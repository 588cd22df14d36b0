"""CAPABILITY, NOOP, LOGOUT, ID (RFC 2971), ENABLE (RFC 5161), NAMESPACE (RFC 2342)."""

from __future__ import annotations

from cyrusmail.imap import codes
from cyrusmail.imap.codes import Reply
from cyrusmail.imap.naming import to_wire
from cyrusmail.imap.state import LoggedOut, Selected
from cyrusmail.imapform import nstring, string

UTF8_ACCEPT = "UTF8=ACCEPT"

ENABLEABLE = frozenset({"CONDSTORE", "QRESYNC", UTF8_ACCEPT})


def capability(session, command) -> None:
    session.untagged("CAPABILITY " + " ".join(session.capabilities()))


def noop(session, command) -> None:
    """Nothing; the session sends the mailbox's updates on completion."""


def logout(session, command) -> Reply:
    session.untagged("BYE Logging out")
    session.state = LoggedOut()
    return Reply(text="LOGOUT completed", after=session.flow.close)


def id_(session, command) -> None:
    if command.parameters is not None:
        session.client_id = dict(command.parameters[:30])
    pairs = [string("name"), string("cyrusmail"), string("vendor"), string("cyrusmail")]
    session.untagged(b"ID (" + b" ".join(pairs) + b")")


def enable(session, command) -> None:
    """RFC 5161: ``* ENABLED`` lists what this command turned on of what it named."""
    asked = [name for name in dict.fromkeys(command.capabilities) if name in ENABLEABLE]
    if UTF8_ACCEPT in asked and UTF8_ACCEPT not in session.enabled and isinstance(session.state, Selected):
        raise codes.bad("UTF8=ACCEPT may be enabled only before a mailbox is selected (RFC 6855 3)")
    turned_on = session.enable(*asked)
    if UTF8_ACCEPT in turned_on:
        session.parser.utf8 = True  # the next command's mailbox names are UTF-8
    session.untagged(" ".join(["ENABLED", *turned_on]))


def namespace(session, command) -> None:
    """``* NAMESPACE personal other shared`` from the account (RFC 2342).

    Prefixes end in the separator, as RFC 2342's examples and Cyrus; LIST
    shows the prefix without it (``Other Users``) as a \\Noselect node.
    """
    groups = [_namespace_group(group, session.utf8) for group in session.state.account.namespaces()]
    session.untagged(b" ".join([b"NAMESPACE", *groups]))


def _namespace_group(namespaces: list[tuple[str, str]], utf8: bool) -> bytes:
    if not namespaces:
        return b"NIL"
    return b"(" + b"".join(b"(" + to_wire(prefix, utf8) + b" " + nstring(separator) + b")"
                           for prefix, separator in namespaces) + b")"
