"""The report of a batch job: what was done, what it cost, what is left and what finishing would cost."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tokenward.numbers import plain

__all__ = ["BatchReport", "BudgetLine", "CrashCharge"]


@dataclass(frozen=True, slots=True)
class BudgetLine:
    """One budget the job ran under, at the end of the run.

    Attributes:
        name / meter: the budget's name and meter.
        limit / spent / held: in the meter's unit (tokens, USD, calls).
    """

    name: str
    meter: str
    limit: Decimal
    spent: Decimal
    held: Decimal

    @property
    def remaining(self) -> Decimal:
        """``limit - spent - held``, never below 0."""
        return max(Decimal(0), self.limit - self.spent - self.held)


@dataclass(frozen=True, slots=True)
class CrashCharge:
    """A record that was in flight when an earlier run of the job was killed, re-sent by
    ``--resume``, with what the crash left charged for it (its hold, charged by the ledger when
    the dead process's reservation was reclaimed: :mod:`tokenward.ledger.reclaim`).

    Attributes:
        custom_id: the record.
        charged: what the reclaimed reservation charged, by meter (empty when the record was
            killed before it was sent, so nothing was charged).
    """

    custom_id: str
    charged: dict[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BatchReport:
    """The partial-completion report of a batch job (``tokenward batch run``, :func:`run`).

    The counts are read from the output file after the run (the last line of each ``custom_id``
    wins), so a resumed job reports the whole job, not only its last run.

    Attributes:
        job: the job's name; its calls are charged to task ``batch:<job>``.
        total: records in the input.
        succeeded: records whose answer has a 2xx status.
        failed: records with an error line or a non-2xx answer (not retried unless asked).
        remaining: records not processed (refused by a budget, or never reached): they are in the
            remainder file, which can be resubmitted as is.
        input_tokens / output_tokens: tokens the job's settled calls used so far (every run of
            it), from the ledger's usage events.
        reclaimed_tokens: tokens charged for calls whose process died before they settled (their
            hold: :mod:`tokenward.ledger.reclaim`; their real usage is unknown).
        cost_usd: USD charged to the job so far; None when a call could not be priced.
        budgets: the job's budgets at the end.
        projected_tokens: tokens the remaining records would hold (input estimate plus output
            bound each: the most they can cost).
        projected_cost_usd: USD of those holds at the highest rates that can apply; None when a
            model has no price.
        projected_at_mean_tokens / projected_at_mean_cost_usd: the remaining records at the mean
            charge of the records done so far (None before any is done).
        remainder_path: the remainder file, or None when nothing is left (or no file was asked).
        resent: records in flight at an earlier kill, re-sent once by this run.
        refused: the budget that refused the first record sent to the remainder, or None.
        lines: the output lines of this run when no output file was given (else empty).
        charged_by: ``ledger`` (the guard charged the calls: the figures are the ledger's) or
            ``gateway`` (the base URL is a tokenward gateway, which enforced and charged them
            under task ``batch:<job>``: tokens are summed from the answers' usage, and the cost is
            unknown here, None; ask the gateway: ``tokenward events --task batch:<job>``).
    """

    job: str
    total: int
    succeeded: int
    failed: int
    remaining: int
    input_tokens: int = 0
    output_tokens: int = 0
    reclaimed_tokens: int = 0
    cost_usd: Decimal | None = Decimal(0)
    budgets: tuple[BudgetLine, ...] = ()
    projected_tokens: int = 0
    projected_cost_usd: Decimal | None = Decimal(0)
    projected_at_mean_tokens: int | None = None
    projected_at_mean_cost_usd: Decimal | None = None
    remainder_path: str | None = None
    resent: tuple[CrashCharge, ...] = ()
    refused: str | None = None
    lines: tuple[dict[str, Any], ...] = ()
    charged_by: str = "ledger"

    @property
    def done(self) -> int:
        """Records processed (succeeded or failed)."""
        return self.succeeded + self.failed

    @property
    def percent(self) -> Decimal:
        """Records processed out of the total, in percent (two decimals); 100 for an empty job."""
        if not self.total:
            return Decimal(100)
        return (Decimal(self.done) * 100 / self.total).quantize(Decimal("0.01"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (amounts as strings, exact)."""

        def money(value: Decimal | None) -> str | None:
            return None if value is None else plain(value)

        return {
            "job": self.job,
            "task": f"batch:{self.job}",
            "total": self.total,
            "done": self.done,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "remaining": self.remaining,
            "percent": plain(self.percent),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "reclaimed_tokens": self.reclaimed_tokens,
            "total_tokens": self.input_tokens + self.output_tokens + self.reclaimed_tokens,
            "cost_usd": money(self.cost_usd),
            "budgets": [
                {
                    "name": b.name,
                    "meter": b.meter,
                    "limit": plain(b.limit),
                    "spent": plain(b.spent),
                    "held": plain(b.held),
                    "remaining": plain(b.remaining),
                }
                for b in self.budgets
            ],
            "projected": {
                "tokens": self.projected_tokens,
                "cost_usd": money(self.projected_cost_usd),
                "at_mean_tokens": self.projected_at_mean_tokens,
                "at_mean_cost_usd": money(self.projected_at_mean_cost_usd),
            },
            "remainder": self.remainder_path,
            "refused_by": self.refused,
            "charged_by": self.charged_by,
            "resent_after_crash": [
                {"custom_id": c.custom_id, "charged": {k: plain(v) for k, v in c.charged.items()}}
                for c in self.resent
            ],
        }
