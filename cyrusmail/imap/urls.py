"""RFC 5092 IMAP URLs naming one message or a part of it, as CATENATE takes them.

Three forms are read (RFC 4469 5 lets a URL be relative):

* ``imap://[user[;AUTH=...]@]host[:port]/mailbox[;UIDVALIDITY=v]/;UID=n[...]``;
* ``/mailbox[;UIDVALIDITY=v]/;UID=n[...]``, on this server;
* ``;UID=n[...]``, in the selected mailbox;

each optionally followed by ``/;SECTION=spec`` and ``/;PARTIAL=origin[.length]``
(RFC 5550).  The mailbox name is percent-encoded UTF-8 (RFC 5092 3.2) and
keywords are matched in any case.  Whether the server, user, mailbox and
message are ones the session may read is the session's business; this only
reads the text, and raises :class:`BadUrl` for anything else (URLAUTH,
message lists, a search).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field

from cyrusmail.imap.commands import Section
from cyrusmail.imap.wire import parse_section

_MESSAGE = re.compile(
    r"(?:(?P<mailbox>[^;]+?)(?:;UIDVALIDITY=(?P<uidvalidity>[1-9][0-9]{0,9}))?/)?"
    r";UID=(?P<uid>[1-9][0-9]{0,9})"
    r"(?:/;SECTION=(?P<section>[^/;]*))?"
    r"(?:/;PARTIAL=(?P<origin>[0-9]{1,10})(?:\.(?P<length>[1-9][0-9]{0,9}))?)?",
    re.IGNORECASE,
)
_SERVER = re.compile(r"(?:(?P<user>[^@;/]*)(?:;AUTH=[^@/]*)?@)?(?P<host>\[[^\]/]*\]|[^:/@\[]+)(?::(?P<port>[0-9]{1,5}))?",
                     re.IGNORECASE)
_MAX_NUMBER = 4294967295


class BadUrl(ValueError):
    """Not an IMAP URL of one message (or part) this server reads."""


@dataclass(frozen=True)
class MessageUrl:
    """What an IMAP URL names.  ``host`` None: this server; ``mailbox`` None: the selected one."""

    uid: int
    mailbox: str | None = None
    uid_validity: int | None = None
    section: Section = field(default_factory=Section)
    partial: tuple[int, int | None] | None = None
    host: str | None = None
    port: int | None = None
    user: str | None = None


def _unquote(text: str) -> str:
    try:
        return urllib.parse.unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise BadUrl("not UTF-8") from None


def parse(url: str) -> MessageUrl:
    """The message (part) ``url`` names; BadUrl if it is not such a URL."""
    host = port = user = None
    path = url
    if url[:7].lower() == "imap://":
        server = _SERVER.match(url, 7)
        if server is None or not url.startswith("/", server.end()):
            raise BadUrl("expected imap://server/mailbox")
        host = _unquote(server.group("host")).lower()
        port = int(server.group("port")) if server.group("port") else None
        user = _unquote(server.group("user")) if server.group("user") else None
        path = url[server.end():]
    if path.startswith("/"):
        path = path[1:]
        if path.startswith(";"):
            raise BadUrl("expected a mailbox name")
    elif path[:5].upper() != ";UID=":
        raise BadUrl("expected an IMAP URL")
    found = _MESSAGE.fullmatch(path)
    if found is None:
        raise BadUrl("expected one message: MAILBOX/;UID=n[/;SECTION=s][/;PARTIAL=o.l]")
    mailbox = _unquote(found.group("mailbox")) if found.group("mailbox") else None
    section = Section()
    if found.group("section") is not None:
        try:
            section = parse_section(_unquote(found.group("section")).encode("utf-8"))
        except ValueError as error:
            raise BadUrl(f"bad section: {error}") from None
    partial = None
    if found.group("origin") is not None:
        length = int(found.group("length")) if found.group("length") else None
        partial = (int(found.group("origin")), length)
    numbers = [int(found.group(name)) for name in ("uid", "uidvalidity", "origin", "length") if found.group(name)]
    if any(number > _MAX_NUMBER for number in numbers):
        raise BadUrl("number too big")
    uid_validity = int(found.group("uidvalidity")) if found.group("uidvalidity") else None
    return MessageUrl(int(found.group("uid")), mailbox, uid_validity, section, partial, host, port, user)
