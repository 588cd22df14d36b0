"""One session's view of its selected mailbox: the sequence-number map.

Each session builds its own map at SELECT from ``mailbox.messages()`` and
keeps it until it tells the client otherwise.  Changes made by anyone (other
sessions, other processes, LMTP) are found with ``changes_since(modseq)``
and turned into untagged responses by :meth:`SelectedMailbox.poll`:

* new messages: appended to the map, ``* n EXISTS`` and ``* n RECENT``
  (a read-write view claims them as recent with ``claim_recent()``, so
  exactly one session sees each new message as \\Recent); an IMAP4rev2
  view (RFC 9051) says no RECENT and claims nothing, so IMAP4rev1 sessions
  still see those messages as recent;
* flag changes: ``* n FETCH (FLAGS (...))`` unless this session already
  reported that modseq itself (STORE's own FETCH responses); once CONDSTORE
  is enabled every such FETCH also carries UID and MODSEQ (RFC 7162 3.1),
  once IMAP4rev2 is, UID (RFC 9051 7.5.2);
* expunges: the UID stays in the map as a *ghost* until EXPUNGE responses
  may be sent.  The session asks with ``send_expunges=False`` after FETCH,
  STORE, SEARCH and COPY (and their UID forms), so sequence numbers never
  shift under a command that uses them (RFC 3501 section 7.4.1; we also
  hold them for the UID forms, which RFC 3501 would allow, because a
  pipelined client may mix both).  Ghosts are answered per RFC 2180 4.1.2:
  a FETCH or STORE naming one gets ``OK [EXPUNGEISSUED]`` after the other
  messages are served (COPY and MOVE ``NO [EXPUNGEISSUED]``).  Once QRESYNC is enabled the expunges are told as
  ``* VANISHED uid-set`` instead (RFC 7162 3.2.10), at the same moments,
  followed by ``* OK [HIGHESTMODSEQ n]``: a VANISHED carries no modseq, and
  without it a client would resync from before the expunge (as Dovecot does).

Should the store's expunge history not reach back to the last poll (more
than ``expunged_history`` expunges since), the expunged UIDs are found by
comparing the map with the mailbox's UID list instead.

The view also keeps what lives only while the mailbox is selected: the
saved search result ``$`` (RFC 5182), as UIDs, so an expunge simply drops
its messages, and the search contexts that send updates
(:mod:`cyrusmail.imap.contexts`, RFC 5267), whose REMOVEFROM responses for
expunged matches go out just before the EXPUNGE responses.

Memory: thousands of sessions may keep one big mailbox selected (IDLE), so
a view holds no per-message objects.  Its UID map is a compact array, and
views that know the mailbox in the same state (at the same HIGHESTMODSEQ,
no expunges held back) share one array (:class:`SharedUids`);
a view that changes its map makes its own copy.  Of modseqs it keeps only
those this session reported itself since its last poll (to tell nobody a
change twice); everything else a poll needs is above ``highest_modseq``.
"""

from __future__ import annotations

import bisect
import weakref
from array import array
from collections.abc import Iterable, Sequence

from cyrusmail.imap import codes
from cyrusmail.imap.contexts import SearchContext, expunged_lines
from cyrusmail.imap.flags import FLAG_LIST, SYSTEM_FLAGS, flags_wire
from cyrusmail.imap.qresync import vanished_lines
from cyrusmail.imap.sequence import SequenceSet
from cyrusmail.store.records import MessageRecord

#: Distinct keywords a mailbox may hold (Cyrus allows 128 user flags; we are more generous).
MAX_KEYWORDS = 1000


