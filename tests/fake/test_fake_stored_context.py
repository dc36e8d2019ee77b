"""The fake bills stored context as the providers do, and counts prompts with a factor on request.

Counts by hand (pieces of ``\\w+|[^\\w\\s]``): ``"Hello, world!"`` as one message is 4 + 4 = 8
prompt tokens; ``input: "Again"`` is 1 + 4 = 5; the reply is 20 tokens.
"""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.fake.helpers import HELLO_WORLD


def test_prompt_factor_scales_the_prompt_count(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model="m", messages=HELLO_WORLD, extra_body={"fake": {"prompt_factor": 40}}
    )
    assert reply.usage is not None and reply.usage.prompt_tokens == 8 * 40
    half = oai.chat.completions.create(
        model="m", messages=HELLO_WORLD, extra_body={"fake": {"prompt_factor": 0.5}}
    )
    assert half.usage is not None and half.usage.prompt_tokens == 4
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(
            model="m", messages=HELLO_WORLD, extra_body={"fake": {"prompt_factor": 0}}
        )


def test_a_continued_response_is_billed_its_stored_turns(oai: openai.OpenAI) -> None:
    first = oai.responses.create(model="m", input="Hello, world!")
    assert first.usage is not None and (first.usage.input_tokens, first.usage.output_tokens) == (8, 20)
    second = oai.responses.create(model="m", input="Again", previous_response_id=first.id)
    assert second.usage is not None and second.usage.input_tokens == 28 + 5  # first's 8 + 20, then 5
    third = oai.responses.create(model="m", input="Again", previous_response_id=second.id)
    assert third.usage is not None and third.usage.input_tokens == 33 + 20 + 5
    with pytest.raises(openai.BadRequestError) as missing:
        oai.responses.create(model="m", input="Again", previous_response_id="resp_never_given")
    assert missing.value.body["param"] == "previous_response_id"


def test_a_conversation_is_billed_its_turns_so_far(oai: openai.OpenAI) -> None:
    first = oai.responses.create(model="m", input="Hello, world!", conversation="conv_t1")
    second = oai.responses.create(model="m", input="Again", conversation={"id": "conv_t1"})
    assert first.usage is not None and first.usage.input_tokens == 8  # an unknown conversation starts empty
    assert second.usage is not None and second.usage.input_tokens == 28 + 5


def test_cached_contents_are_created_listed_read_used_and_deleted(raw: httpx.Client) -> None:
    create = {
        "model": "models/gemini-2.5-flash",
        "contents": [{"role": "user", "parts": [{"text": "one two three"}]}],
        "systemInstruction": {"parts": [{"text": "Be nice."}]},
        "ttl": "600s",
    }
    made = raw.post("/v1beta/cachedContents", json=create).json()
    assert made["usageMetadata"]["totalTokenCount"] == 3 + 4 + 3  # contents + overhead + system
    assert made["name"].startswith("cachedContents/") and made["ttl"] == "600s"
    assert made["name"] in [c["name"] for c in raw.get("/v1beta/cachedContents").json()["cachedContents"]]
    assert raw.get(f"/v1beta/{made['name']}").json()["usageMetadata"]["totalTokenCount"] == 10
    assert raw.patch(f"/v1beta/{made['name']}", json={"ttl": "60s"}).json()["ttl"] == "60s"
    body = {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}], "cachedContent": made["name"]}
    used = raw.post("/v1beta/models/gemini-2.5-flash:generateContent", json=body).json()["usageMetadata"]
    assert (used["promptTokenCount"], used["cachedContentTokenCount"]) == (5 + 10, 10)
    assert raw.delete(f"/v1beta/{made['name']}").json() == {}
    assert raw.get(f"/v1beta/{made['name']}").status_code == 404
    gone = raw.post("/v1beta/models/gemini-2.5-flash:generateContent", json=body)
    assert gone.status_code == 403 and gone.json()["error"]["status"] == "PERMISSION_DENIED"
    bad = raw.post("/v1beta/cachedContents", json={"model": "gemini-2.5-flash", "contents": []})
    assert bad.status_code == 400


def test_a_conversation_made_with_items_bills_them(oai: openai.OpenAI) -> None:
    made = oai.conversations.create(items=[{"type": "message", "role": "user", "content": "Hello, world!"}])
    first = oai.responses.create(model="m", input="Again", conversation=made.id)
    assert first.usage is not None and first.usage.input_tokens == 8 + 5
    oai.conversations.items.create(made.id, items=[{"type": "message", "role": "user", "content": "Again"}])
    second = oai.responses.create(model="m", input="Again", conversation=made.id)
    assert second.usage is not None and second.usage.input_tokens == 13 + 20 + 5 + 5
    assert oai.conversations.retrieve(made.id).id == made.id
    assert oai.conversations.delete(made.id).deleted
    with pytest.raises(openai.NotFoundError):
        oai.conversations.items.create(made.id, items=[{"type": "message", "role": "user", "content": "x"}])
