"""The SQLite backend, ``sqlite:///path/to/ledger.db``: the embedded default (see :mod:`.ledger`)."""

from tokenward.ledger.sqlite.ledger import (
    SCHEMA_VERSION,
    SQLiteLedger,
    SQLiteSettings,
    parse_sqlite_url,
    path_from_url,
)

__all__ = ["SCHEMA_VERSION", "SQLiteLedger", "SQLiteSettings", "parse_sqlite_url", "path_from_url"]
