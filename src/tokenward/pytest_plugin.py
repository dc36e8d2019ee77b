"""Token budgets in a test suite: a pytest plugin, installed with tokenward (entry point
``pytest11``), that does nothing until a test or the command line asks for it.

::

    @pytest.mark.token_budget(total_tokens=2000, cost_usd="0.01")
    def test_agent_answers():
        ...                                   # every openai / anthropic call here is metered

    pytest --token-budget total_tokens=50000 --token-report tokens.json \\
           --token-baseline tokens-baseline.json

**What is metered.** Once used, every call of an ``openai`` or ``anthropic`` client (sync or
async, streamed or not) made while a test runs (its fixtures included) goes through an
in-process :class:`tokenward.Guard` on a ``memory://`` ledger, charged to the task
``pytest:<node id>``: whenever and wherever the client was created, module-level clients
included (the SDKs' ``request`` methods are patched for the run, and each client is wrapped at its
first call). A client whose base URL is a tokenward gateway sends the test's task as the
``x-tokenward-task`` header, so the gateway's budgets and records attribute the call to the test
(the gateway charges those calls; they are not in this plugin's own figures).

**Budgets.** The marker's meters (budgets named ``test:<meter>``) (``total_tokens``, ``input_tokens``, ``output_tokens``,
``cost_usd``, ``requests``) make hard task budgets with ``action: deny`` for that test;
``--token-budget METER=LIMIT`` (repeatable) one for the whole run (``run:<meter>``). A call over a budget raises
:class:`tokenward.BudgetExceeded` in the code under test; whether or not that code catches it, the
test fails when it has run (before its fixtures are torn down; spend in their teardown fails it
at teardown), with a message naming the budget.

**Reports.** A table per test (calls, input and output tokens, cost) at the end of the run, and
``--token-report FILE`` as JSON.

**Regressions.** ``--token-baseline FILE`` fails a test whose total tokens grew by more than
``--token-baseline-tolerance`` (default 10%) over the figure stored for it;
``--token-baseline-update`` writes the run's figures to the file (keeping the tests not run).

**pytest-xdist.** Per-test budgets, reports and baselines work across workers (each test runs in
one worker; the figures travel to the controller in the test reports). A run budget
(``--token-budget``) cannot be shared between worker processes by the ``memory://`` ledger, so
that combination is refused with a usage error.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

__all__ = ["TestTally"]

_KEY = "tokenward"
_SESSION = "pytest-run"
_TASK = "pytest:"
_METERS = ("total_tokens", "input_tokens", "output_tokens", "cost_usd", "requests")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tokenward", "token budgets (tokenward)")
    group.addoption(
        "--token-budget",
        action="append",
        default=[],
        metavar="METER=LIMIT",
        help="a budget for the whole run's LLM calls (total_tokens=50000, cost_usd=1); repeatable",
    )
    group.addoption("--token-report", metavar="FILE", default=None, help="write tokens per test as JSON")
    group.addoption("--token-baseline", metavar="FILE", default=None, help="fail tests whose tokens grew")
    group.addoption(
        "--token-baseline-tolerance",
        metavar="PERCENT",
        default="10",
        help="growth over the baseline allowed, in percent (default 10)",
    )
    group.addoption(
        "--token-baseline-update",
        action="store_true",
        default=False,
        help="write this run's tokens as the baseline",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "token_budget(total_tokens=None, input_tokens=None, output_tokens=None, cost_usd=None, "
        "requests=None): a hard token budget for this test's openai/anthropic calls (tokenward)",
    )
    plugin = TokenBudgets(config)
    config.pluginmanager.register(plugin, "tokenward-budgets")


@dataclass
class TestTally:
    """One test's metered calls.

    Attributes:
        calls: settled calls, and calls still open when the test ended (``open_calls`` of them: a
        stream never read to its end or closed), which count at their hold. input_tokens /
        output_tokens: their tokens. cost_usd: their USD (None once a call could not be
        priced). refusals: budget refusals, as messages.
    """

    __test__ = False  # not a test class, whatever pytest's collection thinks of its name

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal | None = Decimal(0)
    refusals: list[tuple[str, str]] = field(default_factory=list)
    open_calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "cost_usd": None if self.cost_usd is None else str(self.cost_usd),
            "open_calls": self.open_calls,
        }


class _Tallies:
    """The guard observer: usage events and refusals, by test (task ``pytest:<node id>``)."""

    def __init__(self) -> None:
        self.by_test: dict[str, TestTally] = {}
        self.lock = threading.Lock()
        self.open: dict[str, tuple[str, Any]] = {}  # request id -> (test, admission) not settled
        self.counted: set[str] = set()  # request ids a test ended with open, counted at their hold

    def _of(self, subject: Any) -> TestTally | None:
        task = getattr(subject, "task", None)
        if not task or not task.startswith(_TASK):
            return None
        with self.lock:
            return self.by_test.setdefault(task[len(_TASK) :], TestTally())

    def on_admit(self, admission: Any) -> None:
        task = getattr(admission.subject, "task", None)
        if task and task.startswith(_TASK):
            with self.lock:
                self.open[admission.request_id] = (task[len(_TASK) :], admission)

    def charge_open(self, test: str) -> None:
        """Count the calls of ``test`` still open (admitted, not settled) at their hold: a stream
        the test never read to its end nor closed is settled only when its hold expires, after
        the test's figures are taken, and the provider may have generated it all."""
        with self.lock:
            left = [(rid, adm) for rid, (t, adm) in self.open.items() if t == test]
            if not left:
                return
            tally = self.by_test.setdefault(test, TestTally())
            for request_id, admission in left:
                del self.open[request_id]
                self.counted.add(request_id)
                amounts = admission.decision.amounts
                tally.calls += 1
                tally.open_calls += 1
                tally.input_tokens += int(amounts.get("input_tokens", 0))
                tally.output_tokens += int(amounts.get("output_tokens", 0))
                if tally.cost_usd is not None:
                    cost = amounts.get("cost_usd")
                    tally.cost_usd = None if cost is None else tally.cost_usd + cost

    def on_settle(self, event: Any) -> None:
        with self.lock:
            self.open.pop(event.request_id, None)
            if event.request_id in self.counted:  # its test ended with it open: counted at its hold
                self.counted.discard(event.request_id)
                return
        tally = self._of(event.subject)
        if tally is None:
            return
        with self.lock:
            tally.calls += 1
            tally.input_tokens += event.usage.input_tokens or 0
            tally.output_tokens += event.usage.output_tokens or 0
            if tally.cost_usd is not None:
                tally.cost_usd = None if event.cost_usd is None else tally.cost_usd + event.cost_usd

    def on_deny(self, subject: Any, plan: Any, error: Any) -> None:
        tally = self._of(subject)
        if tally is None:
            return
        with self.lock:
            tally.refusals.append((str(getattr(error, "budget", "")), str(error)))


