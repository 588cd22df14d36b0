"""RFC 4314 section 4, right by right: alice owns ``Project`` and gives bob exactly some rights.

Each row of ``TABLE`` is an operation bob performs on alice's mailbox, the
rights it needs, and the rights bob holds anyway (``l`` keeps the mailbox
visible, so a missing right is NO [NOPERM] and not "no such mailbox";
``r`` is implied for commands of the selected state). For every row the
operation must succeed with exactly those rights, and fail with each one
of the needed rights taken away. The operations go through
``AccountDriver``; an IMAP driver with the same methods runs the table
over the wire.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.trial import unittest
from zope.interface.verify import verifyObject

from cyrusmail.acl import require, rights_of
from cyrusmail.portal import MailRealm
from cyrusmail.store.errors import PermissionDenied
from cyrusmail.store.interfaces import IMailbox, IMailboxList
from cyrusmail.store.records import Flag, FlagChange
from tests.acl_support import Denied, NotFound, TwoUsers

PROJECT = "Project"
THERE = "Other Users/alice/Project"


@dataclass(frozen=True)
class Row:
    operation: str
    needs: str  # every one of these rights is required
    base: str  # held besides, in both the passing and failing runs
    run: Callable  # (test) -> None, raising Denied / NotFound when refused


def _append_then(test, flags=None):
    return test.alice.append(PROJECT, flags)


TABLE = [
    Row("SELECT", "r", "l", lambda t: t.bob.select(THERE)),
    Row("EXAMINE", "r", "l", lambda t: t.bob.select(THERE)),
    Row("STATUS", "r", "l", lambda t: t.bob.status(THERE)),
    Row("APPEND", "i", "l", lambda t: t.bob.append(THERE)),
    Row("COPY (to target)", "i", "l", lambda t: t.bob.copy("INBOX", [t.bob.append("INBOX")], THERE)),
    Row("CREATE (k on parent)", "k", "l", lambda t: t.bob.create(THERE + "/Child")),
    Row("DELETE", "x", "l", lambda t: t.bob.delete(THERE)),
    Row("RENAME (x on old, k on new parent)", "xk", "l",
        lambda t: t.bob.rename(THERE + "/Old", THERE + "/New")),
    Row("EXPUNGE", "e", "lr", lambda t: t.bob.expunge(THERE)),
    Row("STORE \\Seen", "s", "lr", lambda t: t.bob.store(THERE, _append_then(t), Flag.SEEN)),
    Row("STORE \\Deleted", "t", "lr", lambda t: t.bob.store(THERE, _append_then(t), Flag.DELETED)),
    Row("STORE \\Flagged", "w", "lr", lambda t: t.bob.store(THERE, _append_then(t), Flag.FLAGGED)),
    Row("STORE keyword", "w", "lr", lambda t: t.bob.store(THERE, _append_then(t), Flag(0), ["$Label1"])),
    Row("MOVE (te on source, i on target)", "te", "lr",
        lambda t: t.bob.move(THERE, [_append_then(t)], "INBOX")),
    Row("SETACL", "a", "l", lambda t: t.bob.setacl(THERE, "carol", "lr")),
    Row("DELETEACL", "a", "l", lambda t: t.bob.deleteacl(THERE, "carol")),
    Row("GETACL", "a", "l", lambda t: t.bob.getacl(THERE)),
    Row("LISTRIGHTS", "a", "l", lambda t: t.bob.listrights(THERE, "carol")),
]


class RightsTableTests(TwoUsers, unittest.TestCase):
    """Each operation of RFC 4314 section 4 with exactly its rights, then one short."""

    def setUp(self):
        super().setUp()
        self.alice.create(PROJECT)
        self.alice.create(PROJECT + "/Old")

    def grant(self, rights: str) -> None:
        for name in (PROJECT, PROJECT + "/Old"):
            self.alice.setacl(name, "bob", rights)

    def test_table(self):
        for row in TABLE:
            with self.subTest(operation=row.operation, rights=row.base + row.needs):
                self.setUp_row()
                self.grant(row.base + row.needs)
                row.run(self)
            for missing in row.needs:
                held = row.base + row.needs.replace(missing, "")
                with self.subTest(operation=row.operation, rights=held, missing=missing):
                    self.setUp_row()
                    self.grant(held)
                    self.assertRaises(Denied, row.run, self)

    def setUp_row(self) -> None:
        """Put Project and Project/Old back as each row expects them."""
        for name in (PROJECT + "/New", PROJECT + "/Child", PROJECT + "/Old", PROJECT):
            if self.alice_account.mailboxes.personal.exists(name):
                self.alice_account.mailboxes.personal.delete(name)
        self.alice.create(PROJECT)
        self.alice.create(PROJECT + "/Old")

    def test_list_shows_only_mailboxes_with_l(self):
        self.grant("r")
        self.assertNotIn(THERE, self.bob.list("*"))
        self.assertEqual(self.bob.list("Other Users/*"), [])
        self.grant("l")
        self.assertIn(THERE, self.bob.list("*"))
        self.assertIn("Other Users", self.bob.list("%"))

    def test_list_does_not_show_a_parent_without_l(self):
        """RFC 4314: with l on A/B but not A, LIST behaves as if A did not exist."""
        self.alice.setacl(PROJECT + "/Old", "bob", "l")
        names = self.bob.list("*")
        self.assertIn(THERE + "/Old", names)
        self.assertNotIn(THERE, names)

    def test_myrights_needs_any_of_lrikxa(self):
        for right in "lrikxa":
            with self.subTest(right=right):
                self.alice.setacl(PROJECT, "bob", right)
                self.assertIn(right, self.bob.myrights(THERE))
        for right in "swpte":
            with self.subTest(right=right):
                self.alice.setacl(PROJECT, "bob", right)
                self.assertRaises(NotFound, self.bob.myrights, THERE)

    def test_no_l_nor_r_is_answered_as_nonexistent(self):
        """RFC 4314 section 6: the same answer as for a mailbox that is not there."""
        self.alice.setacl(PROJECT, "bob", "swte")
        for name in (THERE, "Other Users/alice/Nonexistent"):
            for operation in (self.bob.select, self.bob.status, self.bob.delete, self.bob.getacl,
                              self.bob.myrights):
                with self.subTest(name=name, operation=operation):
                    self.assertRaises(NotFound, operation, name)

    def test_l_without_r_is_no_permission_on_select(self):
        self.alice.setacl(PROJECT, "bob", "l")
        self.assertRaises(Denied, self.bob.select, THERE)

    def test_append_keeps_only_flags_the_user_may_set(self):
        """RFC 4314 section 4's COPY example, for APPEND and COPY."""
        self.alice.setacl(PROJECT, "bob", "lrwis")
        uid = self.bob.append(THERE, Flag.DRAFT | Flag.DELETED)
        self.assertEqual(self.bob.fetch_flags(THERE, uid), (Flag.DRAFT, frozenset()))
        self.alice.setacl(PROJECT, "bob", "lrsti")
        sources = [self.bob.append("INBOX", Flag.DRAFT | Flag.DELETED),
                   self.bob.append("INBOX", Flag.ANSWERED),
                   self.bob.append("INBOX", Flag.SEEN, ["$Forwarded"])]
        pairs = self.bob.copy("INBOX", sources, THERE)
        flags = [self.alice.fetch_flags(PROJECT, new) for _, new in pairs]
        self.assertEqual(flags, [(Flag.DELETED, frozenset()), (Flag(0), frozenset()), (Flag.SEEN, frozenset())])

    def test_store_changes_what_it_may_and_leaves_the_rest(self):
        """RFC 4314: STORE SHOULD NOT fail if at least one flag may be changed."""
        uid = self.alice.append(PROJECT, Flag.FLAGGED | Flag.DELETED)
        self.alice.setacl(PROJECT, "bob", "lrs")
        self.bob.store(THERE, uid, Flag.SEEN | Flag.ANSWERED)
        self.assertEqual(self.alice.fetch_flags(PROJECT, uid)[0], Flag.SEEN | Flag.FLAGGED | Flag.DELETED)
        self.bob.store(THERE, uid, Flag(0), change=FlagChange.REPLACE)
        self.assertEqual(self.alice.fetch_flags(PROJECT, uid)[0], Flag.FLAGGED | Flag.DELETED)

    def test_rights_change_at_once_for_an_open_mailbox(self):
        self.alice.setacl(PROJECT, "bob", "lri")
        mailbox = self.bob_account.mailboxes.open(THERE)
        mailbox.append(b"Subject: x\r\n\r\nx\r\n")
        self.alice.setacl(PROJECT, "bob", "lr")
        self.assertRaises(PermissionDenied, mailbox.append, b"Subject: x\r\n\r\nx\r\n")

    def test_read_only_unless_a_write_right(self):
        """RFC 4314 5.2: READ-ONLY unless one of i, e, s, t, w."""
        self.alice.setacl(PROJECT, "bob", "lrp")
        self.assertTrue(self.bob_account.mailboxes.open(THERE).read_only)
        for right in "iestw":
            self.alice.setacl(PROJECT, "bob", "lr" + right)
            self.assertFalse(self.bob_account.mailboxes.open(THERE).read_only)

    def test_decision_point(self):
        self.alice.setacl(PROJECT, "bob", "lr")
        self.assertEqual(rights_of(self.bob_account, THERE), frozenset("lr"))
        require(self.bob_account, THERE, "r")
        self.assertRaises(PermissionDenied, require, self.bob_account, THERE, "i")

    def test_interfaces(self):
        verifyObject(IMailboxList, self.bob_account.mailboxes)
        self.alice.setacl(PROJECT, "bob", "lr")
        verifyObject(IMailbox, self.bob_account.mailboxes.open(THERE))