class SharedUids:
    """UID maps shared by the views that know a mailbox in the same state.

    A mailbox's UIDs are the same whenever its HIGHESTMODSEQ is (an append
    or expunge moves it), so a map is keyed by the mailbox (MAILBOXID and
    UIDVALIDITY) and the modseq it was read at, and kept while any view
    uses it (weakly).
    """

    def __init__(self) -> None:
        self._maps: weakref.WeakValueDictionary = weakref.WeakValueDictionary()

    def get(self, mailbox, modseq: int, uids: Sequence[int]) -> array:
        """The shared map of ``mailbox`` at ``modseq``, made from ``uids`` if none is kept."""
        key = (mailbox.object_id, mailbox.uid_validity)
        kept = self._maps.get(key)
        if kept is not None and kept.modseq == modseq:
            return kept
        made = _Uids("Q", uids)
        made.modseq = modseq
        if key[0] is not None:
            self._maps[key] = made
        return made


class _Uids(array):
    """A UID map (ascending, 8 bytes each) and the modseq it was read at."""

    modseq = None


#: the maps of every view in this process
SHARED_UIDS = SharedUids()


class SelectedMailbox:
    """The message map of one session: seq -> UID, modseqs reported, \\Recent."""

    def __init__(self, mailbox, read_only: bool, condstore: bool = False, examined: bool = False,
                 qresync: bool = False, rev2: bool = False) -> None:
        self.mailbox = mailbox
        #: no changes through this view: EXAMINE, or rights that allow none (RFC 4314 5.2)
        self.read_only = read_only
        #: the client asked for read-only (EXAMINE)
        self.examined = examined
        #: every untagged FETCH carries UID and MODSEQ (a CONDSTORE enabling command was given)
        self.condstore = condstore or qresync
        #: expunges are told as VANISHED (ENABLE QRESYNC)
        self.qresync = qresync
        #: RFC 9051 (ENABLE IMAP4rev2): no \\Recent at all, and UID in every unsolicited FETCH
        self.rev2 = rev2
        #: the mailbox's generation when this view was last brought up to date
        self.generation = generation = mailbox.generation()
        status = mailbox.status()
        self.highest_modseq = status.highest_modseq
        self.uid_next = status.uid_next
        summary = mailbox.summary()
        #: the UIDs, ascending (message n is uids[n - 1]); never changed in place (it may be shared)
        self.uids: Sequence[int] = array("Q", summary.uids)
        if mailbox.generation() == generation:  # status and summary saw the same mailbox
            self.uids = SHARED_UIDS.get(mailbox, self.highest_modseq, summary.uids)
        #: uid -> modseq this session showed itself above ``highest_modseq`` (STORE, FETCH FLAGS)
        self.shown: dict[int, int] = {}
        self.ghosts: set[int] = set()
        self.keywords: set[str] = set(summary.keywords)
        self.recent: set[int] = set() if read_only or rev2 else set(mailbox.claim_recent())
        if read_only and not rev2:
            # EXAMINE claims nothing; it shows as recent what nobody claimed yet.
            self.recent = set(self.uids[len(self.uids) - status.recent:]) if status.recent else set()
        first = summary.first_unseen_uid
        self.first_unseen = None if first is None else self.seq_of(first)
        self.uid_max = max(self.uids[-1] if self.uids else 0, 0)
        #: ``$``: the UIDs the last SEARCH RETURN (SAVE) kept, ascending
        self.saved: list[int] = []
        #: search contexts by tag, in the order they were made
        self.contexts: dict[str, SearchContext] = {}

    # -- numbers ----------------------------------------------------------

    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        position = bisect.bisect_left(self.uids, uid)
        if position < len(self.uids) and self.uids[position] == uid:
            return position + 1
        return None

    def resolve(self, sequence_set: SequenceSet, uid: bool, strict: bool = True) -> list[int]:
        """The UIDs (ascending) the set names; BAD for a message number
        beyond the map (RFC 3501 9: such a reference is an error), ``*``
        included when the mailbox is empty, unless not ``strict`` (SEARCH
        keys, which simply match nothing there).  ``$`` names the saved
        result's messages still in the map, in plain and UID commands
        alike, and is never an error, even empty (RFC 5182 2.1)."""
        if sequence_set.saved:
            return [found for found in self.saved if self.contains(found)]
        if uid:
            if not self.uids:
                return []
            return list(sequence_set.select(self.uids, max(self.uids[-1], 1)))
        if not self.uids:
            if not strict:
                return []
            raise codes.bad("No messages: no message number is valid")
        # n:* is fine beyond the end (it means the last message); only an
        # explicit number past the map is an error.
        if strict and sequence_set.ranges and sequence_set.ranges[-1][1] > len(self.uids):
            raise codes.bad("Invalid message sequence number")
        return [self.uids[seq - 1] for seq in sequence_set.members(len(self.uids))]

    def contains(self, uid: int) -> bool:
        """Whether ``uid`` is in the map (a ghost included)."""
        return self.seq_of(uid) is not None

    def seqs(self) -> dict[int, int]:
        """UID -> message number, for SEARCH."""
        return {uid: seq for seq, uid in enumerate(self.uids, 1)}

    def is_recent(self, uid: int) -> bool:
        return uid in self.recent

    # -- what this session did itself ----------------------------------------

    def reported(self, records: Iterable[MessageRecord]) -> None:
        """This session has shown these records' flags (STORE, FETCH FLAGS)."""
        for record in records:
            # at or below highest_modseq no poll can bring the change again
            if record.modseq > self.highest_modseq and self.contains(record.uid):
                self.shown[record.uid] = max(self.shown.get(record.uid, 0), record.modseq)

    def fetch_flags_line(self, record: MessageRecord, seq: int, with_uid: bool = False) -> bytes:
        items = []
        if with_uid or self.condstore:
            items.append(b"UID %d" % record.uid)
        items.append(b"FLAGS " + flags_wire(record, record.uid in self.recent))
        if self.condstore:
            items.append(b"MODSEQ (%d)" % record.modseq)
        return b"* %d FETCH (%s)\r\n" % (seq, b" ".join(items))

    # -- keywords ------------------------------------------------------------

    def flags_lines(self) -> list[bytes]:
        """``* FLAGS`` and ``* OK [PERMANENTFLAGS]`` for the keywords known now."""
        flags = " ".join([*FLAG_LIST, *sorted(self.keywords)])
        permanent = "" if self.read_only else " ".join(permanent_flags(self.mailbox, self.keywords))
        return [
            f"* FLAGS ({flags})\r\n".encode(),
            f"* OK [{codes.PERMANENTFLAGS} ({permanent})] Flags permitted\r\n".encode(),
        ]

    def keyword_room(self, keywords: Iterable[str]) -> bool:
        """Whether adding ``keywords`` keeps the mailbox within :data:`MAX_KEYWORDS`
        distinct keywords (every FLAGS response lists them all, so a client must
        not be able to grow the list without end)."""
        known = {keyword.casefold() for keyword in self.keywords}
        return len(known | {keyword.casefold() for keyword in keywords}) <= MAX_KEYWORDS

    def new_keywords(self, keywords: Iterable[str]) -> list[bytes]:
        """:meth:`flags_lines` if ``keywords`` holds one the client was not
        told of yet (a keyword is told as it first appears, as Dovecot and
        Cyrus do, so that clients know it may be used); else nothing."""
        known = {keyword.casefold() for keyword in self.keywords}
        fresh = {keyword for keyword in keywords if keyword.casefold() not in known}
        if not fresh:
            return []
        self.keywords |= fresh
        return self.flags_lines()

    # -- other sessions' changes ---------------------------------------------

    def poll(self, send_expunges: bool) -> list[bytes]:
        """Untagged responses for everything that changed since the last poll.

        The store is asked for changes only when its generation moved since
        the last look (most commands change nothing anyone else sees), but
        expunges held back before are told whenever they may be.
        """
        generation = self.mailbox.generation()
        if generation == self.generation:
            if not (send_expunges and self.ghosts):
                return []
            lines = self._flush_expunges()
            self.uids = SHARED_UIDS.get(self.mailbox, self.highest_modseq, self.uids)
            return lines + self._highest_modseq_line()
        changes = self.mailbox.changes_since(self.highest_modseq)
        self.generation = generation
        lines: list[bytes] = []
        expunged = changes.expunged
        if not changes.complete:  # the history was cut short: compare UID lists
            present = set(self.mailbox.summary().uids)
            expunged = [uid for uid in self.uids if uid not in present]
        for uid in expunged:
            if self.contains(uid):
                self.ghosts.add(uid)
        told_expunges = send_expunges and bool(self.ghosts)
        if told_expunges:
            lines += self._flush_expunges()
        lines += self.new_keywords(keyword for record in changes.changed for keyword in record.keywords)
        new: list[int] = []
        for record in changes.changed:
            uid = record.uid
            if uid > self.uid_max:
                new.append(uid)
            elif uid not in self.ghosts and record.modseq > self.shown.get(uid, 0) and self.contains(uid):
                lines.append(self.fetch_flags_line(record, self.seq_of(uid), with_uid=self.rev2))
        self.highest_modseq = max(self.highest_modseq, changes.highest_modseq)
        self.shown = {uid: modseq for uid, modseq in self.shown.items() if modseq > self.highest_modseq}
        if new:
            self.uids = array("Q", self.uids)
            self.uids.extend(new)
            self.uid_max = self.uids[-1]
            self.uid_next = max(self.uid_next, self.uid_max + 1)
        if (new or told_expunges) and not self.ghosts and changes.complete:
            # the map is now the mailbox as of the changes' snapshot
            self.uids = SHARED_UIDS.get(self.mailbox, self.highest_modseq, self.uids)
        if new:
            lines.append(b"* %d EXISTS\r\n" % len(self.uids))
            if not self.rev2:
                if not self.read_only:
                    self.recent |= self.mailbox.claim_recent()
                lines.append(b"* %d RECENT\r\n" % self.recent_count())
        if told_expunges:
            lines += self._highest_modseq_line()
        return lines

    def expunged_since_poll(self) -> set[int]:
        """UIDs expunged since the last poll (not yet ghosts): what a SEARCH
        read before them must not report."""
        if self.mailbox.generation() == self.generation:
            return set()
        return set(self.mailbox.changes_since(self.highest_modseq).expunged)

    def _highest_modseq_line(self) -> list[bytes]:
        """After a VANISHED, which carries no modseq: how far the client is now up to date."""
        if not self.qresync:
            return []
        return [b"* OK [%s %d] Highest\r\n" % (codes.HIGHESTMODSEQ.encode(), self.highest_modseq)]

    def recent_count(self) -> int:
        return sum(1 for uid in self.recent if self.contains(uid))

    def _flush_expunges(self) -> list[bytes]:
        """``* n EXPUNGE`` for every ghost, ascending, each number counted
        after the ones before it are gone (as RFC 3501's example); or
        ``* VANISHED`` with their UIDs under QRESYNC.  REMOVEFROM lines of
        the search contexts go first."""
        gone = self.ghosts
        lines = expunged_lines(self, self.contexts.values(), gone)
        if self.qresync:
            lines += vanished_lines(sorted(gone), earlier=False)
        else:
            positions = sorted(bisect.bisect_left(self.uids, uid) for uid in gone)
            lines += [b"* %d EXPUNGE\r\n" % (position - removed + 1) for removed, position in enumerate(positions)]
        self.uids = array("Q", (uid for uid in self.uids if uid not in gone))
        if self.saved:
            self.saved = [uid for uid in self.saved if uid not in gone]
        for uid in gone:
            self.shown.pop(uid, None)
            self.recent.discard(uid)
        self.ghosts = set()
        return lines



def permanent_flags(mailbox, keywords) -> list[str]:
    """The system flags the user may change, then keywords and ``\\*`` if they hold ``w``."""
    mask = mailbox.flag_mask
    names = [name for name in FLAG_LIST if SYSTEM_FLAGS[name] & mask]
    if "w" in mailbox.rights:
        names += [*sorted(keywords), "\\*"]
    return names
