"""QRESYNC past the store's expunge history (RFC 7162 3.2.5.2): conservative, never wrong.

The transcripts (``qresync_*.txt``, ``thunderbird_qresync.txt``) show the
exact answers; here the store remembers only two expunges per mailbox, so
a client back from further away is told every UID it knew that is gone.
"""

from __future__ import annotations

import re

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from cyrusmail.store.records import Flag, FlagChange
from tests.imap_support import Client, deliver, session_context


class HistoryBoundTests(TestCase):
    def setUp(self) -> None:
        self.context = session_context(self)
        self.context.store.expunged_history = 2
        self.inbox = self.context.store.mailboxes("alice").open("INBOX")
        for number in range(1, 11):
            deliver(self.context, "alice", "INBOX", f"Message {number}")
        self.expunge(1)  # before the client's last sync
        self.client = Client(self.context, Clock())
        self.client.login()
        self.assertEqual(self.client.command("e ENABLE QRESYNC")[0], "* ENABLED QRESYNC")
        selected = self.client.command("s SELECT INBOX")
        self.uid_validity = int(_code(selected, r"UIDVALIDITY (\d+)"))
        self.synced = int(_code(selected, r"HIGHESTMODSEQ (\d+)"))  # the client knows UIDs 2..10
        for uid in (4, 6, 8):  # one expunge each: the first two fall out of the history
            self.expunge(uid)

    def expunge(self, uid: int) -> None:
        self.inbox.set_flags([uid], FlagChange.ADD, Flag.DELETED)
        self.inbox.expunge([uid])

    def resync(self, arguments: str) -> list[str]:
        answer = self.client.command(f"r SELECT INBOX (QRESYNC ({self.uid_validity} {self.synced}{arguments}))")
        self.assertTrue(answer[-1].startswith("r OK"), answer)
        return [line for line in answer if "VANISHED" in line]

    def test_the_history_no_longer_reaches_back(self) -> None:
        self.assertIsNone(self.inbox.expunged_since(self.synced))

    def test_a_selected_session_still_hears_every_expunge(self) -> None:
        """Its poll compares UID lists when the history was cut short."""
        self.assertEqual(self.client.command("n NOOP"), ["* VANISHED 4,6,8", "* OK [HIGHESTMODSEQ 19] Highest",
                                                         "n OK NOOP completed"])

    def test_known_uids_bound_the_conservative_answer(self) -> None:
        self.assertEqual(self.resync(" 2:10"), ["* VANISHED (EARLIER) 4,6,8"])

    def test_without_known_uids_every_missing_uid_is_reported(self) -> None:
        """UID 1 went before the client's sync: told again, which RFC 7162 allows."""
        self.assertEqual(self.resync(""), ["* VANISHED (EARLIER) 1,4,6,8"])

    def test_seq_match_data_proves_the_lower_uids_untouched(self) -> None:
        """The client had UID 3 as message 2: so have we, so nothing up to 3 went."""
        self.assertEqual(self.resync(" 1:10 (1,2 2,3)"), ["* VANISHED (EARLIER) 4,6,8"])
        self.assertEqual(self.resync(" 1:10 (2,6 3,7)"), ["* VANISHED (EARLIER) 4,6,8"])
        self.assertEqual(self.resync(" 1:10 (6 7)"), ["* VANISHED (EARLIER) 1,4,6,8"])  # 7 is message 4 now

    def test_uid_fetch_vanished_is_conservative_too(self) -> None:
        self.client.command("n NOOP")
        answer = self.client.command(f"f UID FETCH 1:* (FLAGS) (CHANGEDSINCE {self.synced} VANISHED)")
        self.assertEqual(answer[0], "* VANISHED (EARLIER) 1,4,6,8")

    def test_within_the_history_the_answer_is_exact(self) -> None:
        self.context.store.expunged_history = 100
        self.client.command("n NOOP")
        modseq = self.inbox.status().highest_modseq
        self.expunge(9)
        self.assertEqual(self.client.command(f"f UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)")[0],
                         "* VANISHED (EARLIER) 9")


def _code(lines: list[str], pattern: str) -> str:
    return next(found[1] for line in lines if (found := re.search(pattern, line)))
