"""RFC 9208 over IMAP: the admin transcripts, STORAGE over quota, [ALERT] on AUTHENTICATE.

The transcripts in ``tests/imap_transcripts/with_admin`` need an admin
(``root``) beside alice and bob, so they are run here rather than by
``test_imap_session``.
"""

from __future__ import annotations

from twisted.cred.credentials import IUsernamePassword
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from cyrusmail.imap import codes
from tests.helpers import add_user, make_context
from tests.imap_support import TRANSCRIPTS, Client, run_transcript

ADMIN_TRANSCRIPTS = TRANSCRIPTS / "with_admin"


def context_with_admin(test):
    """As ``session_context`` (alice, bob, the default special-use folders), plus the admin root."""
    context = make_context(test.mktemp(), server={"admins": "root"},
                           imap={"enabled": "yes", "listen": "tcp:0:interface=127.0.0.1"})
    context.portal.checkers[IUsernamePassword].hash_in_thread = False
    for user in ("alice", "bob", "root"):
        add_user(context, user, "secret")
    test.addCleanup(context.store.close)
    test.addCleanup(context.users.close)
    return context


class AdminTranscriptTests(TestCase):
    """One test per transcript in ``with_admin``."""


def _transcript_test(path):
    def test(self) -> None:
        run_transcript(self, path.read_text(encoding="utf-8"), context_with_admin(self))

    test.__doc__ = path.read_text(encoding="utf-8").splitlines()[0].lstrip("# ")
    return test


for _path in sorted(ADMIN_TRANSCRIPTS.glob("*.txt")):
    setattr(AdminTranscriptTests, f"test_{_path.stem}", _transcript_test(_path))


def sized(size: int) -> bytes:
    header = b"Subject: q\r\n\r\n"
    return header + b"x" * (size - len(header))


class StorageQuotaTests(TestCase):
    """STORAGE limits (KiB, rounded up) on APPEND, MULTIAPPEND and COPY: NO [OVERQUOTA], nothing changed."""

    def setUp(self):
        self.context = context_with_admin(self)
        self.root = self.context.realm.account("root")
        self.alice = Client(self.context, Clock())
        self.alice.login("alice")
        self.addCleanup(self.alice.server.connectionLost, None)

    def append(self, tag: str, *messages: bytes) -> list[str]:
        line = f"{tag} APPEND INBOX".encode()
        for message in messages:
            line += b" {%d+}\r\n" % len(message) + message
        self.alice.send(line + b"\r\n")
        return self.alice.lines()

    def messages(self, mailbox: str) -> int:
        answer = self.alice.command(f"S STATUS {mailbox} (MESSAGES)")
        return int(answer[0].split("MESSAGES ")[1].rstrip(")"))

    def test_append(self):
        self.root.set_quota("user/alice", {"STORAGE": 2})
        self.assertRegex(self.append("a1", sized(1500))[-1], r"^a1 OK \[APPENDUID ")
        self.assertEqual(self.append("a2", sized(1000)),
                         [f"a2 NO [{codes.OVERQUOTA}] Over the account's quota: STORAGE limit reached"])
        self.assertEqual(self.messages("INBOX"), 1)
        self.assertEqual(self.alice.command("a3 GETQUOTA user/alice"),
                         ["* QUOTA user/alice (STORAGE 2 2)", "a3 OK GETQUOTA completed"])

    def test_multiappend_is_all_or_nothing(self):
        self.root.set_quota("user/alice", {"STORAGE": 4})
        answer = self.append("a1", sized(1500), sized(1500), sized(1500))
        self.assertRegex(answer[-1], rf"^a1 NO \[{codes.OVERQUOTA}\]")
        self.assertEqual(self.messages("INBOX"), 0)
        self.assertRegex(self.append("a2", sized(1500), sized(1500))[-1], r"^a2 OK \[APPENDUID \d+ 1:2\]")

    def test_copy(self):
        self.root.set_quota("user/alice", {"STORAGE": 2})
        self.append("a1", sized(1500))
        self.alice.command("a2 SELECT INBOX")
        answer = self.alice.command("a3 COPY 1 Sent")
        self.assertRegex(answer[-1], rf"^a3 NO \[{codes.OVERQUOTA}\]")
        self.assertEqual(self.messages("Sent"), 0)

    def test_alert_on_authenticate(self):
        """[ALERT] before the tagged OK, for AUTHENTICATE as for LOGIN."""
        self.root.set_quota("user/alice", {"STORAGE": 2})
        self.append("a1", sized(1900))
        client = Client(self.context, Clock())
        self.addCleanup(client.server.connectionLost, None)
        client.take()
        answer = client.command("x1 AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==")
        self.assertEqual(answer[0], f"* OK [{codes.ALERT}] Your mailbox is 100% full: STORAGE 2 KiB of 2 KiB")
        self.assertRegex(answer[1], r"^x1 OK \[CAPABILITY .*\] Logged in$")
