"""LangChain: a ``ChatOpenAI`` whose calls are guarded, and that ends a run cleanly when the
budget is spent.

::

    from tokenward.sdk.integrations.langchain import GuardedChatOpenAI

    llm = GuardedChatOpenAI(guard=guard, model="gpt-4o-mini")
    with guard.session("s-1"):
        ...  # any LangChain agent loop

When the budget refuses a call, the model answers with a plain assistant message (no tool calls)
instead of raising, so a tool-calling loop ends on its own; the message's
``response_metadata["tokenward"]`` says which budget stopped it (``{"stopped": True, "budget":
..., "meter": ..., "limit": ..., "used": ...}``). Set ``stop_on_budget=False`` to get the
:class:`~tokenward.errors.BudgetExceeded` exception instead.

Requires ``langchain-openai`` (``pip install "tokenward[langchain]"``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from tokenward.errors import BudgetExceeded, MissingDependency
from tokenward.numbers import plain

try:
    import httpx2
    from langchain_core.messages import AIMessage, AIMessageChunk
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
    from langchain_openai import ChatOpenAI
    from pydantic import Field, model_validator
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingDependency("langchain-openai", "langchain") from exc

__all__ = ["GuardedChatOpenAI", "stop_message"]


def stop_message(error: BudgetExceeded) -> str:
    """The assistant message that ends a run stopped by a budget."""
    return (
        f"I have to stop here: the {error.scope} budget {error.budget!r} is spent "
        f"({error.meter}: {plain(error.used)} used of {plain(error.limit)})."
    )


def _metadata(error: BudgetExceeded) -> dict[str, Any]:
    return {"finish_reason": "budget", "tokenward": {"stopped": True, **error.to_dict()}}


class GuardedChatOpenAI(ChatOpenAI):  # type: ignore[misc]
    """``langchain_openai.ChatOpenAI`` with its OpenAI clients wrapped by a tokenward guard.

    Attributes:
        guard: the :class:`tokenward.Guard` that enforces budgets.
        stop_on_budget: answer with a final assistant message instead of raising when a budget
            refuses a call (default True).
    """

    guard: Any = Field(default=None, exclude=True)
    stop_on_budget: bool = True

    @model_validator(mode="after")
    def _wrap_clients(self) -> GuardedChatOpenAI:
        if self.guard is None:
            raise ValueError("GuardedChatOpenAI needs guard=tokenward.Guard(...)")
        # own HTTP clients: langchain-openai shares its default ones between models
        if self.root_client is not None:
            self.root_client = self.guard.wrap(self.root_client.with_options(http_client=httpx2.Client()))
            self.client = self.root_client.chat.completions
        if self.root_async_client is not None:
            self.root_async_client = self.guard.wrap(
                self.root_async_client.with_options(http_client=httpx2.AsyncClient())
            )
            self.async_client = self.root_async_client.chat.completions
        return self

    def _stopped(self, error: BudgetExceeded) -> ChatResult:
        message = AIMessage(content=stop_message(error), response_metadata=_metadata(error))
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        try:
            return super()._generate(*args, **kwargs)
        except BudgetExceeded as error:
            if not self.stop_on_budget:
                raise
            return self._stopped(error)

    async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
        try:
            return await super()._agenerate(*args, **kwargs)
        except BudgetExceeded as error:
            if not self.stop_on_budget:
                raise
            return self._stopped(error)

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        try:
            yield from super()._stream(*args, **kwargs)
        except BudgetExceeded as error:
            if not self.stop_on_budget:
                raise
            chunk = AIMessageChunk(content=stop_message(error), response_metadata=_metadata(error))
            yield ChatGenerationChunk(message=chunk)

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        try:
            async for chunk in super()._astream(*args, **kwargs):
                yield chunk
        except BudgetExceeded as error:
            if not self.stop_on_budget:
                raise
            message = AIMessageChunk(content=stop_message(error), response_metadata=_metadata(error))
            yield ChatGenerationChunk(message=message)
