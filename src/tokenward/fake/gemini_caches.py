"""The fake's Gemini context caches: ``/v1beta/cachedContents`` (create, list, get, update, delete).

Wire format (https://ai.google.dev/api/caching, read 2026-12-08):

* ``POST /v1beta/cachedContents`` with a ``CachedContent`` body: ``model`` (``models/<id>``,
  required), ``contents``, ``systemInstruction``, ``tools``, ``ttl``, ``displayName``; the answer
  is the resource with its ``name`` (``cachedContents/<id>``) and
  ``usageMetadata.totalTokenCount``, the cached prompt's count (the fake counts it as a
  ``generateContent`` prompt of the same fields: :mod:`tokenward.fake.gemini`);
* ``GET /v1beta/cachedContents`` lists them (``{"cachedContents": [...]}``);
* ``GET``, ``PATCH`` (a new ``ttl``) and ``DELETE`` ``/v1beta/cachedContents/{id}``; an unknown
  id is a 404 ``NOT_FOUND``.

A ``generateContent`` naming ``cachedContent`` is billed the cache's tokens as part of its prompt
(:mod:`tokenward.fake.stored`).
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse, Response

from tokenward.errors import ValidationError
from tokenward.fake import gemini
from tokenward.fake.stored import StoredContext

__all__ = ["create", "delete", "get", "listing", "update"]


def create(stored: StoredContext, body: Any) -> Response:
    """Create a cached content from a validated JSON ``body``."""
    if not isinstance(body, dict):
        return gemini.error_response(400, "Invalid JSON payload received. The body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model.startswith("models/") or len(model) == len("models/"):
        return gemini.error_response(400, "model: expected 'models/<model id>'")
    try:
        counted = gemini.parse_request(body, model.removeprefix("models/"), "generateContent", None)
    except ValidationError as exc:
        return gemini.error_response(400, str(exc))
    ttl = body.get("ttl")
    name = body.get("displayName", body.get("display_name"))
    cache = stored.create_cache(
        model,
        counted.prompt_tokens,
        name if isinstance(name, str) else None,
        ttl if isinstance(ttl, str) else None,
    )
    return JSONResponse(cache.to_dict())


def listing(stored: StoredContext) -> Response:
    """Every cached content."""
    return JSONResponse({"cachedContents": [cache.to_dict() for cache in stored.caches()]})


def get(stored: StoredContext, cache_id: str) -> Response:
    """One cached content, or 404."""
    cache = stored.cache(f"cachedContents/{cache_id}")
    if cache is None:
        return _missing(cache_id)
    return JSONResponse(cache.to_dict())


def update(stored: StoredContext, cache_id: str, body: Any) -> Response:
    """A cached content with its new ``ttl`` echoed (its tokens do not change), or 404."""
    cache = stored.cache(f"cachedContents/{cache_id}")
    if cache is None:
        return _missing(cache_id)
    out = cache.to_dict()
    if isinstance(body, dict) and isinstance(body.get("ttl"), str):
        out["ttl"] = body["ttl"]
    return JSONResponse(out)


def delete(stored: StoredContext, cache_id: str) -> Response:
    """Forget a cached content (``{}``), or 404."""
    if not stored.delete_cache(f"cachedContents/{cache_id}"):
        return _missing(cache_id)
    return JSONResponse({})


def _missing(cache_id: str) -> Response:
    return gemini.error_response(404, f"CachedContent not found: cachedContents/{cache_id}")
