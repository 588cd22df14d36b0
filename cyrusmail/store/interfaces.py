"""The store's two interfaces: naming and hierarchy apart from messages.

``IMailboxList`` is one user's tree of mailbox names (Dovecot's
``mailbox_list``); ``IMailbox`` is one mailbox's messages (its
``mail_storage``). ``IStore`` hands out both for any user. Every backend
passes the conformance suite in ``tests/store_conformance.py``.

The API speaks no protocol: names are Unicode strings with ``/`` as the
hierarchy separator and ``INBOX`` matched case-insensitively; flags are
:class:`~cyrusmail.store.records.Flag` bits plus keyword strings.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IStore(Interface):
    """Every user's mail under one data folder."""

    def mailboxes(user: str) -> IMailboxList:
        """The mailbox tree of ``user`` (whose INBOX exists once provisioned).

        For a user never provisioned (or removed): an empty tree that makes
        nothing (its changes raise UnknownUser). Only provision() makes a tree.
        """

    def provision(user: str, special_uses: dict) -> None:
        """Create ``user``'s tree if needed, INBOX and the special-use folders (name -> use)."""

    def provisioned(user: str, special_uses: dict) -> bool:
        """Whether ``user``'s tree already holds INBOX and those folders (provision would make nothing).

        Makes nothing, so a caller needs no lock against a racing user deletion.
        """

    def remove_user(user: str) -> None:
        """Delete every mailbox and message of ``user``."""

    def stage() -> IStagedMessage:
        """A writer for a new message, to be appended to one or more mailboxes."""

    def poll_watched() -> int:
        """Call the watchers (``IMailbox.watch``) of mailboxes that may have been
        changed by another process since the last call; how many looks it took."""

    def close() -> None:
        """Release every index handle."""


class IStagedMessage(Interface):
    """A message being received: written once, appended anywhere after."""

    size = Attribute("Octets written so far.")

    def write(data: bytes) -> None:
        """Add bytes to the message."""

    def finish() -> None:
        """Make the bytes durable; after this only append() uses it."""

    def discard() -> None:
        """Forget the message (idempotent)."""

    def read() -> bytes:
        """The whole message (for parsing); only after finish()."""


class IMailboxList(Interface):
    """One user's mailbox names, hierarchy and subscriptions."""

    separator = Attribute("The hierarchy separator, always '/'.")
    user = Attribute("The owner's user name.")

    def create(name: str, special_use: str | None = None) -> str:
        """Create ``name`` and any missing superiors; its MAILBOXID (RFC 8474), new every time."""

    def delete(name: str) -> None:
        """Delete ``name``; one with children becomes a \\Noselect node."""

    def rename(old: str, new: str) -> None:
        """Rename with all children; INBOX moves its messages, stays empty."""

    def exists(name: str) -> bool:
        """True for a selectable mailbox or a \\Noselect node."""

    def list(pattern: str) -> list:
        """MailboxListing for every name matching ``*``/``%`` pattern."""

    def open(name: str) -> IMailbox:
        """The mailbox ``name`` (MailboxNotFound, NotSelectable)."""

    def status(name: str):
        """MailboxStatus of ``name`` from the index alone."""

    def statuses(names, deleted: bool = False) -> dict:
        """name -> MailboxStatus (with object_id) of those ``names`` that are selectable
        mailboxes, in one read; ``deleted`` counts \\Deleted messages too."""

    def subscribe(name: str) -> None:
        """Add ``name`` to the subscriptions (it need not exist)."""

    def unsubscribe(name: str) -> None:
        """Remove ``name`` from the subscriptions."""

    def subscriptions() -> list:
        """Every subscribed name."""

    def special_use(name: str):
        """The special use of ``name`` or None."""


class IMailbox(Interface):
    """One mailbox's messages, by UID."""

    name = Attribute("The mailbox's current name.")
    uid_validity = Attribute("Fixed for the mailbox's life.")
    object_id = Attribute("Its MAILBOXID (RFC 8474): kept across renames, never given to another mailbox.")

    def status():
        """MailboxStatus from the index."""

    def messages() -> list:
        """Every MessageRecord, ascending UID."""

    def summary():
        """MailboxSummary: UIDs, modseqs, keywords in use, first unseen UID."""

    def record(uid: int):
        """The MessageRecord of ``uid`` (NoSuchMessage)."""

    def append(message, flags=None, keywords=(), internal_date: float | None = None) -> int:
        """Add a message (bytes or a finished IStagedMessage); its UID once durable."""

    def append_many(items: list) -> list:
        """Append (message, flags, keywords, date) items atomically; their UIDs."""

    def read(uid: int, start: int = 0, end: int | None = None) -> bytes:
        """The message's bytes, or the range [start, end)."""

    def open_file(uid: int):
        """A binary file object of the message, for streaming."""

    def mime_cache(uid: int) -> bytes | None:
        """The parse result cached at delivery."""

    def mime_caches(uids) -> dict:
        """UID -> cached parse result, for those of ``uids`` that have one."""

    def sort_rows(uids, columns) -> list:
        """``(uid, *values)`` of SORT and THREAD keys (SortData field names, plus
        ``internal_date``, ``size`` and ``date``: sent, else internal) for those of
        ``uids`` still present, ascending UID."""

    def previews(uids) -> dict:
        """UID -> RFC 8970 preview text, made once per message and kept."""

    def cache_may_contain(all_of: list, any_of: list = ()) -> set:
        """UIDs whose cache holds all of ``all_of`` or any of ``any_of`` (ASCII, any case),
        or that have no cache."""

    def set_flags(uids, change, flags, keywords=(), unchanged_since: int | None = None):
        """Change flags of the given UIDs; (changed records, UIDs refused by unchanged_since)."""

    def copy(uids, target: IMailbox) -> list:
        """Copy to ``target`` keeping flags and dates; [(old uid, new uid)]."""

    def move(uids, target: IMailbox) -> list:
        """Copy then expunge here; [(old uid, new uid)]."""

    def expunge(uids=None) -> list:
        """Remove \\Deleted messages (only among ``uids`` if given); their UIDs."""

    def append_many_async(items: list):
        """append_many() off the calling thread: a Deferred of the UIDs, fired once they are durable."""

    def set_flags_async(uids, change, flags, keywords=(), unchanged_since: int | None = None):
        """set_flags() off the calling thread: a Deferred of its result, fired once durable."""

    def copy_async(uids, target: IMailbox):
        """copy() off the calling thread: a Deferred of its pairs, fired once durable."""

    def move_async(uids, target: IMailbox):
        """move() off the calling thread: a Deferred of its pairs, fired once durable."""

    def expunge_async(uids=None):
        """expunge() off the calling thread: a Deferred of the UIDs, fired once durable."""

    def changes_since(modseq: int):
        """Changes made since ``modseq`` by anyone, in this process or another."""

    def generation():
        """A value that differs from an earlier one whenever anything may have
        changed since (it may differ when nothing did); cheaper than
        ``changes_since``, so a poll can skip the look when it is equal."""

    def expunged_since(modseq: int):
        """UIDs expunged after ``modseq`` (ascending), or None if the store's
        history of expunges no longer reaches back that far."""

    def claim_recent() -> frozenset:
        """UIDs that are recent for the caller: each new UID is claimed once."""

    def watch(listener) -> None:
        """Call ``listener()`` after every change made in this process, and when
        ``IStore.poll_watched`` finds the mailbox's owner changed by another."""

    def unwatch(listener) -> None:
        """Stop calling ``listener``."""
