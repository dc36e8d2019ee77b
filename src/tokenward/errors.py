"""The exception tree of tokenward.

Every error tokenward raises on purpose derives from :class:`TokenwardError`::

    TokenwardError
    ├── ConfigError              bad configuration: unknown ledger scheme, malformed budget spec,
    │   │                        implausible price row, unreadable config file
    │   └── MissingDependency    an optional extra is not installed (names the pip command)
    ├── ValidationError          bad input data: a usage object that contradicts itself,
    │   │                        a malformed request body (names the offending field)
    │   └── PromptTooLarge       a prompt over a budget's ``max_input_tokens`` (gateway: 400)
    ├── BudgetError              a call may not run because of a budget
    │   ├── BudgetExceeded       a hard budget cannot pay for the call (structured fields)
    │   │   └── Stopped          the call's session or task was ended for good by a budget
    │   │                        whose action is ``stop``
    │   ├── UnpricedCall         a cost budget applies but the call's price is unknown
    │   └── ContextTooLarge      a conversation cannot be fitted to an input bound: what must be
    │                            kept (system prompt, last turns) is over it (``Session.fit``)
    ├── LedgerError              the ledger store failed (driver errors are translated here)
    │   └── StoreUnavailable     the store cannot be reached (down, restarting, too slow); a
    │                            budget that fails closed refuses the call with it (gateway: 503)
    └── UnattributedCall         an SDK call carries no session or task while its guard has some
                                 open (``Guard(on_unattributed="raise")``)

One warning: :class:`UnattributedCallWarning` (a ``RuntimeWarning``), the same condition under
the default ``on_unattributed="warn"``, once per call site.

Driver errors (``sqlite3``, ``redis``, ``psycopg``, ``httpx``) are translated at the ledger and gateway boundaries, so
callers only ever need to catch :class:`TokenwardError` or one of its subclasses.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from tokenward.numbers import plain

__all__ = [
    "BudgetError",
    "BudgetExceeded",
    "ConfigError",
    "ContextTooLarge",
    "LedgerError",
    "MissingDependency",
    "PromptTooLarge",
    "Stopped",
    "StoreUnavailable",
    "TokenwardError",
    "UnattributedCall",
    "UnattributedCallWarning",
    "UnpricedCall",
    "ValidationError",
]


class TokenwardError(Exception):
    """Root of every error tokenward raises on purpose."""


class ConfigError(TokenwardError):
    """The configuration is invalid: the message says what and where."""


class MissingDependency(ConfigError):
    """An optional dependency is missing.

    Args:
        package: the import name that failed.
        extra: the ``tokenward`` extra that installs it.
    """

    def __init__(self, package: str, extra: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(f'{package!r} is not installed; install it with: pip install "tokenward[{extra}]"')


class ValidationError(TokenwardError, ValueError):
    """Input data is invalid.

    Attributes:
        field: the name of the offending field, when one can be named.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class PromptTooLarge(ValidationError):
    """A call's prompt is over the ``max_input_tokens`` of a hard budget that applies to it:
    refused before anything is held or sent (the gateway answers 400).

    Attributes:
        budget: the budget's name. max_input_tokens: its bound. input_tokens: the prompt's
        estimate, in tokens.
    """

    def __init__(self, *, budget: str, max_input_tokens: int, input_tokens: int) -> None:
        self.budget, self.max_input_tokens, self.input_tokens = budget, max_input_tokens, input_tokens
        super().__init__(
            f"the prompt ({input_tokens} input tokens) is over the {max_input_tokens} that budget "
            f"{budget!r} allows a call (max_input_tokens); shorten it",
            field="messages",
        )


class BudgetError(TokenwardError):
    """A call may not run because of a budget."""


class BudgetExceeded(BudgetError):
    """A hard budget cannot pay for the call.

    The same fields appear in the gateway's 402/429 error body.

    Attributes:
        budget: the budget's name.
        scope: the scope it applies to (``user``, ``session``, ...).
        subject_id: the scope value it was charged for (``"alice"``), or None for a global budget.
        meter: what it counts (``total_tokens``, ``cost_usd``, ...).
        limit: the budget's limit, in the meter's unit (tokens or USD).
        used: the amount already spent in the current window.
        held: the amount held by calls in flight.
        requested: the amount this call needed (its minimum when the output could be clamped).
        reset_at: when the window resets (UTC), or None when it never does.
        window: the budget's window (``day``, ``rolling:1m``), or None when unknown.
        retry_at: for a rolling window, the first instant at which this call's hold fits as
            earlier spend stops counting (None: not a rolling window, or it never will).
    """

    def __init__(
        self,
        *,
        budget: str,
        scope: str,
        subject_id: str | None,
        meter: str,
        limit: Decimal,
        used: Decimal,
        held: Decimal,
        requested: Decimal,
        reset_at: datetime | None,
        mode: str = "hard",
        window: str | None = None,
        retry_at: datetime | None = None,
    ) -> None:
        self.budget = budget
        self.scope = scope
        self.subject_id = subject_id
        self.meter = meter
        self.limit = limit
        self.used = used
        self.held = held
        self.requested = requested
        self.reset_at = reset_at
        self.mode = mode
        self.window = window
        self.retry_at = retry_at
        who = f"{scope} {subject_id!r}" if subject_id is not None else scope
        reset = reset_at.isoformat().replace("+00:00", "Z") if reset_at else "never"
        super().__init__(
            f"budget {budget!r} ({who}, {meter}) exceeded: limit {plain(limit)}, used {plain(used)}, "
            f"held {plain(held)}, this call needs {plain(requested)}; resets {reset}"
        )

    @property
    def remaining(self) -> Decimal:
        """What the budget can still pay for (never negative), in the meter's unit."""
        return max(Decimal(0), self.limit - self.used - self.held)

    def to_dict(self) -> dict[str, Any]:
        """The structured fields, JSON-ready (amounts as decimal strings, instants as ISO 8601 UTC)."""
        return {
            "budget": self.budget,
            "scope": self.scope,
            "subject_id": self.subject_id,
            "meter": self.meter,
            "limit": plain(self.limit),
            "used": plain(self.used),
            "held": plain(self.held),
            "requested": plain(self.requested),
            "reset_at": self.reset_at.isoformat().replace("+00:00", "Z") if self.reset_at else None,
            "retry_at": self.retry_at.isoformat().replace("+00:00", "Z") if self.retry_at else None,
        }


