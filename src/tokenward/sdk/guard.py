"""``tokenward.Guard``: budgets enforced in-process, where agents run.

::

    guard = tokenward.Guard(ledger="sqlite:///tokenward.db", budgets=["session:total_tokens=50000"])
    client = guard.wrap(openai.OpenAI())
    with guard.session("s-1", user="alice", agent="researcher"):
        client.chat.completions.create(...)          # estimated, clamped, reserved, settled
        print(guard.budget_note())                   # a line for the agent's system prompt

The same engine and ledger as the gateway (:class:`tokenward.guard.Guard`), plus wrapping of the
official clients, attribution contexts, a final-answer reserve, degrade policies and threshold
callbacks.
"""

from __future__ import annotations

import difflib
import logging
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Literal, TypeVar

from tokenward.core.budgets import (
    METERS,
    Budget,
    Subject,
    parse_budget_spec,
    parse_short_spec,
    short_spec,
)
from tokenward.core.decide import Balance
from tokenward.core.pricebook import PriceBook
from tokenward.core.usage import Usage
from tokenward.errors import BudgetError, ConfigError, TokenwardError, ValidationError
from tokenward.guard import AsyncGuard
from tokenward.guard import Guard as Engine
from tokenward.guard.flow import GuardSettings
from tokenward.guard.renewal import Renewer
from tokenward.guard.wire.azure import azure_deployments
from tokenward.guard.wire.bounded import BOUND_MODES
from tokenward.guard.wire.degrade import Degrade
from tokenward.ledger import Ledger
from tokenward.ledger.base import ThreadedAsyncLedger
from tokenward.ledger.owner import this_process
from tokenward.numbers import plain
from tokenward.sdk import threads
from tokenward.sdk.clients import wrap_client
from tokenward.sdk.context import Attribution, attributed, current
from tokenward.sdk.fit import (
    Fitted,
    fit_messages,
    input_bound,
    summary_request,
    summary_room,
    summary_text,
)
from tokenward.sdk.threads import UnattributedCalls
from tokenward.sdk.thresholds import ThresholdWatcher
from tokenward.sdk.transport import GatewayMemory, TransportSettings

__all__ = ["Guard", "Session"]

log = logging.getLogger("tokenward.sdk")

C = TypeVar("C")


