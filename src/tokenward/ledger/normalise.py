"""Making every usage event storable by every store, and refusing what cannot be made so.

Some strings no store can keep: PostgreSQL refuses the NUL character in ``text`` and ``jsonb``
(https://www.postgresql.org/docs/current/datatype-character.html, read 2025-06), and a lone UTF-16
surrogate (``"\\ud800"``, which JSON parsing lets through) cannot be encoded as UTF-8 for SQLite
or PostgreSQL. An upstream can put either in a field that ends up in an event (the model it says
served the call, a response id, a finish reason); such an event would be refused at settlement and
the call would go unrecorded.

* :func:`storable_event` replaces each such character of an event's strings (model, provider,
  endpoint, price fields, subject, metadata keys and values) with U+FFFD and lists what it changed
  in ``metadata.normalised``, so the call is recorded and the change is visible.
* :func:`check_subject` refuses them in the subject of an admission
  (:class:`~tokenward.errors.ValidationError`): the caller's own values are checked before
  anything is held, never changed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from tokenward.core.budgets import SCOPES, Subject
from tokenward.core.events import UsageEvent
from tokenward.errors import ValidationError

__all__ = ["check_subject", "storable_event", "storable_text"]

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_REPLACEMENT = "\ufffd"


def storable_text(text: str) -> str:
    """``text`` with NUL and lone surrogates replaced by U+FFFD (the same object when clean)."""
    return _UNSTORABLE.sub(_REPLACEMENT, text) if _UNSTORABLE.search(text) else text


def _clean(value: Any, path: str, changed: list[str]) -> Any:
    if isinstance(value, str):
        clean = storable_text(value)
        if clean is not value:
            changed.append(path)
        return clean
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = storable_text(str(key))
            if name != key:
                changed.append(f"{path}.{name}")
            out[name] = _clean(item, f"{path}.{name}", changed)
        return out
    if isinstance(value, list | tuple):
        return [_clean(item, f"{path}[{i}]", changed) for i, item in enumerate(value)]
    return value


def storable_event(event: UsageEvent) -> UsageEvent:
    """``event`` with every string a store cannot keep made storable and flagged.

    Returns:
        ``event`` itself when nothing needed a change; else a copy whose ``metadata.normalised``
        lists the changed fields (``model``, ``metadata.model_served``, ``subject.user``...).
    """
    changed: list[str] = []
    fields: dict[str, Any] = {}
    for name in ("model", "provider", "endpoint", "price_source", "price_version"):
        value = getattr(event, name)
        if isinstance(value, str):
            clean = _clean(value, name, changed)
            if clean is not value:
                fields[name] = clean
    subject = event.subject.to_dict()
    clean_subject = _clean(subject, "subject", changed)
    if clean_subject != subject:
        fields["subject"] = Subject.from_dict(clean_subject)
    metadata = _clean(dict(event.metadata), "metadata", changed)
    if not changed:
        return event
    metadata["normalised"] = sorted(set(changed) | set(metadata.get("normalised") or []))
    return replace(event, metadata=metadata, **fields)


def check_subject(subject: Subject) -> None:
    """Refuse a subject no store can keep (NUL or a lone surrogate in a scope value or tag).

    Raises:
        ValidationError: naming the scope or tag.
    """
    for scope in SCOPES:
        value = getattr(subject, scope, None)
        if isinstance(value, str) and _UNSTORABLE.search(value):
            raise ValidationError(f"subject {scope}: NUL and lone surrogates are not allowed", field=scope)
    for name, value in subject.tags:
        if _UNSTORABLE.search(name) or _UNSTORABLE.search(value):
            raise ValidationError(
                f"subject tag {name!r}: NUL and lone surrogates are not allowed", field="tags"
            )
