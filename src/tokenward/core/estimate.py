"""Counting a request's input tokens before the call, for every dialect.

OpenAI models are counted with their own encoding (:func:`~tokenward.core.tokenizers.encoding_for_model`)
plus the overheads OpenAI documents in its cookbook "How to count tokens with tiktoken"
(https://cookbook.openai.com/examples/how_to_count_tokens_with_tiktoken):

* messages: 3 tokens per message and 1 per ``name`` (``gpt-3.5-turbo-0301``: 4 and -1), plus 3
  that prime the reply;
* tool definitions (``num_tokens_for_tools``): per function 7 tokens (10 for ``cl100k_base``
  models) plus ``name:description``; 3 for the property list; per property 3 plus
  ``name:type:description``; an enum adds -3 plus 3 and its text per item; 12 at the end. That
  formula covers flat object schemas (``type``, ``description``, ``enum``); a schema with anything
  else (``anyOf``, ``default``, ``title``, nested objects...) is counted as the function's compact
  JSON plus the same per-function overheads, an *upper bound*: OpenAI renders schemas to the model
  in a terser, TypeScript-like form it does not document, so the JSON text over-counts it, and the
  estimate is marked approximate;
* images: OpenAI's tile or patch rule (:mod:`tokenward.core.images`) at the real size read from a
  base64 ``data:`` URL, the rule's worst case otherwise.

Anthropic, Gemini and open models have no public offline tokenizer: their prompts are counted with
``o200k_base`` (with Anthropic's documented tool-use system prompt of up to 346 tokens when tools
are offered, and each provider's image rule) and multiplied by a safety factor
(:data:`DEFAULT_APPROXIMATION_FACTOR`); the estimate is marked approximate and is calibrated from
observed usage (:mod:`tokenward.core.calibration`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from decimal import ROUND_CEILING, Decimal
from typing import Any

from tokenward.core.images import (
    anthropic_image_tokens,
    gemini_image_tokens,
    openai_image_tokens,
    size_from_base64,
    size_from_data_url,
)
from tokenward.core.tokenizers import encoding, encoding_for_model
from tokenward.errors import ValidationError

__all__ = [
    "ANTHROPIC_TOOL_SYSTEM_PROMPT_TOKENS",
    "DEFAULT_APPROXIMATION_FACTOR",
    "ESTIMATE_DIALECTS",
    "Estimate",
    "count_tokens",
    "detect_dialect",
    "estimate_anthropic_messages",
    "estimate_bedrock_converse",
    "estimate_gemini",
    "estimate_ollama",
    "estimate_openai_chat",
    "estimate_openai_responses",
    "estimate_request",
    "model_family",
]

DEFAULT_APPROXIMATION_FACTOR = Decimal("1.2")
"""Safety factor over ``o200k_base`` for models without an offline tokenizer (before calibration)."""

ANTHROPIC_TOOL_SYSTEM_PROMPT_TOKENS = 346
"""The largest tool-use system prompt Anthropic documents (Claude 4 / 3.7 with ``tool_choice``
auto or none; https://docs.anthropic.com/en/docs/agents-and-tools/tool-use/overview#pricing)."""

_REPLY_PRIMING = 3
_ANTHROPIC_TOKENS_PER_MESSAGE = 4
_GEMINI_TOKENS_PER_CONTENT = 4


@dataclass(frozen=True, slots=True)
class Estimate:
    """A pre-flight count of a request's prompt.

    Attributes:
        input_tokens: the estimate, in tokens (already multiplied by any safety factor).
        encoding: the tiktoken encoding used.
        approximate: True unless the model's own tokenizer and documented overheads were used.
        basis: a short human-readable account of how the figure was made.
        raw_tokens: the count before any factor (equal to ``input_tokens`` for exact estimates).
        factor: the factor applied over ``raw_tokens``.
        family: ``openai``, ``anthropic``, ``gemini`` or ``open`` (which rules were used).
        image_tokens: the images' share of ``raw_tokens``.
        images_unknown_size: images counted at their rule's worst case.
        tool_definition_tokens: the tool definitions' share of ``input_tokens`` (scaled by
            ``factor`` as the whole, rounded up): OpenAI's documented ``num_tokens_for_tools``
            formula, Anthropic's tool-use system prompt plus the definitions' text, Gemini's and
            Bedrock's definitions' text; 0 for a request that offers no tools, None for an
            endpoint whose requests carry none (embeddings, completions).
    """

    input_tokens: int
    encoding: str
    approximate: bool
    basis: str
    raw_tokens: int = -1
    factor: Decimal = Decimal(1)
    family: str = "openai"
    image_tokens: int = 0
    images_unknown_size: int = 0
    tool_definition_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.raw_tokens < 0:
            object.__setattr__(self, "raw_tokens", self.input_tokens)

    def scaled(self, factor: Decimal, basis: str) -> Estimate:
        """This estimate with ``raw_tokens x factor`` (rounded up) as its figure."""
        tokens = int((Decimal(self.raw_tokens) * factor).to_integral_value(rounding=ROUND_CEILING))
        tools = self.tool_definition_tokens
        if tools is not None and self.factor:  # the raw share, scaled by the new factor
            raw = Decimal(tools) / self.factor
            tools = int((raw * factor).to_integral_value(rounding=ROUND_CEILING))
        return replace(
            self,
            input_tokens=tokens,
            factor=factor,
            basis=basis,
            approximate=True,
            tool_definition_tokens=tools,
        )


def count_tokens(text: str, encoding_name: str = "o200k_base") -> int:
    """Tokens in ``text`` under the given encoding (special-token text counted as ordinary text)."""
    if not text:
        return 0
    return len(encoding(encoding_name).encode_ordinary(text))


def _text_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def model_family(model: str) -> str:
    """Which estimation rules a model follows: ``openai`` (tiktoken knows its encoding),
    ``anthropic`` (Claude, also on Bedrock and Vertex), ``gemini``, or ``open`` (anything else)."""
    name = model.lower()
    if "claude" in name:
        return "anthropic"
    if "gemini" in name or "gemma" in name:
        return "gemini"
    if encoding_for_model(model)[1]:
        return "openai"
    return "open"


class _Counter:
    """Accumulates a request's tokens (text, images) under one encoding and family's rules."""

    def __init__(self, model: str, enc: str, family: str) -> None:
        self.model, self.enc, self.family = model, enc, family
        self.total = 0
        self.image_tokens = 0
        self.images_unknown = 0
        self.upper_bound = False
        self.tool_tokens = 0

    def tool(self, definition: Any) -> None:
        """Count one tool definition as its text, noting it as the tools' share."""
        before = self.total
        self.text(definition)
        self.tool_tokens += self.total - before

    def text(self, value: Any) -> None:
        self.total += count_tokens(_text_of(value), self.enc)

    def image(self, size: tuple[int, int] | None, detail: str | None = None) -> None:
        if self.family == "openai":
            cost = openai_image_tokens(self.model, size, detail)
        elif self.family == "gemini":
            cost = gemini_image_tokens(self.model, size)
        else:
            cost = anthropic_image_tokens(size)
        self.total += cost.tokens
        self.image_tokens += cost.tokens
        self.images_unknown += 0 if cost.known_size else 1


# --- OpenAI: tool definitions ---------------------------------------------------------------


def _cookbook_property(spec: Any) -> bool:
    if not isinstance(spec, Mapping) or set(spec) - {"type", "description", "enum"}:
        return False
    if not isinstance(spec.get("type"), str) or not isinstance(spec.get("description"), str):
        return False
    enum = spec.get("enum")
    return enum is None or (isinstance(enum, list) and all(isinstance(i, str) for i in enum))


def _cookbook_covered(function: Mapping[str, Any]) -> bool:
    """Whether the cookbook's ``num_tokens_for_tools`` formula covers this function's schema."""
    if set(function) - {"name", "description", "parameters", "strict"}:
        return False
    if not isinstance(function.get("name"), str) or not isinstance(function.get("description"), str):
        return False
    params = function.get("parameters")
    if not isinstance(params, Mapping) or set(params) - {
        "type",
        "properties",
        "required",
        "additionalProperties",
    }:
        return False
    props = params.get("properties")
    return isinstance(props, Mapping) and all(_cookbook_property(p) for p in props.values())


def _tool_tokens(tools: Any, enc: str) -> tuple[int, bool]:
    """Tokens of OpenAI tool/function definitions, and whether the documented formula covered all."""
    if not isinstance(tools, list) or not tools:
        return 0, True
    func_init = 10 if enc == "cl100k_base" else 7
    total, exact = 0, True
    for tool in tools:
        spec = tool.get("function", tool) if isinstance(tool, Mapping) else tool
        if (
            isinstance(spec, Mapping)
            and tool.get("type", "function") == "function"
            and _cookbook_covered({k: v for k, v in spec.items() if k != "type"})
        ):
            total += func_init + count_tokens(
                f"{spec['name']}:{str(spec['description']).removesuffix('.')}", enc
            )
            props = spec["parameters"]["properties"]
            if props:
                total += 3
                for key, prop in props.items():
                    total += 3
                    if "enum" in prop:
                        total += -3 + sum(3 + count_tokens(item, enc) for item in prop["enum"])
                    total += count_tokens(
                        f"{key}:{prop['type']}:{prop['description'].removesuffix('.')}", enc
                    )
        else:
            exact = False
            body = {k: v for k, v in spec.items() if k != "type"} if isinstance(spec, Mapping) else spec
            total += func_init + count_tokens(_text_of(body), enc)
    return total + 12, exact


# --- OpenAI chat -------------------------------------------------------------------------------


def _framing(model: str) -> tuple[int, int]:
    """(tokens per message, tokens per name) by OpenAI model family (the cookbook's table)."""
    bare = model.lower().rsplit("/", 1)[-1]
    if bare.startswith("gpt-3.5-turbo-0301"):
        return 4, -1
    return 3, 1


def _openai_part(counter: _Counter, part: Any) -> None:
    if not isinstance(part, Mapping):
        counter.text(part)
        return
    kind = part.get("type")
    if kind in ("text", "input_text", "output_text", "refusal"):
        counter.text(part.get("text", part.get("refusal")))
    elif kind in ("image_url", "input_image"):
        nested = part.get("image_url")  # an object in chat, a plain URL string in Responses
        url = nested.get("url") if isinstance(nested, Mapping) else nested
        detail = part.get("detail") or (nested.get("detail") if isinstance(nested, Mapping) else None)
        size = size_from_data_url(url) if isinstance(url, str) else None
        counter.image(size, detail if isinstance(detail, str) else None)
    else:
        counter.text(part)


def _openai_content(counter: _Counter, content: Any) -> None:
    if isinstance(content, list):
        for part in content:
            _openai_part(counter, part)
    elif content is not None:
        counter.text(content)


def _finish(
    counter: _Counter, exact_tokenizer: bool, factor: Decimal, what: str, exact_note: str, tools: bool = True
) -> Estimate:
    raw = counter.total
    unknown = (
        f"; {counter.images_unknown} image(s) of unknown size at the worst case"
        if counter.images_unknown
        else ""
    )
    if exact_tokenizer:
        approximate = counter.upper_bound
        note = exact_note + (
            " (tool schemas beyond the documented formula: upper bound)" if approximate else ""
        )
        return Estimate(
            raw,
            counter.enc,
            approximate,
            note + unknown,
            raw,
            Decimal(1),
            "openai",
            counter.image_tokens,
            counter.images_unknown,
            counter.tool_tokens if tools else None,
        )
    scaled = int((Decimal(raw) * factor).to_integral_value(rounding=ROUND_CEILING))
    scaled_tools = int((Decimal(counter.tool_tokens) * factor).to_integral_value(rounding=ROUND_CEILING))
    return Estimate(
        scaled,
        counter.enc,
        True,
        f"{counter.enc} x {factor} ({what}){unknown}",
        raw,
        factor,
        counter.family,
        counter.image_tokens,
        counter.images_unknown,
        scaled_tools if tools else None,
    )


def estimate_openai_chat(
    body: Mapping[str, Any], model: str | None = None, *, factor: Decimal = DEFAULT_APPROXIMATION_FACTOR
) -> Estimate:
    """Estimate the prompt tokens of an OpenAI chat-completions request body.

    Args:
        body: the request JSON (``messages``, optional ``tools``/``functions``/``response_format``).
        model: the model id (defaults to ``body["model"]``); picks the encoding and overheads.
        factor: safety factor applied (rounding up) when the model has no known tokenizer (a Claude,
            Gemini or open model behind an OpenAI-compatible endpoint); exact counts are not scaled.
    """
    model = model or str(body.get("model") or "")
    enc, exact = encoding_for_model(model)
    family = "openai" if exact else model_family(model)
    counter = _Counter(model, enc, "openai" if exact or family == "open" else family)
    per_message, per_name = _framing(model)
    counter.total = _REPLY_PRIMING
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, Mapping):
            continue
        counter.total += per_message
        counter.text(message.get("role"))
        _openai_content(counter, message.get("content"))
        if message.get("name"):
            counter.total += per_name
            counter.text(message.get("name"))
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(function, Mapping):
                counter.text(function.get("name"))
                counter.text(function.get("arguments"))
    for key in ("tools", "functions"):
        tokens, covered = _tool_tokens(body.get(key), enc)
        counter.total += tokens
        counter.tool_tokens += tokens
        counter.upper_bound |= not covered
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("json_schema") is not None:
        counter.text(response_format.get("json_schema"))
        counter.upper_bound = True
    return _finish(
        counter, exact, factor, f"no tokenizer known for {model!r}", f"{enc} + OpenAI chat framing"
    )


