"""The PostgreSQL backend, ``postgresql://user@host:port/db``: the whole ledger in PostgreSQL (see
:mod:`.ledger`; extra ``postgres``)."""

from tokenward.ledger.postgres.ledger import PgSettings, PostgresLedger, lock_key, parse_pg_url

__all__ = ["PgSettings", "PostgresLedger", "lock_key", "parse_pg_url"]
