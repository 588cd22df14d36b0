"""The store conformance suite bound to the PostgreSQL backend, on a throwaway server."""

from __future__ import annotations

from twisted.trial import unittest

from tests import postgres_support
from tests.store_conformance import StoreConformanceMixin
from tests.test_store_maildir import _TempFolders, summary_analyser

SKIP = postgres_support.skip_reason()


class PostgresStoreTests(_TempFolders, StoreConformanceMixin, unittest.TestCase):
    """The conformance suite with no MIME analyser."""

    skip = SKIP

    def setUp(self):
        self.schemas: dict[str, str] = {}  # data folder -> the DSN of its own empty schema
        super().setUp()
        self.dsn = self.dsn_of(str(self.data))

    def dsn_of(self, path: str) -> str:
        """One database schema per data folder, as the embedded store has one index per folder."""
        if path not in self.schemas:
            self.schemas[path], schema = postgres_support.fresh_dsn()
            self.addCleanup(postgres_support.drop_schema, schema)
        return self.schemas[path]

    def make_store(self, path: str):
        from cyrusmail.store.postgresql import PostgresStore

        return PostgresStore(self.dsn_of(path), path, analyser=self.analyser)

    def stored_bodies(self) -> dict:
        """Message bytes live in the blobs table, each under the SHA-256 of its content."""
        rows = self.store.db.execute("SELECT sha, data FROM blobs").fetchall()
        return {sha: (sha, 0, bytes(data)) for sha, data in rows}

    def subprocess_store_code(self) -> str:
        return f"from cyrusmail.store.postgresql import PostgresStore\nstore = PostgresStore({self.dsn!r}, DATA)"


class PostgresStoreWithAnalyserTests(PostgresStoreTests):
    """The conformance suite again, with a MIME analyser filling the cache slot."""

    analyser = staticmethod(summary_analyser)
    state_machine_examples = 10
