"""The config file's budgets, kept in step with the ledger at start-up and on every reload.

Budgets live in the ledger, written there by the config file and by the admin API alike. The
file owns the budgets it last wrote: one that disappears from the file is deleted from the ledger
at the next start or reload, while a budget last written through the admin API (or the CLI) is
left alone even when the file never named it. Ownership is read from the audit log: each write
the file makes is audited under the actor :data:`CONFIG_ACTOR`, so it survives restarts and
works the same on every ledger backend.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

from tokenward.core.budgets import Budget
from tokenward.core.pricebook import canonical_model

__all__ = ["CONFIG_ACTOR", "sync_config_budgets", "warn_unmatched_budgets"]

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


_KEY_SCOPES = ("org", "project", "team")
"""Scopes only a virtual key sets (besides ``key``, its name): no header can name them."""


async def warn_unmatched_budgets(ledger: Any, config: Any, prices: Any = None) -> list[str]:
    """Log a warning for each of the config file's budgets that no call can reach as written (at
    start and on every reload), and return the warnings:

    * a fixed ``key``, ``org``, ``project`` or ``team`` budget whose id no virtual key carries
      (those values come from keys alone), e.g. ``scope: key`` with the key itself as ``id``
      instead of its ``name``;
    * a ``tag:NAME`` budget when no key carries tag ``NAME`` and none lets clients add tags;
    * an ``overrides`` that names no template of the budget's scope, so the template's instance
      still applies alongside it;
    * a model in ``models`` written as a plain name (no ``*?[``) that the price book does not know
      and no upstream names (its ``models`` or Azure deployments): a misspelt ``gpt-4o-mni``.

    Keys made through the admin API count, as they are when the gateway starts or reloads; a
    budget made for a key still to come is warned about until the key exists.

    Args:
        ledger: an async ledger (its keys and budgets).
        config: the :class:`~tokenward.gateway.config.GatewayConfig` whose budgets to check.
        prices: the price book (:class:`~tokenward.core.pricebook.PriceBook`) models are looked
            up in; None: models are not checked.
    """
    stored = [k for k in await ledger.keys() if k.revoked_at is None]
    carried: dict[str, set[str]] = {scope: set() for scope in ("key", *_KEY_SCOPES)}
    tags: set[str] = set()
    client_tags = False
    for key in config.keys:
        carried["key"].add(key.name)
        for scope in _KEY_SCOPES:
            if key.subject.get(scope):
                carried[scope].add(key.subject[scope])
        tags |= {name for name, _ in key.tags}
        client_tags = client_tags or key.allow_client_tags
    for record in stored:
        carried["key"].add(record.name)
        for scope in _KEY_SCOPES:
            if record.subject.value(scope):
                carried[scope].add(record.subject.value(scope))
        tags |= {name for name, _ in record.subject.tags}
        client_tags = client_tags or record.allow_client_tags
    secrets = {key.key_sha256: key.name for key in config.keys}
    secrets |= {record.key_sha256: record.name for record in stored}
    templates = {
        (b.name, b.scope) for b in [*config.budgets, *await ledger.budgets()] if b.subject_id is None
    }
    problems: list[str] = []
    for budget in config.budgets:
        where = f"budget {budget.name!r} ({budget.scope}={budget.subject_id or '(each)'})"
        if (
            budget.subject_id is not None
            and budget.scope in carried
            and budget.subject_id not in carried[budget.scope]
        ):
            known = ", ".join(sorted(carried[budget.scope])) or "none"
            named = secrets.get(hashlib.sha256(budget.subject_id.encode()).hexdigest())
            hint = (
                f"; its id is a key itself: a key budget's id is the key's name ({named!r})" if named else ""
            )
            problems.append(
                f"{where} applies to no call: no virtual key carries {budget.scope} {budget.subject_id!r} "
                f"(the keys carry: {known}){hint}"
            )
        if budget.scope.startswith("tag:") and not client_tags and budget.scope[4:] not in tags:
            problems.append(
                f"{where} applies to no call: no virtual key carries tag {budget.scope[4:]!r} "
                f"(the keys' tags: {', '.join(sorted(tags)) or 'none'}) and none has allow_client_tags"
            )
        if budget.overrides is not None and (budget.overrides, budget.scope) not in templates:
            problems.append(
                f"{where} overrides {budget.overrides!r}, which is no template of scope {budget.scope}: "
                "nothing is replaced, and every template of the scope still applies alongside it"
            )
    if prices is not None:
        problems += _unknown_models(config, prices)
    for problem in problems:
        log.warning("%s", problem)
    return problems


def _unknown_models(config: Any, prices: Any) -> list[str]:
    """The warnings for plain model names of budgets that neither the price book nor any
    upstream knows (see :func:`warn_unmatched_budgets`)."""
    named = {canonical_model(p) for u in config.upstreams for p in u.models if not set(p) & set("*?[")}
    named |= {canonical_model(d.model) for u in config.upstreams for d in u.deployments}
    out = []
    for budget in config.budgets:
        for model in budget.models:
            if set(model) & set("*?[") or model in named or prices.resolve(model) is not None:
                continue
            out.append(
                f"budget {budget.name!r} counts calls to model {model!r}, which the price table does "
                "not know and no upstream names: if it is misspelt, the budget applies to no call"
            )
    return out
