"""Reclaiming forwarded reservations that were never settled, and correcting them later.

A reservation made for a call that was forwarded to a provider (``Reservation.forwarded``) is
never released for free: if its process dies before settling (or an SDK stream is dropped unread),
the provider may have generated everything the hold allowed. When such a reservation expires, or
its owner is found dead when a ledger opens on the same machine
(:func:`tokenward.ledger.owner.is_dead`), it is *reclaimed*: its hold is charged as spend and a
usage event with status ``reclaimed`` is recorded under the call's request id, its cost marked
estimated (``metadata.cost_basis: "hold"``).

If the real settlement of that call arrives later (a stalled process that woke up, a settlement
replayed from a spool), it does not charge the call a second time: a *correction* event
``<request id>:correction`` carries the real usage and charges the difference between the real
charge and the hold (signed: usually a refund), so the two events together charge exactly what
the call cost.

The pure functions build the events; :class:`ReclaimSteps` applies them for the transactional
backends (memory, SQLite, PostgreSQL), inside the store's transaction; the Redis ledger does the
same with its scripts.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from tokenward.core.budgets import Budget, Subject, applicable
from tokenward.core.events import UsageEvent
from tokenward.core.usage import Usage
from tokenward.ledger.base import Hold, Reservation
from tokenward.ledger.leases import LeaseSteps
from tokenward.ledger.owner import is_dead
from tokenward.ledger.rows import Snapshot
from tokenward.numbers import plain

__all__ = ["CORRECTION_SUFFIX", "ReclaimSteps", "correction_event", "is_late_settlement", "reclaimed_event"]

CORRECTION_SUFFIX = ":correction"
"""Appended to a request id for the correction event of a late settlement."""


def reclaimed_event(reservation: Reservation, now: datetime, reason: str) -> UsageEvent:
    """The usage event charging a forwarded reservation its hold.

    Args:
        reservation: the reservation (forwarded, never settled).
        now: when it was reclaimed (UTC).
        reason: ``expired`` (its time to live ran out) or ``owner_dead`` (its process is gone).

    Returns:
        An event under the reservation's request id, status ``reclaimed``, usage unknown, charging
        every meter held (tokens, USD, calls) and costing the held ``cost_usd`` when one was held.
    """
    amounts = dict(reservation.amounts)
    meta: Mapping[str, Any] = reservation.metadata or {}
    return UsageEvent(
        request_id=reservation.request_id,
        at=reservation.created_at,
        subject=reservation.subject,
        usage=Usage(input_source="none", output_source="none"),
        model=meta.get("model") if isinstance(meta.get("model"), str) else None,
        provider=meta.get("provider") if isinstance(meta.get("provider"), str) else None,
        endpoint=meta.get("endpoint") if isinstance(meta.get("endpoint"), str) else None,
        status="reclaimed",
        cost_usd=amounts.get("cost_usd"),
        cost_estimated=True,
        charged=amounts,
        held=amounts,
        reservation_id=reservation.id,
        metadata={
            "cost_basis": "hold",
            "reclaimed": reason,
            "reclaimed_at": now.isoformat().replace("+00:00", "Z"),
            "owner": reservation.owner,
        },
    )


def is_late_settlement(stored: UsageEvent | None, incoming: UsageEvent) -> bool:
    """Whether ``incoming`` is the real settlement of a call whose hold was reclaimed as
    ``stored`` (so a correction is due rather than nothing)."""
    return stored is not None and stored.status == "reclaimed" and incoming.status != "reclaimed"


def correction_event(reclaimed: UsageEvent, real: UsageEvent) -> UsageEvent:
    """The event that replaces a reclaimed hold charge with the real one.

    Its ``charged`` is, by meter, the real charge minus the reclaimed one (signed; zero
    differences left out), its ``cost_usd`` likewise (None when the real cost is unknown), and
    its usage the real usage (the reclaimed event's usage is unknown), so sums over events give
    the real figures. ``metadata.corrects`` names the reclaimed request id and
    ``metadata.charged_in_full`` keeps the real charge.
    """
    meters = dict.fromkeys([*reclaimed.charged, *real.charged])
    delta = {
        meter: real.charged.get(meter, Decimal(0)) - reclaimed.charged.get(meter, Decimal(0))
        for meter in meters
    }
    cost = None if real.cost_usd is None else real.cost_usd - (reclaimed.cost_usd or Decimal(0))
    return UsageEvent(
        request_id=f"{reclaimed.request_id}{CORRECTION_SUFFIX}",
        at=real.at,
        subject=real.subject,
        usage=real.usage,
        model=real.model,
        provider=real.provider,
        endpoint=real.endpoint,
        status=real.status,
        cost_usd=cost,
        cost_estimated=real.cost_estimated,
        price_source=real.price_source,
        price_version=real.price_version,
        charged={meter: amount for meter, amount in delta.items() if amount},
        held={},
        reservation_id=real.reservation_id or reclaimed.reservation_id,
        metadata={
            **dict(real.metadata),
            "corrects": reclaimed.request_id,
            "cost_basis": "correction",
            "charged_in_full": {k: plain(v) for k, v in real.charged.items()},
            "cost_usd_in_full": None if real.cost_usd is None else plain(real.cost_usd),
        },
    )


class ReclaimSteps(LeaseSteps, abc.ABC):
    """Reaping, reclaiming and correcting, over a transactional store's primitives (mixed into
    :class:`~tokenward.ledger.steps.LedgerSteps`, which provides ``_apply`` and ``_release``)."""

    @abc.abstractmethod
    def _apply(
        self,
        snapshot: Snapshot,
        targets: Sequence[tuple[Budget, str]],
        amounts: Mapping[str, Decimal],
        at: datetime,
        now: datetime,
        *,
        subject: Subject,
        request_id: str | None,
        releases: Sequence[Hold] = (),
    ) -> None: ...

    @abc.abstractmethod
    def _release(self, holds: Sequence[Hold]) -> None: ...

    def _reap(self, now: datetime) -> int:
        """Expire reservations past their time to live: release the holds of those never
        forwarded, charge the holds of forwarded ones (:mod:`.reclaim`); now and then, end the
        shared sessions whose leases all expired (:mod:`.leases`)."""
        if self._leases_due(now):
            self._end_expired(now, None)
        expired = self._expire(now)
        if expired:
            self._release([h for r in expired if not r.forwarded for h in r.holds])
            for reservation in expired:
                if reservation.forwarded:
                    self._reclaim(reservation, now, "expired")
        return len(expired)

    def _reclaim(self, reservation: Reservation, now: datetime, reason: str) -> None:
        """Charge a forwarded reservation's hold (it is no longer active: expired, or its owner
        died) and record its ``reclaimed`` event, unless the call was settled already."""
        self._set_state(reservation.id, "reclaimed")
        event = reclaimed_event(reservation, now, reason)
        if not self._insert_event(event):  # settled meanwhile: only its hold is left to drop
            self._release(reservation.holds)
            return
        snapshot = self._snapshot()
        self._apply(
            snapshot,
            applicable(snapshot.budgets, reservation.subject),
            event.charged,
            reservation.created_at,
            now,
            subject=reservation.subject,
            request_id=event.request_id,
            releases=reservation.holds,
        )

    def reclaim_dead(self) -> int:
        """Finish the active reservations of processes of this machine that died (see
        :func:`tokenward.ledger.owner.is_dead`): forwarded ones are charged their hold
        (:mod:`.reclaim`), the others released. Backends run it when they open, so a restart
        reclaims at once what the dead process held instead of waiting for the time to live.

        Returns:
            How many reservations were finished.
        """
        with self._transaction(write=False):
            owners = [owner for owner in self._active_owners() if is_dead(owner)]
        if not owners:
            return 0
        now = self.clock.now()
        with self._write():
            found = self._owned_active(owners)
            for reservation in found:
                if reservation.forwarded:
                    self._reclaim(reservation, now, "owner_dead")
                else:
                    self._release(reservation.holds)
                    self._drop_reservation(reservation.id)
        return len(found)

    def reap(self) -> int:
        """Expire reservations past their time to live, releasing their holds (charging those of
        forwarded ones), and end the shared sessions whose leases all expired; returns how many
        reservations expired."""
        now = self.clock.now()
        with self._write():
            self._end_expired(now, None)
            return self._reap(now)

    def _correct(self, reclaimed: UsageEvent, real: UsageEvent, at: datetime, now: datetime) -> None:
        """Record the correction of a reclaimed hold by the call's real settlement (once)."""
        correction = correction_event(reclaimed, real)
        if not self._insert_event(correction):
            return
        snapshot = self._snapshot()
        self._apply(
            snapshot,
            applicable(snapshot.budgets, correction.subject),
            correction.charged,
            at,
            now,
            subject=correction.subject,
            request_id=correction.request_id,
        )
