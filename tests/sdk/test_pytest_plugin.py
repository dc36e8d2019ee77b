"""The pytest plugin (issue 19, item 2), in ``pytester`` sessions whose tests call the fake
provider (on a real socket) with the official ``openai`` client.

The fake answers "Say hello" (6 prompt tokens by its documented count: 2 pieces + 4) with 20
words when ``max_tokens`` is 20: 26 tokens a call.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.fixtures import UPSTREAM_KEY

pytest_plugins = ["pytester"]

CALL = 26  # tokens of one call, from the fake's documented arithmetic


def _module(fake, body: str) -> str:
    return (
        "import openai, pytest, tokenward\n"
        f"URL = {fake.url + '/v1'!r}\n"
        f"client = openai.OpenAI(base_url=URL, api_key={UPSTREAM_KEY!r}, max_retries=0)  # module level\n"
        "def ask():\n"
        "    return client.chat.completions.create(model='gpt-4o-mini', max_tokens=20,\n"
        "        messages=[{'role': 'user', 'content': 'Say hello'}])\n" + body
    )


def test_passes_within_budget_and_meters_a_module_level_client(fake, pytester) -> None:
    pytester.makepyfile(
        test_agent=_module(
            fake,
            "@pytest.mark.token_budget(total_tokens=100)\n"
            "def test_two_calls():\n"
            "    ask(); ask()\n"
            "def test_unbudgeted():\n"
            "    ask()\n",
        )
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--token-report", "tokens.json")
    result.assert_outcomes(passed=2)
    report = json.loads((pytester.path / "tokens.json").read_text())
    tests = report["tests"]
    assert tests["test_agent.py::test_two_calls"]["calls"] == 2
    assert tests["test_agent.py::test_two_calls"]["total_tokens"] == 2 * CALL
    assert tests["test_agent.py::test_unbudgeted"]["total_tokens"] == CALL
    assert report["total"]["total_tokens"] == 3 * CALL
    result.stdout.fnmatch_lines(["*tokens per test (tokenward)*", "test_agent.py::test_two_calls*2*12*40*"])


def test_fails_on_its_budget_even_when_the_refusal_is_swallowed(fake, pytester) -> None:
    pytester.makepyfile(
        test_agent=_module(
            fake,
            f"@pytest.mark.token_budget(total_tokens={CALL + 4})\n"
            "def test_swallows():\n"
            "    ask()\n"
            "    try:\n"
            "        ask()\n"
            "    except tokenward.BudgetExceeded:\n"
            "        pass  # the code under test carries on\n"
            f"@pytest.mark.token_budget(total_tokens={CALL + 4})\n"
            "def test_raises():\n"
            "    ask(); ask()\n",
        )
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        ["*token budget test:total_tokens refused a call of test_agent.py::test_swallows*"]
    )


def test_a_run_budget(fake, pytester) -> None:
    pytester.makepyfile(test_agent=_module(fake, "def test_a():\n    ask()\ndef test_b():\n    ask()\n"))
    result = pytester.runpytest("-p", "no:cacheprovider", "--token-budget", f"total_tokens={CALL + 10}")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*BudgetExceeded: budget 'run:total_tokens'*"])


def test_baseline_update_then_regression(fake, pytester) -> None:
    source = "N = {n}\ndef test_calls():\n    for _ in range(N):\n        ask()\n"
    pytester.makepyfile(test_agent=_module(fake, source.format(n=2)))
    written = pytester.runpytest(
        "-p", "no:cacheprovider", "--token-baseline", "base.json", "--token-baseline-update"
    )
    written.assert_outcomes(passed=1)
    baseline = json.loads((pytester.path / "base.json").read_text())
    assert baseline == {"tests": {"test_agent.py::test_calls": {"total_tokens": 2 * CALL}}}

    pytester.makepyfile(test_agent=_module(fake, source.format(n=3)))  # +50%: over the 10% tolerance
    grown = pytester.runpytest("-p", "no:cacheprovider", "--token-baseline", "base.json")
    grown.assert_outcomes(failed=1)
    grown.stdout.fnmatch_lines([f"*used {3 * CALL} tokens, 50.0% over its baseline of {2 * CALL}*"])
    loose = pytester.runpytest(
        "-p", "no:cacheprovider", "--token-baseline", "base.json", "--token-baseline-tolerance", "60"
    )
    loose.assert_outcomes(passed=1)


def test_meters_a_client_the_app_guards_itself_and_calls_from_threads(fake, pytester) -> None:
    # A client the application wraps with its own tokenward guard, and calls made from a thread the
    # test starts (threads do not inherit context variables), are the test's calls too: two calls
    # (2 x 26 tokens) are over a budget of 30 either way. The application's guard still meters.
    pytester.makepyfile(
        test_agent=_module(
            fake,
            "import threading\n"
            "app_guard = tokenward.Guard('memory://', on_unattributed='ignore')\n"
            "app_client = app_guard.wrap(openai.OpenAI(base_url=URL,\n"
            f"    api_key={UPSTREAM_KEY!r}, max_retries=0))\n"
            "def app_ask():\n"
            "    return app_client.chat.completions.create(model='gpt-4o-mini', max_tokens=20,\n"
            "        messages=[{'role': 'user', 'content': 'Say hello'}])\n"
            "@pytest.mark.token_budget(total_tokens=30)\n"
            "def test_app_guarded():\n"
            "    app_ask()\n"
            "    try:\n"
            "        app_ask()\n"
            "    except tokenward.BudgetExceeded:\n"
            "        pass\n"
            "@pytest.mark.token_budget(total_tokens=30)\n"
            "def test_threads():\n"
            "    for _ in range(2):\n"
            "        t = threading.Thread(target=ask)\n"
            "        t.start(); t.join()\n"
            "def test_app_guard_still_meters():\n"
            "    before = len(app_guard.ledger.events())\n"
            "    app_ask()\n"
            "    assert len(app_guard.ledger.events()) == before + 1\n",
        )
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--token-report", "tokens.json")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines_random(
        [
            "*token budget test:total_tokens refused a call of test_agent.py::test_app_guarded*",
            "*token budget test:total_tokens refused a call of test_agent.py::test_threads*",
        ]
    )
    tests = json.loads((pytester.path / "tokens.json").read_text())["tests"]
    assert tests["test_agent.py::test_app_guarded"]["total_tokens"] == CALL
    assert tests["test_agent.py::test_threads"]["total_tokens"] == CALL
    assert tests["test_agent.py::test_app_guard_still_meters"]["total_tokens"] == CALL


def test_inert_until_used(pytester) -> None:
    pytester.makepyfile(
        test_plain="import openai\n"
        "def test_sdk_untouched():\n"
        "    assert 'tokenward' not in openai._base_client.SyncAPIClient.request.__module__\n"
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_bad_options_are_usage_errors(pytester) -> None:
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--token-baseline", "missing.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--token-baseline missing.json: no such file*"])


def test_calls_through_a_gateway_are_attributed_to_the_test(start_gateway, pytester) -> None:
    from tests.support.fixtures import KEY

    gateway = start_gateway()
    pytester.makepyfile(
        test_gw=(
            "import openai, pytest\n"
            f"client = openai.OpenAI(base_url={gateway.url + '/v1'!r}, api_key={KEY!r}, max_retries=0)\n"
            "@pytest.mark.token_budget(total_tokens=1000)\n"
            "def test_via_gateway():\n"
            "    client.chat.completions.create(model='gpt-4o-mini', max_tokens=20,\n"
            "        messages=[{'role': 'user', 'content': 'Say hello'}])\n"
        )
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    observer = gateway.observer()
    try:
        (event,) = observer.events()
    finally:
        observer.close()
    assert event.subject.task == "demo/pytest:test_gw.py::test_via_gateway"  # in the key's project
    assert event.usage.input_tokens + event.usage.output_tokens == CALL


@pytest.mark.parametrize("tolerance", ["-5", "NaN", "sNaN", "-inf"])
def test_a_negative_or_not_a_number_tolerance_is_a_usage_error(fake, pytester, tolerance) -> None:
    # -5 failed every test at its baseline ("0.0% over its baseline"); NaN was an INTERNALERROR
    pytester.makepyfile(test_agent=_module(fake, "def test_a():\n    ask()\n"))
    (pytester.path / "base.json").write_text(
        json.dumps({"tests": {"test_agent.py::test_a": {"total_tokens": CALL}}})
    )
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--token-baseline", "base.json", f"--token-baseline-tolerance={tolerance}"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--token-baseline-tolerance*"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize(
    "content",
    ['{"tests": [1]}', '{"tests": null}', '{"tests": {"t": 5}}', '{"tests": {"t": {"total_tokens": -1}}}'],
)
def test_a_corrupt_baseline_is_a_usage_error(fake, pytester, content) -> None:
    pytester.makepyfile(test_agent=_module(fake, "def test_a():\n    ask()\n"))
    (pytester.path / "base.json").write_text(content)
    for update in ([], ["--token-baseline-update"]):
        result = pytester.runpytest("-p", "no:cacheprovider", "--token-baseline", "base.json", *update)
        assert result.ret == pytest.ExitCode.USAGE_ERROR, content
        result.stderr.fnmatch_lines(["*--token-baseline base.json: not a tokenward baseline*"])
        assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    assert (pytester.path / "base.json").read_text() == content  # not overwritten


def test_a_meter_given_none_in_the_marker_has_no_budget(fake, pytester) -> None:
    # the marker's documented signature: token_budget(total_tokens=None, ..., cost_usd=None, ...)
    pytester.makepyfile(
        test_agent=_module(
            fake,
            "LIMIT = None  # set in CI only\n"
            "@pytest.mark.token_budget(total_tokens=LIMIT, requests=1)\n"
            "def test_one_call():\n"
            "    ask()\n"
            "@pytest.mark.token_budget(total_tokens=None, requests=1)\n"
            "def test_two_calls():\n"
            "    ask(); ask()\n",
        )
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["FAILED test_agent.py::test_two_calls - *BudgetExceeded*"])


def test_report_and_baseline_files_in_a_directory_not_made_yet(fake, pytester) -> None:
    # --junitxml makes its directory; --token-report failed with a traceback after the whole run
    pytester.makepyfile(test_agent=_module(fake, "def test_a():\n    ask()\n"))
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--token-report", "out/tokens.json",
        "--token-baseline", "ci/base.json", "--token-baseline-update",
    )  # fmt: skip
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK
    report = json.loads((pytester.path / "out" / "tokens.json").read_text())
    assert report["tests"]["test_agent.py::test_a"]["total_tokens"] == CALL
    baseline = json.loads((pytester.path / "ci" / "base.json").read_text())
    assert baseline == {"tests": {"test_agent.py::test_a": {"total_tokens": CALL}}}


def test_loading_the_plugin_imports_neither_the_sdk_nor_its_clients() -> None:
    """pytest loads the plugin in every run where tokenward is installed (a ``pytest11`` entry
    point), used or not: loading it must not import the guard, the ledgers, the SDK, httpx or
    tiktoken (it did, through the package root: about 0.6 s added to every pytest run)."""
    heavy = ("tokenward.sdk", "tokenward.guard", "tokenward.ledger", "tokenward.gateway", "httpx", "tiktoken")
    found = subprocess.run(
        [sys.executable, "-c", f"import sys, tokenward.pytest_plugin; print(sorted(m for m in sys.modules if m.startswith({heavy!r})))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert found == "[]"


def test_a_stream_the_test_never_read_counts_at_its_hold(fake, pytester) -> None:
    """A stream opened and never read nor closed is settled only when its hold expires, long after
    the test's figures are taken: it showed 0 calls and 0 tokens in the report and against the
    baseline, while the provider may have generated its whole output. It now counts at its hold
    (the prompt's estimate plus ``max_tokens`` = 20 output tokens), so a baseline of one call's
    tokens (26) fails the test that opens two streams and reads one."""
    pytester.makepyfile(
        test_agent=_module(
            fake,
            "def test_opens_a_stream():\n"
            "    for read in (True, False):\n"
            "        stream = client.chat.completions.create(model='gpt-4o-mini', max_tokens=20,\n"
            "            stream=True, messages=[{'role': 'user', 'content': 'Say hello'}])\n"
            "        if read:\n"
            "            for _ in stream: pass\n",
        )
    )
    (pytester.path / "baseline.json").write_text(
        json.dumps({"tests": {"test_agent.py::test_opens_a_stream": {"total_tokens": CALL}}})
    )
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--token-report", "tokens.json", "--token-baseline", "baseline.json"
    )
    result.assert_outcomes(passed=1, errors=1)  # failed at teardown, when its open call is counted
    result.stdout.fnmatch_lines(["*token baseline: test_agent.py::test_opens_a_stream used * tokens*"])
    opened = json.loads((pytester.path / "tokens.json").read_text())["tests"][
        "test_agent.py::test_opens_a_stream"
    ]
    assert (opened["calls"], opened["open_calls"], opened["output_tokens"]) == (2, 1, 20 + 20)
    assert opened["input_tokens"] > 6  # the read call's 6, and the open one's estimate