class Stopped(BudgetExceeded):
    """The call's session or task was ended for good by a budget whose action is ``stop``.

    Later calls of that session or task are refused even if the budget is raised. The inherited
    fields describe the budget as it was when it stopped the work (``used`` is its spend then,
    ``requested`` 0, ``reset_at`` None: it never resets).

    Attributes:
        stopped_scope: ``session`` or ``task``.
        stopped_id: the session or task id.
        stopped_at: when it was stopped (UTC).
    """

    def __init__(self, *, stopped_scope: str, stopped_id: str, stopped_at: datetime, **fields: Any) -> None:
        self.stopped_scope = stopped_scope
        self.stopped_id = stopped_id
        self.stopped_at = stopped_at
        super().__init__(**fields)
        at = stopped_at.isoformat().replace("+00:00", "Z")
        self.args = (
            f"{stopped_scope} {stopped_id!r} was stopped for good at {at} by budget {self.budget!r}",
        )

    def to_dict(self) -> dict[str, Any]:
        """As :meth:`BudgetExceeded.to_dict`, plus ``stopped`` (scope, id, at)."""
        return super().to_dict() | {
            "stopped": {
                "scope": self.stopped_scope,
                "id": self.stopped_id,
                "at": self.stopped_at.isoformat().replace("+00:00", "Z"),
            }
        }


class UnpricedCall(BudgetError):
    """A cost budget applies to the call, but its model has no known price.

    Raised unless the budget's ``unpriced`` policy is ``allow``.

    Attributes:
        model: the model name as requested.
        budget: the cost budget that could not be checked.
    """

    def __init__(self, model: str, budget: str) -> None:
        self.model = model
        self.budget = budget
        super().__init__(
            f"model {model!r} has no known price, so cost budget {budget!r} cannot be checked; "
            "add it to the price-override file or set the budget's unpriced policy to 'allow'"
        )


class UnmeteredCall(BudgetError):
    """A wrapped client made a call the provider bills but tokenward cannot meter (an OpenAI
    audio translation, image variation, video, Assistants run, batch; an Anthropic message
    batch; a Gemini batch, embedding or Imagen image): its cost could not be held nor charged,
    so no budget could apply to it.

    Raised before the call is sent, unless the client was wrapped with ``unmetered="allow"``
    (then the call is made, and is not in the ledger).

    Attributes:
        method: the HTTP method.
        path: the URL path of the call.
    """

    def __init__(self, method: str, path: str) -> None:
        self.method = method
        self.path = path
        super().__init__(
            f"{method} {path} is billed by the provider, but tokenward cannot meter it, so no "
            "budget would apply to it; the call was not made. Wrap the client with "
            "unmetered='allow' to make such calls uncharged, or make them with an unwrapped client"
        )


class ContextTooLarge(BudgetError):
    """The messages cannot be fitted to the input bound: the system prompt and the turns that
    must be kept are already over it (:meth:`tokenward.Session.fit`).

    Attributes:
        bound: the input bound, in tokens.
        needed: the estimate of what must be kept, in tokens.
        budget: what set the bound (``max_input_tokens`` or the budget whose share it is).
    """

    def __init__(self, *, bound: int, needed: int, budget: str) -> None:
        self.bound, self.needed, self.budget = bound, needed, budget
        super().__init__(
            f"the conversation cannot fit {bound} input tokens ({budget}): the system prompt and the "
            f"turns that must be kept alone take {needed}"
        )


class LedgerError(TokenwardError):
    """The ledger store failed; the original driver error is chained as ``__cause__``."""


class StoreUnavailable(LedgerError):
    """The ledger's store (Redis, PostgreSQL) cannot be reached: down, restarting, or slower than
    its time-out.

    Raised by an admission when a hard budget that applies to the call fails closed
    (``on_store_failure: closed``, the default); the gateway answers 503 ``ledger_unavailable``.

    Attributes:
        budgets: the names of the budgets that refused the call by failing closed (empty when the
            failure came before the budgets could be known).
    """

    def __init__(self, message: str, *, budgets: tuple[str, ...] = ()) -> None:
        self.budgets = budgets
        super().__init__(message)


class UnattributedCall(TokenwardError):
    """An SDK call made outside every session and task while its guard has a session or task open
    elsewhere (another thread or task): it would be charged to the guard's defaults only, so the
    budgets of that work would not apply (``Guard(on_unattributed="raise")``). Run the work
    through ``tokenward.sdk.bind(fn)`` or inside ``guard.session()``."""


class UnattributedCallWarning(RuntimeWarning):
    """The warning form of :class:`UnattributedCall` (``Guard(on_unattributed="warn")``, the
    default), given once per call site and pointing at it. A ``RuntimeWarning``: it is about how
    the program runs (work moved to a thread the attribution does not follow), not a misuse of
    tokenward's API; filter it like any warning, or pass ``on_unattributed="ignore"``."""
