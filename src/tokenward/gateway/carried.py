"""Budgets a client carries for its own session or task (``x-tokenward-session-budget``).

A wrapped SDK client whose base URL is a tokenward gateway cannot enforce
``guard.session(..., budget=...)`` itself (the gateway charges its calls), so it sends the
session's budgets in the short form with each call made inside the session::

    x-tokenward-session: s-1
    x-tokenward-session-budget: total_tokens=30000, cost_usd=0.5;action=deny

(``x-tokenward-task-budget`` likewise for ``guard.task``; several budgets are separated by
commas). The gateway honours them only for keys with ``allow_client_budgets: true``; any other key
gets a 400 (``client_budgets_forbidden``) before anything is forwarded, which the SDK raises as a
:class:`~tokenward.errors.ConfigError`, so a budget never silently stops applying.

A carried budget is a budget of scope ``session`` (or ``task``) for the call's own session (in the
key's project's namespace: ``demo/s-1``). It only ever adds a limit, so it is only ever tighter
than what applies already (it applies *as well as* every other budget; ``overrides`` is refused).
It lives as long as the session's lease (:mod:`tokenward.ledger.leases`): the gateway joins the
lease with the budgets on the first call, renews it about every third of its time to live
(``defaults.reservation_ttl_seconds``) while calls come, and gives it back at shutdown; when the
calls stop, the lease expires and the budgets are deleted (their spend stays in the ledger). Two
different declarations for one session (two clients, or two replicas) are a 400
(``carried_budget_conflict``) naming both.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from tokenward.core.budgets import Budget, Subject, models_suffix, parse_short_spec, short_name
from tokenward.errors import ConfigError
from tokenward.gateway.auth import list_header
from tokenward.gateway.config import KeyConfig
from tokenward.gateway.errors import GatewayError
from tokenward.ledger.leases import describe_budgets
from tokenward.ledger.owner import this_process

__all__ = ["HEADERS", "CarriedBudgets", "carried_budgets", "carried_name", "split_specs"]

HEADERS: Mapping[str, str] = {"session": "x-tokenward-session-budget", "task": "x-tokenward-task-budget"}
"""The header that carries each scope's budgets."""

log = logging.getLogger("tokenward.gateway")

_MAX_BUDGETS = 8
_NEW_SPEC = re.compile(r"^\s*[a-z_][a-z0-9_]*\s*=")


def split_specs(value: str) -> list[str]:
    """The short specs of one header value: ``total_tokens=100, cost_usd=1/day`` gives two. A comma
    inside a spec's options (``;thresholds=50%,90%``, ``;models=gpt-5,claude-*``) stays in it: a
    new spec starts only where a piece begins with ``METER=``."""
    out: list[str] = []
    for piece in value.split(","):
        if out and not _NEW_SPEC.match(piece):
            out[-1] += "," + piece
        else:
            out.append(piece)
    return [s.strip() for s in out if s.strip()]


def carried_budgets(
    headers: Mapping[str, str], key: KeyConfig, subject: Subject
) -> list[tuple[str, tuple[Budget, ...]]]:
    """The budgets a request carries, as ``[(lease key, budgets)]`` (``session:demo/s-1``).

    Raises:
        GatewayError: 400 when the key may not carry budgets (``client_budgets_forbidden``), the
            request names no session (task) for them, or a spec is malformed or overrides a
            template.
    """
    out = []
    for scope, header in HEADERS.items():
        value = list_header(headers, header)
        if value is None or not value.strip():
            continue
        if not key.allow_client_budgets:
            raise GatewayError(
                400,
                f"key {key.name!r} may not carry budgets ({header}); set allow_client_budgets: true on "
                "the key, or set the budget at the gateway (tokenward budgets set)",
                code="client_budgets_forbidden",
                param=header,
            )
        owner = subject.value(scope)
        if owner is None:
            raise GatewayError(
                400, f"{header} needs the {scope} it is for (x-tokenward-{scope})", param=header
            )
        specs = split_specs(value)
        if len(specs) > _MAX_BUDGETS:
            raise GatewayError(400, f"{header}: at most {_MAX_BUDGETS} budgets", param=header)
        budgets = []
        for spec in specs:
            try:
                budget = parse_short_spec(spec, scope=scope, subject_id=owner)
            except ConfigError as exc:
                raise GatewayError(400, f"{header}: {exc}", param=header) from None
            if budget.overrides is not None:
                raise GatewayError(
                    400,
                    f"{header}: a carried budget only adds a limit; overrides is not allowed",
                    param=header,
                )
            if budget.name != short_name(budget):
                raise GatewayError(
                    400, f"{header}: a carried budget is named by the gateway; drop ;name=", param=header
                )
            budgets.append(replace(budget, name=carried_name(budget)))
        names = [b.name for b in budgets]
        if len(set(names)) != len(names):
            raise GatewayError(
                400,
                f"{header}: two budgets named alike ({', '.join(names)}); give one a ;name=",
                param=header,
            )
        out.append((f"{scope}:{owner}", tuple(sorted(budgets, key=lambda b: b.name))))
    return out


