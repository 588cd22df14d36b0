"""NAMESPACE (RFC 2342) answers from the account, so the config's prefixes show, and LIST agrees."""

from __future__ import annotations

from twisted.cred.credentials import IUsernamePassword
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.helpers import add_user, make_context
from tests.imap_support import Client


class ConfiguredNamespaceTests(TestCase):
    def setUp(self):
        context = make_context(self.mktemp(), server={"admins": "root", "special_use": "Sent:sent"},
                               namespaces={"other_users": "Andere", "shared": "Gemeinsam/"},
                               imap={"enabled": "yes", "listen": "tcp:0:interface=127.0.0.1"})
        context.portal.checkers[IUsernamePassword].hash_in_thread = False
        self.addCleanup(context.store.close)
        self.addCleanup(context.users.close)
        for user in ("alice", "bob"):
            add_user(context, user)
        root = context.realm.account("root")
        root.mailboxes.create("Gemeinsam/Caf\u00e9")
        root.set_acl("Gemeinsam/Caf\u00e9", "anyone", "lr")
        alice = context.realm.account("alice")
        alice.mailboxes.create("Project")
        alice.set_acl("Project", "bob", "lr")
        self.bob = Client(context, Clock())
        self.bob.login("bob")
        self.addCleanup(self.bob.server.connectionLost, None)

    def test_namespace_uses_the_configured_prefixes(self):
        self.assertEqual(self.bob.command("n1 NAMESPACE"), [
            '* NAMESPACE (("" "/")) (("Andere/" "/")) (("Gemeinsam/" "/"))',
            "n1 OK NAMESPACE completed",
        ])

    def test_list_shows_the_prefixes_as_noselect_nodes(self):
        """Each NAMESPACE prefix, less its separator, is a \\Noselect node LIST can walk from."""
        self.assertEqual(self.bob.command('l1 LIST "" %')[-3:], [
            '* LIST (\\Noselect \\HasChildren) "/" "Andere"',
            '* LIST (\\Noselect \\HasChildren) "/" "Gemeinsam"',
            "l1 OK LIST completed",
        ])
        self.assertEqual(self.bob.command('l2 LIST "Andere/" *'), [
            '* LIST (\\Noselect \\HasChildren) "/" "Andere/alice"',
            '* LIST (\\HasNoChildren) "/" "Andere/alice/Project"',
            "l2 OK LIST completed",
        ])
        self.assertEqual(self.bob.command('l3 LIST "Gemeinsam/" %'), [
            '* LIST (\\HasNoChildren) "/" "Gemeinsam/Caf&AOk-"',
            "l3 OK LIST completed",
        ])
        self.assertEqual(self.bob.command('l4 MYRIGHTS "Gemeinsam/Caf&AOk-"'), [
            '* MYRIGHTS "Gemeinsam/Caf&AOk-" lr',
            "l4 OK MYRIGHTS completed",
        ])
