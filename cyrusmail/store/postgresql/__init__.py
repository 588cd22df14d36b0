"""The PostgreSQL backend of the store: several servers on one database (``[store] backend = postgresql``)."""

from cyrusmail.store.postgresql.store import PostgresStore

__all__ = ["PostgresStore"]
