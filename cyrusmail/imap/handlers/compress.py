"""COMPRESS (RFC 4978): DEFLATE both ways once the tagged OK has gone.

Valid in the authenticated and selected states (the RFC's grammar makes it
a ``command-auth``, as Dovecot and Cyrus do), so STARTTLS, a command of the
not-authenticated state, can follow it only after UNAUTHENTICATE (RFC
8437), which leaves compression on, as it leaves TLS: STARTTLS is then
refused and not offered.  TLS compression is never
negotiated (Twisted's TLS options turn it off), so the only layer that can
already compress is an earlier COMPRESS.
"""

from __future__ import annotations

from cyrusmail.imap import codes
from cyrusmail.imap.codes import CommandFailed, Reply

MECHANISMS = ("DEFLATE",)


def compress(session, command) -> Reply:
    if session.compressed:
        raise CommandFailed("DEFLATE is already active", codes.COMPRESSIONACTIVE)
    if command.mechanism not in MECHANISMS:
        raise codes.bad(f"Unknown compression mechanism {command.mechanism}")
    return Reply(text="DEFLATE active", after=session.start_compression)
