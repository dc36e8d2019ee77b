"""From what a provider reported to what a call costs and charges: one function, used by the
guard, the replay, ``tokenward cost`` and ``tokenward reprice`` alike.

The cost is tokens x price. A cost the provider reported itself (OpenRouter's ``usage.cost``) is
taken instead only when the price book says to trust that provider's figure
(``trust_reported_cost``), and never when it is zero or negative: a zero next to real token
counts hides spend from budgets (case C32).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from tokenward.core.budgets import meter_amounts
from tokenward.core.pricebook import PriceBook, PriceContext
from tokenward.core.pricing import Cost, Price, price_usage
from tokenward.core.usage import Usage

__all__ = ["Accounting", "CostSource", "account"]

CostSource = Literal["token_pricing", "provider_reported"]
"""Where a call's cost came from: tokens x price, or the provider's own (trusted) figure."""


@dataclass(frozen=True, slots=True)
class Accounting:
    """A call's usage, cost and charges.

    Attributes:
        reported: the provider's usage as normalised (unknown counts are None).
        usage: the usage charged: unknown counts filled in from our own figures, labelled in
            ``input_source`` / ``output_source``.
        cost: the cost of ``usage`` (``total_usd`` None when it cannot be priced).
        charged: what the call charges to each meter (tokens, USD, calls).
        price: the price row used, or None.
        cost_source: ``token_pricing`` or ``provider_reported``.
        reported_cost_usd: the provider's own cost figure, when it sent one (USD).
        token_cost: the tokens x price cost, also when the provider's figure was taken.
    """

    reported: Usage
    usage: Usage
    cost: Cost
    charged: dict[str, Decimal]
    price: Price | None
    cost_source: CostSource = "token_pricing"
    reported_cost_usd: Decimal | None = None
    token_cost: Cost | None = field(default=None, repr=False)


def account(
    reported: Usage | None,
    *,
    model: str,
    prices: PriceBook,
    input_estimate: int | None = None,
    output_counted: int | None = None,
    provider: str | None = None,
    context: PriceContext | None = None,
    model_served: str | None = None,
    reported_cost_usd: Decimal | None = None,
    unknown_model: str = "flag",
) -> Accounting:
    """Fill unknown counts, price the usage, and work out the charges.

    Args:
        reported: the provider's normalised usage, or None when none arrived.
        model: the model requested (priced when the served model has no price).
        prices: the price book.
        input_estimate: our pre-flight prompt estimate, used when the provider sent no prompt count.
        output_counted: our count of the output, used when the provider sent no output count.
        provider: provider hint for price lookup (its override rows, its trust setting).
        context: service tier, speed and inference geography served, batch, the cache-write
            lifetime the request asked for, and the instant, for price lookup.
        model_served: the model the response names; priced first.
        reported_cost_usd: a cost the provider reported (USD); used only when the book trusts the
            provider's figure and it is above zero.
        unknown_model: the unknown-model policy (``flag``, ``default``; see
            :meth:`PriceBook.priced`).

    Raises:
        UnknownModel: ``unknown_model="deny"`` and no source knows the model.
        ConfigError: ``unknown_model="default"`` and the book has no default row.
    """
    reported = reported or Usage(input_source="none", output_source="none")
    usage = reported.filled(input_estimate=input_estimate, output_count=output_counted)
    price = prices.priced(
        model, policy=unknown_model, provider=provider, context=context, served=model_served
    )
    context = context or PriceContext()
    token_cost = price_usage(usage, price, cache_write_ttl=context.cache_write_ttl, image=context.image)
    cost, source = token_cost, "token_pricing"
    if reported_cost_usd is not None and reported_cost_usd > 0 and prices.trusts_reported_cost(provider):
        cost = Cost(
            total_usd=reported_cost_usd,
            breakdown={"provider_reported": reported_cost_usd},
            tokens=dict(token_cost.tokens),
            price=price,
            tier=token_cost.tier,
            assumed=token_cost.assumed,
        )
        source = "provider_reported"
    return Accounting(
        reported,
        usage,
        cost,
        meter_amounts(usage, cost),
        price,
        source,  # type: ignore[arg-type]
        reported_cost_usd,
        token_cost,
    )
