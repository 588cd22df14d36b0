"""GSSAPI (RFC 4752) against a real MIT KDC: the mechanism, the principal rule, the keytab checks.

The protocol conversations (IMAP, POP3, submission, real clients) are in
tests/test_gssapi_protocols.py; this file checks the pieces under them.
"""

from __future__ import annotations

import re

from twisted.cred.error import UnauthorizedLogin
from twisted.trial.unittest import TestCase

from cyrusmail.sasl import Challenge, Verify
from tests.kerberos_support import KDC, REALM, SASLClient, need_kerberos

ALICE = f"alice@{REALM}"
SERVICES = {"imap": "imap", "pop3": "pop", "submission": "smtp"}


def proved(outcome):
    """The KerberosCredentials a finished exchange hands the portal (in a sasl.Verify)."""
    assert isinstance(outcome, Verify), outcome
    return outcome.credentials


class PrincipalRuleTests(TestCase):
    """Which principal logs in as whom: a table, no KDC needed."""

    def test_realms_and_map(self):
        from cyrusmail.auth.kerberos import PrincipalRule

        realms = PrincipalRule(frozenset({"EXAMPLE.ORG"}))
        mapped = PrincipalRule(frozenset(), re.compile(r"(?P<user>[a-z]+)/mail@PARTNER\.ORG"))
        first_group = PrincipalRule(frozenset({"EXAMPLE.ORG"}), re.compile(r"([a-z]+)@OLD\.EXAMPLE\.ORG"))
        table = [
            (realms, "alice@EXAMPLE.ORG", "alice"),
            (realms, "alice@example.org", None),  # realms are case-sensitive
            (realms, "alice@OTHER.ORG", None),
            (realms, "alice/admin@EXAMPLE.ORG", None),  # an instance is another identity
            (realms, "alice", None),
            (realms, "al(ice@EXAMPLE.ORG", None),
            (realms, "alice\r\nX-Injected: yes@EXAMPLE.ORG", None),
            (realms, "al\\@ice@EXAMPLE.ORG", None),
            (mapped, "bob/mail@PARTNER.ORG", "bob"),
            (mapped, "bob@PARTNER.ORG", None),
            (mapped, "bob/mail@PARTNER.ORG.EVIL", None),  # the whole principal must match
            (first_group, "carol@OLD.EXAMPLE.ORG", "carol"),
            (first_group, "carol@EXAMPLE.ORG", "carol"),
        ]
        for rule, principal, user in table:
            self.assertEqual(rule.user_of(principal), user, principal)


class ConfigTests(TestCase):
    def test_keys_and_checks(self):
        from cyrusmail.config import ConfigError
        from tests.helpers import make_config

        config = make_config(self.mktemp(), auth={"keytab": "/etc/krb5.keytab", "gssapi_realms": "EXAMPLE.ORG",
                                                  "gssapi_services": "pop3=pop3"})
        self.assertEqual(config["auth"]["gssapi_services"], {"imap": "imap", "pop3": "pop3", "submission": "smtp"})
        self.assertEqual(config["auth"]["gssapi_realms"], ["EXAMPLE.ORG"])
        self.assertIsNone(make_config(self.mktemp())["auth"]["keytab"])
        refused = [
            ({"keytab": "/etc/krb5.keytab"}, "gssapi_realms"),  # whom to let in must be said
            ({"gssapi_principal_map": "(unclosed"}, "not a regular expression"),
            ({"gssapi_principal_map": "alice@EXAMPLE"}, "needs a group"),
            ({"gssapi_services": "lmtp=lmtp"}, "PROTOCOL=NAME"),
            ({"gssapi_services": "imap=im ap"}, "PROTOCOL=NAME"),
        ]
        for auth, words in refused:
            with self.assertRaises(ConfigError) as raised:
                make_config(self.mktemp(), auth=auth)
            self.assertIn(words, str(raised.exception))
            self.assertIn("[auth]", str(raised.exception))


