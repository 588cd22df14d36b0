"""RFC 4314 over real IMAP: the account-level rights table, run again through sessions.

``ImapDriver`` has the methods of ``tests.acl_support.AccountDriver``
(select, append, store, copy, getacl, ...), each one a short IMAP
conversation over a StringTransport session: ``NO [NOPERM]`` is
``Denied``, ``NO [NONEXISTENT]`` / ``[TRYCREATE]`` is ``NotFound``. The
account-level test classes of ``test_acl_rights`` and
``test_shared_folders`` are reused as they are, with alice, bob and the
admin root each logged in over IMAP, so every row of the table is
checked on the wire, right by right.
"""

from __future__ import annotations

import re

from twisted.cred.credentials import IUsernamePassword
from twisted.internet.task import Clock

from cyrusmail.imap import codes, mutf7
from cyrusmail.imap.flags import RECENT, SYSTEM_FLAGS
from cyrusmail.imap.sequence import SequenceSet
from cyrusmail.imapform import string
from cyrusmail.store.records import NO_FLAGS, Flag, FlagChange
from tests import test_acl_rights as account_rights
from tests import test_shared_folders as account_shared
from tests.acl_support import MESSAGE, Denied, NotFound, TwoUsers
from tests.helpers import add_user, make_context
from tests.imap_support import Client

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\([^)]*\)|[^ ]+')
_TAGGED = re.compile(r"^(?P<tag>T\d+) (?P<status>OK|NO|BAD)(?: \[(?P<code>[^\]]*)\])? ?(?P<text>.*)$")


class ImapError(Exception):
    """A NO or BAD that is neither NOPERM nor NONEXISTENT/TRYCREATE."""

    def __init__(self, status: str, code: str | None, text: str):
        super().__init__(f"{status} [{code}] {text}")
        self.status = status
        self.code = code


def admin_context(test):
    """A real store whose admin is root, as ``TwoUsers`` has it; users are added as they log in."""
    context = make_context(test.mktemp(), server={"admins": "root", "special_use": "Sent:sent Trash:trash"},
                           imap={"enabled": "yes", "listen": "tcp:0:interface=127.0.0.1"})
    context.portal.checkers[IUsernamePassword].hash_in_thread = False
    test.addCleanup(context.store.close)
    test.addCleanup(context.users.close)
    return context


def quoted(name: str) -> str:
    """A mailbox name as a client sends it (mUTF-7, quoted)."""
    return string(mutf7.encode(name)).decode("ascii")


def unquote(token: str) -> str:
    if token.startswith('"'):
        return re.sub(r"\\(.)", r"\1", token[1:-1])
    return token


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def flag_list(flags: Flag, keywords=()) -> str:
    names = [name for name, bit in SYSTEM_FLAGS.items() if flags & bit]
    return "(" + " ".join([*names, *keywords]) + ")"


def parse_flags(text: str) -> tuple[Flag, frozenset[str]]:
    bits, keywords = NO_FLAGS, set()
    for name in text.strip("()").split():
        if name in SYSTEM_FLAGS:
            bits |= SYSTEM_FLAGS[name]
        elif name != RECENT:
            keywords.add(name)
    return bits, frozenset(keywords)


def numbers(text: str) -> list[int]:
    return list(SequenceSet.parse(text).members(1 << 31)) if text else []