# --- OpenAI Responses ----------------------------------------------------------------------------


def estimate_openai_responses(
    body: Mapping[str, Any], model: str | None = None, *, factor: Decimal = DEFAULT_APPROXIMATION_FACTOR
) -> Estimate:
    """Estimate the prompt tokens of an OpenAI Responses request (``input``, ``instructions``,
    ``tools``). OpenAI documents no framing for this API: the chat framing is used and the estimate
    is marked approximate. ``previous_response_id`` history is not visible here and not counted."""
    model = model or str(body.get("model") or "")
    enc, exact = encoding_for_model(model)
    counter = _Counter(model, enc, "openai" if exact else model_family(model))
    counter.total = _REPLY_PRIMING
    if body.get("instructions"):
        counter.total += 3
        counter.text(body.get("instructions"))
    items = body.get("input")
    if isinstance(items, str):
        counter.total += 3
        counter.text(items)
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, Mapping):
            counter.text(item)
            continue
        kind = item.get("type", "message")
        if kind == "message" or "role" in item:
            counter.total += 3
            counter.text(item.get("role"))
            _openai_content(counter, item.get("content"))
        elif kind == "function_call":
            counter.text(item.get("name"))
            counter.text(item.get("arguments"))
        elif kind == "function_call_output":
            counter.text(item.get("output"))
        else:
            counter.text({k: v for k, v in item.items() if k not in ("id", "status")})
    tokens, _ = _tool_tokens(body.get("tools"), enc)
    counter.total += tokens
    counter.tool_tokens += tokens
    counter.upper_bound = True  # no documented framing for this API
    estimate = _finish(
        counter, exact, factor, f"no tokenizer known for {model!r}", f"{enc} + chat framing (Responses)"
    )
    return estimate if not exact else replace(estimate, approximate=True)