class TokenBudgets:
    """The plugin's state for one pytest run (registered by :func:`pytest_configure`)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.run_budgets: list[str] = list(config.getoption("--token-budget") or [])
        self.report_file: str | None = config.getoption("--token-report")
        self.baseline_file: str | None = config.getoption("--token-baseline")
        self.update: bool = bool(config.getoption("--token-baseline-update"))
        given = str(config.getoption("--token-baseline-tolerance"))
        try:
            self.tolerance = Decimal(given)
        except ArithmeticError:
            self.tolerance = Decimal("NaN")
        if not self.tolerance.is_finite() or self.tolerance < 0:
            raise pytest.UsageError(
                f"--token-baseline-tolerance {given}: must be a number of percent, 0 or more (10)"
            )
        if self.update and not self.baseline_file:
            raise pytest.UsageError("--token-baseline-update needs --token-baseline FILE")
        workers = getattr(config.option, "numprocesses", None)
        if self.run_budgets and workers and not hasattr(config, "workerinput"):
            raise pytest.UsageError(
                "--token-budget cannot be shared across pytest-xdist workers (each worker meters its "
                "own calls); run without -n, or use per-test budgets (@pytest.mark.token_budget)"
            )
        self.baseline: dict[str, int] = self._read_baseline() if self.baseline_file else {}
        self.results: dict[str, dict[str, Any]] = {}
        self.told: dict[str, set[str]] = {}
        self.guard: Any = None
        self.tallies = _Tallies()
        self.patches: list[tuple[Any, str, Any]] = []
        # the test running (its task and run session), for calls made where no attribution is in
        # force: a thread the test started (threads do not inherit context variables)
        self.running: dict[str, str | None] | None = None
        self.wanted = bool(self.run_budgets or self.report_file or self.baseline_file)

    # -- activation ------------------------------------------------------------------------
    def _read_baseline(self) -> dict[str, int]:
        path = Path(str(self.baseline_file))
        if not path.exists():
            if self.update:
                return {}
            raise pytest.UsageError(
                f"--token-baseline {path}: no such file (write one with --token-baseline-update)"
            )
        try:
            data = json.loads(path.read_text())
            tests = data["tests"]
            if not isinstance(tests, dict):
                raise TypeError("'tests' must be an object of node ids")
            read = {str(k): int(v["total_tokens"]) for k, v in tests.items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise pytest.UsageError(f"--token-baseline {path}: not a tokenward baseline ({exc})") from None
        negative = next((k for k, v in read.items() if v < 0), None)
        if negative is not None:
            raise pytest.UsageError(
                f"--token-baseline {path}: not a tokenward baseline ({negative}: negative total_tokens)"
            )
        return read

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        if self.wanted or any(item.get_closest_marker("token_budget") for item in items):
            self._start()

    def _start(self) -> None:
        """Open the guard and route the SDKs' calls through it (once)."""
        if self.guard is not None:
            return
        from tokenward.core.budgets import parse_short_spec
        from tokenward.errors import ConfigError
        from tokenward.sdk import Guard

        self.guard = Guard("memory://", observers=[self.tallies], on_unattributed="ignore")
        for spec in self.run_budgets:
            text = spec if "action=" in spec else f"{spec};action=deny"
            meter = spec.split("=", 1)[0].strip()
            try:
                budget = parse_short_spec(f"{text};name=run:{meter}", scope="session", subject_id=_SESSION)
            except ConfigError as exc:
                raise pytest.UsageError(f"--token-budget {spec}: {exc}") from None
            self.guard.ledger.put_budget(budget)
        self._patch()

    def _patch(self) -> None:
        guard = self.guard
        for package in ("openai", "anthropic"):
            try:
                module = __import__(f"{package}._base_client", fromlist=["SyncAPIClient"])
            except ImportError:
                continue
            for name in ("SyncAPIClient", "AsyncAPIClient"):
                cls = getattr(module, name, None)
                original = getattr(cls, "request", None)
                if cls is None or original is None:
                    continue
                self.patches.append((cls, "request", original))
                cls.request = _metered(original, guard, name.startswith("Async"), lambda: self.running)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        for cls, name, original in reversed(self.patches):
            setattr(cls, name, original)
        self.patches.clear()
        if self.guard is not None:
            self.guard.close()
            self.guard = None

    # -- one test ----------------------------------------------------------------------------
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> Any:
        if self.guard is None:
            return (yield)
        from tokenward.sdk.context import attributed

        marker = item.get_closest_marker("token_budget")
        made = []
        if marker is not None:
            made = self._test_budgets(item, marker)
        session = _SESSION if self.run_budgets else None
        self.running = {"task": _TASK + item.nodeid, "session": session}
        with attributed(task=_TASK + item.nodeid, session=session):
            try:
                return (yield)
            finally:
                self.running = None
                for budget in made:
                    self.guard.ledger.delete_budget(budget.name)

    def _test_budgets(self, item: pytest.Item, marker: pytest.Mark) -> list[Any]:
        from tokenward.core.budgets import parse_short_spec
        from tokenward.errors import ConfigError

        if marker.args:
            raise pytest.UsageError(f"{item.nodeid}: token_budget takes keywords only (total_tokens=2000)")
        made = []
        for meter, limit in _limits(marker).items():
            if meter not in _METERS:
                raise pytest.UsageError(
                    f"{item.nodeid}: token_budget({meter}=...): known meters: {', '.join(_METERS)}"
                )
            try:
                budget = parse_short_spec(
                    f"{meter}={limit};action=deny;name=test:{meter}",
                    scope="task",
                    subject_id=_TASK + item.nodeid,
                )
            except ConfigError as exc:
                raise pytest.UsageError(f"{item.nodeid}: token_budget: {exc}") from None
            self.guard.ledger.put_budget(budget)
            made.append(budget)
        return made

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        """When the test has run (its ``call`` phase), fail it if a budget was exceeded or refused a
        call, or its tokens grew over the baseline; after its teardown, again for what the
        fixtures' teardown spent (a teardown error), and hand its figures to the controller."""
        if self.guard is None or call.when == "setup":
            return (yield)
        if call.when == "teardown":
            self.tallies.charge_open(item.nodeid)
        tally = self.tallies.by_test.get(item.nodeid, TestTally())
        if call.when == "teardown":
            item.user_properties.append((_KEY, tally.to_dict()))
        report = yield
        told = self.told.setdefault(item.nodeid, set())
        problems = [p for p in self._problems(item, tally) if p not in told]
        told.update(problems)
        if problems and report.passed:
            report.outcome = "failed"
            report.longrepr = "\n".join(problems)
        return report

    def _problems(self, item: pytest.Item, tally: TestTally) -> list[str]:
        out = []
        marker = item.get_closest_marker("token_budget")
        spent = {
            "total_tokens": Decimal(tally.total_tokens),
            "input_tokens": Decimal(tally.input_tokens),
            "output_tokens": Decimal(tally.output_tokens),
            "requests": Decimal(tally.calls),
            "cost_usd": tally.cost_usd,
        }
        limits = _limits(marker) if marker is not None else {}
        for meter, limit in limits.items():
            used = spent.get(meter)
            if used is not None and used > Decimal(str(limit)):
                out.append(
                    f"token budget test:{meter} ({meter}={limit}) of {item.nodeid} exceeded: used {used}"
                )
        for budget, message in tally.refusals:
            out.append(f"token budget {budget} refused a call of {item.nodeid}: {message}")
        base = self.baseline.get(item.nodeid)
        if self.baseline_file and not self.update and base is not None:
            allowed = Decimal(base) * (1 + self.tolerance / 100)
            if tally.total_tokens > allowed:
                grown = (
                    (Decimal(tally.total_tokens - base) * 100 / base).quantize(Decimal("0.1"))
                    if base
                    else "∞"
                )
                out.append(
                    f"token baseline: {item.nodeid} used {tally.total_tokens} tokens, {grown}% over its "
                    f"baseline of {base} in {self.baseline_file} (tolerance {self.tolerance}%)"
                )
        return out

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "teardown":
            return
        for key, value in report.user_properties:
            if key == _KEY:
                self.results[report.nodeid] = dict(value)  # type: ignore[call-overload]

    # -- the end of the run --------------------------------------------------------------------
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(self.config, "workerinput"):
            return  # the controller writes the files
        if self.report_file and (self.results or self.guard is not None):
            total = {
                k: sum(r[k] for r in self.results.values())
                for k in ("calls", "input_tokens", "output_tokens", "total_tokens")
            }
            _write(
                Path(self.report_file), json.dumps({"tests": self.results, "total": total}, indent=2) + "\n"
            )
        if self.update and self.baseline_file:
            path = Path(self.baseline_file)
            kept: dict[str, Any] = {}
            if path.exists():
                try:
                    kept = dict(json.loads(path.read_text()).get("tests") or {})
                except ValueError:
                    kept = {}
            kept.update({k: {"total_tokens": v["total_tokens"]} for k, v in self.results.items()})
            _write(path, json.dumps({"tests": dict(sorted(kept.items()))}, indent=2) + "\n")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        rows = {k: v for k, v in self.results.items() if v["calls"]}
        if not rows:
            return
        terminalreporter.section("tokens per test (tokenward)")
        width = max(len(k) for k in rows)
        terminalreporter.write_line(f"{'test':<{width}}  calls  input  output  cost_usd")
        for nodeid, r in sorted(rows.items()):
            cost = "unpriced" if r["cost_usd"] is None else r["cost_usd"]
            terminalreporter.write_line(
                f"{nodeid:<{width}}  {r['calls']:>5}  {r['input_tokens']:>5}  {r['output_tokens']:>6}  {cost}"
            )
        if self.baseline_file and self.update:
            terminalreporter.write_line(f"token baseline written to {self.baseline_file}")