class ImapDriver:
    """The AccountDriver's operations, each as IMAP commands of one logged-in session."""

    def __init__(self, context, clock: Clock, user: str):
        self.client = Client(context, clock)
        self.client.login(user)
        self.counter = 0

    # -- talking -------------------------------------------------------------------

    def run(self, line: str, literal: bytes | None = None) -> list[str]:
        """Send one command; its untagged lines, or Denied / NotFound / ImapError."""
        self.counter += 1
        tag = f"T{self.counter}"
        if literal is None:
            answer = self.client.command(f"{tag} {line}")
        else:
            self.client.send(f"{tag} {line} {{{len(literal)}+}}\r\n".encode() + literal + b"\r\n")
            answer = self.client.lines()
        assert answer, f"no answer to {line!r}"
        tagged = _TAGGED.match(answer[-1])
        assert tagged and tagged["tag"] == tag, f"{line!r}: {answer!r}"
        self.last_code = tagged["code"]
        if tagged["status"] != "OK":
            code = (tagged["code"] or "").split(" ")[0]
            if code == codes.NOPERM:
                raise Denied(tagged["text"])
            if code in (codes.NONEXISTENT, codes.TRYCREATE):
                raise NotFound(tagged["text"])
            raise ImapError(tagged["status"], tagged["code"], tagged["text"])
        return answer[:-1]

    def in_mailbox(self, name: str, line: str, examine: bool = False) -> list[str]:
        """SELECT (or EXAMINE) ``name``, run ``line``, UNSELECT whatever happened.

        ``last_code`` is left as the command's (COPY's COPYUID), not UNSELECT's.
        """
        self.run(("EXAMINE " if examine else "SELECT ") + quoted(name))
        try:
            untagged = self.run(line)
            code = self.last_code
        finally:
            self.run("UNSELECT")
        self.last_code = code
        return untagged

    # -- the AccountDriver's methods ------------------------------------------------------

    def list(self, pattern: str = "*") -> list[str]:
        found = []
        for line in self.run(f'LIST "" {quoted(pattern)}'):
            match = re.fullmatch(r'\* LIST \([^)]*\) "/" (.*)', line)
            assert match, line
            found.append(mutf7.decode(unquote(match[1])))
        return found

    def select(self, name: str) -> int:
        untagged = self.run("SELECT " + quoted(name))
        self.run("UNSELECT")
        return next(int(line.split()[1]) for line in untagged if line.endswith(" EXISTS"))

    def status(self, name: str) -> int:
        (line,) = self.run(f"STATUS {quoted(name)} (MESSAGES)")
        return int(re.search(r"MESSAGES (\d+)", line)[1])

    def append(self, name: str, flags: Flag = NO_FLAGS, keywords=()) -> int:
        self.run(f"APPEND {quoted(name)} {flag_list(flags or NO_FLAGS, keywords)}", MESSAGE)
        return int(self.last_code.split()[2])

    def fetch_flags(self, name: str, uid: int) -> tuple[Flag, frozenset[str]]:
        (line,) = self.in_mailbox(name, f"UID FETCH {uid} (FLAGS)", examine=True)
        return parse_flags(re.search(r"FLAGS (\([^)]*\))", line)[1])

    def store(self, name: str, uid: int, flags: Flag, keywords=(), change: FlagChange = FlagChange.ADD) -> None:
        item = {FlagChange.ADD: "+FLAGS", FlagChange.REMOVE: "-FLAGS", FlagChange.REPLACE: "FLAGS"}[change]
        self.in_mailbox(name, f"UID STORE {uid} {item}.SILENT {flag_list(flags, keywords)}")

    def _pairs(self, code: str) -> list[tuple[int, int]]:
        _, _, sources, targets = code.split()
        return list(zip(numbers(sources), numbers(targets)))

    def copy(self, source: str, uids: list[int], target: str) -> list[tuple[int, int]]:
        uid_set = SequenceSet.from_numbers(uids)
        self.in_mailbox(source, f"UID COPY {uid_set} {quoted(target)}")
        return self._pairs(self.last_code)

    def move(self, source: str, uids: list[int], target: str) -> list[tuple[int, int]]:
        uid_set = SequenceSet.from_numbers(uids)
        untagged = self.in_mailbox(source, f"UID MOVE {uid_set} {quoted(target)}")
        code = next(re.search(r"\[(COPYUID [^\]]*)\]", line)[1] for line in untagged if "COPYUID" in line)
        return self._pairs(code)

    def expunge(self, name: str) -> list[int]:
        return [int(line.split()[1]) for line in self.in_mailbox(name, "EXPUNGE") if line.endswith(" EXPUNGE")]

    def create(self, name: str) -> None:
        self.run("CREATE " + quoted(name))

    def delete(self, name: str) -> None:
        self.run("DELETE " + quoted(name))

    def rename(self, old: str, new: str) -> None:
        self.run(f"RENAME {quoted(old)} {quoted(new)}")

    def getacl(self, name: str) -> dict[str, str]:
        (line,) = self.run("GETACL " + quoted(name))
        words = [unquote(word) for word in tokens(line)[3:]]
        return dict(zip(words[::2], words[1::2]))

    def setacl(self, name: str, identifier: str, rights: str) -> None:
        self.run(f"SETACL {quoted(name)} {string(identifier).decode()} {string(rights).decode()}")

    def deleteacl(self, name: str, identifier: str) -> None:
        self.run(f"DELETEACL {quoted(name)} {string(identifier).decode()}")

    def listrights(self, name: str, identifier: str) -> tuple[str, list[str]]:
        (line,) = self.run(f"LISTRIGHTS {quoted(name)} {string(identifier).decode()}")
        words = [unquote(word) for word in tokens(line)[4:]]
        return words[0], words[1:]

    def myrights(self, name: str) -> str:
        (line,) = self.run("MYRIGHTS " + quoted(name))
        return unquote(tokens(line)[3])