def estimate_text_inputs(
    inputs: Any, model: str, *, factor: Decimal = DEFAULT_APPROXIMATION_FACTOR, what: str = "prompt"
) -> Estimate:
    """Estimate plain text inputs with no message framing: a legacy completion ``prompt`` or an
    embeddings ``input`` (a string, a list of strings, or token arrays, which count as their
    length; https://platform.openai.com/docs/api-reference/embeddings/create).
    """
    enc, exact = encoding_for_model(model)
    counter = _Counter(model, enc, "openai" if exact else model_family(model))
    values = inputs if isinstance(inputs, list) else [inputs]
    if values and all(isinstance(v, int) for v in values):
        values = [values]  # one token array
    for value in values:
        if isinstance(value, list) and all(isinstance(v, int) for v in value):
            counter.total += len(value)
        else:
            counter.text(value)
    return _finish(
        counter, exact, factor, f"no tokenizer known for {model!r}", f"{enc}, {what} text, no framing", False
    )


# --- Anthropic Messages ----------------------------------------------------------------------------


def _anthropic_source_size(source: Any) -> tuple[int, int] | None:
    if isinstance(source, Mapping) and source.get("type") == "base64" and isinstance(source.get("data"), str):
        return size_from_base64(source["data"])
    return None


def _anthropic_block(counter: _Counter, block: Any) -> None:
    if not isinstance(block, Mapping):
        counter.text(block)
        return
    kind = block.get("type")
    if kind == "text":
        counter.text(block.get("text"))
    elif kind == "image":
        counter.image(_anthropic_source_size(block.get("source")))
    elif kind == "tool_use":
        counter.text(block.get("name"))
        counter.text(block.get("input"))
    elif kind == "tool_result":
        content = block.get("content")
        if isinstance(content, list):
            for inner in content:
                _anthropic_block(counter, inner)
        else:
            counter.text(content)
    elif kind in ("thinking", "redacted_thinking"):
        counter.text(block.get("thinking") or block.get("data"))
    else:
        counter.text(block)


