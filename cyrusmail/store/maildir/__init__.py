"""The embedded store: one immutable file per message plus a SQLite index.

Layout under the data folder::

    tmp/                         messages being received (same filesystem)
    users/<user>/index.sqlite    the user's index (WAL mode)
    users/<user>/mail/<id>/      one folder per mailbox, named by id only
        mailbox.json             name and UIDVALIDITY, for reconstruct
        <uid>.<guid>             one file per message, never changed
"""

from cyrusmail.store.maildir.store import MaildirStore

__all__ = ["MaildirStore"]