def carried_name(budget: Budget) -> str:
    """The name the gateway gives a carried budget: ``session=demo/s-1:total_tokens``, and the
    window after a ``/`` when it has one (``task=t-1:cost_usd/day``), and its models when it has
    some (:func:`~tokenward.core.budgets.models_suffix`), so a session may carry one budget per
    meter, window and models. A client never names it, so it cannot replace another budget."""
    base = f"{budget.scope}={budget.subject_id}:{budget.meter}"
    base = base if str(budget.window) == "none" else f"{base}/{budget.window}"
    return base + models_suffix(budget.models) if budget.models else base


@dataclass
class _Joined:
    budgets: tuple[Budget, ...]
    renewed: datetime  # the ledger clock's instant of the last join or renewal


class CarriedBudgets:
    """The leases this gateway holds for carried budgets (see the module docstring).

    Args:
        ledger: the gateway's async ledger (its clock times the renewals).
        ttl: how long a lease lives without calls.
    """

    def __init__(self, ledger: Any, ttl: timedelta) -> None:
        self.ledger = ledger
        self.ttl = ttl
        self.holder = f"{this_process()}/gateway-{uuid.uuid4().hex[:12]}"
        self._joined: dict[str, _Joined] = {}
        self._lock = asyncio.Lock()

    async def apply(self, declared: Sequence[tuple[str, tuple[Budget, ...]]]) -> None:
        """Make sure each declared group's budgets are in force: join its lease the first time,
        renew it once a third of its time to live has passed.

        Raises:
            GatewayError: 400 (``carried_budget_conflict``) when the session is open with other
                budgets (both named).
        """
        if not declared:
            return
        async with self._lock:
            now = self.ledger.clock.now()
            self._forget_stale(now)
            for key, budgets in declared:
                joined = self._joined.get(key)
                if joined is not None and joined.budgets != budgets:
                    raise _conflict(key, joined.budgets, budgets)
                if joined is not None and now - joined.renewed < self.ttl / 3:
                    continue
                if joined is not None and await self.ledger.renew_lease(key, self.holder, self.ttl):
                    joined.renewed = now
                    continue
                await self._check_names(key, budgets)
                try:
                    await self.ledger.join_lease(key, self.holder, ttl=self.ttl, budgets=budgets)
                except ConfigError as exc:
                    raise GatewayError(400, str(exc), code="carried_budget_conflict") from None
                self._joined[key] = _Joined(budgets, now)

    async def _check_names(self, key: str, budgets: Sequence[Budget]) -> None:
        """Refuse a carried budget whose name is taken by a budget that is not this session's
        carried one (an administrator's, the config file's): joining would replace it, and the
        lease's end would delete it."""
        group = await self.ledger.lease_group(key)
        declared = {b.name for b in group.budgets} if group is not None else set()
        for budget in budgets:
            if budget.name not in declared and await self.ledger.get_budget(budget.name) is not None:
                raise GatewayError(
                    400,
                    f"a budget named {budget.name!r} exists already (not made for this session's lease); "
                    "a carried budget never replaces one",
                    code="carried_budget_conflict",
                )

    def _forget_stale(self, now: datetime) -> None:
        """Drop what is known of leases that have expired (no call renewed them)."""
        stale = [k for k, j in self._joined.items() if now - j.renewed >= self.ttl]
        for key in stale:
            del self._joined[key]

    async def close(self) -> None:
        """Give every lease back (the last one out deletes its session's budgets)."""
        async with self._lock:
            for key in list(self._joined):
                try:
                    await self.ledger.leave_lease(key, self.holder)
                except Exception:  # shutting down: the lease expires on its own
                    log.warning("could not give back the lease on %s; it expires on its own", key)
            self._joined.clear()


def _conflict(key: str, held: Sequence[Budget], declared: Sequence[Budget]) -> GatewayError:
    return GatewayError(
        400,
        f"{key.replace(':', ' ', 1)!r} is open with budgets {describe_budgets(held)}; this request "
        f"carries {describe_budgets(declared)}: every client of a session must carry the same budgets",
        code="carried_budget_conflict",
    )
