"""Images and audio through the gateway (issue 16 item 6): the official ``openai`` client against
the gateway in front of the fake provider; each charge equals a hand-worked Decimal literal, and
``tokenward cost`` gives the same figure where it can read the usage.

Prices: DALL·E's built-in table; genai-prices 0.2.3 for the rest (``gpt-image-1`` $5 text input,
$10 image input, $40 output; ``gpt-4o-transcribe`` $6 audio input, $10 output; ``whisper-1``
$0.36 an hour = $0.006 a minute; ``tts-1`` $15 and ``gpt-4o-mini-tts`` $0.60 input / $12 output
per 1M). The fake's counts: ``"a red apple"`` is 3 pieces; a transcript is 20 tokens; a
transcription by a token model bills one audio token per 100 ms.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from typer.testing import CliRunner

from tests.support.fixtures import KEY, Gateway, wait_settled
from tests.support.media import APPLE, SPEECH_TEXT, wav
from tokenward.cli.main import app
from tokenward.core.budgets import Subject

D = Decimal


def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=KEY, max_retries=0)


def events(gateway: Gateway) -> list[Any]:
    return list(gateway.observer().events())


def cost_cli(tmp_path: Path, *args: str, **files: Any) -> dict[str, Any]:
    extra: list[str] = []
    for option, data in files.items():
        path = tmp_path / f"{option}.json"
        path.write_text(json.dumps(data))
        extra += [f"--{option}", str(path)]
    result = CliRunner().invoke(app, ["cost", "--json", *args, *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_images_are_charged_per_image_or_by_tokens(start_gateway, tmp_path: Path) -> None:
    gateway = start_gateway()
    api = client(gateway)
    api.images.generate(model="dall-e-3", prompt=APPLE, size="1024x1792", quality="hd")
    api.images.generate(model="dall-e-2", prompt=APPLE, size="512x512", n=3)
    answer = api.images.generate(model="gpt-image-1", prompt=APPLE, size="1024x1536", quality="high", n=2)
    dalle3, dalle2, gpt_image = events(gateway)
    assert dalle3.cost_usd == D("0.120")  # 1 x $0.120 (hd, 1024x1792)
    assert dalle2.cost_usd == D("0.054")  # 3 x $0.018 (512x512)
    # 3 text tokens x $5 + 2 x 6240 image tokens x $40, per 1M = 0.000015 + 0.4992
    assert gpt_image.cost_usd == D("0.499215")
    for event in (dalle3, dalle2):  # per-image calls count against requests and cost_usd only
        assert (event.charged["total_tokens"], event.charged["requests"], event.cost_estimated) == (
            0,
            1,
            False,
        )
    assert gpt_image.charged["total_tokens"] == 3 + 12480
    # held: 4 estimated prompt tokens (3 x 1.2) x $10 (the dearer input rate) + 12480 x $40
    assert gpt_image.held["cost_usd"] == D("0.49924")
    assert dalle3.held["cost_usd"] == D("0.120")
    report = cost_cli(
        tmp_path, "--dialect", "openai-images", "--model", "gpt-image-1", response=answer.model_dump()
    )
    assert D(report["cost_usd"]) == D("0.499215")
    dalle = cost_cli(
        tmp_path, "--dialect", "openai-images", "--model", "dall-e-3", "--image-size", "1024x1792",
        "--image-quality", "hd", response={"created": 1, "data": [{"url": "https://x"}]},
    )  # fmt: skip
    assert D(dalle["cost_usd"]) == D("0.120")


def test_image_edits_upload_a_form(start_gateway) -> None:
    gateway = start_gateway()
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + (512).to_bytes(4, "big") * 2 + b"\x08\x06\x00\x00\x00"
    answer = client(gateway).images.edit(
        model="gpt-image-1", prompt=APPLE, image=("in.png", png, "image/png"), quality="low", size="1024x1024"
    )
    (event,) = events(gateway)
    # the fake: 3 text + 194 image input tokens, 272 output (1024x1024 low)
    assert answer.usage is not None and answer.usage.input_tokens == 197
    # 3 x $5 + 194 x $10 + 272 x $40, per 1M = 0.000015 + 0.00194 + 0.01088
    assert event.cost_usd == D("0.012835")
    received = httpx.get(f"{gateway.state.config.upstreams[0].base_url}/_fake/requests").json()[-1]
    assert received["path"] == "/v1/images/edits" and received["body"]["files"] == ["image"]


def test_transcriptions_by_the_minute_and_by_tokens(start_gateway, tmp_path: Path) -> None:
    gateway = start_gateway()
    api = client(gateway)
    audio = ("speech.wav", wav(9400), "audio/wav")  # 9.4 s
    whisper = api.audio.transcriptions.create(model="whisper-1", file=audio)
    tokens = api.audio.transcriptions.create(model="gpt-4o-transcribe", file=audio)
    text = api.audio.transcriptions.create(model="whisper-1", file=audio, response_format="text")
    assert isinstance(text, str) and text.startswith("hello")
    by_minute, by_tokens, plain = events(gateway)
    # 9.4 s, rounded to the nearest second: 9 x $0.006 / 60 = 0.0009; held 10 s (rounded up) = 0.001
    assert (by_minute.cost_usd, by_minute.held["cost_usd"]) == (D("0.0009"), D("0.001"))
    assert by_minute.charged["total_tokens"] == 0
    # 94 audio tokens x $6 + 20 output x $10, per 1M = 0.000564 + 0.0002
    assert by_tokens.cost_usd == D("0.000764")
    assert by_tokens.charged["total_tokens"] == 114
    # held: 10 s x 20 audio tokens x $6 + 2000 output x $10, per 1M = 0.0012 + 0.02
    assert by_tokens.held["cost_usd"] == D("0.0212")
    # a plain-text answer has no usage: the duration read from the file, marked estimated
    assert (plain.cost_usd, plain.cost_estimated) == (D("0.0009"), True)
    for usage, literal in ((whisper.usage, "0.0009"), (tokens.usage, "0.000764")):
        model = "whisper-1" if literal == "0.0009" else "gpt-4o-transcribe"
        assert usage is not None
        report = cost_cli(
            tmp_path,
            "--dialect",
            "openai-transcription",
            "--model",
            model,
            "--usage",
            json.dumps(usage.model_dump()),
        )
        assert D(report["cost_usd"]) == D(literal)


def test_speech_is_charged_per_character_or_by_tokens(start_gateway, tmp_path: Path) -> None:
    gateway = start_gateway()
    api = client(gateway)
    audio = api.audio.speech.create(model="tts-1", voice="alloy", input=SPEECH_TEXT)
    assert audio.content.startswith(b"RIFF")
    api.audio.speech.create(model="gpt-4o-mini-tts", voice="alloy", input="hello hello hello hello")
    per_character, by_tokens = events(gateway)
    assert per_character.cost_usd == D("0.00042")  # 28 characters x $15 / 1M
    assert per_character.usage.input_characters == 28 and not per_character.cost_estimated
    # the audio answer has no usage: 4 input tokens x $0.60 + the held 4096 output x $12, per 1M
    assert (by_tokens.cost_usd, by_tokens.cost_estimated) == (D("0.0491544"), True)
    assert by_tokens.metadata["cost_basis"] == "held_output"
    # the SSE form's usage, read by `tokenward cost`: 4 x $0.60 + 101 x $12, per 1M = 0.0000024 + 0.001212
    done = {
        "type": "speech.audio.done",
        "usage": {"input_tokens": 4, "output_tokens": 101, "total_tokens": 105},
    }
    report = cost_cli(
        tmp_path,
        "--dialect",
        "openai-speech",
        "--model",
        "gpt-4o-mini-tts",
        events=[{"type": "speech.audio.delta", "audio": "AAAA"}, done],
    )
    assert D(report["cost_usd"]) == D("0.0012144")


@pytest.mark.parametrize(
    ("call", "limit"),
    [
        ("image", "0.10"),  # dall-e-3 hd 1024x1792 is $0.120
        ("transcription", "0.0009"),  # 9.4 s is held as 10 s = $0.001
        ("speech", "0.0004"),  # 28 characters of tts-1 are $0.00042
    ],
)
def test_a_budget_that_cannot_pay_answers_402_and_is_never_charged(
    start_gateway, call: str, limit: str
) -> None:
    gateway = start_gateway(budgets=[{"name": "alice-money", "scope": "user", "id": "alice",
                                      "meter": "cost_usd", "limit": limit}])  # fmt: skip
    api = client(gateway)
    with pytest.raises(openai.APIStatusError) as denied:
        if call == "image":
            api.images.generate(model="dall-e-3", prompt=APPLE, size="1024x1792", quality="hd")
        elif call == "transcription":
            api.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav(9400), "audio/wav"))
        else:
            api.audio.speech.create(model="tts-1", voice="alloy", input=SPEECH_TEXT)
    assert denied.value.status_code == 402
    assert denied.value.response.json()["error"]["code"] == "budget_exceeded"
    assert events(gateway) == []
    (balance,) = gateway.observer().balances(Subject(user="alice"))  # nothing spent or held
    assert (balance.spent, balance.held) == (0, 0)
    received = httpx.get(f"{gateway.state.config.upstreams[0].base_url}/_fake/requests").json()
    assert not [r for r in received if r["path"].startswith(("/v1/images", "/v1/audio"))]


def test_unreadable_audio_and_streams_are_refused_with_400(start_gateway) -> None:
    gateway = start_gateway()
    api = client(gateway)
    with pytest.raises(openai.BadRequestError) as bad:
        api.audio.transcriptions.create(
            model="whisper-1", file=("a.webm", b"\x1aE\xdf\xa3" + b"\0" * 64, "audio/webm")
        )
    assert bad.value.body["param"] == "file" and "duration" in bad.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as streamed:
        api.images.generate(model="gpt-image-1", prompt=APPLE, stream=True)
    assert streamed.value.body["param"] == "stream"  # type: ignore[index]
    assert events(gateway) == []


def test_an_image_the_table_cannot_price_follows_the_unknown_price_policy(start_gateway) -> None:
    gateway = start_gateway(defaults={"unknown_model": "deny"})
    with pytest.raises(openai.APIStatusError) as denied:
        client(gateway).images.generate(model="dall-e-3", prompt=APPLE, size="512x512", quality="hd")
    assert denied.value.status_code == 402
    error = denied.value.response.json()["error"]
    assert error["code"] == "unpriced_model" and "image:hd:512x512" in error["message"]
    assert events(gateway) == []


def test_reprice_prices_media_events_again_from_their_units(start_gateway) -> None:
    from tokenward.cli.reprice_cmd import reprice_report

    gateway = start_gateway()
    api = client(gateway)
    api.images.generate(model="dall-e-3", prompt=APPLE, size="1792x1024", quality="hd")
    api.audio.speech.create(model="tts-1-hd", voice="alloy", input=SPEECH_TEXT)
    wait_settled(gateway.state)  # each call is settled just after its answer is sent
    rows = reprice_report(gateway.ledger_url)["rows"]
    # $0.120; 28 characters x $30 / 1M = 0.00084: the same figures again, nothing changed
    assert [(D(r["new_cost_usd"]), r["changed"]) for r in rows] == [
        (D("0.120"), False),
        (D("0.00084"), False),
    ]
