"""Issue 16 item 8: each event records its request's tool-definition tokens (counted by the
guard's estimator), so ``tokenward report efficiency`` measures ``tool_definition_share``.

Worked case (gpt-4o-mini, ``o200k_base``; OpenAI cookbook "How to count tokens with tiktoken",
``num_tokens_for_tools``, read 2026-12-07): one function ``get_weather`` ("Get the weather") with
one string property ``city`` ("The city"):

    7                                    per function (o200k_base models)
  + 5   "get_weather:Get the weather"    get | _weather | :Get | the | weather
  + 3                                    the property list
  + 3                                    per property
  + 4   "city:string:The city"           city | :string | :The | city
  + 12                                   at the end
  = 34 tool-definition tokens

The fake provider reports the prompt as its pieces (``\\w+|[^\\w\\s]``) plus 4 per message
(``tokenward.fake.counting``): "Say hello" is 2 + 4 = 6; the tool's JSON text is 21 words and 65
punctuation pieces (36 quotes of 18 strings, 10 braces, 11 colons, 6 commas, 2 brackets) = 86;
so the call with the tool reports 6 + 86 = 92 input tokens, the call without it 6.

Share over the calls that recorded a count: 34 / (92 + 6) = 0.346938... -> 0.3469.
"""

from __future__ import annotations

import json
from decimal import Decimal

import openai
from typer.testing import CliRunner

import tokenward
from tokenward.cli.main import app
from tokenward.core.estimate import estimate_openai_chat
from tokenward.ledger import open_ledger

MESSAGES = [{"role": "user", "content": "Say hello"}]
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city"}},
            "required": ["city"],
        },
    },
}
TOOL_TOKENS = 7 + 5 + 3 + 3 + 4 + 12  # = 34, the arithmetic in the module docstring


def test_the_estimator_counts_the_tool_definitions_share() -> None:
    with_tool = estimate_openai_chat({"model": "gpt-4o-mini", "messages": MESSAGES, "tools": [TOOL]})
    without = estimate_openai_chat({"model": "gpt-4o-mini", "messages": MESSAGES})
    assert with_tool.tool_definition_tokens == TOOL_TOKENS == 34
    assert without.tool_definition_tokens == 0
    assert with_tool.input_tokens - without.input_tokens == TOOL_TOKENS


def test_events_record_tool_definition_tokens_and_the_report_measures_the_share(fake, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'tools.db'}"
    guard = tokenward.Guard(url)
    client = guard.wrap(openai.OpenAI(base_url=f"{fake.url}/v1", api_key="sk-upstream-secret", max_retries=0))
    try:
        with guard.session("s-tools", user="alice"):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, tools=[TOOL], max_tokens=5)  # type: ignore[arg-type,list-item]
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=5)  # type: ignore[arg-type]
    finally:
        guard.close()
    ledger = open_ledger(url)
    try:
        first, second = ledger.events()
    finally:
        ledger.close()
    assert (first.usage.input_tokens, first.tool_definition_tokens) == (92, 34)
    assert (second.usage.input_tokens, second.tool_definition_tokens) == (6, 0)
    assert "tool_definition_tokens" not in first.metadata  # a field of its own, not metadata

    report = CliRunner().invoke(app, ["report", "efficiency", "--ledger", url, "-f", "json"])
    assert report.exit_code == 0, report.output
    (row,) = json.loads(report.output)["rows"]
    assert Decimal(row["tool_definition_share"]) == Decimal("0.3469")  # 34 / 98, see the docstring
