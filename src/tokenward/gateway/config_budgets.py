"""The config file's budgets, kept in step with the ledger at start-up and on every reload.

Budgets live in the ledger, written there by the config file and by the admin API alike. The
file owns the budgets it last wrote: one that disappears from the file is deleted from the ledger
at the next start or reload, while a budget last written through the admin API (or the CLI) is
left alone even when the file never named it. Ownership is read from the audit log: each write
the file makes is audited under the actor :data:`CONFIG_ACTOR`, so it survives restarts and
works the same on every ledger backend.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from tokenward.core.budgets import Budget

__all__ = ["CONFIG_ACTOR", "sync_config_budgets"]

log = logging.getLogger("tokenward.gateway")

CONFIG_ACTOR = "(config file)"
"""The audit actor of the config file's writes; no admin key can carry this name (names are
letters, digits, ``_.-``)."""


async def sync_config_budgets(ledger: Any, budgets: Sequence[Budget]) -> tuple[list[str], list[str]]:
    """Write the file's budgets to ``ledger`` and delete those the file wrote before but no
    longer names.

    Args:
        ledger: an async ledger (:class:`~tokenward.ledger.base.AsyncLedger`).
        budgets: the config file's budgets.

    Returns:
        (names written or changed, names deleted).

    Raises:
        LedgerError: the store failed (the gateway does not start, or the reload is refused).
    """
    wanted = {budget.name: budget for budget in budgets}
    owner: dict[str, str] = {}  # budget name -> actor of its latest write
    for entry in await ledger.audit_log():
        if entry.action in ("budget.put", "budget.delete"):
            owner[entry.target] = entry.actor
    written: list[str] = []
    for budget in wanted.values():
        before = await ledger.get_budget(budget.name)
        if before == budget and owner.get(budget.name) == CONFIG_ACTOR:
            continue
        await ledger.put_budget(budget)
        await ledger.audit(
            CONFIG_ACTOR,
            "budget.put",
            budget.name,
            None if before is None else before.to_dict(),
            budget.to_dict(),
            project=_project(budget),
        )
        written.append(budget.name)
    deleted: list[str] = []
    for budget in await ledger.budgets():
        if budget.name in wanted or owner.get(budget.name) != CONFIG_ACTOR:
            continue
        if await ledger.delete_budget(budget.name):
            await ledger.audit(
                CONFIG_ACTOR, "budget.delete", budget.name, budget.to_dict(), None, project=_project(budget)
            )
            deleted.append(budget.name)
    if deleted:
        log.info("budgets removed from the config file deleted: %s", ", ".join(sorted(deleted)))
    return written, deleted


def _project(budget: Budget) -> str | None:
    """The project a budget belongs to, for project-scoped administrators' audit view."""
    return budget.subject_id if budget.scope == "project" else None