class ImapTwoUsers(TwoUsers):
    """TwoUsers with alice, bob and root each logged in over IMAP (on first use: scrypt is slow)."""

    def setUp(self):
        super(TwoUsers, self).setUp()  # not TwoUsers': the store comes from a server context
        self.context = admin_context(self)
        self.clock = Clock()
        self.realm = self.context.realm
        self.store = self.context.store
        self.drivers: dict[str, ImapDriver] = {}
        self.alice_account = self.realm.account("alice")
        self.bob_account = self.realm.account("bob")
        self.root_account = self.realm.account("root")

    def driver(self, user: str) -> ImapDriver:
        if user not in self.drivers:
            add_user(self.context, user, "secret")
            driver = self.drivers[user] = ImapDriver(self.context, self.clock, user)
            self.addCleanup(driver.client.server.connectionLost, None)
        return self.drivers[user]

    alice = property(lambda self: self.driver("alice"))
    bob = property(lambda self: self.driver("bob"))
    root = property(lambda self: self.driver("root"))


class ImapRightsTableTests(account_rights.RightsTableTests, ImapTwoUsers):
    """RFC 4314 section 4, every row and every missing right, over IMAP."""

    def test_select_answers_read_only_unless_a_write_right(self):
        """RFC 4314 5.2 on the wire: [READ-ONLY] and an empty PERMANENTFLAGS."""
        self.alice.setacl(account_rights.PROJECT, "bob", "lrp")
        untagged = self.bob.run("SELECT " + quoted(account_rights.THERE))
        self.assertEqual(self.bob.last_code, codes.READ_ONLY)
        self.assertIn("* OK [PERMANENTFLAGS ()] Flags permitted", untagged)
        self.bob.run("UNSELECT")
        for rights, permanent in [("lrs", "\\Seen"), ("lrt", "\\Deleted"), ("lri", ""),
                                  ("lrw", "\\Answered \\Flagged \\Draft \\*"),
                                  ("lrswte", "\\Seen \\Answered \\Flagged \\Deleted \\Draft \\*")]:
            with self.subTest(rights=rights):
                self.alice.setacl(account_rights.PROJECT, "bob", rights)
                untagged = self.bob.run("SELECT " + quoted(account_rights.THERE))
                self.assertEqual(self.bob.last_code, codes.READ_WRITE)
                self.assertIn(f"* OK [PERMANENTFLAGS ({permanent})] Flags permitted", untagged)
                self.bob.run("UNSELECT")

    def test_expunge_without_e_is_noperm_and_close_skips_it(self):
        uid = self.alice.append(account_rights.PROJECT, Flag.DELETED)
        self.alice.setacl(account_rights.PROJECT, "bob", "lrst")
        self.bob.run("SELECT " + quoted(account_rights.THERE))
        self.assertRaises(Denied, self.bob.run, "EXPUNGE")
        self.assertRaises(Denied, self.bob.run, f"UID EXPUNGE {uid}")
        self.bob.run("CLOSE")
        self.assertEqual(self.alice.select(account_rights.PROJECT), 1)
        self.alice.setacl(account_rights.PROJECT, "bob", "+e")
        self.bob.run("SELECT " + quoted(account_rights.THERE))
        self.bob.run("CLOSE")
        self.assertEqual(self.alice.select(account_rights.PROJECT), 0)

    def test_examine_is_still_read_only_whatever_the_rights(self):
        self.bob.run("EXAMINE INBOX")
        self.assertEqual(self.bob.last_code, codes.READ_ONLY)
        error = self.assertRaises(ImapError, self.bob.run, "EXPUNGE")
        self.assertEqual(error.code, codes.READ_ONLY)

    def test_fetch_sets_seen_only_with_s(self):
        """RFC 4314: BODY[] without s reads the message and leaves \\Seen alone, no error."""
        uid = self.alice.append(account_rights.PROJECT)
        self.alice.setacl(account_rights.PROJECT, "bob", "lrw")
        untagged = self.bob.in_mailbox(account_rights.THERE, f"UID FETCH {uid} (BODY[])")
        self.assertNotIn("\\Seen", "".join(untagged))
        self.assertEqual(self.alice.fetch_flags(account_rights.PROJECT, uid)[0], Flag(0))
        self.alice.setacl(account_rights.PROJECT, "bob", "lrs")
        self.bob.in_mailbox(account_rights.THERE, f"UID FETCH {uid} (BODY[])")
        self.assertEqual(self.alice.fetch_flags(account_rights.PROJECT, uid)[0], Flag.SEEN)

    def test_status_and_select_with_i_alone_are_nonexistent(self):
        """Appending needs only i, but the mailbox stays unseen (RFC 4314 6)."""
        self.alice.setacl(account_rights.PROJECT, "bob", "i")
        self.bob.append(account_rights.THERE)
        self.assertRaises(NotFound, self.bob.select, account_rights.THERE)
        self.assertRaises(NotFound, self.bob.status, account_rights.THERE)
        self.assertEqual(self.bob.myrights(account_rights.THERE), "i")  # "any of l r i k x a"

    def test_trycreate_only_when_create_would_succeed(self):
        """As Cyrus: [TRYCREATE] for a missing mailbox the user may create, else [NONEXISTENT]."""
        for target in ("Nowhere", account_rights.THERE, "Other Users/alice/Missing"):
            with self.subTest(target=target):
                try:
                    self.bob.run(f"APPEND {quoted(target)}", MESSAGE)
                except NotFound:
                    pass
                expected = codes.TRYCREATE if target == "Nowhere" else codes.NONEXISTENT
                self.assertEqual(self.bob.last_code, expected)
        self.bob.run("SELECT INBOX")
        self.bob.run("APPEND INBOX", MESSAGE)
        self.assertRaises(NotFound, self.bob.run, "COPY 1 " + quoted(account_rights.THERE))
        self.assertEqual(self.bob.last_code, codes.NONEXISTENT)
        self.assertRaises(NotFound, self.bob.run, "MOVE 1 Nowhere")
        self.assertEqual(self.bob.last_code, codes.TRYCREATE)

    def test_list_status_skips_mailboxes_without_r(self):
        self.alice.setacl(account_rights.PROJECT, "bob", "l")
        lines = self.bob.run('LIST "" "Other Users/*" RETURN (STATUS (MESSAGES))')
        self.assertEqual(lines, ['* LIST (\\Noselect \\HasChildren) "/" "Other Users/alice"',
                                 '* LIST (\\HasNoChildren) "/" "Other Users/alice/Project"'])

    def test_bad_rights_and_identifiers(self):
        for line in ("SETACL Project bob lrQ", "SETACL Project bob 1", 'SETACL Project "a b" lr',
                     "DELETEACL Project group:", 'LISTRIGHTS Project ""'):
            with self.subTest(line=line):
                error = self.assertRaises(ImapError, self.alice.run, line)
                self.assertEqual(error.status, "BAD")


class ImapOwnerAndAdminTests(account_rights.OwnerAndAdminTests, ImapTwoUsers):
    """Owner defaults, admins, inheritance, rename and delete keeping ACLs, over IMAP."""


class ImapIdentifierTests(account_rights.IdentifierTests, ImapTwoUsers):
    """anyone, negative rights, groups, modifiers and obsolete c/d, LISTRIGHTS, over IMAP."""


class ImapSharedFolderTests(account_shared.SharedFolderTests, ImapTwoUsers):
    """Shared folders over IMAP: root creates them, anyone reads, \\Seen per reader."""
