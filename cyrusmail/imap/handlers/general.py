"""CAPABILITY, NOOP, LOGOUT, ID (RFC 2971), ENABLE (RFC 5161, RFC 9051 6.3.1), NAMESPACE (RFC 2342).

Both IMAP4rev1 and IMAP4rev2 are advertised, so a session speaks RFC 3501
until ``ENABLE IMAP4rev2`` (RFC 9051 Appendix A, 7.2.2).  From then on:
no \\Recent (no RECENT responses, no \\Recent in FLAGS, and the session
claims no message as recent, so IMAP4rev1 sessions still see them so; the
search keys RECENT, NEW and OLD and STATUS RECENT are BAD), SEARCH answers
with ESEARCH as ``RETURN ()`` would, SELECT and EXAMINE say the mailbox's
LIST line and no ``[UNSEEN n]``, every unsolicited FETCH carries UID,
mailbox names are UTF-8 both ways (as after UTF8=ACCEPT, whose APPEND
``UTF8`` data and SEARCH CHARSET rule stay its own), a name created in
UTF-8 must be in Unicode Normalization Form C, LARGER, SMALLER and
partial offsets are 63-bit, and APPENDUID and COPYUID are not said for a
mailbox the user may not read.  Like UTF8=ACCEPT it may be enabled only
before a mailbox is selected.
"""

from __future__ import annotations

from cyrusmail.imap import codes
from cyrusmail.imap.codes import Reply
from cyrusmail.imap.naming import to_wire
from cyrusmail.imap.state import LoggedOut, Selected
from cyrusmail.imapform import nstring, string

UTF8_ACCEPT = "UTF8=ACCEPT"
IMAP4REV2 = "IMAP4rev2"

#: What ENABLE turns on, by the upper-cased name a client sends, as ENABLED spells it.
ENABLEABLE = {"CONDSTORE": "CONDSTORE", "QRESYNC": "QRESYNC", UTF8_ACCEPT: UTF8_ACCEPT, "IMAP4REV2": IMAP4REV2}
#: What changes how names are read and written, so only before a mailbox is selected.
_BEFORE_SELECT = (UTF8_ACCEPT, IMAP4REV2)


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
    asked = [ENABLEABLE[name] for name in dict.fromkeys(command.capabilities) if name in ENABLEABLE]
    if isinstance(session.state, Selected):
        for name in _BEFORE_SELECT:
            if name in asked and name not in session.enabled:
                rfc = "RFC 6855 3" if name == UTF8_ACCEPT else "RFC 9051 6.3.1"
                raise codes.bad(f"{name} may be enabled only before a mailbox is selected ({rfc})")
    turned_on = session.enable(*asked)
    if UTF8_ACCEPT in turned_on:
        session.parser.utf8 = True  # the next command's mailbox names are UTF-8
    if IMAP4REV2 in turned_on:
        session.parser.rev2 = True  # and its grammar is RFC 9051's
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