def _limits(marker: pytest.Mark) -> dict[str, Any]:
    """The marker's meters and limits; a meter given ``None`` (the marker's default) has none."""
    return {meter: limit for meter, limit in marker.kwargs.items() if limit is not None}


def _write(path: Path, text: str) -> None:
    """Write a report or baseline file, making its directory (as ``--junitxml`` does)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _metered(original: Any, guard: Any, is_async: bool, running: Any) -> Any:
    """An SDK client's ``request`` that wraps the client with ``guard`` first (once), and charges
    a call made with no task in force (a thread the test started) to the test running
    (``running()``: its task and session, or None between tests)."""
    import contextlib
    import functools

    from tokenward.sdk.context import attributed, current

    def scope() -> Any:
        test = running()
        if test is None or current().subject.task:
            return contextlib.nullcontext()
        return attributed(task=test["task"], session=test["session"])

    if is_async:

        @functools.wraps(original)
        async def arequest(self: Any, *args: Any, **kwargs: Any) -> Any:
            guard.wrap(self)
            with scope():
                return await original(self, *args, **kwargs)

        return arequest

    @functools.wraps(original)
    def request(self: Any, *args: Any, **kwargs: Any) -> Any:
        guard.wrap(self)
        with scope():
            return original(self, *args, **kwargs)

    return request
