"""From what a provider reported to what a call costs and charges: one function, used by the
guard, the replay and ``tokenward cost`` alike."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from tokenward.core.budgets import meter_amounts
from tokenward.core.pricebook import PriceBook, PriceContext
from tokenward.core.pricing import Cost, Price, price_usage
from tokenward.core.usage import Usage

__all__ = ["Accounting", "account"]


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
    """

    reported: Usage
    usage: Usage
    cost: Cost
    charged: dict[str, Decimal]
    price: Price | None


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
) -> Accounting:
    """Fill unknown counts, price the usage, and work out the charges.

    Args:
        reported: the provider's normalised usage, or None when none arrived.
        model: the model requested (priced when the served model has no price).
        prices: the price book.
        input_estimate: our pre-flight prompt estimate, used when the provider sent no prompt count.
        output_counted: our count of the output, used when the provider sent no output count.
        provider: provider hint for price lookup.
        context: service tier, batch and instant for price lookup.
        model_served: the model the response names; priced first.
    """
    reported = reported or Usage(input_source="none", output_source="none")
    usage = reported.filled(input_estimate=input_estimate, output_count=output_counted)
    price = prices.resolve(model, provider=provider, context=context, served=model_served)
    cost = price_usage(usage, price)
    return Accounting(reported, usage, cost, meter_amounts(usage, cost), price)
