"""Reading tokenward's own files (YAML or JSON), with errors that name the file and the problem."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml

from tokenward.core.pricebook import PriceBook
from tokenward.errors import ConfigError

__all__ = ["load_mapping", "load_prices"]


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, but for whole numbers: a number with a leading zero (``0100``) and
    one with colons (``12:30``) stay the text they are, as in YAML 1.2, instead of YAML 1.1's
    octal (``limit: 0100`` was a limit of 64, ``id: 0042`` the id ``"34"``) and base 60
    (``12:30`` was 750). A limit then reads ``"0100"`` as 100; a field that wants a whole number
    says it got text."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:int"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)


def load_mapping(path: str | Path) -> tuple[dict[str, Any], bytes]:
    """Read a YAML or JSON file whose top level is a mapping.

    Returns:
        The mapping and the file's raw bytes (for digests).

    Raises:
        ConfigError: the file is missing, unreadable, does not parse, or is not a mapping.
    """
    file = Path(path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read it: {exc.strerror}") from None
    try:
        data = json.loads(raw) if file.suffix.lower() == ".json" else yaml.load(raw, Loader=_Loader)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{file}: does not parse: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: the top level must be a mapping, got {type(data).__name__}")
    return data, raw


def load_prices(path: str | Path | None) -> PriceBook:
    """The price book: the override file at ``path`` (if any) over the pinned genai-prices table.

    Raises:
        ConfigError: the file cannot be read, or a row is malformed or implausible.
    """
    if path is None:
        return PriceBook.default()
    data, raw = load_mapping(path)
    try:
        return PriceBook(data, version=f"{Path(path).name}@{hashlib.sha256(raw).hexdigest()[:12]}")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