@dataclass(frozen=True, slots=True)
class Session:
    """An open session (or task): its attribution and the budgets made for it.

    Attributes:
        guard: the guard it belongs to.
        attribution: whom its calls are charged to.
        budgets: budgets created for this session (deleted when it ends unless kept).
    """

    guard: Guard
    attribution: Attribution
    budgets: tuple[Budget, ...] = ()

    def remaining(self) -> dict[str, Decimal]:
        """As :meth:`Guard.remaining`, for this session."""
        return self.guard.remaining(self.attribution.subject)

    def budget_note(self) -> str:
        """As :meth:`Guard.budget_note`, for this session."""
        return self.guard.budget_note(self.attribution.subject)

    def fit(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str,
        max_input_tokens: int | None = None,
        share: Decimal | float | str | None = None,
        keep_last: int = 1,
        strategy: Literal["drop", "summarize"] = "drop",
        client: Any = None,
        summary_model: str | None = None,
        summary_max_tokens: int = 512,
        format: str | None = None,
        system: Any = None,
        tools: Any = None,
    ) -> Fitted:
        """The messages trimmed to an input budget, for the next call (:mod:`tokenward.sdk.fit`)::

            with guard.session("s-1", budget="total_tokens=50000") as session:
                history = session.fit(history, model="gpt-4o-mini", share="0.5", keep_last=2)

        Args:
            messages: OpenAI chat messages, Responses input items or Anthropic messages.
            model: the model of the next call (its tokenizer counts).
            max_input_tokens: a fixed bound, in tokens; or
            share: a share (0 to 1) of what the session can still pay for (its tightest token
                budget, or the tokens its cost budget buys at the model's input rate).
            keep_last: groups at the end always kept (a message, or a tool call with its results).
            strategy: ``drop`` the oldest groups, or ``summarize`` them with ``summary_model``
                through ``client`` (a client this guard wraps; the call is charged to this
                session; when a budget refuses it the oldest groups are dropped instead and
                :attr:`~tokenward.sdk.fit.Fitted.fallback` says why).
            summary_max_tokens: the summary call's output bound.
            format: ``openai-chat``, ``openai-responses`` or ``anthropic-messages`` (default: from
                the messages).
            system / tools: Anthropic's ``system`` and the request's tools, counted as sent.

        Returns:
            A :class:`~tokenward.sdk.fit.Fitted` list: the messages to send, never estimated above
            the bound.

        Raises:
            ContextTooLarge: the system prompt and the kept groups alone are over the bound.
            ValidationError: neither or both of ``max_input_tokens`` and ``share``; ``summarize``
                without ``client`` and ``summary_model``; a malformed message.
        """
        bound, what = self._fit_bound(model, max_input_tokens, share)
        summarize = None
        if strategy == "summarize":
            summarize = self._summarizer(client, summary_model, summary_max_tokens)
        elif strategy != "drop":
            raise ValidationError("strategy must be drop or summarize", field="strategy")
        return fit_messages(
            messages, model=model, bound=bound, what=what, fmt=format, keep_last=keep_last,
            system=system, tools=tools, summarize=summarize,
            summary_room=summary_room(summary_max_tokens, model),
        )  # fmt: skip

    async def afit(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str,
        max_input_tokens: int | None = None,
        share: Decimal | float | str | None = None,
        keep_last: int = 1,
        strategy: Literal["drop", "summarize"] = "drop",
        client: Any = None,
        summary_model: str | None = None,
        summary_max_tokens: int = 512,
        format: str | None = None,
        system: Any = None,
        tools: Any = None,
    ) -> Fitted:
        """The async twin of :meth:`fit` (``client`` an async client for ``summarize``)."""
        bound, what = self._fit_bound(model, max_input_tokens, share)
        if strategy not in ("drop", "summarize"):
            raise ValidationError("strategy must be drop or summarize", field="strategy")
        plain = fit_messages(
            messages, model=model, bound=bound, what=what, fmt=format, keep_last=keep_last,
            system=system, tools=tools,
        )  # fmt: skip
        if strategy == "drop" or not plain.dropped:
            return plain
        if client is None or not summary_model:
            raise ValidationError("strategy='summarize' needs client= and summary_model=", field="client")
        room = summary_room(summary_max_tokens, model)
        wanted: list[Sequence[Mapping[str, Any]]] = []

        def plan_only(dropped: Sequence[Mapping[str, Any]]) -> str:
            wanted.append(dropped)
            raise _Planned

        with suppress(_Planned):
            fit_messages(
                messages, model=model, bound=bound, what=what, fmt=format, keep_last=keep_last,
                system=system, tools=tools, summarize=plan_only, summary_room=room,
            )  # fmt: skip
        if not wanted:  # no room for a summary: fit_messages said so on the dropped list
            return fit_messages(
                messages, model=model, bound=bound, what=what, fmt=format, keep_last=keep_last,
                system=system, tools=tools, summarize=lambda _: "", summary_room=room,
            )  # fmt: skip
        kind, kwargs = summary_request(client, summary_model, wanted[0], summary_max_tokens)
        try:
            with self._charged_here():
                if kind == "anthropic":
                    reply = await client.messages.create(**kwargs)
                else:
                    reply = await client.chat.completions.create(**kwargs)
        except BudgetError as exc:
            plain.fallback = f"summary call refused: {exc}"
            return plain
        text = summary_text(kind, reply)
        return fit_messages(
            messages, model=model, bound=bound, what=what, fmt=format, keep_last=keep_last,
            system=system, tools=tools, summarize=lambda _: text, summary_room=room,
        )  # fmt: skip

    def _fit_bound(
        self, model: str, max_input_tokens: int | None, share: Decimal | float | str | None
    ) -> tuple[int, str]:
        if (max_input_tokens is None) == (share is None):
            raise ValidationError("give one of max_input_tokens= or share=", field="max_input_tokens")
        if max_input_tokens is not None:
            if (
                isinstance(max_input_tokens, bool)
                or not isinstance(max_input_tokens, int)
                or max_input_tokens < 0
            ):
                raise ValidationError(
                    f"max_input_tokens must be a whole number of tokens, 0 or more, got {max_input_tokens!r}",
                    field="max_input_tokens",
                )
            return int(max_input_tokens), "max_input_tokens"
        try:
            portion = Decimal(str(share))
        except ArithmeticError:
            portion = Decimal("NaN")
        if not portion.is_finite() or not Decimal(0) < portion <= 1:
            raise ValidationError("share must be above 0 and at most 1", field="share")
        rate: Decimal | None = None
        try:
            cost = self.guard.prices.cost(Usage(input_tokens=1_000_000, output_tokens=0), model)
            rate = None if cost.total_usd is None else cost.total_usd / 1_000_000
        except TokenwardError:
            rate = None
        return input_bound(self.remaining(), portion, rate)

    @contextmanager
    def _charged_here(self) -> Iterator[None]:
        """Calls made inside are charged to this session (its attribution), wherever fit runs."""
        subject = self.attribution.subject
        scopes = {
            scope: subject.value(scope)
            for scope in ("org", "project", "team", "user", "key", "agent", "session", "task")
        }
        with attributed(
            held_back=None, final=None, tags=dict(subject.tags), whole=None, budgets=None, **scopes
        ):
            yield

    def _summarizer(
        self, client: Any, model: str | None, max_tokens: int
    ) -> Callable[[Sequence[Mapping[str, Any]]], str]:
        if client is None or not model:
            raise ValidationError("strategy='summarize' needs client= and summary_model=", field="client")

        def summarize(dropped: Sequence[Mapping[str, Any]]) -> str:
            kind, kwargs = summary_request(client, model, dropped, max_tokens)
            with self._charged_here():
                if kind == "anthropic":
                    reply = client.messages.create(**kwargs)
                else:
                    reply = client.chat.completions.create(**kwargs)
            return summary_text(kind, reply)

        return summarize


