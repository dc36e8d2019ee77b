"""Shared sessions: membership is a lease in the ledger.

Several workers may run in one session (or task) at once, each entering
``guard.session("task-42", budget=...)``. Each entry takes a *lease* on the group
(``session:task-42``), renewed while the worker runs (:class:`tokenward.guard.renewal.Renewer`,
like a reservation) and given back when it leaves. The budgets declared for the session are made
when the group opens and deleted only when its *last* lease is given back or expires (a crashed
worker's lease expires after its time to live), so a worker that leaves early never lifts the
limit of those still running. Two workers declaring different budgets for the same session is a
:class:`~tokenward.errors.ConfigError` naming both declarations.

:class:`LeaseSteps` is written once over a store's primitives (memory, SQLite, PostgreSQL); the
Redis ledger keeps its leases in its durable store.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from tokenward.core.budgets import Budget
from tokenward.errors import ConfigError, ValidationError
from tokenward.ledger.primitives import Primitives
from tokenward.ledger.records import LeaseGroup
from tokenward.numbers import plain

__all__ = ["LeaseSteps", "describe_budgets"]

_CHECK_EVERY = timedelta(seconds=1)  # how often admissions look for expired leases


def describe_budgets(budgets: Sequence[Budget]) -> str:
    """``[total_tokens=1000, cost_usd=0.5/day]``: budgets as a worker declares them."""
    parts = []
    for b in budgets:
        window = "" if str(b.window) == "none" else f"/{b.window}"
        extras = "" if (b.mode, b.action) == ("hard", "clamp") else f" ({b.mode}, {b.action})"
        parts.append(f"{b.meter}={plain(b.limit)}{window}{extras}")
    return "[" + ", ".join(parts) + "]"


def _same(first: Sequence[Budget], second: Sequence[Budget]) -> bool:
    def key(budgets: Sequence[Budget]) -> list[dict[str, Any]]:
        return sorted((b.to_dict() for b in budgets), key=lambda d: str(d["name"]))

    return key(first) == key(second)


class LeaseSteps(Primitives, abc.ABC):
    """Join, renew and leave shared sessions (see the module docstring)."""

    _next_lease_check: datetime | None = None

    # -- primitives a backend provides ----------------------------------------------------------
    @abc.abstractmethod
    def _lease_group(self, key: str) -> LeaseGroup | None: ...

    @abc.abstractmethod
    def _store_lease_group(self, group: LeaseGroup) -> None: ...

    @abc.abstractmethod
    def _drop_lease_group(self, key: str) -> None: ...

    @abc.abstractmethod
    def _lease_holders(self, key: str) -> dict[str, datetime]:
        """The holders of ``key``'s leases and when each expires."""

    @abc.abstractmethod
    def _put_lease(self, key: str, holder: str, expires_at: datetime) -> None: ...

    @abc.abstractmethod
    def _drop_leases(self, key: str, holders: Sequence[str]) -> None: ...

    @abc.abstractmethod
    def _expired_lease_keys(self, now: datetime) -> list[str]:
        """The keys with a lease expired at ``now``."""

    # -- steps ------------------------------------------------------------------------------------
    def join_lease(
        self,
        key: str,
        holder: str,
        *,
        ttl: timedelta,
        budgets: Sequence[Budget] = (),
        keep: bool = False,
    ) -> bool:
        """Take (or renew) ``holder``'s lease on group ``key``, making the group's budgets when
        it is the first to declare them.

        Args:
            key: the group (``session:task-42``).
            holder: this member (unique per entry: a process and a counter).
            ttl: how long the lease lives unless renewed.
            budgets: the budgets this member declares for the group (none: it joins whatever the
                group has).
            keep: keep the group's budgets when it ends.

        Returns:
            Whether budgets were made (the caller's caches of budgets are stale).

        Raises:
            ConfigError: the group is open with other budgets than ``budgets`` (both named).
            ValidationError: ``ttl`` not positive.
        """
        _check_ttl(ttl)
        now = self.clock.now()
        declared = tuple(sorted(budgets, key=lambda b: b.name))
        with self._write():
            self._end_expired(now, [key])
            group = self._lease_group(key)
            made = False
            if group is not None and group.budgets and declared and not _same(group.budgets, declared):
                raise ConfigError(
                    f"{key.replace(':', ' ', 1)!r} is open with budgets {describe_budgets(group.budgets)} "
                    f"(declared by {group.declared_by}); this worker declares {describe_budgets(declared)}: "
                    "every worker of a shared session must declare the same budgets (or none)"
                )
            if group is None:
                group = LeaseGroup(key, declared, keep, holder if declared else None, now)
                self._store_lease_group(group)
                made = bool(declared)
            elif declared and not group.budgets:
                group = replace(group, budgets=declared, declared_by=holder, keep=group.keep or keep)
                self._store_lease_group(group)
                made = True
            elif keep and not group.keep:
                self._store_lease_group(replace(group, keep=True))
            for budget in declared if made else ():
                self._store_budget(budget)
            self._put_lease(key, holder, now + ttl)
            return made

    def renew_lease(self, key: str, holder: str, ttl: timedelta) -> bool:
        """Keep ``holder``'s lease on ``key`` for ``ttl`` more; False when it is gone (expired
        and ended: the group's budgets may be gone with it).

        Raises:
            ValidationError: ``ttl`` not positive.
        """
        _check_ttl(ttl)
        now = self.clock.now()
        with self._write():
            holders = self._lease_holders(key)
            expires = holders.get(holder)
            if expires is None or expires <= now:
                return False
            self._put_lease(key, holder, max(expires, now + ttl))
            return True

    def leave_lease(self, key: str, holder: str) -> bool:
        """Give back ``holder``'s lease on ``key``; the last one out ends the group and deletes
        its budgets (unless kept). Returns whether budgets were deleted."""
        now = self.clock.now()
        with self._write():
            self._drop_leases(key, [holder])
            return self._end_expired(now, [key])

    def reap_leases(self) -> bool:
        """End every group whose leases have all expired (deleting its budgets unless kept);
        returns whether budgets were deleted."""
        now = self.clock.now()
        with self._write():
            return self._end_expired(now, None)

    def lease_group(self, key: str) -> LeaseGroup | None:
        """Group ``key`` as it is now, or None when it is not open."""
        with self._transaction(write=False):
            return self._lease_group(key)

    def _leases_due(self, now: datetime) -> bool:
        """Whether admissions should look for expired leases now (at most once a second)."""
        due = self._next_lease_check
        if due is not None and now < due:
            return False
        self._next_lease_check = now + _CHECK_EVERY
        return True

    def _end_expired(self, now: datetime, keys: Sequence[str] | None) -> bool:
        """Drop expired leases of ``keys`` (None: of every group) and end the groups left without
        a lease; returns whether budgets were deleted."""
        keys = list(keys) if keys is not None else self._expired_lease_keys(now)
        deleted = False
        for key in keys:
            holders = self._lease_holders(key)
            gone = [h for h, expires in holders.items() if expires <= now]
            if gone:
                self._drop_leases(key, gone)
            if len(gone) < len(holders):
                continue
            group = self._lease_group(key)
            if group is None:
                continue
            self._drop_lease_group(key)
            if not group.keep:
                for budget in group.budgets:
                    deleted = self._remove_budget(budget.name) or deleted
        return deleted


def _check_ttl(ttl: timedelta) -> None:
    if not isinstance(ttl, timedelta) or ttl <= timedelta(0):
        raise ValidationError(f"ttl must be a positive timedelta, got {ttl!r}")
