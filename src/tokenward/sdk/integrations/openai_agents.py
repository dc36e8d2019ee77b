"""The OpenAI Agents SDK: guarded models, and runs that end with a partial result when the budget
is spent instead of crashing.

::

    from tokenward.sdk.integrations.openai_agents import guarded_model, run_within_budget

    agent = Agent(name="researcher", tools=[...], model=guarded_model(guard, "gpt-4o-mini"))
    with guard.session("s-1", budget="total_tokens=20000"):
        run = await run_within_budget(agent, "Find ...")
    run.final_output    # the answer, or the last thing the agent said before the budget ran out
    run.stopped_by      # None, or the BudgetExceeded that ended the run

Budget errors raised inside a run are also ``agents.AgentsException`` instances, so the Agents
SDK attaches what the run had produced (``run_data``) before they leave ``Runner.run``.

Requires ``openai-agents`` (``pip install "tokenward[agents]"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tokenward.errors import BudgetExceeded, MissingDependency

try:
    import httpx2
    from agents import AgentsException, OpenAIChatCompletionsModel, OpenAIResponsesModel, Runner
    from agents.items import ItemHelpers, MessageOutputItem
    from openai import AsyncOpenAI
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingDependency("openai-agents", "agents") from exc

__all__ = ["BudgetedRun", "guarded_model", "run_within_budget"]


def guarded_model(
    guard: Any,
    model: str,
    *,
    openai_client: AsyncOpenAI | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    api: str = "chat",
) -> OpenAIChatCompletionsModel | OpenAIResponsesModel:
    """An Agents SDK model whose calls go through ``guard``.

    Args:
        guard: the :class:`tokenward.Guard`.
        model: the model id.
        openai_client: the client to use (a copy with its own HTTP client is wrapped), else one
            built from ``base_url`` and ``api_key``.
        api: ``"chat"`` (Chat Completions) or ``"responses"``.
    """
    client = openai_client or AsyncOpenAI(base_url=base_url, api_key=api_key)
    client = guard.wrap(client.with_options(http_client=httpx2.AsyncClient()), error_bases=(AgentsException,))
    if api == "responses":
        return OpenAIResponsesModel(model=model, openai_client=client)
    return OpenAIChatCompletionsModel(model=model, openai_client=client)


@dataclass
class BudgetedRun:
    """How a run ended.

    Attributes:
        final_output: the agent's final output; when a budget stopped the run, the text of the
            last message the agent had produced (None if it had produced none).
        stopped_by: the :class:`~tokenward.errors.BudgetExceeded` that ended the run, or None.
        new_items: the run items produced (messages, tool calls, tool outputs).
    """

    final_output: Any
    stopped_by: BudgetExceeded | None = None
    new_items: list[Any] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when the agent finished on its own."""
        return self.stopped_by is None


async def run_within_budget(agent: Any, input: Any, **kwargs: Any) -> BudgetedRun:
    """``Runner.run(agent, input, **kwargs)``, ending with a partial result when a budget refuses
    a call (other errors are raised as usual)."""
    try:
        result = await Runner.run(agent, input, **kwargs)
    except BudgetExceeded as error:
        data = getattr(error, "run_data", None)
        items = list(data.new_items) if data is not None else []
        messages = [ItemHelpers.text_message_output(i) for i in items if isinstance(i, MessageOutputItem)]
        return BudgetedRun(messages[-1] if messages else None, error, items)
    return BudgetedRun(result.final_output, None, list(result.new_items))
