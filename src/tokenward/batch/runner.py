"""Running a batch job through a guard: :func:`run`.

Each record is sent as an ordinary synchronous call (standard rates; this is not a provider's
Batch API) by ``call(record)``, which makes its request through a client the guard wraps (or a
tokenward gateway), so every record is estimated, admitted and charged like any other call. The
calls are charged to the task ``batch:<job>`` (and tagged ``batch_record=<custom_id>``), so the
job's budgets are task budgets and the job sits inside any user, project or org budget above it.

**Never clamped.** Each record is admitted *whole* (:attr:`tokenward.core.decide.CallPlan.whole`):
every hard budget that applies (the job's own, made with ``action: deny``, and any user, project or
org budget above it, whatever its action) refuses a record it cannot pay for with its whole output
bound, instead of sending it with a lower one (a truncated answer is wasted spend); the record
goes to the remainder file, and the job goes on with the next record (a smaller one may still
fit).

**Concurrency that adapts to what is left** (so holds in flight do not starve the tail):

* a record refused only because of amounts held by the job's calls in flight (it would fit
  against what is spent: ``used + requested <= limit``) is not given up: it waits for the next
  record of the job to finish, and is tried again; it goes to the remainder only once nothing of
  the job is in flight and it still does not fit;
* the records in flight are capped at what the job's budgets could still pay for at the mean
  charge of the records done so far (``floor(left / mean)``, between 1 and ``concurrency``), so near
  the end the job narrows down to one record at a time instead of holding for eight.

**Through a tokenward gateway** the job's budgets go with each call as
``x-tokenward-task-budget`` (:mod:`tokenward.gateway.carried`), so the gateway enforces them on
task ``batch:<job>`` and charges the calls; a gateway whose key may not carry budgets refuses the
calls (each record then gets an ``invalid_request`` error line): the job's budget never silently
stops applying.

So the job completes, up to the few records whose turn came while others were held, the records
an exact replay of the file in file order says the budget can pay for.

**Resuming.** With ``resume=True`` the output file says what is done: records with a line there
are never sent again (error lines included, unless ``retry_errors``). Records that were in flight
when an earlier run was killed have no line: they are sent again, once, and listed in the report
(:class:`~tokenward.batch.report.CrashCharge`) with what the crash left charged for them (the
ledger charges a dead process's forwarded holds: :mod:`tokenward.ledger.reclaim`). A line is
written (and flushed) as soon as its answer is in; a record whose call had completed and settled
(the ledger holds its ``ok`` event, tagged with the record) when the kill came, just before its
line was written, is not sent again either (it was paid for): it gets an ``answer_lost`` error
line naming its charge and request id, and is re-sent only with ``retry_errors``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from tokenward.batch.records import BatchRecord, error_line, read_output, read_records, response_line
from tokenward.batch.report import BatchReport, BudgetLine, CrashCharge
from tokenward.core.budgets import Budget, Subject, parse_short_spec, short_spec
from tokenward.core.usage import Usage
from tokenward.errors import BudgetError, BudgetExceeded, TokenwardError, ValidationError
from tokenward.numbers import plain

__all__ = ["Progress", "check_files", "job_budgets", "remainder_path_for", "run"]

RECORD_TAG = "batch_record"
"""The tag naming the record a call was made for (its ``custom_id``)."""


@dataclass(frozen=True, slots=True)
class Progress:
    """What a progress callback is told after each record.

    Attributes:
        done: records processed so far in this run (answered or failed).
        remaining_records: records still to go in this run (not yet taken).
        total: records this run set out to do.
        refused: records sent to the remainder so far.
        budgets: the job's budgets as last read.
    """

    done: int
    remaining_records: int
    total: int
    refused: int
    budgets: tuple[BudgetLine, ...]


def job_budgets(specs: Iterable[Budget | str], job: str) -> list[Budget]:
    """The job's budgets: task budgets on ``batch:<job>`` from short specs (``total_tokens=10000000``,
    ``cost_usd=50``), ``action: deny`` unless the spec says otherwise.

    Raises:
        ConfigError: a malformed spec.
    """
    task = f"batch:{job}"
    made = []
    for spec in specs:
        if isinstance(spec, Budget):
            made.append(replace(spec, scope="task", subject_id=task))
            continue
        text = spec if "action=" in spec else f"{spec};action=deny"
        made.append(parse_short_spec(text, scope="task", subject_id=task))
    return made


def remainder_path_for(out: Path) -> Path:
    """The default remainder file beside an output file: ``RESULTS.remainder.jsonl``."""
    return out.with_name(f"{out.stem}.remainder.jsonl")


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return a.samefile(b)
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _writable(path: Path, what: str, field: str) -> None:
    """Refuse a file that cannot be written (checked without creating anything)."""
    problem = None
    if path.is_dir():
        problem = "it is a directory"
    else:
        near = path.parent
        while not near.exists() and near != near.parent:
            near = near.parent
        if not near.is_dir():
            problem = f"{str(near)!r} is not a directory"
        elif not os.access(near, os.W_OK | os.X_OK) and not path.exists():
            problem = f"no permission to write in {str(near)!r}"
        elif path.exists() and not os.access(path, os.W_OK):
            problem = "no permission to write it"
    if problem is not None:
        raise ValidationError(f"cannot write the {what} {str(path)!r}: {problem}", field=field)


def check_files(source: Path | str | None, out: Path | str | None, remainder: Path | str | None) -> None:
    """Refuse, before anything is sent: an output file that is the input (the input's records
    would be read as result lines: with ``resume`` nothing would be sent and every record reported
    failed; and result lines appended to the input); a remainder file that is the output (it
    would overwrite the answers); an output or remainder file that cannot be written (found out
    only after the job had spent).

    Raises:
        ValidationError: one of those.
    """
    if remainder is not None:
        _writable(Path(remainder), "remainder file", "remainder")
    if out is None:
        return
    out_path = Path(out)
    if not out_path.is_dir():  # a directory: read_output says it cannot be read
        _writable(out_path, "output file", "out")
    if source is not None and _same_file(Path(source), out_path):
        raise ValidationError(
            f"the output file {str(out_path)!r} is the input file; choose another output file",
            field="out",
        )
    rest = Path(remainder) if remainder is not None else remainder_path_for(out_path)
    if _same_file(rest, out_path):
        raise ValidationError(
            f"the remainder file {str(rest)!r} is the output file (it would overwrite the answers); "
            "choose another remainder file",
            field="remainder",
        )
    _writable(rest, "remainder file", "remainder")


def _as_records(records: Iterable[BatchRecord | Mapping[str, Any]] | str | Path) -> list[BatchRecord]:
    if isinstance(records, (str, Path)):
        return read_records(records)
    out: list[BatchRecord] = []
    seen: set[str] = set()
    for item in records:
        record = item if isinstance(item, BatchRecord) else BatchRecord.of(item)
        if record.custom_id in seen:
            raise ValidationError(
                f"custom_id {record.custom_id!r} repeats an earlier record", field="custom_id"
            )
        seen.add(record.custom_id)
        out.append(replace(record, index=len(out)))
    return out


def _response_of(record: BatchRecord, result: Any) -> dict[str, Any]:
    """The output line of a record whose ``call`` returned ``result``: an ``httpx.Response``, an
    SDK object (``model_dump``), or a JSON-ready mapping (taken as a 200 answer)."""
    if hasattr(result, "status_code") and hasattr(result, "headers") and hasattr(result, "content"):
        try:
            body: Any = json.loads(result.content)
        except ValueError:
            body = result.content.decode("utf-8", "replace")
        request_id = result.headers.get("x-request-id") or result.headers.get("x-tokenward-request-id")
        return response_line(record.custom_id, int(result.status_code), request_id, body)
    if hasattr(result, "model_dump"):
        body = result.model_dump(mode="json", exclude_unset=True)
        return response_line(record.custom_id, 200, getattr(result, "_request_id", None), body)
    if isinstance(result, Mapping):
        return response_line(record.custom_id, 200, None, dict(result))
    raise ValidationError(
        f"record {record.custom_id!r}: call returned {type(result).__name__}; expected an httpx "
        "response, an SDK result or a JSON object"
    )


def _failure_of(record: BatchRecord, exc: Exception) -> dict[str, Any]:
    """The output line of a record whose call raised ``exc`` (not a budget refusal)."""
    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)
    if isinstance(status, int) and response is not None:  # openai.APIStatusError and kin
        try:
            body: Any = response.json()
        except Exception:
            body = getattr(response, "text", str(exc))
        return response_line(record.custom_id, status, getattr(exc, "request_id", None), body)
    code = "invalid_request" if isinstance(exc, TokenwardError) else type(exc).__name__
    return error_line(record.custom_id, code, str(exc) or type(exc).__name__)


def _unwrapped_denial(exc: BaseException) -> BudgetExceeded | None:
    """The budget refusal ``exc`` is (an SDK's re-typed one included), or None."""
    return exc if isinstance(exc, BudgetExceeded) else None


class _Job:
    """The shared state of one run: the work, what is in flight, the output files."""

    def __init__(
        self,
        todo: list[BatchRecord],
        call: Callable[[BatchRecord], Any],
        guard: Any,
        task: str,
        budgets: list[Budget],
        concurrency: int,
        out: TextIO | None,
        on_progress: Callable[[Progress], None] | None,
    ) -> None:
        self.todo, self.call, self.guard, self.task = todo, call, guard, task
        self.budget_names = {b.name for b in budgets}
        # what a gateway is sent to enforce the job's budgets (x-tokenward-task-budget)
        self.carried = {"task": tuple(short_spec(b, named=False) for b in budgets)} if budgets else None
        self.concurrency = concurrency
        self.out = out
        self.lines: list[dict[str, Any]] | None = [] if out is None else None
        self.on_progress = on_progress
        self.cond = threading.Condition()
        self.next = 0
        self.sending = 0
        self.finished = 0  # a generation count: bumped whenever a record of the job finishes
        self.cap = concurrency
        self.refused: list[BatchRecord] = []
        self.refused_by: str | None = None
        self.done = 0
        self.start_lines = self.read_budgets()
        self.last_lines, self.read_at = self.start_lines, 0.0
        self.start_spent = {b.name: b.spent for b in self.start_lines}
        self.write_lock = threading.Lock()
        self.failure: BaseException | None = None

    def read_budgets(self) -> tuple[BudgetLine, ...]:
        if not self.budget_names:
            return ()
        balances = self.guard.ledger.balances(Subject(task=self.task))
        return tuple(
            BudgetLine(b.budget.name, b.budget.meter, b.budget.limit, b.spent, b.held)
            for b in balances
            if b.budget.name in self.budget_names
        )

    def read_budgets_now(self) -> tuple[BudgetLine, ...]:
        """The job's budgets, read again at most every 50 ms (else as last read): enough to adapt
        the concurrency, without a ledger read per record."""
        now = time.monotonic()
        with self.cond:
            if now - self.read_at < 0.05:
                return self.last_lines
            self.read_at = now
        lines = self.read_budgets()
        with self.cond:
            self.last_lines = lines
        return lines

    def _adapt(self, lines: tuple[BudgetLine, ...]) -> None:
        """Cap the records in flight at what the budgets could pay for at the mean charge so far."""
        if not self.done:
            return
        cap = self.concurrency
        for line in lines:
            spent_here = line.spent - self.start_spent.get(line.name, Decimal(0))
            if spent_here <= 0:
                continue
            mean = spent_here / self.done
            left = line.limit - line.spent
            cap = min(cap, int(left / mean) if mean > 0 else cap)
        self.cap = max(1, min(self.concurrency, cap))

    def write(self, line: dict[str, Any]) -> None:
        """Write a record's output line (and count it done)."""
        with self.write_lock:
            self.done += 1
            if self.out is None:
                assert self.lines is not None
                self.lines.append(line)
                return
            self.out.write(json.dumps(line, separators=(",", ":")) + "\n")
            self.out.flush()

    def take(self) -> BatchRecord | None:
        with self.cond:
            while self.sending >= self.cap and self.next < len(self.todo) and self.failure is None:
                self.cond.wait(0.5)
            if self.next >= len(self.todo) or self.failure is not None:
                return None
            record = self.todo[self.next]
            self.next += 1
            self.sending += 1
            return record

    def worker(self) -> None:
        try:
            while (record := self.take()) is not None:
                try:
                    self.one(record)
                finally:
                    with self.cond:
                        self.sending -= 1
                        self.finished += 1
                        self.cond.notify_all()
                    lines = self.read_budgets_now()
                    with self.cond:
                        self._adapt(lines)
                    if self.on_progress is not None:
                        self.on_progress(
                            Progress(
                                self.done,
                                len(self.todo) - self.next,
                                len(self.todo),
                                len(self.refused),
                                lines,
                            )
                        )
        except BaseException as exc:  # stop the others; re-raised by run()
            with self.cond:
                self.failure = self.failure or exc
                self.cond.notify_all()

    def one(self, record: BatchRecord) -> None:
        from tokenward.sdk.context import attributed

        if not record.supported:
            self.write(
                error_line(
                    record.custom_id,
                    "invalid_url",
                    f"{record.method} {record.url!r} is not a batch endpoint; use POST to one of "
                    "/v1/chat/completions, /v1/responses, /v1/embeddings",
                )
            )
            return
        while True:
            with self.cond:
                seen = self.finished
            try:
                with attributed(
                    task=self.task, tags={RECORD_TAG: record.custom_id}, whole=True, budgets=self.carried
                ):
                    result = self.call(record)
            except Exception as exc:
                denial = _unwrapped_denial(exc)
                if denial is None and isinstance(exc, BudgetError):
                    self._refuse(record, str(exc))
                    return
                if denial is None:
                    self.write(_failure_of(record, exc))
                    return
                if denial.used + denial.requested <= denial.limit and self._wait_for_others(seen):
                    continue  # refused for holds in flight only: try again once one settles
                self._refuse(record, denial.budget)
                return
            try:
                line = _response_of(record, result)
            except ValidationError as exc:
                line = error_line(record.custom_id, "invalid_response", str(exc))
            self.write(line)
            return

    def _wait_for_others(self, seen: int) -> bool:
        """Wait until another record of the job finishes; False when none is in flight (and none
        finished since the refused attempt began), so waiting cannot help."""
        with self.cond:
            while self.finished == seen and self.sending > 1 and self.failure is None:
                self.cond.wait(0.5)
            return self.finished != seen

    def _refuse(self, record: BatchRecord, budget: str) -> None:
        with self.cond:
            self.refused.append(record)
            self.refused_by = self.refused_by or budget


def _crash_charges(guard: Any, task: str, resent: set[str]) -> tuple[CrashCharge, ...]:
    """The records sent again whose earlier call was charged by a reclaimed reservation."""
    if not resent:
        return ()
    guard.ledger.reclaim_dead()
    charged: dict[str, dict[str, Decimal]] = {}
    for event in guard.ledger.events(subject=Subject(task=task)):
        record = dict(event.subject.tags).get(RECORD_TAG)
        if event.status != "reclaimed" or record not in resent:
            continue
        into = charged.setdefault(record, {})
        for meter, amount in event.charged.items():
            into[meter] = into.get(meter, Decimal(0)) + Decimal(amount)
    return tuple(CrashCharge(cid, charged[cid]) for cid in sorted(charged))


def _projection(guard: Any, records: list[BatchRecord]) -> tuple[int, Decimal | None]:
    """Tokens the records would hold (input estimate plus output bound each) and their USD at the
    models' standard rates (None when one is unpriced)."""
    from tokenward.core.estimate import estimate_request, estimate_text_inputs

    tokens, cost = 0, Decimal(0)
    priced = True
    bound_default = guard.settings.default_max_output_tokens
    for record in records:
        body, model = record.body, record.model
        try:
            if record.url == "/v1/embeddings":
                estimate, bound = estimate_text_inputs(body.get("input"), model, what="input"), 0
            else:
                dialect = "openai-responses" if record.url == "/v1/responses" else "openai-chat"
                estimate = estimate_request(body, model, dialect=dialect)
                given = [body.get(k) for k in ("max_completion_tokens", "max_tokens", "max_output_tokens")]
                bound = next((v for v in given if isinstance(v, int) and v > 0), bound_default)
        except TokenwardError:
            priced = False
            continue
        tokens += estimate.input_tokens + bound
        try:
            price = guard.prices.cost(Usage(input_tokens=estimate.input_tokens, output_tokens=bound), model)
        except TokenwardError:
            priced = False
            continue
        if price.total_usd is None:
            priced = False
        else:
            cost += price.total_usd
    return tokens, cost if priced else None


def _spend(guard: Any, task: str) -> tuple[int, int, int, Decimal | None, int]:
    """(input tokens, output tokens, tokens charged by reclaimed holds, USD or None when a call
    could not be priced, events) of the job so far, from the ledger's usage events."""
    events = guard.ledger.events(subject=Subject(task=task))
    settled = [e for e in events if e.status != "reclaimed"]
    reclaimed = [e for e in events if e.status == "reclaimed"]
    inp = sum(e.usage.input_tokens or 0 for e in settled)
    outp = sum(e.usage.output_tokens or 0 for e in settled)
    held = sum(int(e.charged.get("total_tokens", 0)) for e in reclaimed)
    cost: Decimal | None = Decimal(0)
    for e in events:
        if e.cost_usd is None:
            if e.status != "reclaimed" or "cost_usd" in e.charged:
                cost = None
                break
            continue
        cost += e.cost_usd
    return inp, outp, held, cost, len(events)


def run(
    records: Iterable[BatchRecord | Mapping[str, Any]] | str | Path,
    call: Callable[[BatchRecord], Any],
    *,
    guard: Any,
    budget: Budget | str | Iterable[Budget | str] = (),
    job: str = "batch",
    concurrency: int = 8,
    out: Path | str | None = None,
    remainder: Path | str | None = None,
    resume: bool = False,
    retry_errors: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
) -> BatchReport:
    """Run a batch job: send each record through ``call`` under the job's budgets, in file order,
    ``concurrency`` at a time, and report what was done.

    ::

        import tokenward.batch  # not loaded by ``import tokenward``

        guard = tokenward.Guard("sqlite:///tokenward.db")
        client = guard.wrap(openai.OpenAI())
        report = tokenward.batch.run(
            "requests.jsonl",
            lambda r: client.chat.completions.create(**r.body),
            guard=guard, budget="total_tokens=1000000", job="nightly", out="results.jsonl",
        )
        print(report.percent, report.remainder_path)

    Args:
        records: the input: a path to an OpenAI Batch file, or records (``BatchRecord`` or their
            JSON objects), in order.
        call: makes the record's request through a client ``guard`` wraps (or a tokenward
            gateway), and returns its answer: an SDK result, an ``httpx.Response`` or a JSON
            object. It may raise :class:`~tokenward.BudgetExceeded` (the record is not done: it
            goes to the remainder) or the SDK's status errors (written as the answer's status).
            It runs in worker threads, inside the attribution of task ``batch:<job>``.
        guard: the :class:`tokenward.Guard` whose ledger holds the job's budgets.
        budget: the job's budgets: short specs (``"total_tokens=10000000"``, ``"cost_usd=50"``)
            or :class:`~tokenward.Budget` objects, made as task budgets on ``batch:<job>`` with
            ``action: deny`` (kept in the ledger after the run, so a resumed job goes on from what
            it spent; a new limit replaces the old one).
        job: the job's name (task ``batch:<job>``).
        concurrency: records in flight at most (at least 1).
        out: the output file (OpenAI Batch output lines, appended and flushed one by one); None
            keeps the lines in :attr:`BatchReport.lines`.
        remainder: the remainder file (default beside ``out``: ``RESULTS.remainder.jsonl``):
            the input lines of the records not processed, resubmittable as is.
        resume: go on from ``out``: records with a line there are not sent again.
        retry_errors: with ``resume``, send again the records whose line is an error or a non-2xx
            answer (by default they are done).
        on_progress: called after each record (in the worker thread that finished it).

    Returns:
        The report, counted from the output file (the whole job, across resumed runs).

    Raises:
        ValidationError: an unreadable input, an output file that already has lines without
            ``resume``, ``resume`` without ``out``, a concurrency below 1, an ``out`` that is the
            input file, a ``remainder`` that is ``out``.
        ConfigError: a malformed budget spec.
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValidationError(
            f"concurrency must be a whole number, at least 1; got {concurrency!r}", field="concurrency"
        )
    check_files(records if isinstance(records, (str, Path)) else None, out, remainder)
    items = _as_records(records)
    task = f"batch:{job}"
    specs = [budget] if isinstance(budget, (Budget, str)) else list(budget)
    made = job_budgets(specs, job)
    out_path = Path(out) if out is not None else None
    if resume and out_path is None:
        raise ValidationError("resume needs the output file of the earlier run", field="out")
    state = read_output(out_path) if out_path is not None else None
    if state is not None and state.lines and not resume:
        raise ValidationError(
            f"{out_path} already holds {state.lines} result lines; resume the job (--resume) or "
            "choose another output file",
            field="out",
        )
    skip: frozenset[str] = frozenset()
    if state is not None and resume:
        skip = state.processed if not retry_errors else state.succeeded
    for b in made:
        guard.ledger.put_budget(b)
    names = {b.name for b in made} | {
        b.name for b in guard.ledger.budgets() if b.scope == "task" and b.subject_id == task
    }
    todo = [r for r in items if r.custom_id not in skip]
    attempted_before: set[str] = set()
    answered_before: dict[str, Any] = {}
    if resume:
        guard.ledger.reclaim_dead()
        for event in guard.ledger.events(subject=Subject(task=task)):
            record_id = dict(event.subject.tags).get(RECORD_TAG)
            if record_id:
                attempted_before.add(record_id)
                if event.status in ("ok", "cut_off"):
                    answered_before[record_id] = event
    lost = [r for r in todo if r.custom_id in answered_before]
    if not retry_errors:
        todo = [r for r in todo if r.custom_id not in answered_before]
    resent = {r.custom_id for r in todo} & attempted_before
    crash = _crash_charges(guard, task, resent)
    handle: TextIO | None = None
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        handle = _open_append(out_path)
        if not retry_errors:
            for record in lost:
                handle.write(json.dumps(_lost_line(record, answered_before[record.custom_id])) + "\n")
            handle.flush()
    state_budgets = [b for b in guard.ledger.budgets() if b.name in names]
    work = _Job(todo, call, guard, task, state_budgets, concurrency, handle, on_progress)
    try:
        threads = [
            threading.Thread(target=work.worker, name=f"tokenward-batch-{i}", daemon=True)
            for i in range(min(concurrency, max(1, len(todo))))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        if handle is not None:
            handle.close()
    if work.failure is not None:
        raise work.failure
    return _report(guard, job, items, out_path, remainder, work, crash)


def _lost_line(record: BatchRecord, event: Any) -> dict[str, Any]:
    """The error line of a record whose call completed and was charged by an earlier run that was
    killed before it wrote the answer: it is not sent again (that would pay twice) unless
    ``retry_errors``."""
    charged = ", ".join(f"{plain(v)} {k}" for k, v in sorted(event.charged.items()))
    return error_line(
        record.custom_id,
        "answer_lost",
        f"the call completed and was charged ({charged}; request {event.request_id}) but the run was "
        "stopped before its answer was written; resume with --retry-errors to send it again",
    )


def _answered_usage(out_path: Path | None, lines: list[dict[str, Any]] | None) -> tuple[int, int, int]:
    """(input tokens, output tokens, answers) the successful answers report (chat
    ``prompt_tokens``/``completion_tokens``, Responses ``input_tokens``/``output_tokens``), the last
    line of each record."""
    last: dict[str, dict[str, Any]] = {}
    if out_path is not None and out_path.exists():
        with out_path.open(encoding="utf-8") as handle:
            for raw in handle:
                try:
                    data = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(data, dict) and isinstance(data.get("custom_id"), str):
                    last[data["custom_id"]] = data
    for line in lines or ():
        last[line["custom_id"]] = line
    inp = outp = count = 0
    for data in last.values():
        response = data.get("response") or {}
        body = response.get("body") if isinstance(response, dict) else None
        usage = body.get("usage") if isinstance(body, dict) else None
        if not isinstance(usage, dict) or not 200 <= int(response.get("status_code") or 0) < 300:
            continue
        count += 1
        inp += int(usage.get("prompt_tokens", usage.get("input_tokens")) or 0)
        outp += int(usage.get("completion_tokens", usage.get("output_tokens")) or 0)
    return inp, outp, count


def _open_append(path: Path) -> TextIO:
    """Open the output for appending, after ending a last line a kill cut short (it is ignored
    when read, and the record is sent again)."""
    if path.exists() and path.stat().st_size:
        with path.open("rb") as handle:
            handle.seek(-1, 2)
            cut = handle.read(1) != b"\n"
        if cut:
            with path.open("a", encoding="utf-8") as handle:
                handle.write("\n")
    return path.open("a", encoding="utf-8")


def _report(
    guard: Any,
    job: str,
    items: list[BatchRecord],
    out_path: Path | None,
    remainder: Path | str | None,
    work: _Job,
    crash: tuple[CrashCharge, ...],
) -> BatchReport:
    task = f"batch:{job}"
    if out_path is not None:
        final = read_output(out_path)
        succeeded, failed = final.succeeded, final.failed
    else:
        assert work.lines is not None
        last = {line["custom_id"]: line for line in work.lines}
        succeeded = frozenset(
            k for k, v in last.items() if v["response"] and 200 <= v["response"]["status_code"] < 300
        )
        failed = frozenset(last) - succeeded
    ids = frozenset(r.custom_id for r in items)  # lines of other records (another job's) do not count
    succeeded, failed = succeeded & ids, failed & ids
    left = [r for r in items if r.custom_id not in succeeded and r.custom_id not in failed]
    remainder_path: Path | None = None
    if remainder is not None:
        remainder_path = Path(remainder)
    elif out_path is not None:
        remainder_path = remainder_path_for(out_path)
    if remainder_path is not None:
        if left:
            remainder_path.write_text("".join(r.line + "\n" for r in left), encoding="utf-8")
        elif remainder_path.exists():
            remainder_path.unlink()  # the job is finished: an old remainder would mislead
    inp, outp, reclaimed, cost, charged_records = _spend(guard, task)
    via_gateway = bool(guard.gateways.hosts)
    if via_gateway:  # the gateway charged the calls: count what the answers report instead
        answered = _answered_usage(out_path, work.lines)
        inp, outp, reclaimed, cost, charged_records = answered[0], answered[1], 0, None, answered[2]
    tokens, projected_cost = _projection(guard, left)
    at_mean_tokens: int | None = None
    at_mean_cost: Decimal | None = None
    if charged_records and left:
        at_mean_tokens = int((inp + outp + reclaimed) * len(left) / charged_records)
        at_mean_cost = (
            None if cost is None else (cost * len(left) / charged_records).quantize(Decimal("0.000001"))
        )
    return BatchReport(
        job=job,
        total=len(items),
        succeeded=len(succeeded),
        failed=len(failed),
        remaining=len(left),
        input_tokens=inp,
        output_tokens=outp,
        reclaimed_tokens=reclaimed,
        cost_usd=cost,
        budgets=work.read_budgets(),
        projected_tokens=tokens,
        projected_cost_usd=projected_cost,
        projected_at_mean_tokens=at_mean_tokens,
        projected_at_mean_cost_usd=at_mean_cost,
        remainder_path=str(remainder_path) if remainder_path is not None and left else None,
        resent=crash,
        refused=work.refused_by,
        lines=tuple(work.lines or ()),
        charged_by="gateway" if via_gateway else "ledger",
    )
