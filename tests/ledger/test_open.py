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


@pytest.mark.sqlite
@pytest.mark.parametrize("url", ["sqlite:/{}/ledger.db", "sqlite:ledger.db", "sqlite:{}/ledger.db"])
def test_a_sqlite_url_without_three_slashes_opens_nothing(url: str, tmp_path, monkeypatch) -> None:
    """``sqlite:/var/lib/tw.db`` (one slash, meant as absolute) used to open ``var/lib/tw.db``
    under the working directory: a second, empty ledger, so the spend of every process using the
    real one did not count against its budgets."""
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "abs"
    target.mkdir()
    with pytest.raises(ConfigError, match=r"sqlite:///relative/path\.db or sqlite:////absolute/path\.db"):
        open_ledger(url.format(str(target).lstrip("/")))
    assert sorted(p.name for p in tmp_path.rglob("*.db*")) == []