class Guard(Engine):
    """Budgets for the calls an agent makes through wrapped ``openai``/``anthropic`` clients.

    Args:
        ledger: a ledger or its URL (default ``sqlite:///tokenward.db``).
        budgets: budgets to create or replace now: :class:`~tokenward.Budget` objects or specs
            like ``"session:total_tokens=50000"`` or ``"user=alice:cost_usd=5/day"``.
        prices: the price book (default: the pinned genai-prices table).
        settings: output bounds and reservation lifetime.
        degrade: a degrade policy (cheaper model, less reasoning when budgets run low); without
            one, budgets whose action is ``degrade`` still degrade calls with the default policy.
        observers: watchers of every admission, denial and settled event.
        on_unattributed: what to do with a call made outside every session and task while the
            guard has one open elsewhere (another thread or task: see
            :mod:`tokenward.sdk.threads`): ``warn`` (default: an
            :class:`~tokenward.UnattributedCallWarning` once per call site), ``raise``
            (:class:`~tokenward.errors.UnattributedCall`) or ``ignore``.
        **subject: default attribution for calls made outside any session (``user``,
            ``project``, ``team``, ``org``, ``key``, ``agent``).

    While a guard is open (until :meth:`close`), ``ThreadPoolExecutor.submit`` (and so
    ``loop.run_in_executor``) carries the caller's session and task into the worker thread; the
    patch is removed when the last open guard closes.

    Raises:
        ConfigError: a malformed budget spec or ledger URL, or an unknown ``on_unattributed``.
    """

    def __init__(
        self,
        ledger: Ledger | str | None = None,
        *,
        budgets: Budget | str | Iterable[Budget | str] = (),
        prices: PriceBook | None = None,
        settings: GuardSettings | None = None,
        degrade: Degrade | None = None,
        observers: Sequence[object] = (),
        on_unattributed: Literal["warn", "raise", "ignore"] = "warn",
        **subject: str,
    ) -> None:
        self.unattributed = UnattributedCalls(on_unattributed)
        super().__init__(ledger, prices=prices, settings=settings, observers=observers)
        self.defaults = Subject(**subject)
        threads.hold()
        self._release = weakref.finalize(self, threads.release)
        self.degrade = degrade
        self.gateways = GatewayMemory()
        self._aio: AsyncGuard | None = None
        self.leases = Renewer(lambda holder, ttl, key: self.ledger.renew_lease(key, holder, ttl))
        """Renews the leases of the sessions open in this process (:meth:`session`)."""
        # one spec or Budget on its own is one budget (a string was read as one spec per character)
        made = [parse_budget_spec(b) if isinstance(b, str) else b for b in _as_list(budgets)]
        for budget in made:
            self.ledger.put_budget(budget)
        self._users = sorted({b.subject_id for b in made if b.scope == "user" and b.subject_id})
        """The users the guard's own budgets name (``user=alice:...``)."""

    @property
    def aio(self) -> AsyncGuard:
        """The async twin, on the same ledger, prices, settings and observers."""
        if self._aio is None:
            self._aio = AsyncGuard(
                ThreadedAsyncLedger(self.ledger), prices=self.prices, settings=self.settings
            )
            self._aio.observers = self.observers
        return self._aio

    def close(self) -> None:
        """Stop renewing holds (of the sync guard and its async twin), close the ledger, and
        (for the last open guard) give ``ThreadPoolExecutor.submit`` back its own code."""
        if self._aio is not None:
            self._aio.renewer.close()
        self._release()
        self.leases.close()
        super().close()

    def subject(self, override: Subject | None = None) -> Subject:
        """Whom a call made here is charged to: the attribution in force over the defaults."""
        inner = override or current().subject
        merged = {
            scope: inner.value(scope) or self.defaults.value(scope)
            for scope in ("org", "project", "team", "user", "key", "agent", "session", "task")
        }
        tags = dict(self.defaults.tags) | dict(inner.tags)
        return Subject(**{k: v for k, v in merged.items() if v}, tags=tuple(sorted(tags.items())))

    def wrap(
        self,
        client: C,
        *,
        provider: str | None = None,
        error_bases: tuple[type[Exception], ...] = (),
        bound_non_streamed: str = "stream",
        deployments: Mapping[str, str | Mapping[str, Any]] | None = None,
        unmetered: str = "deny",
    ) -> C:
        """Guard every usage-producing call of an ``openai.OpenAI``/``AsyncOpenAI`` (and
        ``AzureOpenAI``), ``anthropic.Anthropic``/``AsyncAnthropic`` (and ``AnthropicVertex``),
        ``google.genai.Client`` (Gemini API and ``vertexai=True``) or boto3 ``bedrock-runtime``
        client (chat completions, Messages, generateContent, Converse and InvokeModel, streamed or
        not). The client is changed in place and returned.

        A denial raises :class:`~tokenward.errors.BudgetExceeded` out of the SDK call. A stream cut
        off at its hold ends as the provider ends a length-limited one (``finish_reason:
        "length"`` / ``stop_reason: "max_tokens"``), and its last chunk carries
        ``tokenward={"cut_off": True, "reason": "budget"}``; a non-streamed answer whose output
        bound a budget lowered carries ``tokenward={"clamped_by": <budget>, "max_output_tokens": n}``.

        Args:
            client: the client.
            provider: provider kind for price lookups when the host does not tell
                (``openai``, ``anthropic``, ``google``...).
            error_bases: more exception classes tokenward's errors should also be instances of
                (a framework's own error root, so the framework handles them as its own).
            bound_non_streamed: ``stream`` (default): a call made without streaming is read from
                the provider as a stream, stopped at its hold like a streamed one, and handed to
                the client as the JSON the provider would have sent; ``trust``: it is sent as it
                is, trusting the provider to honour the output bound (the charge floor applies
                either way). See :mod:`tokenward.guard.wire.bounded`.
            deployments: for ``openai.AzureOpenAI`` / ``AsyncAzureOpenAI`` (priced as provider
                ``azure``): each deployment name the client sends as ``model``, mapped to the model
                it runs (``{"gpt4o-prod": "gpt-4o"}``), or to ``{"model": ..., "price_multiplier":
                1.1}``. Calls are held, priced and recorded as that model: Azure's own price row
                where the table has one, else OpenAI's times the multiplier, marked estimated. A
                prompt Azure's content filter refuses (400 ``content_filter``) is charged, as Azure
                bills it (:mod:`tokenward.guard.wire.azure`).
            unmetered: ``deny`` (default): a call the provider bills but tokenward cannot meter
                (audio translations, image variations, videos, Assistants runs, batches, Anthropic
                message batches; Gemini batches, embeddings and Imagen images) raises
                :class:`~tokenward.errors.UnmeteredCall` before it is sent; ``allow``: it is made, and is in no budget nor the ledger.

        Raises:
            ConfigError: not a client tokenward can wrap, an unknown ``bound_non_streamed`` or
                ``unmetered``, or a malformed ``deployments`` entry.
        """
        if bound_non_streamed not in BOUND_MODES:
            raise ConfigError(
                f"bound_non_streamed must be one of {', '.join(BOUND_MODES)}, got {bound_non_streamed!r}"
            )
        if unmetered not in ("deny", "allow"):
            raise ConfigError(f"unmetered must be 'deny' or 'allow', got {unmetered!r}")
        # Without a policy of its own the guard still degrades calls for budgets whose action is
        # ``degrade`` (with the default policy: less reasoning below 20 % left).
        policy = self.degrade if self.degrade is not None else Degrade(marked_only=True)
        mapped = azure_deployments(deployments)
        for name, (_, multiplier) in mapped.items():
            if multiplier is not None:
                self.prices.derive(f"azure:{name}", "azure", multiplier)
        if provider is None and type(client).__name__ in ("AzureOpenAI", "AsyncAzureOpenAI"):
            provider = "azure"
        if type(client).__module__ == "botocore.client":  # boto3's bedrock-runtime client
            from tokenward.sdk.boto import wrap_bedrock_runtime

            boto = TransportSettings(
                degrade=policy, subject=self._charged, check=lambda: self.unattributed.check(self.defaults)
            )
            return wrap_bedrock_runtime(client, self, boto)
        settings = TransportSettings(
            degrade=policy,
            provider=provider,
            deployments=mapped,
            subject=self._charged,
            check=lambda: self.unattributed.check(self.defaults),
            bound_non_streamed=bound_non_streamed,
            unmetered=unmetered,
        )
        return wrap_client(
            client,
            sync_guard=self,
            async_guard=self.aio,
            settings=settings,
            gateways=self.gateways,
            error_bases=error_bases,
        )

    @contextmanager
    def session(
        self,
        session_id: str,
        *,
        budget: Budget | str | Iterable[Budget | str] | None = None,
        reserve: Mapping[str, Decimal | int | str] | None = None,
        keep_budget: bool = False,
        tags: Mapping[str, str] | None = None,
        **scopes: str | None,
    ) -> Iterator[Session]:
        """Charge the calls made inside the block to session ``session_id``.

        Several workers (threads, processes, machines on one ledger) may be in the same session
        at once: each holds a lease on it in the ledger, renewed while its block runs
        (:mod:`tokenward.ledger.leases`). The session's budgets are made by the first worker that
        declares them and deleted when the *last* worker leaves (or its lease expires after the
        guard's ``ttl``, when a worker crashed), so no worker runs on after another lifted its
        limit.

        Through a tokenward gateway (the wrapped client's base URL), the gateway charges the
        calls, so the session's budgets go with each call (``x-tokenward-session-budget``) and the
        gateway enforces them for the session, if the key allows it (``allow_client_budgets``);
        a key that does not is refused with :class:`~tokenward.errors.ConfigError` on the first
        call, before anything reaches the provider.

        Args:
            session_id: the session.
            budget: budgets for this session alone, in the short form
                ``METER=LIMIT[/WINDOW][;OPTION=VALUE...]`` (``"total_tokens=50000"``,
                ``"cost_usd=0.50/day;action=deny"``, ``"tool_calls=20;custom"``: the options of
                :func:`~tokenward.parse_budget_spec`), a :class:`~tokenward.Budget`, or several.
                Every worker of a shared session must declare the same ones (or none: it joins
                those there).
            reserve: a final-answer reserve by meter (``{"total_tokens": 2000}``): ordinary calls
                may not use it; calls inside :meth:`final_answer` may.
            keep_budget: keep the session's budgets when its last worker leaves (default: delete
                them; their spend stays in the ledger).
            tags: free-form tags added to the attribution.
            **scopes: ``user``, ``agent``, ``task``, ``project``, ``team``, ``org``.

        Raises:
            ConfigError: a malformed budget spec or reserve, or an undeclared custom meter (a
                mistyped ``total_token``); or budgets other than those another worker of the
                session declared (both named); or, on a call through a gateway, a key that may
                not carry the session's budgets; or a session opened inside another session that
                declared budgets (a call has one session: the outer one's budgets would stop
                applying; use :meth:`task` for a part of a session).
        """
        with self._scope("session", session_id, budget, reserve, keep_budget, tags, scopes) as session:
            yield session

    @contextmanager
    def task(
        self,
        task_id: str,
        *,
        budget: Budget | str | Iterable[Budget | str] | None = None,
        reserve: Mapping[str, Decimal | int | str] | None = None,
        keep_budget: bool = False,
        tags: Mapping[str, str] | None = None,
        **scopes: str | None,
    ) -> Iterator[Session]:
        """Charge the calls made inside the block to task ``task_id``: one unit of work (an issue
        of a batch, a sub-goal of an agent), inside a session or on its own::

            with guard.session("run-7", user="alice"):
                for issue in issues:
                    with guard.task(issue.id, budget="cost_usd=0.20"):
                        solve(issue)          # charged to session run-7 and task <issue.id>

        Inside a session a call is charged to both, and every budget of either applies (so a
        task budget caps one issue while the session budget caps the run). The arguments are
        those of :meth:`session`: ``budget`` makes budgets of scope ``task`` for ``task_id``
        (deleted when the block ends unless ``keep_budget``), ``reserve``, ``tags`` and
        ``**scopes`` likewise.

        Raises:
            ConfigError: a malformed budget spec or reserve, or an undeclared custom meter; or a
                task opened inside another task that declared budgets (a call has one task).
        """
        with self._scope("task", task_id, budget, reserve, keep_budget, tags, scopes) as session:
            yield session

    @contextmanager
    def final_answer(self) -> Iterator[None]:
        """Calls made inside the block may use the final-answer reserve."""
        with attributed(final=True):
            yield

    @contextmanager
    def _scope(
        self,
        scope: str,
        value: str,
        budget: Budget | str | Iterable[Budget | str] | None,
        reserve: Mapping[str, Decimal | int | str] | None,
        keep_budget: bool,
        tags: Mapping[str, str] | None,
        scopes: Mapping[str, str | None],
    ) -> Iterator[Session]:
        attribution = current()
        for moved in ("session", "task"):  # the block's own scope, or one given with it (task(session=))
            inner = value if moved == scope else scopes.get(moved)
            outer, declared = attribution.subject.value(moved), attribution.budgets.get(moved)
            if inner is None or outer is None or outer == inner or not declared:
                continue
            # a call has one session (one task): the inner block takes the outer one's place,
            # and the budgets the outer block declared would silently stop applying to its calls
            hint = "guard.task(...) for a part of it" if moved == "session" else "one task at a time"
            where = "" if moved == scope else f" (given to {scope} {value!r})"
            raise ConfigError(
                f"{moved} {inner!r}{where} opened inside {moved} {outer!r}, which has budgets of its "
                f"own ({', '.join(declared)}): a call is charged to one {moved}, so they would not "
                f"apply to the calls inside; use {hint}, or open {inner!r} outside {outer!r}"
            )
        made = tuple(self._scoped_budget(scope, value, b) for b in _as_list(budget))
        names = [b.name for b in made]
        if len(set(names)) != len(names):  # one would silently replace the other
            raise ConfigError(
                f"{scope} {value!r}: two budgets named alike ({', '.join(names)}); give one a ;name="
            )
        # what a gateway is sent to enforce them (tokenward.gateway.carried)
        carried = {scope: tuple(short_spec(b, named=False) for b in made)} if made else None
        held = _reserve(scope, value, reserve)
        key, holder, ttl = f"{scope}:{value}", f"{this_process()}/{uuid.uuid4().hex[:12]}", self.settings.ttl
        self.ledger.join_lease(key, holder, ttl=ttl, budgets=made, keep=keep_budget)
        member = _Member()  # renewed while this block runs (held weakly by the renewer)
        self.leases.watch(holder, ttl, member, key)
        self.unattributed.opened()
        try:
            with attributed(
                held_back=held, final=None, tags=tags, whole=None, budgets=carried, **{**scopes, scope: value}
            ) as attribution:
                yield Session(self, attribution, made)
        finally:
            self.unattributed.closed()
            self.leases.done(holder)
            self.ledger.leave_lease(key, holder)
            del member
            if scope == "session":
                self._record_end(key, value, scopes.get("project") or self.subject().project)

    def _record_end(self, key: str, session_id: str, project: str | None) -> None:
        """When this member was the last out of session ``session_id`` (its lease group is
        closed), note in the ledger's audit log that the SDK ended it (actor ``sdk``, action
        ``session.end``, target the session id), where the dashboard reads its ``ended`` status.
        A ledger that cannot take it is logged; the block still ends normally."""
        audit = getattr(self.ledger, "audit", None)
        if audit is None:
            return
        try:
            if self.ledger.lease_group(key) is None:
                audit("sdk", "session.end", session_id, project=project)
        except TokenwardError as exc:
            log.warning("could not record the end of session %r: %s", session_id, exc)

    @staticmethod
    def _scoped_budget(scope: str, value: str, spec: Budget | str) -> Budget:
        if isinstance(spec, Budget):
            return replace(spec, scope=scope, subject_id=value)
        return parse_short_spec(spec, scope=scope, subject_id=value)

    def balances(self, subject: Subject | None = None) -> list[Balance]:
        """Every budget instance that applies to ``subject`` (default: the attribution in force;
        outside every session, the guard's defaults, and when they name no user, the one user the
        guard's own budgets name: ``Guard(budgets=["user=alice:cost_usd=5/day"])`` reports
        alice's)."""
        return self.ledger.balances(self._reported(subject))

    def _charged(self) -> Subject:
        """Whom a call made here through a wrapped client is charged to: the attribution in force
        over the defaults, and outside every session and task, when they name no user, the one
        user the guard's own budgets name (``Guard(budgets=["user=alice:cost_usd=5/day"])``), so
        that the budget :meth:`remaining` and :meth:`budget_note` report is the one that applies
        (they reported alice's budget while such calls were charged to no user at all)."""
        return self._reported(None)

    def _reported(self, subject: Subject | None) -> Subject:
        """Whom :meth:`balances`, :meth:`remaining` and :meth:`budget_note` report on, and
        (``subject`` None) whom a call is charged to (:meth:`_charged`)."""
        resolved = self.subject(subject)
        outside = subject is None and current().subject == Subject()
        if outside and resolved.user is None and len(self._users) == 1:
            return replace(resolved, user=self._users[0])
        return resolved

    def remaining(self, subject: Subject | None = None) -> dict[str, Decimal]:
        """What is left, by meter: the least room of any hard budget of that meter (tokens, USD,
        calls), never negative; the final-answer reserve is not counted as room unless inside
        :meth:`final_answer`.

        Args:
            subject: whom to ask about (default: the attribution in force; outside every session,
                the guard's defaults, or the one user its own budgets name, as :meth:`balances`).
        """
        attribution = current()
        held = {} if attribution.final else attribution.held_back
        out: dict[str, Decimal] = {}
        for balance in self.balances(subject):
            if balance.budget.mode != "hard":
                continue
            meter = balance.budget.meter
            room = max(Decimal(0), balance.remaining - Decimal(held.get(meter, 0)))
            out[meter] = min(out.get(meter, room), room)
        return out

    def budget_note(self, subject: Subject | None = None) -> str:
        """A short note on what is left, for an agent's system prompt, so it can plan within its
        means (one sentence per budget, tightest first)."""
        attribution = current()
        balances = [b for b in self.balances(subject) if b.budget.mode == "hard" and b.budget.limit > 0]
        if not balances:
            return "No budget limits this work."
        balances.sort(key=lambda b: b.remaining / b.budget.limit)
        lines = []
        for b in balances:
            left = max(Decimal(0), b.remaining)
            share = int(left * 100 / b.budget.limit)
            unit = _UNITS.get(b.budget.meter, b.budget.meter)
            if b.budget.meter == "cost_usd":
                amount = f"${plain(left.quantize(Decimal('0.000001') if left < 1 else Decimal('0.01')))}"
                limit = f"${plain(b.budget.limit)}"
            else:
                amount, limit = f"{int(left):,}", f"{int(b.budget.limit):,} {unit}"
            reset = f", resets {b.reset_at:%Y-%m-%d %H:%M} UTC" if b.reset_at else ""
            lines.append(f"{amount} of {limit} left for this {b.budget.scope} ({share}%{reset}).")
        reserve = attribution.held_back
        if reserve and not attribution.final:
            kept = ", ".join(f"{plain(Decimal(v))} {_UNITS.get(m, m)}" for m, v in reserve.items())
            lines.append(f"{kept} are kept for your final answer.")
        lines.append(
            "Plan your remaining steps to finish within this budget; when it runs low, give your best final answer."
        )
        return "Budget: " + " ".join(lines)

    def on_threshold(
        self,
        callback: Callable[..., Any],
        *,
        thresholds: Sequence[float | Decimal | str] = ("0.5", "0.8", "1"),
    ) -> None:
        """Call ``callback(crossing)`` (a plain or ``async`` function) once per budget, window and
        threshold when spend crosses a share of a budget's limit (see
        :class:`~tokenward.sdk.thresholds.Crossing`)."""
        watcher = next((o for o in self.observers.items if isinstance(o, ThresholdWatcher)), None)
        if watcher is None:
            watcher = ThresholdWatcher(self.ledger)
            self.observers.add(watcher)
        watcher.subscribe(callback, [Decimal(str(t)) for t in thresholds])