def estimate_anthropic_messages(
    body: Mapping[str, Any], model: str | None = None, *, factor: Decimal = DEFAULT_APPROXIMATION_FACTOR
) -> Estimate:
    """Estimate the prompt tokens of an Anthropic Messages request body.

    Claude's tokenizer is not public, so the count is ``o200k_base`` (plus 4 per message, the tool
    definitions with Anthropic's documented tool-use system prompt, and Anthropic's image rule)
    times ``factor``, rounded up, and always approximate. The same for any model id of one model
    (``claude-3-5-sonnet-20241022``, ``anthropic.claude-3-5-sonnet-20240620-v1:0``).
    """
    counter = _Counter(str(model or body.get("model") or "claude"), "o200k_base", "anthropic")
    system = body.get("system")
    if isinstance(system, list):
        for block in system:
            _anthropic_block(counter, block)
    elif system is not None:
        counter.text(system)
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, Mapping):
            continue
        counter.total += _ANTHROPIC_TOKENS_PER_MESSAGE
        content = message.get("content")
        if isinstance(content, list):
            for block in content:
                _anthropic_block(counter, block)
        else:
            counter.text(content)
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        counter.total += ANTHROPIC_TOOL_SYSTEM_PROMPT_TOKENS
        counter.tool_tokens += ANTHROPIC_TOOL_SYSTEM_PROMPT_TOKENS
        for tool in tools:
            counter.tool(tool)
    return _finish(counter, False, factor, "Claude's tokenizer is not public", "")


