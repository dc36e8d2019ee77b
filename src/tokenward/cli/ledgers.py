"""How the commands name and open a ledger.

Commands that read a ledger take ``--ledger URL`` or, when it is not given, the ``TOKENWARD_LEDGER``
environment variable, else ``sqlite:///tokenward.db``. Those that only read it refuse a SQLite
file that does not exist, as ``tokenward report`` does, instead of creating an empty one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenward.ledger.base import Ledger

__all__ = ["DEFAULT_LEDGER", "LEDGER_ENV", "check_exists", "open_existing_ledger"]

LEDGER_ENV = "TOKENWARD_LEDGER"
"""The environment variable naming the ledger URL of the commands that read one."""

DEFAULT_LEDGER = "sqlite:///tokenward.db"
"""The ledger of those commands when neither ``--ledger`` nor ``TOKENWARD_LEDGER`` names one."""


def open_existing_ledger(url: str) -> Ledger:
    """Open a ledger for a command that only reads it: a SQLite file that does not exist is
    refused (opening it would create an empty one, directories included, and a mistyped path
    would look like an empty ledger), with the check and message of ``tokenward report``.

    Raises:
        ConfigError: a malformed URL, or a SQLite file that does not exist.
        LedgerError: the store cannot be opened.
    """
    from tokenward.ledger import open_ledger

    check_exists(url)
    return open_ledger(url)


def check_exists(url: str) -> None:
    """Refuse a SQLite ledger file that does not exist, saying how to name the right one
    (``--ledger URL`` or ``TOKENWARD_LEDGER``); other URLs are left to the store.

    Raises:
        ConfigError: a malformed URL, or a SQLite file that does not exist.
    """
    from tokenward.errors import ConfigError
    from tokenward.observe.rows import open_rows

    if not url.startswith("sqlite:"):
        return
    try:
        open_rows(url).close()  # the reports' check, which opens nothing: "no such ledger file"
    except ConfigError as exc:
        if "no such ledger file" not in str(exc):
            raise
        raise ConfigError(
            f"{exc}; name the ledger with --ledger URL or the {LEDGER_ENV} environment variable "
            f"(default {DEFAULT_LEDGER}), e.g. --ledger sqlite:///examples/tokenward.db"
        ) from None