class OwnerAndAdminTests(TwoUsers, unittest.TestCase):
    def test_owner_holds_every_right_by_default(self):
        self.alice.create(PROJECT)
        self.assertEqual(self.alice.myrights(PROJECT), "lrswipkxteacd")
        self.assertEqual(self.alice.getacl(PROJECT), {"alice": "lrswipkxteacd"})

    def test_owner_keeps_lkxa_whatever_the_acl(self):
        self.alice.create(PROJECT)
        self.alice.setacl(PROJECT, "alice", "")
        self.assertEqual(self.alice.myrights(PROJECT), "lkxacd")
        self.alice.setacl(PROJECT, "alice", "+r")
        self.alice.select(PROJECT)

    def test_admin_always_holds_a(self):
        self.alice.create(PROJECT)
        self.assertEqual(self.root.myrights(THERE), "a")
        self.root.setacl(THERE, "root", "lr")
        self.root.select(THERE)
        self.assertEqual(self.bob.list("Other Users/*"), [])

    def test_create_inherits_the_parent_acl(self):
        self.alice.create(PROJECT)
        self.alice.setacl(PROJECT, "bob", "lrk")
        self.bob.create(THERE + "/Sub")
        self.assertEqual(self.alice.getacl(PROJECT + "/Sub"), self.alice.getacl(PROJECT))

    def test_delete_drops_the_acl(self):
        self.alice.create(PROJECT)
        self.alice.setacl(PROJECT, "bob", "lr")
        self.alice.delete(PROJECT)
        self.alice.create(PROJECT)
        self.assertEqual(self.alice.getacl(PROJECT), {"alice": "lrswipkxteacd"})
        self.assertEqual(self.bob.list("Other Users/*"), [])

    def test_rename_keeps_the_acl(self):
        self.alice.create(PROJECT)
        self.alice.setacl(PROJECT, "bob", "lr")
        self.alice.rename(PROJECT, "Archive")
        self.assertEqual(self.bob.list("Other Users/*"), ["Other Users/alice", "Other Users/alice/Archive"])

    def test_rename_across_owners_is_refused(self):
        from cyrusmail.store.errors import Refused

        self.alice.create(PROJECT)
        self.alice.setacl(PROJECT, "bob", "lrxk")
        self.assertRaises(Refused, self.bob_account.mailboxes.rename, THERE, "Mine")

    def test_pop3_sees_the_own_inbox(self):
        self.alice.append("INBOX")
        self.assertEqual(len(self.alice_account.mailboxes.open("INBOX").messages()), 1)