# --- Gemini ------------------------------------------------------------------------------------------


def _gemini_parts(counter: _Counter, parts: Any) -> None:
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, Mapping):
            counter.text(part)
            continue
        if "text" in part:
            counter.text(part.get("text"))
        elif isinstance(part.get("inlineData"), Mapping):
            inline = part["inlineData"]
            if str(inline.get("mimeType", "")).startswith("image/") and isinstance(inline.get("data"), str):
                counter.image(size_from_base64(inline["data"]))
            else:
                counter.image(None)
        elif isinstance(part.get("fileData"), Mapping):
            counter.image(None)
        else:
            counter.text(part)


def estimate_gemini(
    body: Mapping[str, Any], model: str | None = None, *, factor: Decimal = DEFAULT_APPROXIMATION_FACTOR
) -> Estimate:
    """Estimate the prompt tokens of a Gemini ``generateContent`` body (``contents``,
    ``systemInstruction``, ``tools``): ``o200k_base`` plus Gemini's image rule, times ``factor``.
    Media other than images (audio, video, files by URI) are counted at the 16-tile image bound."""
    counter = _Counter(str(model or body.get("model") or "gemini"), "o200k_base", "gemini")
    system = body.get("systemInstruction") or body.get("system_instruction")
    if isinstance(system, Mapping):
        _gemini_parts(counter, system.get("parts"))
    contents = body.get("contents")
    for content in contents if isinstance(contents, list) else ():
        if isinstance(content, Mapping):
            counter.total += _GEMINI_TOKENS_PER_CONTENT
            _gemini_parts(counter, content.get("parts"))
    tools = body.get("tools")
    if isinstance(tools, list):
        for tool in tools:
            counter.tool(tool)
    return _finish(counter, False, factor, "Gemini's tokenizer is not available offline", "")