class RealmTestCase(TestCase):
    """A KDC per test, and an acceptor for its keytab with a replay cache in a temporary folder."""

    def setUp(self) -> None:
        need_kerberos()
        self.kdc = KDC(self)
        self.kdc.kinit("alice")

    def acceptor(self, realms=(REALM,), pattern=None, services=SERVICES):
        from cyrusmail.auth.kerberos import Acceptor, PrincipalRule

        return Acceptor(self.kdc.keytab, services, PrincipalRule(frozenset(realms), pattern),
                        rcache=self.kdc.folder / "server.rcache")


class MechanismTests(RealmTestCase):
    """One exchange at a time, the server's steps fed the client's octets directly."""

    def converse(self, mechanism, client: SASLClient, first: bytes | None = None):
        """Play the exchange to its end; the final KerberosCredentials and the challenges seen."""
        from cyrusmail.auth.kerberos import KerberosCredentials

        challenges = []
        outcome = mechanism.step(client.first() if first is None else first)
        while isinstance(outcome, Challenge):
            challenges.append(outcome.data)
            outcome = mechanism.step(client.respond(outcome.data))
        self.assertIsInstance(proved(outcome), KerberosCredentials)
        return proved(outcome), challenges

    def test_exchange_with_mutual_authentication(self):
        mechanism = self.acceptor().mechanism("imaps", "127.0.0.1")
        self.assertEqual(mechanism.step(None), Challenge(b""))  # client-first: the token is asked for
        client = SASLClient("imap")
        outcome, challenges = self.converse(mechanism, client)
        self.assertEqual(len(challenges), 2)  # the AP-REP, then the wrapped security layer offer
        self.assertEqual(client.server_offer, b"\x01\x00\x00\x00")  # no security layer, maximum size 0
        self.assertEqual((outcome.principal, outcome.user, outcome.authzid, outcome.refusal, outcome.client),
                         (ALICE, "alice", "", "", "127.0.0.1"))
        self.assertEqual(outcome.username, "alice")
        self.assertEqual(mechanism.principal, ALICE)

    def test_exchange_without_mutual_authentication(self):
        outcome, challenges = self.converse(self.acceptor().mechanism("pop3", "127.0.0.1"),
                                            SASLClient("pop", mutual=False, authzid="alice"))
        self.assertEqual(len(challenges), 1)  # only the offer
        self.assertEqual((outcome.user, outcome.authzid, outcome.refusal), ("alice", "alice", ""))

    def test_replayed_token_is_refused(self):
        acceptor = self.acceptor()
        client = SASLClient("smtp")
        token = client.first()
        outcome, _ = self.converse(acceptor.mechanism("submission", "127.0.0.1"), client, token)
        self.assertEqual(outcome.refusal, "")
        replayed = proved(acceptor.mechanism("submission", "127.0.0.1").step(token))
        self.assertEqual(replayed.user, None)
        self.assertIn("replay", replayed.refusal)
        # Another process on the same data folder (a worker) shares the replay cache.
        again = proved(self.acceptor().mechanism("submissions", "127.0.0.1").step(token))
        self.assertIn("replay", again.refusal)

    def test_ticket_for_another_service_is_refused(self):
        outcome = proved(self.acceptor().mechanism("imap", "127.0.0.1").step(SASLClient("pop").first()))
        self.assertIn("does not match", outcome.refusal)
        self.assertEqual(outcome.principal, "")

    def test_malformed_tokens_are_refused(self):
        acceptor = self.acceptor()
        for token in (b"", b"garbage", b"\x60\x05\x06\x03abc", bytes(range(256)) * 8):
            outcome = proved(acceptor.mechanism("imap", "127.0.0.1").step(token))
            self.assertTrue(outcome.refusal, token[:20])
            self.assertIsNone(outcome.user)

    def test_layer_choices_other_than_none_are_refused(self):
        acceptor = self.acceptor()
        for layer, max_size, words in ((2, 0, "layer 2"), (4, 65536, "layer 4"), (1, 4096, "maximum message size")):
            outcome, _ = self.converse(acceptor.mechanism("imap", "127.0.0.1"),
                                       SASLClient("imap", layer=layer, max_size=max_size))
            self.assertIn(words, outcome.refusal)
            self.assertIsNone(outcome.user)

    def test_unwrappable_or_short_choice_is_refused(self):
        acceptor = self.acceptor()
        for answer, words in ((b"\x01\x00\x00\x00", "cannot unwrap"), (None, "shorter than 4")):
            mechanism = acceptor.mechanism("imap", "127.0.0.1")
            client = SASLClient("imap")
            ap_rep = mechanism.step(client.first())
            offer = mechanism.step(client.respond(ap_rep.data))
            client.respond(offer.data)  # the client reads the offer
            if answer is None:
                answer = client.context.wrap(b"\x01\x00", False).message
            outcome = proved(mechanism.step(answer))
            self.assertIn(words, outcome.refusal)

    def test_non_empty_answer_to_ap_rep_is_refused(self):
        mechanism = self.acceptor().mechanism("imap", "127.0.0.1")
        mechanism.step(SASLClient("imap").first())
        self.assertIn("expected an empty response", proved(mechanism.step(b"x")).refusal)

    def test_principal_of_a_realm_not_named_maps_to_no_user(self):
        outcome, _ = self.converse(self.acceptor(realms=("OTHER.TEST",)).mechanism("imap", "127.0.0.1"),
                                   SASLClient("imap"))
        self.assertEqual((outcome.principal, outcome.user, outcome.refusal), (ALICE, None, ""))
        self.assertEqual(outcome.username, ALICE)  # the throttle counts it under the principal

    def test_principal_map(self):
        self.kdc.kinit("carol/admin")
        acceptor = self.acceptor(realms=(), pattern=re.compile(rf"([a-z]+)/admin@{re.escape(REALM)}"))
        outcome, _ = self.converse(acceptor.mechanism("imap", "127.0.0.1"), SASLClient("imap"))
        self.assertEqual((outcome.principal, outcome.user), (f"carol/admin@{REALM}", "carol"))


