"""Opening ledgers by URL."""

from __future__ import annotations

import pytest

from tokenward.errors import ConfigError
from tokenward.ledger import Ledger, open_ledger


def test_every_backend_satisfies_the_protocol(ledger: Ledger) -> None:
    assert isinstance(ledger, Ledger)


def test_unknown_scheme_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"mysql://.*memory://.*sqlite://"):
        open_ledger("mysql://localhost/ledger")


@pytest.mark.sqlite
@pytest.mark.parametrize("url", ["sqlite://somehost/ledger.db", "sqlite://"])
def test_malformed_sqlite_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        open_ledger(url)
