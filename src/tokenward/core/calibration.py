"""Calibrating prompt estimates from what providers report afterwards.

Claude, Gemini and open models have no public offline tokenizer: their prompts are counted with
``o200k_base`` and scaled by a default factor (:data:`~tokenward.core.estimate.DEFAULT_APPROXIMATION_FACTOR`).
Every settled call whose provider reported the prompt is an observation ``(estimated, actual)``:
the pre-flight estimate the call was planned with, and the provider's prompt count. The ledger keeps
per model the running aggregates (:class:`EstimateStats`); from them a *correction* over the
default estimate is learnt:

    correction = max(actual / estimated over the observations) x margin

so that ``estimate x correction >= actual`` holds for every observed call with room to spare
(:data:`DEFAULT_MARGIN`, 5 %). The factor over ``o200k_base`` is then the default factor times the
correction. A correction below 1 (the default over-estimates) is used only after
:data:`MIN_OBSERVATIONS` calls; one above 1 (an under-estimate was seen) at once, since holding
too little lets a call overspend. Models are keyed by :func:`calibration_key`, so a Bedrock id and
the provider's own id of one model share their observations.

Models counted exactly offline (OpenAI's, with tiktoken) are still observed, per model *and
upstream* (:func:`upstream_key`): an OpenAI-compatible server may serve an OpenAI model name with
another tokenizer. For them a correction applies only once a prompt came in far above its estimate
(``actual / estimated`` at least :data:`EXACT_TOLERANCE`), and only ever raises the estimate:
the small differences of message framing are not worth a margin on every call.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any

__all__ = [
    "DEFAULT_MARGIN",
    "MIN_OBSERVATIONS",
    "Calibration",
    "EstimateStats",
    "calibration_key",
    "correction",
    "upstream_key",
]

DEFAULT_MARGIN = Decimal("1.05")
"""Safety margin over the largest observed ``actual / estimated`` ratio."""

MIN_OBSERVATIONS = 10
"""Observations needed before a correction may *lower* the default estimate."""

EXACT_TOLERANCE = Decimal("1.1")
"""For a model counted exactly offline: the ``actual / estimated`` ratio from which an upstream
is taken to count prompts differently, and the estimate is corrected."""

_RATIO_PLACES = Decimal("0.000001")
_BEDROCK = re.compile(
    r"^(?:(?:us|eu|apac|jp|global|au|ca)\.)?(?:anthropic|meta|mistral|amazon|cohere|ai21|deepseek)\."
)
_VERSION = re.compile(r"(?:-v\d+(?::\d+)?|:\d+)$")
_DATE = re.compile(r"(?:[-@](?:20\d{2}-\d{2}-\d{2}|20\d{6}))$")


def calibration_key(model: str) -> str:
    """The name observations of ``model`` are kept under: lower case, without a provider prefix,
    a Bedrock vendor/region prefix, a version suffix (``-v1:0``) or a trailing date.

    ``anthropic.claude-3-5-sonnet-20240620-v1:0`` and ``claude-3-5-sonnet-20241022`` both give
    ``claude-3-5-sonnet``: snapshots of one model share its tokenizer.
    """
    name = model.strip().lower().lstrip("@").rsplit("/", 1)[-1]
    name = _BEDROCK.sub("", name)
    name = _VERSION.sub("", name)
    return _DATE.sub("", name) or model.lower()


def upstream_key(model: str, upstream: str | None) -> str:
    """The name observations of ``model`` served by ``upstream`` are kept under:
    ``<calibration key>@(<upstream>)``, the upstream's name reduced to letters, digits, ``.``,
    ``_`` and ``-``, and in parentheses, so :func:`calibration_key` leaves the key as it is."""
    where = re.sub(r"[^a-z0-9._-]+", "_", (upstream or "any").lower()).strip("_") or "any"
    return f"{calibration_key(model)}@({where})"


@dataclass(frozen=True, slots=True)
class EstimateStats:
    """Running aggregates of a model's ``(estimated, actual)`` prompt observations (tokens).

    Attributes:
        model: the calibration key.
        count: observations.
        sum_estimated / sum_actual: token sums.
        max_ratio / min_ratio: extreme ``actual / estimated`` ratios seen (6 decimal places,
            rounded up and down respectively).
    """

    model: str
    count: int = 0
    sum_estimated: int = 0
    sum_actual: int = 0
    max_ratio: Decimal = Decimal(0)
    min_ratio: Decimal = Decimal(0)

    def add(self, estimated: int, actual: int) -> EstimateStats:
        """These stats with one more observation (an ``estimated`` of 0 is ignored)."""
        if estimated <= 0 or actual < 0:
            return self
        ratio = Decimal(actual) / Decimal(estimated)
        high = ratio.quantize(_RATIO_PLACES, rounding=ROUND_CEILING)
        low = ratio.quantize(_RATIO_PLACES)
        return EstimateStats(
            self.model,
            self.count + 1,
            self.sum_estimated + estimated,
            self.sum_actual + actual,
            max(self.max_ratio, high) if self.count else high,
            min(self.min_ratio, low) if self.count else low,
        )

    @property
    def mean_ratio(self) -> Decimal | None:
        """``sum_actual / sum_estimated`` (token-weighted), or None without observations."""
        return None if not self.sum_estimated else Decimal(self.sum_actual) / Decimal(self.sum_estimated)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (ratios as decimal strings)."""
        return {
            "model": self.model,
            "count": self.count,
            "sum_estimated": self.sum_estimated,
            "sum_actual": self.sum_actual,
            "max_ratio": str(self.max_ratio),
            "min_ratio": str(self.min_ratio),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EstimateStats:
        """Inverse of :meth:`to_dict`."""
        return cls(
            str(data["model"]),
            int(data.get("count", 0)),
            int(data.get("sum_estimated", 0)),
            int(data.get("sum_actual", 0)),
            Decimal(str(data.get("max_ratio", "0"))),
            Decimal(str(data.get("min_ratio", "0"))),
        )


@dataclass(frozen=True, slots=True)
class Calibration:
    """A correction to apply over a model's default estimate.

    Attributes:
        correction: multiply the default estimate by this (1 when nothing is learnt yet).
        margin: the safety margin included in ``correction``.
        observations: how many calls it was learnt from.
        applied: whether the stats were enough to use it.
        min_ratio: the lowest ``actual / estimated`` ratio observed, or None without
            observations (the charge floor may only go below it; :mod:`tokenward.core.floor`).
    """

    correction: Decimal
    margin: Decimal
    observations: int
    applied: bool
    min_ratio: Decimal | None = None

    def apply(self, tokens: int) -> int:
        """``tokens`` x correction, rounded up (unchanged when not applied)."""
        if not self.applied:
            return tokens
        return int((Decimal(tokens) * self.correction).to_integral_value(rounding=ROUND_CEILING))


def correction(
    stats: EstimateStats | None, *, margin: Decimal = DEFAULT_MARGIN, exact: bool = False
) -> Calibration:
    """The correction learnt from ``stats`` (see the module docstring for the rule); ``exact``
    for a model counted exactly offline (applied only from :data:`EXACT_TOLERANCE`, raising only)."""
    if stats is None or stats.count == 0:
        return Calibration(Decimal(1), margin, 0, False)
    value = stats.max_ratio * margin
    applied = stats.max_ratio >= EXACT_TOLERANCE if exact else (value > 1 or stats.count >= MIN_OBSERVATIONS)
    if not math.isfinite(float(value)) or value <= 0:
        return Calibration(Decimal(1), margin, stats.count, False, stats.min_ratio)
    return Calibration(value, margin, stats.count, applied, stats.min_ratio)
