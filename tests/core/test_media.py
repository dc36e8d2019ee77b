"""The images and audio endpoints' prices and holds, worked by hand (issue 16 item 6).

Provider facts (read 2026-12-07; see ``tokenward.core.media``): DALL·E per image by quality and
size; GPT Image 1 output tokens by quality and size (272/1056/4160 for 1024x1024,
408/1584/6240 for 1024x1536, 400/1568/6208 for 1536x1024); gpt-image-2's calculator formula
(7,024 tokens for 1024x1024 high, 5,488 for 1536x1024 high, 5,063 for 1792x1024 high, 12,329 for
3584x2048 high, as reported on OpenAI's forum); whisper-1 $0.006 a minute "rounded to the nearest
second"; tts-1 $15 and tts-1-hd $30 per 1M characters (genai-prices 0.2.3).
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from tokenward.core.budgets import parse_budget_spec
from tokenward.core.decide import Balance, decide
from tokenward.core.media import UnpricedMedia, gpt_image_2_tokens, image_output_tokens, media_hold
from tokenward.core.modifiers import MediaRequest, RequestFacts
from tokenward.core.pricebook import PriceBook, PriceContext, UnknownModel
from tokenward.core.pricing import image_price, price_usage
from tokenward.core.usage import Usage
from tokenward.errors import BudgetExceeded, ConfigError
from tokenward.guard.flow import GuardSettings, plan_call

D = Decimal
BOOK = PriceBook()


@pytest.mark.parametrize(
    ("size", "tokens"),
    [("1024x1024", 7024), ("1536x1024", 5488), ("1792x1024", 5063), ("3584x2048", 12329)],
)
def test_gpt_image_2_formula_gives_the_counts_openai_bills(size: str, tokens: int) -> None:
    width, height = (int(x) for x in size.split("x"))
    assert gpt_image_2_tokens("high", width, height) == tokens


def test_image_output_tokens_hold_the_dearest_when_left_to_the_model() -> None:
    assert image_output_tokens("gpt-image-1", "1024x1536", "low") == 408
    assert image_output_tokens("gpt-image-1.5", "1536x1024", "medium") == 1568
    # auto quality: high; auto size: the dearest standard size (1024x1536 high = 6240)
    assert image_output_tokens("gpt-image-1-mini", "auto", "auto") == 6240
    assert image_output_tokens("gpt-image-1", None, None) == 6240
    # gpt-image-2: the formula; 1024x1024 high is its dearest standard size (7024 > 5488)
    assert image_output_tokens("gpt-image-2", None, "high") == 7024
    # a size the GPT Image 1 table lacks is held by the formula
    assert image_output_tokens("gpt-image-1", "1792x1024", "high") == 5063


def test_dall_e_prices_are_built_in_per_quality_and_size() -> None:
    dalle3 = BOOK.resolve("dall-e-3")
    assert dalle3 is not None and dalle3.source == "builtin" and dalle3.per_unit
    assert image_price(dalle3, "hd", "1024x1792") == (D("0.120"), "image:hd:1024x1792", ())
    # left out: the documented defaults, said as assumed
    assert image_price(dalle3, None, None) == (
        D("0.040"),
        "image:standard:1024x1024",
        ("image_quality=standard (default)", "image_size=1024x1024 (default)"),
    )
    # a hold takes the dearest: hd at 1024x1792 or 1792x1024
    assert image_price(dalle3, None, None, worst=True)[0] == D("0.120")
    # a size the table has no price for is unpriced, never a guess
    assert image_price(dalle3, "standard", "512x512")[0] is None
    assert BOOK.resolve("openai/dall-e-2") is not None


def test_per_unit_costs() -> None:
    whisper, tts, tts_hd, dalle2 = (BOOK.resolve(m) for m in ("whisper-1", "tts-1", "tts-1-hd", "dall-e-2"))
    assert whisper is not None and tts is not None and tts_hd is not None and dalle2 is not None
    # 9.4 s rounds to 9 s: 9 x 0.006 / 60 = 0.0009; 9.5 s rounds to 10 s: 0.001
    assert price_usage(Usage(input_audio_ms=9400), whisper).total_usd == D("0.0009")
    assert price_usage(Usage(input_audio_ms=9500), whisper).total_usd == D("0.001")
    # 28 characters x $15 / 1M = 0.00042; x $30 / 1M = 0.00084
    assert price_usage(Usage(input_characters=28), tts).total_usd == D("0.00042")
    assert price_usage(Usage(input_characters=28), tts_hd).total_usd == D("0.00084")
    # 3 images 512x512 x 0.018 = 0.054
    cost = price_usage(Usage(images=3), dalle2, image=("standard", "512x512"))
    assert cost.total_usd == D("0.054") and not cost.estimated
    # tokens cost nothing on a per-unit row, known or not
    assert price_usage(Usage(input_tokens=500, images=1), dalle2, image=(None, "256x256")).total_usd == D(
        "0.016"
    )
    # a per-unit row without its unit is unpriced, never $0
    assert price_usage(Usage(input_tokens=5, output_tokens=0), tts).unpriced == ("input_characters",)
    # a duration read from the file, not reported: estimated
    assert price_usage(Usage(input_audio_ms=9400, units_source="preflight_estimate"), whisper).estimated


def test_override_units_and_their_checks() -> None:
    book = PriceBook(
        {
            "models": {
                "my-images": {"per_image": {"standard": {"1024x1024": "0.05"}}},
                "my-stt": {"per_minute": "0.012"},
                "my-tts": {"per_million_characters": "20"},
            }
        },
        use_genai=False,
    )
    # 2 x 0.05 = 0.10; 61 s x 0.012 / 60 = 0.0122; 1000 chars x 20 / 1M = 0.02
    assert book.cost(Usage(images=2), "my-images").total_usd == D("0.10")
    assert book.cost(Usage(input_audio_ms=61_000), "my-stt").total_usd == D("0.0122")
    assert book.cost(Usage(input_characters=1000), "my-tts").total_usd == D("0.02")
    with pytest.raises(ConfigError, match="per_image"):
        PriceBook({"models": {"x": {"per_image": {"1024x1024": "0.05"}}}})
    with pytest.raises(ConfigError, match="sanity bound"):
        PriceBook({"models": {"x": {"per_minute": 6000}}})


def test_media_holds() -> None:
    dalle3 = BOOK.resolve("dall-e-3")
    image = MediaRequest("image", images=1, image_size="1024x1792", image_quality="hd")
    hold = media_hold("dall-e-3", dalle3, image, 3, 4096)
    assert (hold.input_tokens, hold.output_tokens, hold.fixed_cost_usd) == (0, 0, D("0.120"))
    # gpt-image-1, 2 images 1024x1536 high: 2 x 6240 = 12480 output at $40; input at the image rate $10
    hold = media_hold(
        "gpt-image-1",
        BOOK.resolve("gpt-image-1"),
        MediaRequest("image", images=2, image_size="1024x1536", image_quality="high"),
        4,
        4096,
    )
    assert (hold.input_tokens, hold.output_tokens, hold.input_rate, hold.output_rate) == (4, 12480, 10, 40)
    # whisper-1, 9.4 s: held as 10 s = 0.001
    hold = media_hold(
        "whisper-1", BOOK.resolve("whisper-1"), MediaRequest("transcription", audio_ms=9400), 0, 4096
    )
    assert hold.fixed_cost_usd == D("0.001")
    # gpt-4o-transcribe, 9.4 s: 10 s x 20 = 200 audio tokens at $6, 2000 output at $10
    hold = media_hold(
        "gpt-4o-transcribe",
        BOOK.resolve("gpt-4o-transcribe"),
        MediaRequest("transcription", audio_ms=9400),
        0,
        4096,
    )
    assert (hold.input_tokens, hold.output_tokens, hold.input_rate, hold.output_rate) == (200, 2000, 6, 10)
    # an unknown model: the tokens are held, the cost is unknown
    unknown = media_hold("no-such-model", None, MediaRequest("speech", characters=5), 2, 4096)
    assert (unknown.input_tokens, unknown.output_tokens, unknown.input_rate) == (2, 4096, None)


def _balance(spec: str) -> Balance:
    budget = parse_budget_spec(spec)
    return Balance(budget, "alice", "", D(0), D(0), None)


def test_a_media_call_is_held_whole_or_refused_never_clamped() -> None:
    request = RequestFacts(media=MediaRequest("image", images=1, image_size="1024x1792", image_quality="hd"))
    plan = plan_call("dall-e-3", 3, None, BOOK, GuardSettings(), request=request)
    assert plan.fixed_cost_usd == D("0.120") and (plan.input_tokens, plan.max_output_tokens) == (0, 0)
    assert decide(plan, [_balance("user=alice:cost_usd=0.12")]).amounts["cost_usd"] == D("0.120")
    with pytest.raises(BudgetExceeded) as denied:
        decide(plan, [_balance("user=alice:cost_usd=0.11")])
    assert denied.value.requested == D("0.120")
    # a token-priced image: the output bound is the images' tokens; a budget short of it refuses
    request = RequestFacts(media=MediaRequest("image", images=1, image_size="1024x1024", image_quality="low"))
    plan = plan_call("gpt-image-1", 4, None, BOOK, GuardSettings(), request=request)
    assert (plan.max_output_tokens, plan.min_output_tokens) == (272, 272)
    with pytest.raises(BudgetExceeded):
        decide(plan, [_balance("user=alice:total_tokens=275")])  # 4 + 272 = 276 > 275


def test_an_unpriceable_media_request_follows_the_unknown_price_policy() -> None:
    request = RequestFacts(media=MediaRequest("image", images=1, image_size="512x512", image_quality="hd"))
    flagged = plan_call("dall-e-3", 3, None, BOOK, GuardSettings(), request=request)
    assert not flagged.priced  # flag: admitted, the cost unknown (cost budgets apply their own policy)
    with pytest.raises(UnpricedMedia, match=r"image:hd:512x512"):
        plan_call("dall-e-3", 3, None, BOOK, GuardSettings(unknown_model="deny"), request=request)
    with pytest.raises(UnknownModel):  # a model no source knows: the unknown-model policy as ever
        plan_call("no-such-image-model", 3, None, BOOK, GuardSettings(unknown_model="deny"), request=request)


def test_price_context_carries_the_images_quality_and_size() -> None:
    context = PriceContext(image_size="1792x1024", image_quality="hd")
    assert BOOK.cost(Usage(images=1), "dall-e-3", context=context).total_usd == D("0.120")
