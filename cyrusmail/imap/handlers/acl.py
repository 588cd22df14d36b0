"""SETACL, DELETEACL, GETACL, LISTRIGHTS, MYRIGHTS (RFC 4314 section 3).

The account decides who may (``a`` for all but MYRIGHTS, any of
``l r i k x a`` for MYRIGHTS) and answers a mailbox the user may not see
as nonexistent; here the answers are written as section 3 shows them.
"""

from __future__ import annotations

from cyrusmail.imap.naming import astring, from_wire, to_wire


def setacl(session, command) -> None:
    session.state.account.set_acl(from_wire(command.mailbox), command.identifier, command.rights)


def deleteacl(session, command) -> None:
    session.state.account.delete_acl(from_wire(command.mailbox), command.identifier)


def getacl(session, command) -> None:
    """``* ACL mailbox identifier rights ...``"""
    name = from_wire(command.mailbox)
    entries = session.state.account.acl(name)
    pairs = [astring(identifier) + b" " + astring(rights) for identifier, rights in entries]
    session.untagged(b" ".join([b"ACL", to_wire(name, session.utf8), *pairs]))


def listrights(session, command) -> None:
    """``* LISTRIGHTS mailbox identifier required optional ...``"""
    name = from_wire(command.mailbox)
    required, optional = session.state.account.list_rights(name, command.identifier)
    words = [b"LISTRIGHTS", to_wire(name, session.utf8), astring(command.identifier), astring(required)]
    session.untagged(b" ".join(words + [astring(group) for group in optional]))


def myrights(session, command) -> None:
    """``* MYRIGHTS mailbox rights``"""
    name = from_wire(command.mailbox)
    rights = session.state.account.rights(name)
    session.untagged(b"MYRIGHTS " + to_wire(name, session.utf8) + b" " + astring(rights))
