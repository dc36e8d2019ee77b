"""The SDK: budgets enforced in-process around the official ``openai`` and ``anthropic`` clients.

``tokenward.Guard`` is :class:`tokenward.sdk.guard.Guard`.
"""

from tokenward.guard.wire.degrade import Degrade
from tokenward.sdk.context import Attribution, attributed, bind, current
from tokenward.sdk.guard import Guard, Session
from tokenward.sdk.thresholds import Crossing

__all__ = ["Attribution", "Crossing", "Degrade", "Guard", "Session", "attributed", "bind", "current"]