class CheckerTests(RealmTestCase):
    """The portal's side: the mapped user must exist; the authzid must be that user."""

    def setUp(self) -> None:
        super().setUp()
        from cyrusmail.auth.kerberos import KerberosChecker
        from tests.helpers import add_user, make_context

        self.context = make_context(self.mktemp())
        self.addCleanup(self.context.users.close)
        add_user(self.context, "alice")
        self.checker = KerberosChecker(self.context.users, ["example.org"])

    def check(self, **fields):
        from cyrusmail.auth.kerberos import KerberosCredentials

        values = {"principal": ALICE, "user": "alice", "authzid": "", "client": "127.0.0.1", **fields}
        return self.checker.requestAvatarId(KerberosCredentials(**values))

    def test_accepted(self):
        for authzid in ("", "alice", "ALICE", "alice@example.org"):
            self.assertEqual(self.successResultOf(self.check(authzid=authzid)), "alice")

    def test_refused(self):
        for fields in ({"user": None}, {"user": "nobody"}, {"authzid": "bob"}, {"refusal": "Request is a replay"},
                       {"principal": "", "user": None, "refusal": "garbage"}):
            self.failureResultOf(self.check(**fields), UnauthorizedLogin)


class KeytabTests(RealmTestCase):
    """A keytab that cannot serve is refused with one clear line."""

    def test_problems(self):
        from cyrusmail.auth.kerberos import Acceptor, KerberosError, PrincipalRule

        not_keytab = self.kdc.folder / "not-a-keytab"
        not_keytab.write_bytes(b"[libdefaults]\n")
        cases = [
            (self.kdc.folder / "missing.keytab", SERVICES, "No such file"),
            (not_keytab, SERVICES, "no usable key for service imap"),
            (self.kdc.keytab, {**SERVICES, "imap": "ldap"}, "no usable key for service ldap"),
        ]
        for keytab, services, words in cases:
            with self.assertRaises(KerberosError) as raised:
                Acceptor(keytab, services, PrincipalRule(frozenset({REALM})))
            self.assertIn(words, str(raised.exception))
            self.assertNotIn("\n", str(raised.exception))
