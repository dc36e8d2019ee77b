"""The fake as referee: its per-request tally of generated tokens, ``break_after_bytes``, and the
in-process transport that generates as the client reads.

Counts by hand: ``"Hello, world!"`` is 8 prompt tokens (4 pieces + 4); a chat stream of a 20-token
reply with ``chunk_tokens: 5`` is a role chunk (0 tokens), four 5-word chunks, the finish chunk.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.fake.helpers import HELLO_WORLD, running
from tokenward.fake import FakeSettings, create_app
from tokenward.fake.transport import FakeTransport, SyncFakeTransport

CHAT = {"model": "m", "messages": HELLO_WORLD}


def record(app, index: int = -1) -> dict:
    return app.state.tally.all()[index]


def test_a_json_answer_is_tallied_whole_even_when_its_body_breaks() -> None:
    app = create_app(FakeSettings(reply_tokens=20))
    with running(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        answer = client.post("/v1/chat/completions", json={**CHAT, "fake": {"reasoning_tokens": 3}})
        assert record(app) == {
            "id": answer.json()["id"],
            "path": "/v1/chat/completions",
            "model": "m",
            "input_tokens": 8,
            "output_tokens": 23,  # 20 visible + 3 hidden
            "finished": True,
        }
        with pytest.raises(httpx.RemoteProtocolError):  # the body is cut after 30 bytes
            client.post("/v1/chat/completions", json={**CHAT, "fake": {"break_after_bytes": 30}})
        assert record(app)["output_tokens"] == 20 and record(app)["finished"]  # generated whole
        assert client.get("/_fake/tally").json() == app.state.tally.all()
        assert client.delete("/_fake/tally").json() == {"cleared": True} and app.state.tally.all() == []


def test_replayed_answers_and_uncharged_endpoints_are_not_tallied() -> None:
    app = create_app()
    with running(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        client.post("/v1/chat/completions", json={**CHAT, "fake": {"response": {"id": "x"}}})
        client.post("/v1/embeddings", json={"model": "e", "input": "hi"})
        client.post("/v1/messages/count_tokens", json={"model": "c", "messages": HELLO_WORLD})
    assert app.state.tally.all() == []


async def _read(app, body: dict, chunks: int | None) -> tuple[list[bytes], BaseException | None]:
    """Read the first ``chunks`` body chunks (all when None) of a streamed answer, in process."""
    got: list[bytes] = []
    async with httpx.AsyncClient(transport=FakeTransport(app), base_url="http://fake") as client:
        try:
            async with client.stream("POST", "/v1/chat/completions", json=body) as answer:
                async for chunk in answer.aiter_bytes():
                    got.append(chunk)
                    if chunks is not None and len(got) == chunks:
                        break
        except httpx.HTTPError as exc:
            return got, exc
    return got, None


def test_in_process_the_fake_generates_only_what_the_client_reads() -> None:
    app = create_app(FakeSettings(reply_tokens=100, chunk_tokens=5))
    body = {**CHAT, "stream": True}
    got, error = asyncio.run(_read(app, body, 4))  # role chunk, then 3 chunks of 5 words
    assert error is None and len(got) == 4
    assert record(app)["output_tokens"] == 15 and not record(app)["finished"]
    asyncio.run(_read(app, body, None))
    assert record(app)["output_tokens"] == 100 and record(app)["finished"]


@pytest.mark.parametrize(
    ("option", "generated"), [({"break_after_chunks": 3}, 10), ({"break_after_bytes": 900}, 10)]
)
def test_a_stream_cut_mid_body_is_tallied_up_to_its_last_whole_event(option: dict, generated: int) -> None:
    """The events of this answer are 262, 257 and 258 bytes long (the role chunk, then 5-word
    chunks): 900 bytes hold the role chunk and two 5-word chunks whole, and part of the third (not
    counted: it never arrived whole)."""
    app = create_app(FakeSettings(reply_tokens=100, chunk_tokens=5))
    got, error = asyncio.run(_read(app, {**CHAT, "stream": True, "fake": option}, None))
    assert isinstance(error, httpx.RemoteProtocolError)
    whole = b"".join(got).split(b"\n\n")
    assert (
        sum(json.loads(e[6:])["choices"][0]["delta"].get("content", "").count("hello") for e in whole[:-1])
        == generated
    )
    assert record(app)["output_tokens"] == generated


def test_the_sync_transport_serves_a_sync_client() -> None:
    app = create_app(FakeSettings(reply_tokens=7))
    transport = SyncFakeTransport(app)
    with httpx.Client(transport=transport, base_url="http://fake") as client:
        assert client.post("/v1/chat/completions", json=CHAT).json()["usage"]["completion_tokens"] == 7
        with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as answer:
            lines = [line for line in answer.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]" and record(app)["output_tokens"] == 7


def test_break_after_bytes_must_be_a_whole_number() -> None:
    app = create_app()
    with running(app) as url:
        answer = httpx.post(f"{url}/v1/chat/completions", json={**CHAT, "fake": {"break_after_bytes": -1}})
    assert answer.status_code == 400 and "break_after_bytes" in answer.text
