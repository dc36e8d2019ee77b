"""pydantic-ai: models whose calls go through a tokenward guard.

::

    from tokenward.sdk.integrations.pydantic_ai import guarded_openai_model, run_within_budget

    agent = Agent(guarded_openai_model(guard, "gpt-4o-mini"), tools=[...])
    with guard.session("s-1", budget="total_tokens=20000"):
        run = await run_within_budget(agent, "Find ...")

A budget denial inside a run is :class:`~tokenward.errors.BudgetExceeded`; ``run_within_budget``
turns it into a partial result carrying the messages exchanged so far.

Requires ``pydantic-ai-slim[openai]`` (``pip install "tokenward[pydantic-ai]"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tokenward.errors import BudgetExceeded, MissingDependency

try:
    import httpx2
    from openai import AsyncOpenAI
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingDependency("pydantic-ai-slim", "pydantic-ai") from exc

__all__ = ["BudgetedRun", "guarded_openai_model", "run_within_budget"]


def guarded_openai_model(
    guard: Any,
    model: str,
    *,
    openai_client: AsyncOpenAI | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
) -> OpenAIChatModel:
    """A pydantic-ai OpenAI chat model whose calls go through ``guard`` (a copy of the client with
    its own HTTP client is wrapped)."""
    client = openai_client or AsyncOpenAI(base_url=base_url, api_key=api_key)
    client = guard.wrap(client.with_options(http_client=httpx2.AsyncClient()))
    return OpenAIChatModel(model, provider=OpenAIProvider(openai_client=client))


@dataclass
class BudgetedRun:
    """How a run ended: ``output`` (None when stopped), ``stopped_by`` and the ``messages``."""

    output: Any
    stopped_by: BudgetExceeded | None = None
    messages: list[Any] = field(default_factory=list)


async def run_within_budget(agent: Any, user_prompt: Any, **kwargs: Any) -> BudgetedRun:
    """Run ``agent`` node by node; when a budget refuses a call, return what was exchanged so far."""
    async with agent.iter(user_prompt, **kwargs) as run:
        try:
            async for _node in run:
                pass
        except BudgetExceeded as error:
            return BudgetedRun(None, error, list(run.ctx.state.message_history))
        assert run.result is not None
        return BudgetedRun(run.result.output, None, list(run.result.all_messages()))