class _Planned(Exception):
    """Raised by the stand-in summariser :meth:`Session.afit` plans with (never escapes)."""


class _Member:
    """The owner of one lease while its session block runs (the renewer holds it weakly)."""


_UNITS = {
    "total_tokens": "tokens",
    "input_tokens": "input tokens",
    "output_tokens": "output tokens",
    "requests": "calls",
}


def _reserve(scope: str, value: str, reserve: Mapping[str, Decimal | int | str] | None) -> dict[str, Decimal]:
    """A session's or task's final-answer reserve, checked: built-in meters (a custom meter is never
    held by an LLM call) and amounts of at least 0.

    Raises:
        ConfigError: a mistyped meter (``total_token`` reserved nothing, without a word), or an
            amount that is no number or is negative (a negative reserve was room *added* to every
            hard budget of its meter: ``-1000`` let calls spend 1,000 tokens past the limit).
    """
    if reserve is None:
        return {}
    if not isinstance(reserve, Mapping):
        raise ConfigError(
            f"{scope} {value!r}: reserve must map a meter to an amount, e.g. {{'total_tokens': 2000}}"
        )
    held: dict[str, Decimal] = {}
    for meter, amount in reserve.items():
        if meter not in METERS:
            close = difflib.get_close_matches(str(meter), METERS, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"{scope} {value!r}: reserve of unknown meter {meter!r}; {hint}the meters a call holds are "
                f"{', '.join(METERS)}"
            )
        try:
            if isinstance(amount, bool):
                raise ArithmeticError
            number = Decimal(str(amount).strip())
        except ArithmeticError:
            raise ConfigError(f"{scope} {value!r}: reserve {meter}: {amount!r} is not a number") from None
        if not number.is_finite() or number < 0:
            raise ConfigError(f"{scope} {value!r}: reserve {meter} must be a number >= 0, got {amount!r}")
        held[meter] = number
    return held


def _as_list(budget: Budget | str | Iterable[Budget | str] | None) -> list[Budget | str]:
    if budget is None:
        return []
    if isinstance(budget, (Budget, str)):
        return [budget]
    return list(budget)