# --- Bedrock Converse ------------------------------------------------------------------------------


def _bedrock_block(counter: _Counter, block: Any) -> None:
    if not isinstance(block, Mapping):
        counter.text(block)
        return
    if "text" in block:
        counter.text(block.get("text"))
    elif isinstance(block.get("image"), Mapping):
        source = block["image"].get("source")
        data = source.get("bytes") if isinstance(source, Mapping) else None
        counter.image(size_from_base64(data) if isinstance(data, str) else None)
    elif isinstance(block.get("toolUse"), Mapping):
        counter.text(block["toolUse"].get("name"))
        counter.text(block["toolUse"].get("input"))
    elif isinstance(block.get("toolResult"), Mapping):
        for inner in block["toolResult"].get("content") or ():
            _bedrock_block(
                counter, inner.get("json", inner) if isinstance(inner, Mapping) and "json" in inner else inner
            )
    elif "cachePoint" in block:
        return
    else:
        counter.text(block)


def estimate_bedrock_converse(
    body: Mapping[str, Any], model: str | None = None, *, factor: Decimal = DEFAULT_APPROXIMATION_FACTOR
) -> Estimate:
    """Estimate the prompt tokens of a Bedrock Converse body (``messages``, ``system``,
    ``toolConfig``). Claude models follow the Anthropic rules; others the open-model ones."""
    model = str(model or body.get("modelId") or "")
    family = "anthropic" if "claude" in model.lower() else "open"
    counter = _Counter(model, "o200k_base", family)
    for block in body.get("system") or ():
        _bedrock_block(counter, block)
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if isinstance(message, Mapping):
            counter.total += _ANTHROPIC_TOKENS_PER_MESSAGE
            for block in message.get("content") or ():
                _bedrock_block(counter, block)
    config = body.get("toolConfig")
    tools = config.get("tools") if isinstance(config, Mapping) else None
    if isinstance(tools, list) and tools:
        if family == "anthropic":
            counter.total += ANTHROPIC_TOOL_SYSTEM_PROMPT_TOKENS
            counter.tool_tokens += ANTHROPIC_TOOL_SYSTEM_PROMPT_TOKENS
        for tool in tools:
            counter.tool(tool)
    return _finish(counter, False, factor, f"no tokenizer known for {model!r}", "")


# --- Ollama ------------------------------------------------------------------------------------------