class IdentifierTests(TwoUsers, unittest.TestCase):
    def setUp(self):
        super().setUp()
        self.alice.create(PROJECT)

    def test_anyone(self):
        self.alice.setacl(PROJECT, "anyone", "lr")
        self.assertEqual(self.bob.myrights(THERE), "lr")

    def test_negative_rights_remove(self):
        self.alice.setacl(PROJECT, "anyone", "lrs")
        self.alice.setacl(PROJECT, "-bob", "rs")
        self.assertEqual(self.bob.myrights(THERE), "l")
        self.assertRaises(Denied, self.bob.select, THERE)
        self.alice.deleteacl(PROJECT, "-bob")
        self.bob.select(THERE)

    def test_groups(self):
        self.realm.access.add_to_group("team", ["bob"])
        self.alice.setacl(PROJECT, "group:team", "lr")
        self.assertIn(THERE, self.bob.list())
        self.realm.access.registry.remove_members("team", ["bob"])
        self.assertNotIn(THERE, self.bob.list())

    def test_groups_and_grants_made_through_another_server_count_at_once(self):
        """Another server (process) on the same mail: its groups and ACLs govern this one's next check,
        the rights a mailbox view keeps included."""
        other = MailRealm(self.another_store(), ["root"], ["example.org"], {})
        self.addCleanup(other.store.close)
        self.addCleanup(other.close)
        other.access.set_rights("alice", PROJECT, "group:team", "lr")
        self.assertNotIn(THERE, self.bob.list())
        other.access.add_to_group("team", ["bob"])
        self.assertIn(THERE, self.bob.list())  # the grant, and bob's group, seen here
        view = self.bob_account.mailboxes.open(THERE)
        self.assertEqual(view.rights, frozenset("lr"))
        other.access.registry.remove_members("team", ["bob"])
        self.assertEqual(view.rights, frozenset())
        self.assertNotIn(THERE, self.bob.list())

    def test_setacl_modifiers_and_obsolete_rights(self):
        """RFC 4314 2.1.1 for a server with the new rights: c = k, d = x t e."""
        self.alice.setacl(PROJECT, "bob", "lrswida")
        self.assertEqual(self.alice.getacl(PROJECT)["bob"], "lrswixtead")
        self.alice.setacl(PROJECT, "bob", "-d")
        self.assertEqual(self.alice.getacl(PROJECT)["bob"], "lrswia")
        self.alice.setacl(PROJECT, "bob", "+c")
        self.assertEqual(self.alice.getacl(PROJECT)["bob"], "lrswikac")
        self.alice.setacl(PROJECT, "bob", "")
        self.assertNotIn("bob", self.alice.getacl(PROJECT))

    def test_unknown_rights_and_identifiers_are_refused(self):
        from cyrusmail.store.errors import InvalidIdentifier, InvalidRights

        for rights in ("lrQ", "lrq", "1"):
            self.assertRaises(InvalidRights, self.alice_account.set_acl, PROJECT, "bob", rights)
        for identifier in ("", "a b", "group:", "-", "../x"):
            self.assertRaises(InvalidIdentifier, self.alice_account.set_acl, PROJECT, identifier, "lr")

    def test_listrights(self):
        self.assertEqual(self.alice.listrights(PROJECT, "alice"), ("lkxa", list("rswipte") + ["d"]))
        required, optional = self.alice.listrights(PROJECT, "bob")
        self.assertEqual((required, "".join(optional)), ("", "lrswipkxteacd"))


class DeliveryTargetTests(TwoUsers, unittest.TestCase):
    """user+folder needs p on the folder for the poster; else INBOX."""

    def setUp(self):
        super().setUp()
        self.alice.create(PROJECT)

    def target(self, folder, poster=None):
        return self.realm.delivery_target("alice", folder, poster).name

    def test_plus_folder_needs_p(self):
        self.assertEqual(self.target(PROJECT), "INBOX")
        self.assertEqual(self.target(PROJECT, poster="bob"), "INBOX")
        self.alice.setacl(PROJECT, "anyone", "p")
        self.assertEqual(self.target(PROJECT), PROJECT)
        self.assertEqual(self.target(PROJECT, poster="bob"), PROJECT)

    def test_owner_may_post_to_own_folders(self):
        self.assertEqual(self.target(PROJECT, poster="alice"), PROJECT)

    def test_missing_or_bad_folder_goes_to_inbox(self):
        for folder in ("Nope", "../x", "", None, "inbox"):
            self.assertEqual(self.target(folder, poster="alice"), "INBOX")
