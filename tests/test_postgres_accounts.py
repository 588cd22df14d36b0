"""The account layer's ACL, shared-folder and quota tests again, over the PostgreSQL store."""

from __future__ import annotations

from twisted.trial import unittest

from cyrusmail.portal import MailRealm
from tests import postgres_support
from tests import test_acl_admin as access_admin
from tests import test_acl_rights as rights
from tests import test_auth as auth
from tests import test_quota as quotas
from tests import test_shared_folders as shared

SKIP = postgres_support.skip_reason()


class OnPostgres:
    """Binds a ``TwoUsers`` test class to a PostgreSQL store in a schema of its own."""

    skip = SKIP

    def make_store(self, data: str):
        from cyrusmail.store.postgresql import PostgresStore

        self.dsn, schema = postgres_support.fresh_dsn()
        self.addCleanup(postgres_support.drop_schema, schema)
        return PostgresStore(self.dsn, data, analyser=None)

    def another_store(self):
        from cyrusmail.store.postgresql import PostgresStore

        return PostgresStore(self.dsn, self.mktemp(), analyser=None)  # another server: its own data folder


class PostgresRightsTableTests(OnPostgres, rights.RightsTableTests):
    pass


class PostgresOwnerAndAdminTests(OnPostgres, rights.OwnerAndAdminTests):
    pass


class PostgresIdentifierTests(OnPostgres, rights.IdentifierTests):
    pass


class PostgresDeliveryTargetTests(OnPostgres, rights.DeliveryTargetTests):
    pass


class PostgresSharedFolderTests(OnPostgres, shared.SharedFolderTests):
    pass


class PostgresQuotaTests(OnPostgres, quotas.QuotaTests):
    def test_recount_from_files_matches(self):
        raise unittest.SkipTest("recount adds up message files; the PostgreSQL store keeps none")


class PostgresAccessAdminTests(access_admin.AccessAdminTests):
    """``cyrusmail-admin`` acl, group and quota commands on the PostgreSQL store, whose
    effect the realm of another server (its own data folder) sees."""

    skip = SKIP

    def setUp(self):
        super().setUp()
        self.dsn, schema = postgres_support.fresh_dsn()
        self.addCleanup(postgres_support.drop_schema, schema)
        with self.config.open("a") as config:
            config.write(f"[store]\nbackend = postgresql\ndsn = {self.dsn}\n")

    def store(self):
        from cyrusmail.store.postgresql import PostgresStore

        store = PostgresStore(self.dsn, self.mktemp(), analyser=None)
        self.addCleanup(store.close)
        return store

    def realm(self):
        realm = MailRealm(self.store(), [], ["example.org"], {})
        self.addCleanup(realm.close)
        return realm

    def test_quota_reports_drift(self):
        raise unittest.SkipTest("drift is counted against message files; the PostgreSQL store keeps none")


class PostgresUserDatabaseTests(auth.UserDatabaseTests):
    """The user database every server shares: the accounts table of the store's database."""

    skip = SKIP

    def setUp(self):
        from cyrusmail.store.postgresql import PostgresStore
        from cyrusmail.store.postgresql.users import PostgresUserDatabase

        dsn, schema = postgres_support.fresh_dsn()
        self.addCleanup(postgres_support.drop_schema, schema)
        self.store = PostgresStore(dsn, self.mktemp(), analyser=None)
        self.addCleanup(self.store.close)
        self.users = PostgresUserDatabase(self.store)

    def test_password_is_stored_only_as_a_hash(self):
        self.users.add("bob", "s3cret-words")
        (row,) = self.store.db.execute("SELECT name, password FROM accounts").fetchall()
        self.assertNotIn("s3cret-words", " ".join(row))
        self.assertTrue(self.users.check_password("bob", "s3cret-words"))
        self.assertFalse(self.users.check_password("bob", "wrong"))
        self.assertFalse(self.users.check_password("nobody", "s3cret-words"))

    def test_scram_keys_are_kept_beside_the_hash_and_follow_the_password(self):
        from cyrusmail.auth.scram import ScramKeys
        from cyrusmail.store.postgresql.users import PostgresUserDatabase

        users = PostgresUserDatabase(self.store, scram_iterations=4096)
        users.add("carol", "pencil")
        keys = users.scram_keys("carol")
        self.assertIsNotNone(keys)
        self.assertNotIn("pencil", self.store.db.execute("SELECT scram FROM accounts").fetchone()[0])
        users.set_password("carol", "pen")
        self.assertNotEqual(users.scram_keys("carol"), keys)
        self.assertFalse(users.set_scram_keys("carol", ScramKeys.derive("pencil", 4096), "not the stored hash"))
        self.assertEqual(users.secret(), PostgresUserDatabase(self.store).secret())  # one per database
