"""The charge floor: a call is never charged less output than tokenward saw pass through.

A provider's usage is taken as reported unless it is *below* what tokenward itself counted in the
answer (text, legacy ``choices[].text``, reasoning text, tool-call and ``function_call``
arguments, audio transcripts, code written for code execution): an upstream that reports zero or
half of what it sent is charged our count instead, and the event is marked ``disputed``.

The floor of ``seen`` tokens (counted with the encoding the call was estimated with) is:

* for models with their own offline tokenizer (OpenAI's, through tiktoken): ``seen`` itself, since
  it is the model's own count;
* for every other model: ``floor(seen x ratio)``, ``seen`` counted with ``o200k_base`` and
  ``ratio`` the family's *lower ratio* (:data:`LOWER_RATIOS`): a share of the ``o200k_base``
  count that the model's own tokenizer is not expected to go below, so a correct report from
  Anthropic, Google or an open model is never overridden. Calibration may only lower it: once a
  model has :data:`~tokenward.core.calibration.MIN_OBSERVATIONS` prompt observations, the ratio is
  at most the lowest ``provider count / o200k_base count`` seen on its prompts (the observed
  ``min_ratio`` times the estimate's safety factor) times :data:`CALIBRATION_MARGIN`.

Never the safety-factored estimate used for holds: that figure is an upper bound, the floor a
lower one. Why these ratios: public side-by-side counts find Claude's tokenizer 20-30 % *above*
OpenAI's on English, code and maths (https://techhdesign.com/hidden-prices-in-ai-deployment-why-claude-fashions-could-also-be-20-30-dearer-than-gpt-in-enterprise-settings)
and Gemini's SentencePiece count up to about 15 % *below* tiktoken's on some texts
(https://dev.to/gabrielanhaia/tokenizer-quirks-claude-gpt-and-gemini-dont-count-the-same-text-the-same-way-1522;
both read 2026-12-07); open models differ more (small vocabularies split finer, large ones
merge more). The ratios leave a wide margin below all of these; the real-model tests check that
Gemma's own counts stay above the floor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from tokenward.core.calibration import MIN_OBSERVATIONS, Calibration
from tokenward.core.estimate import DEFAULT_APPROXIMATION_FACTOR, model_family
from tokenward.core.usage import Usage

__all__ = ["CALIBRATION_MARGIN", "LOWER_RATIOS", "Dispute", "apply_floor", "floor_ratio", "output_floor"]

LOWER_RATIOS: Mapping[str, Decimal] = {
    "openai": Decimal(1),
    "anthropic": Decimal("0.75"),
    "gemini": Decimal("0.6"),
    "open": Decimal("0.5"),
}
"""Per model family (:func:`~tokenward.core.estimate.model_family`): the share of our
``o200k_base`` count of an answer below which the provider's own count is not believed."""

CALIBRATION_MARGIN = Decimal("0.8")
"""Room left under the lowest prompt ratio calibration observed, when it lowers a family ratio."""


def floor_ratio(model: str, calibration: Calibration | None = None) -> Decimal:
    """The lower ratio for ``model``: its family's (:data:`LOWER_RATIOS`), lowered (never raised)
    by what calibration observed on its prompts when it has enough observations."""
    family = model_family(model)
    ratio = LOWER_RATIOS.get(family, LOWER_RATIOS["open"])
    if family == "openai" or calibration is None or calibration.observations < MIN_OBSERVATIONS:
        return ratio
    observed = calibration.min_ratio
    if observed is None or observed <= 0:
        return ratio
    return min(ratio, observed * DEFAULT_APPROXIMATION_FACTOR * CALIBRATION_MARGIN)


def output_floor(seen: int, ratio: Decimal) -> int:
    """The fewest output tokens a call whose answer showed ``seen`` counted tokens is charged:
    ``floor(seen x ratio)`` (``seen`` when the ratio is 1)."""
    if seen <= 0:
        return 0
    return int((Decimal(seen) * ratio).to_integral_value(rounding=ROUND_FLOOR))


@dataclass(frozen=True, slots=True)
class Dispute:
    """A provider's output count below the floor.

    Attributes:
        reported: the provider's output count (tokens).
        counted: our count of the output that passed through (tokens, in the estimate's encoding).
        floor: what was charged instead: ``floor(counted x ratio)``.
        ratio: the lower ratio used.
    """

    reported: int
    counted: int
    floor: int
    ratio: Decimal

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as kept in the event's metadata (``metadata["disputed"]``)."""
        return {
            "output_tokens": {
                "reported": self.reported,
                "counted": self.counted,
                "charged": self.floor,
                "ratio": str(self.ratio),
            }
        }


def apply_floor(
    usage: Usage | None, seen: int | None, ratio: Decimal, input_estimate: int | None = None
) -> tuple[Usage | None, dict[str, Any]]:
    """``usage`` with its output raised to the floor of ``seen`` counted tokens when the provider
    reported less, and what was disputed (``{}`` when nothing was).

    The prompt count of such a report is not believed below our own either: when the output was
    disputed and the reported prompt is below ``input_estimate`` (the prompt estimate the call was
    held for), it is made unknown, so the estimate fills it. A reported prompt of 0 (impossible
    for a call that sent one) is made unknown in any case. Counts the provider did not report stay
    unknown here (they are filled from our own figures later, as ever).
    """
    if usage is None:
        return None, {}
    disputed: dict[str, Any] = {}
    floor = output_floor(seen or 0, ratio)
    if usage.output_tokens is not None and usage.output_tokens < floor:
        dispute = Dispute(usage.output_tokens, seen or 0, floor, ratio)
        disputed.update(dispute.to_dict())
        usage = replace(usage, output_tokens=floor, output_source="counted_stream_text")
    reported = usage.input_tokens
    if reported is not None and usage.input_source == "provider":
        doubted = bool(disputed) and input_estimate is not None and reported < input_estimate
        if reported == 0 or doubted:
            disputed["input_tokens"] = {"reported": reported, "charged": "prompt estimate"}
            usage = replace(usage, input_tokens=None, input_source="none")
    return usage, disputed