def estimate_ollama(
    body: Mapping[str, Any], model: str | None = None, *, factor: Decimal = DEFAULT_APPROXIMATION_FACTOR
) -> Estimate:
    """Estimate the prompt tokens of an Ollama ``/api/chat`` or ``/api/generate`` body:
    ``o200k_base`` with the chat framing, times ``factor``; images (base64 in ``images``) by the
    pixel rule capped at 1,600 tokens, a guess for open vision models that calibration corrects."""
    model = str(model or body.get("model") or "")
    counter = _Counter(model, "o200k_base", "open")
    counter.total = _REPLY_PRIMING
    items: list[Any] = list(body.get("messages") or ()) if isinstance(body.get("messages"), list) else []
    if body.get("prompt") is not None or body.get("system") is not None:
        items.append({"role": "system", "content": body.get("system"), "images": body.get("images")})
        items.append({"role": "user", "content": body.get("prompt")})
    for message in items:
        if not isinstance(message, Mapping):
            continue
        counter.total += 3
        counter.text(message.get("role"))
        counter.text(message.get("content"))
        for image in message.get("images") or ():
            counter.image(size_from_base64(image) if isinstance(image, str) else None)
    tokens, _ = _tool_tokens(body.get("tools"), "o200k_base")
    counter.total += tokens
    counter.tool_tokens += tokens
    return _finish(counter, False, factor, f"no tokenizer known for {model!r}", "")


# --- dispatch ----------------------------------------------------------------------------------------

_ESTIMATORS: dict[str, Callable[..., Estimate]] = {
    "openai-chat": estimate_openai_chat,
    "openai-compatible": estimate_openai_chat,
    "openai-responses": estimate_openai_responses,
    "anthropic-messages": estimate_anthropic_messages,
    "gemini": estimate_gemini,
    "bedrock-converse": estimate_bedrock_converse,
    "ollama": estimate_ollama,
}
ESTIMATE_DIALECTS: tuple[str, ...] = tuple(_ESTIMATORS)


def detect_dialect(body: Mapping[str, Any], model: str = "") -> str:
    """The request dialect a body is written in, from its shape.

    ``contents`` is Gemini; ``input``/``instructions`` Responses; ``toolConfig`` or content blocks
    without ``type`` Bedrock Converse; a top-level ``system`` or ``type``-tagged blocks with a Claude
    model Anthropic Messages; ``prompt`` or ``images`` Ollama; else OpenAI chat.
    """
    if "contents" in body:
        return "gemini"
    if "input" in body or "instructions" in body:
        return "openai-responses"
    raw_messages = body.get("messages")
    messages: list[Any] = raw_messages if isinstance(raw_messages, list) else []
    blocks = [
        b
        for m in messages
        if isinstance(m, Mapping) and isinstance(m.get("content"), list)
        for b in m["content"]
    ]
    if (
        "toolConfig" in body
        or "inferenceConfig" in body
        or any(isinstance(b, Mapping) and "type" not in b for b in blocks)
    ):
        return "bedrock-converse"
    if "prompt" in body or any(isinstance(m, Mapping) and "images" in m for m in messages):
        return "ollama"
    if "system" in body or "claude" in model.lower():
        return "anthropic-messages"
    return "openai-chat"


def estimate_request(
    body: Mapping[str, Any],
    model: str | None = None,
    *,
    dialect: str | None = None,
    factor: Decimal = DEFAULT_APPROXIMATION_FACTOR,
) -> Estimate:
    """Estimate a request of any dialect (detected from the body when not given).

    Raises:
        ValidationError: an unknown dialect, or a body that is not a JSON object.
    """
    if not isinstance(body, Mapping):
        raise ValidationError("the request must be a JSON object", field="body")
    model = model or str(body.get("model") or body.get("modelId") or "")
    dialect = dialect or detect_dialect(body, model)
    if dialect not in _ESTIMATORS:
        raise ValidationError(
            f"unknown dialect {dialect!r}; known: {', '.join(_ESTIMATORS)}", field="dialect"
        )
    return _ESTIMATORS[dialect](body, model, factor=factor)
