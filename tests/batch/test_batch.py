"""Batch jobs (issue 19, item 1): a 1,000-record OpenAI Batch file on the fake provider (on a real
socket, no delays), under a job budget worth about 40% of it; then resumed with a bigger budget;
and the CLI killed with SIGKILL mid-run and resumed.

Expected figures are worked out here from the fake provider's documented arithmetic
(``tokenward.fake.counting``: a prompt is its ``\\w+|[^\\w\\s]`` pieces plus 4 per message; the
reply is ``max_tokens`` words when it caps the default 20), never read back from tokenward.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tests.support.fixtures import UPSTREAM_KEY
from tokenward.batch import read_output, read_records, run
from tokenward.batch.http import HttpCaller
from tokenward.core.budgets import Subject
from tokenward.errors import ValidationError
from tokenward.ledger import open_ledger
from tokenward.sdk import Guard

N = 1000
REPLY = 20  # every record asks max_tokens=20; the fake answers 20 words, 20 tokens


def _records(n: int = N) -> list[dict]:
    records = []
    for i in range(n):
        words = " ".join(["word"] * (3 + i % 9))
        records.append(
            {
                "custom_id": f"r-{i:04d}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "gpt-4o-mini",
                    "max_tokens": REPLY,
                    "messages": [{"role": "user", "content": words}],
                },
            }
        )
    return records


def _cost(record: dict) -> int:
    """Tokens the fake provider bills the record: its pieces + 4, plus the 20-word reply."""
    text = record["body"]["messages"][0]["content"]
    return len(re.findall(r"\w+|[^\w\s]", text)) + 4 + REPLY


def _replay(records: list[dict], limit: int) -> int:
    """How many records an exact replay in file order pays for (a record that does not fit is
    skipped, the next one tried)."""
    spent = done = 0
    for record in records:
        if spent + _cost(record) <= limit:
            spent += _cost(record)
            done += 1
    return done


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _ok_events_by_record(ledger_url: str, task: str) -> dict[str, list[str]]:
    ledger = open_ledger(ledger_url)
    try:
        found: dict[str, list[str]] = {}
        for event in ledger.events(subject=Subject(task=task)):
            found.setdefault(dict(event.subject.tags)["batch_record"], []).append(event.status)
        return found
    finally:
        ledger.close()


def test_a_job_stops_at_its_budget_reports_and_resumes(fake, tmp_path: Path) -> None:
    records = _records()
    source = _write(tmp_path / "requests.jsonl", records)
    total = sum(_cost(r) for r in records)
    limit = total * 40 // 100
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    out = tmp_path / "results.jsonl"
    guard = Guard(ledger_url, on_unattributed="ignore")
    caller = HttpCaller(guard, f"{fake.url}/v1", api_key=UPSTREAM_KEY)
    try:
        report = run(source, caller, guard=guard, budget=f"total_tokens={limit}", job="nightly", out=out)
        # Within the bound: at least 95% of what the replay pays for, never more than the budget.
        state = read_output(out)
        assert len(state.succeeded) >= 0.95 * _replay(records, limit)
        assert report.succeeded == len(state.succeeded) and report.failed == 0
        assert report.percent == (Decimal(len(state.succeeded)) * 100 / N).quantize(Decimal("0.01"))
        paid = sum(_cost(r) for r in records if r["custom_id"] in state.succeeded)
        assert report.input_tokens + report.output_tokens == paid <= limit
        (line,) = report.budgets
        assert line.spent == paid and line.limit == limit
        # The remainder: exactly the records without a line, as they were written, resubmittable.
        remainder = Path(report.remainder_path)
        left = [r for r in records if r["custom_id"] not in state.succeeded]
        assert [json.loads(x) for x in remainder.read_text().splitlines()] == left
        assert [r.custom_id for r in read_records(remainder)] == [r["custom_id"] for r in left]
        assert report.remaining == len(left) and report.refused == "task=batch:nightly:total_tokens"
        # The projection: each record left held at its input estimate plus its 20-token bound.
        assert report.projected_tokens >= sum(_cost(r) for r in left)
        assert report.projected_cost_usd is not None and report.projected_cost_usd > 0

        # --resume with a bigger budget finishes it; nothing done is sent again.
        again = run(
            source,
            caller,
            guard=guard,
            budget=f"total_tokens={total + 1000}",
            job="nightly",
            out=out,
            resume=True,
        )
    finally:
        caller.close()
        guard.close()
    assert again.succeeded == N and again.remaining == 0 and again.percent == 100
    assert again.remainder_path is None and not remainder.exists()
    assert again.input_tokens + again.output_tokens == total
    charged = _ok_events_by_record(ledger_url, "batch:nightly")
    assert sorted(charged) == [r["custom_id"] for r in records]
    assert all(statuses == ["ok"] for statuses in charged.values())


def test_bad_lines_and_wrong_urls(fake, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="line 2: not JSON"):
        read_records([json.dumps({"custom_id": "a", "body": {}}), "{not json"])
    with pytest.raises(ValidationError, match="line 2: custom_id 'a' repeats"):
        read_records([json.dumps({"custom_id": "a", "body": {}})] * 2)
    records = _records(3)
    records[1]["url"] = "/v1/completions"
    guard = Guard("memory://", on_unattributed="ignore")
    caller = HttpCaller(guard, f"{fake.url}/v1", api_key=UPSTREAM_KEY)
    try:
        report = run(records, caller, guard=guard, budget="total_tokens=1000", job="urls")
    finally:
        caller.close()
        guard.close()
    by_id = {line["custom_id"]: line for line in report.lines}
    assert by_id["r-0001"]["response"] is None and by_id["r-0001"]["error"]["code"] == "invalid_url"
    assert by_id["r-0000"]["response"]["status_code"] == 200 and by_id["r-0000"]["error"] is None
    assert by_id["r-0000"]["response"]["body"]["usage"]["completion_tokens"] == REPLY
    assert (report.succeeded, report.failed, report.remaining) == (2, 1, 0)


def test_an_unreadable_output_file_is_a_one_line_error(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tokenward.cli.main import app

    requests = _write(tmp_path / "requests.jsonl", _records(2))
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_bytes(b"\xff\xfe not text\n")
    ledger = f"sqlite:///{tmp_path / 'l.db'}"
    for out, resume in ((tmp_path, []), (garbage, ["--resume"])):  # a directory; not UTF-8
        result = CliRunner().invoke(
            app,
            [
                "batch",
                "run",
                str(requests),
                "--out",
                str(out),
                "--ledger",
                ledger,
                "--no-progress",
                "--base-url",
                "http://127.0.0.1:9/v1",
                "--budget",
                "total_tokens=100",
                *resume,
            ],
        )
        assert result.exit_code == 2, result.output
        assert "cannot read output file" in result.output and "Traceback" not in result.output
    assert garbage.read_bytes() == b"\xff\xfe not text\n"  # nothing lost


def test_lines_of_other_records_in_the_output_do_not_count(fake, tmp_path: Path) -> None:
    # An output file resumed with another input (another job's lines in it): the report counts this
    # job's records only, never more done than there are records.
    out = tmp_path / "results.jsonl"
    foreign = [
        {
            "id": f"x{i}",
            "custom_id": f"other-{i}",
            "response": {"status_code": 200, "request_id": None, "body": {}},
            "error": None,
        }
        for i in range(7)
    ]
    out.write_text("".join(json.dumps(line) + "\n" for line in foreign))
    guard = Guard("memory://", on_unattributed="ignore")
    caller = HttpCaller(guard, f"{fake.url}/v1", api_key=UPSTREAM_KEY)
    try:
        report = run(
            _records(2), caller, guard=guard, budget="total_tokens=1000", job="mixed", out=out, resume=True
        )
    finally:
        caller.close()
        guard.close()
    assert (report.total, report.succeeded, report.failed, report.remaining) == (2, 2, 0, 0)
    assert report.percent == 100


def test_a_record_tokenward_cannot_read_is_not_sent_unguarded(fake, tmp_path: Path) -> None:
    # max_tokens 0 is not a bound tokenward can hold, yet the fake answers it (26 tokens): outside a
    # batch the SDK lets such a request through unguarded; a batch record must not escape the
    # job's budget (and its spend the ledger), through the CLI's caller or a wrapped SDK client.
    import openai

    records = _records(2)
    records[0]["body"]["max_tokens"] = 0
    guard = Guard("memory://", on_unattributed="ignore")
    caller = HttpCaller(guard, f"{fake.url}/v1", api_key=UPSTREAM_KEY)
    client = guard.wrap(openai.OpenAI(base_url=f"{fake.url}/v1", api_key=UPSTREAM_KEY, max_retries=0))
    try:
        for job, call in (("http", caller), ("sdk", lambda r: client.chat.completions.create(**r.body))):
            report = run(records, call, guard=guard, budget="total_tokens=1000", job=job)
            by_id = {line["custom_id"]: line for line in report.lines}
            assert by_id["r-0000"]["response"] is None, job
            assert by_id["r-0000"]["error"]["code"] == "invalid_request"
            assert "max_tokens" in by_id["r-0000"]["error"]["message"]
            assert by_id["r-0001"]["response"]["status_code"] == 200
            assert report.input_tokens + report.output_tokens == _cost(records[1])  # r-0001 alone
    finally:
        caller.close()
        guard.close()


def test_a_record_holding_unicode_line_separators_is_one_line(tmp_path: Path) -> None:
    # JSON Lines ends lines at "\n" only; a JSON string may hold U+2028, U+0085 or U+001E as they
    # are (json.dumps(..., ensure_ascii=False) writes them so), and a Windows editor adds a BOM.
    text = "one\u2028two\x85three\x1efour\r"
    record = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}}  # fmt: skip
    path = tmp_path / "requests.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(record, ensure_ascii=False) + "\r\n").encode())
    (read,) = read_records(path)
    assert read.custom_id == "a" and read.body["messages"][0]["content"] == text
    assert json.loads(read.line) == record


def test_sigkill_mid_run_then_resume(fake, tmp_path: Path) -> None:
    records = _records(400)
    source = _write(tmp_path / "requests.jsonl", records)
    total = sum(_cost(r) for r in records)
    first_limit = total // 2
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    out = tmp_path / "results.jsonl"
    env = {**os.environ, "FAKE_KEY": UPSTREAM_KEY, "COLUMNS": "200"}
    base = [
        sys.executable, "-m", "tokenward.cli", "batch", "run", str(source), "--out", str(out),
        "--base-url", f"{fake.url}/v1", "--api-key-env", "FAKE_KEY", "--ledger", ledger_url,
        "--job", "killed", "--concurrency", "8", "--json",
    ]  # fmt: skip
    child = subprocess.Popen([*base, "--budget", f"total_tokens={first_limit}"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if out.exists() and out.read_text().count("\n") >= 100:
            break
        assert child.poll() is None, child.stderr.read().decode()
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    before = read_output(out)
    assert 100 <= len(before.succeeded) < len(records)

    # After the kill (the ledger reclaims the dead process's forwarded holds when it opens):
    # spend stays within the job's budget.
    ledger = open_ledger(ledger_url)
    try:
        (balance,) = [
            b for b in ledger.balances(Subject(task="batch:killed")) if b.budget.meter == "total_tokens"
        ]
        assert balance.spent + balance.held <= first_limit
        assert balance.held == 0
    finally:
        ledger.close()

    done = subprocess.run([*base, "--resume", "--budget", f"total_tokens={total * 2}"], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["done"] == len(records) and report["percent"] == "100"
    charged = _ok_events_by_record(ledger_url, "batch:killed")
    # Nothing completed before the kill was sent again: one settled call each; a call that had
    # settled when the kill came, just before its line was written, is reported lost, not re-sent.
    after = read_output(out)
    lost = {
        json.loads(x)["custom_id"] for x in out.read_text().splitlines()
        if x.strip() and (json.loads(x).get("error") or {}).get("code") == "answer_lost"
    }  # fmt: skip
    assert after.failed == lost and report["failed"] == len(lost)
    assert lost.isdisjoint(before.processed) and len(lost) <= 8
    # The records in flight at the kill were sent again once, and listed with their crash charge.
    resent = {c["custom_id"]: c["charged"] for c in report["resent_after_crash"]}
    for cid, statuses in charged.items():
        assert statuses.count("ok") == 1
        if "reclaimed" in statuses:
            assert cid not in before.succeeded and cid in resent
            assert int(resent[cid]["total_tokens"]) > 0
    ledger = open_ledger(ledger_url)
    try:
        (balance,) = [
            b for b in ledger.balances(Subject(task="batch:killed")) if b.budget.meter == "total_tokens"
        ]
        assert balance.spent <= total * 2
    finally:
        ledger.close()


def test_through_a_gateway_the_job_and_its_budget_go_by_header(start_gateway, tmp_path: Path) -> None:
    from tests.support.fixtures import KEY

    key = {"key": KEY, "name": "test-key", "user": "alice", "project": "demo", "allow_client_budgets": True}
    gateway = start_gateway(keys=[key])
    records = _records(5)
    guard = Guard("memory://", on_unattributed="ignore")
    caller = HttpCaller(guard, f"{gateway.url}/v1", api_key=KEY)
    try:
        report = run(records, caller, guard=guard, budget="total_tokens=100000", job="gw")
    finally:
        caller.close()
        guard.close()
    assert report.succeeded == 5 and report.charged_by == "gateway" and report.cost_usd is None
    assert report.input_tokens + report.output_tokens == sum(_cost(r) for r in records)
    observer = gateway.observer()
    try:
        events = observer.events()
    finally:
        observer.close()
    assert len(events) == 5 and {e.subject.task for e in events} == {"demo/batch:gw"}  # in the key's project
    assert guard_events_none(report)
    # the job's budget went with the calls: the gateway made it and charged the job on it
    observer = gateway.observer()
    try:
        balances = observer.balances(Subject(task="demo/batch:gw", project="demo"))
    finally:
        observer.close()
    (carried,) = [b for b in balances if b.budget.scope == "task" and b.budget.meter == "total_tokens"]
    assert carried.budget.limit == 100000 and carried.spent == sum(_cost(r) for r in records)


def guard_events_none(report) -> bool:
    """The local guard charged nothing (never twice): its figures would have come from its ledger."""
    return report.budgets == () or all(b.spent == 0 for b in report.budgets)


def test_records_are_never_clamped_even_by_a_clamping_budget_above_the_job(fake) -> None:
    # alice's own budget clamps (the default action); the job must not let it shorten a record.
    # After the first record (27 tokens by the fake's count) 28 are left: enough for the second
    # record's prompt and a clamped answer of 16+ tokens, not for its whole bound of 20.
    guard = Guard("memory://", budgets=["user=alice:total_tokens=55"], user="alice", on_unattributed="ignore")
    caller = HttpCaller(guard, f"{fake.url}/v1", api_key=UPSTREAM_KEY)
    try:
        report = run(_records(2), caller, guard=guard, job="whole", concurrency=1)
    finally:
        caller.close()
        guard.close()
    answered = [line["response"]["body"]["usage"]["completion_tokens"] for line in report.lines]
    assert answered == [REPLY]  # the second record went to the remainder, not out clamped
    assert report.remaining == 1 and report.refused == "user=alice:total_tokens=55"


def test_an_output_that_is_the_input_or_the_remainder_is_refused_before_anything_is_sent(
    fake, tmp_path: Path
) -> None:
    # `--out requests.jsonl` (the input) read the input's records as result lines: with --resume
    # nothing was sent and every record reported failed, and result lines were appended to the
    # input; `--remainder` equal to `--out` overwrote the answers with the remainder's records.
    from typer.testing import CliRunner

    from tokenward.cli.main import app

    records = _records(5)
    ledger = f"sqlite:///{tmp_path / 'l.db'}"
    source = _write(tmp_path / "requests.jsonl", records)
    before = source.read_bytes()
    out = tmp_path / "results.jsonl"
    for extra in (
        ["--out", str(source), "--resume"],
        ["--out", str(tmp_path / "." / "requests.jsonl")],
        ["--out", str(out), "--remainder", str(out)],
    ):
        result = CliRunner().invoke(
            app,
            ["batch", "run", str(source), *extra, "--ledger", ledger, "--no-progress",
             "--base-url", f"{fake.url}/v1", "--api-key-env", "FAKE_UPSTREAM_KEY",
             "--budget", f"total_tokens={_cost(records[0]) * 2}"],
        )  # fmt: skip
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and "error:" in result.output
        assert source.read_bytes() == before
        assert not out.exists()
    assert _ok_events_by_record(ledger, "batch:requests") == {}  # nothing was sent
    guard = Guard("memory://", on_unattributed="ignore")
    try:
        with pytest.raises(ValidationError, match="input"):
            run(source, lambda r: {}, guard=guard, out=source, resume=True)
        with pytest.raises(ValidationError, match="remainder"):
            run(source, lambda r: {}, guard=guard, out=out, remainder=out)
    finally:
        guard.close()
    assert source.read_bytes() == before and not out.exists()


def test_an_output_or_remainder_that_cannot_be_written_is_a_one_line_error_before_sending(
    fake, tmp_path: Path
) -> None:
    # an --out that could not be made was a traceback (after the job's budgets were written); a
    # --remainder that could not be written was a traceback after the whole job had run and spent
    from typer.testing import CliRunner

    from tokenward.cli.main import app

    records = _records(5)
    source = _write(tmp_path / "requests.jsonl", records)
    ledger = f"sqlite:///{tmp_path / 'l.db'}"
    out = tmp_path / "results.jsonl"
    for extra in (
        ["--out", str(source / "results.jsonl")],  # under a file
        ["--out", str(out), "--remainder", str(source / "rest.jsonl")],
        ["--out", str(out), "--remainder", str(tmp_path)],  # a directory
    ):
        result = CliRunner().invoke(
            app,
            ["batch", "run", str(source), *extra, "--ledger", ledger, "--no-progress",
             "--base-url", f"{fake.url}/v1", "--api-key-env", "FAKE_UPSTREAM_KEY",
             "--budget", f"total_tokens={_cost(records[0]) * 2}"],
        )  # fmt: skip
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and "cannot write" in result.output
        assert not out.exists()
    assert _ok_events_by_record(ledger, "batch:requests") == {}  # nothing was sent


@pytest.mark.parametrize("concurrency", [0, 2.5, "8", True])
def test_a_concurrency_that_is_not_a_whole_number_above_zero_is_a_validation_error(fake, concurrency) -> None:
    # from Python, 2.5 or "8" was a TypeError deep in the job (True ran as 1); refused before sending
    guard = Guard("memory://", on_unattributed="ignore")
    caller = HttpCaller(guard, f"{fake.url}/v1", api_key=UPSTREAM_KEY)
    try:
        with pytest.raises(ValidationError, match="concurrency must be a whole number"):
            run(_records(1), caller, guard=guard, job="bad", concurrency=concurrency)
        assert guard.ledger.events() == []
    finally:
        caller.close()
        guard.close()
