"""A mailbox the caller may not see answers exactly as one that does not exist (RFC 4314 section 6).

For every command that names a mailbox, ``Other Users/NAME/Folder`` gets
the same bytes back whether NAME has no account, NAME has no such folder,
or NAME's folder exists but the caller may not see it. CREATE also gives
those bytes for a folder the caller may see (``l``) but not create in.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.helpers import add_user
from tests.imap_support import Client, deliver, session_context

#: The owners, one per case: no account; no such folder; folder hidden; folder listable only.
CASES = {"ghost": "no such user", "bob": "no such folder", "carol": "hidden folder", "dave": "visible, no k"}
HIDDEN = ("ghost", "bob", "carol")

COMMANDS = (
    'CREATE "Other Users/{0}/Folder"',
    'CREATE "Other Users/{0}/Folder/Sub"',
    'CREATE "Other Users/{0}/Folder/Sub/Deeper"',
    'SELECT "Other Users/{0}/Folder"',
    'EXAMINE "Other Users/{0}/Folder"',
    'STATUS "Other Users/{0}/Folder" (MESSAGES UIDNEXT)',
    'DELETE "Other Users/{0}/Folder"',
    'RENAME "Other Users/{0}/Folder" "Other Users/{0}/Renamed"',
    'RENAME Mine "Other Users/{0}/Folder"',
    'SUBSCRIBE "Other Users/{0}/Folder"',
    'UNSUBSCRIBE "Other Users/{0}/Folder"',
    'GETACL "Other Users/{0}/Folder"',
    'SETACL "Other Users/{0}/Folder" alice lrk',
    'DELETEACL "Other Users/{0}/Folder" alice',
    'LISTRIGHTS "Other Users/{0}/Folder" alice',
    'MYRIGHTS "Other Users/{0}/Folder"',
    'GETQUOTAROOT "Other Users/{0}/Folder"',
    'GETQUOTA "user/{0}"',
    'SELECT "Other Users/{0}"',
    'LIST "" "Other Users/{0}/*"',
    'APPEND "Other Users/{0}/Folder" {{5+}}\r\nHello',
    'COPY 1 "Other Users/{0}/Folder"',
    'MOVE 1 "Other Users/{0}/Folder/Sub"',
)

#: Commands that must answer the same when the folder is visible but the caller may not create.
CREATES = COMMANDS[:3]


class HiddenMailboxTableTests(TestCase):
    def setUp(self):
        self.context = session_context(self)
        for user in ("carol", "dave"):
            add_user(self.context, user)
        for user in ("carol", "dave"):
            self.context.realm.account(user).mailboxes.create("Folder")
        self.context.realm.account("dave").set_acl("Folder", "alice", "l")
        self.context.realm.account("alice").mailboxes.create("Mine")
        deliver(self.context, "alice", "INBOX")
        self.alice = Client(self.context, Clock())
        self.alice.login("alice")
        self.addCleanup(self.alice.server.connectionLost, None)

    def answers(self, owner: str) -> dict[str, list[str]]:
        """Each command's reply for ``owner``, with the owner's name written NAME."""
        replies = {}
        for command in COMMANDS:
            self.alice.command("s SELECT INBOX")
            lines = self.alice.command("t " + command.format(owner))
            replies[command] = [line.replace(owner, "NAME") for line in lines]
        return replies

    def test_hidden_and_missing_answer_the_same_bytes(self):
        answers = {owner: self.answers(owner) for owner in CASES}
        for command in COMMANDS:
            for owner in HIDDEN[1:]:
                self.assertEqual(answers[owner][command], answers["ghost"][command],
                                 f"{command}: {CASES[owner]} differs from {CASES['ghost']}")
        for command in CREATES:
            self.assertEqual(answers["dave"][command], answers["ghost"][command],
                             f"{command}: {CASES['dave']} differs from {CASES['ghost']}")
            self.assertTrue(answers["ghost"][command][-1].startswith("t NO [NOPERM]"), answers["ghost"][command])
        for user in ("ghost", "bob"):  # and nothing was made on the way
            self.assertFalse(self.context.store.mailboxes(user).exists("Folder"))
        store = self.context.store
        if hasattr(store, "users_dir"):
            self.assertFalse((store.users_dir / "ghost").exists())
        else:  # the PostgreSQL store: not even a row of the user's
            self.assertIsNone(store.db.execute("SELECT 1 FROM users WHERE name = 'ghost'").fetchone())

    def test_a_visible_folder_taken_is_told_to_whoever_may_create_there(self):
        dave = self.context.realm.account("dave")
        dave.set_acl("INBOX", "alice", "lk")
        self.assertEqual(self.alice.command('c CREATE "Other Users/dave/Folder"'),
                         ["c NO [ALREADYEXISTS] Mailbox Folder already exists"])
        dave.set_acl("Folder", "alice", "")  # now hidden: no different from a name alice could not create
        self.assertEqual(self.alice.command('c CREATE "Other Users/dave/Folder"'),
                         ["c NO [NOPERM] No right to create Other Users/dave/Folder"])
        (created,) = self.alice.command('c CREATE "Other Users/dave/New"')
        self.assertRegex(created, r"^c OK \[MAILBOXID \(F[0-9a-f]+\)\] CREATE completed$")
