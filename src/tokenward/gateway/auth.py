"""Who is calling: the virtual key, and the subject the call is charged to.

Precedence (highest first):

1. the key's own subject (``org``, ``project``, ``team``, ``user``, and the key's name as ``key``);
2. for keys with ``allow_user_override`` only: the ``x-tokenward-user`` header, else the body's
   end user (OpenAI ``user``, Anthropic ``metadata.user_id``); another key naming a different
   user in the header gets 403, and a body's user does not change whom it charges;
3. ``x-tokenward-session``, ``x-tokenward-agent``, ``x-tokenward-task`` add finer attribution,
   which a key cannot use to escape its own user or project budgets;
4. tags: the key's own ``tags``, plus, for keys with ``allow_client_tags`` only, those of the
   ``x-tokenward-tags`` header (``cost_center=cc-42, arm=b``), which add tags and never replace
   one of the key's (a different value for a tag the key sets is a 400, as is the header on a key
   without the flag: a tag budget never silently stops applying).

Tenancy: the ``user``, ``agent``, ``session`` and ``task`` and the tag values of a key that has a
project are stored in that project's namespace, ``<project>/<value>`` (:meth:`Subject.namespaced`),
whether they come from the key itself, its headers or the body; so a key can neither spend nor stop another
project's sessions, and ``allow_user_override`` names users of its own project only.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from tokenward.core.budgets import Subject
from tokenward.gateway.config import GatewayConfig, KeyConfig, tag_pair
from tokenward.gateway.errors import GatewayError

__all__ = [
    "authenticate",
    "authenticate_any",
    "authenticate_sigv4",
    "body_user",
    "header_values",
    "list_header",
    "presented_key",
    "signed_with_sigv4",
    "subject_for",
]

_VALUE = re.compile(r"^[\w.:@/\-]{1,200}$")


def presented_key(headers: Mapping[str, str], query: Mapping[str, str] | None = None) -> str | None:
    """The key a request presents: ``Authorization: Bearer <key>``, ``x-api-key: <key>``
    (Anthropic's header), ``api-key: <key>`` (Azure OpenAI's), or ``x-goog-api-key: <key>`` /
    ``?key=<key>`` (Gemini's)."""
    presented = (
        headers.get("x-api-key", "").strip()
        or headers.get("api-key", "").strip()
        or headers.get("x-goog-api-key", "").strip()
    )
    auth = headers.get("authorization", "")
    if not presented and auth[:7].lower() == "bearer ":
        presented = auth[7:].strip()
    if not presented and query is not None:
        presented = query.get("key", "").strip()
    return presented or None


def _missing() -> GatewayError:
    return GatewayError(
        401,
        "no tokenward key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
        type="authentication_error",
        code="missing_api_key",
    )


def authenticate(
    headers: Mapping[str, str], config: GatewayConfig, query: Mapping[str, str] | None = None
) -> KeyConfig:
    """The virtual key a request presents, among the config's keys.

    Raises:
        GatewayError: 401 when no key, or an unknown one, is presented.
    """
    presented = presented_key(headers, query)
    if presented is None:
        raise _missing()
    key = config.key_for(presented)
    if key is None:
        raise GatewayError(401, "unknown tokenward key", type="authentication_error", code="invalid_api_key")
    return key


async def authenticate_any(
    headers: Mapping[str, str], config: GatewayConfig, ledger: Any, query: Mapping[str, str] | None = None
) -> KeyConfig:
    """The virtual key a request presents: one of the config's, else one created through the
    admin API (kept in the ledger by digest, refused once revoked or expired).

    Raises:
        GatewayError: 401 when no key, or an unknown, revoked or expired one, is presented.
    """
    presented = presented_key(headers, query)
    if presented is None:
        raise _missing()
    key = config.key_for(presented)
    if key is not None:
        return key
    digest = hashlib.sha256(presented.encode()).hexdigest()
    record = await ledger.key_by_hash(digest)
    if record is None:
        raise GatewayError(401, "unknown tokenward key", type="authentication_error", code="invalid_api_key")
    scopes = {s: v for s, v in record.subject.to_dict().items() if s in ("org", "project", "team", "user")}
    return KeyConfig(
        record.name,
        digest,
        scopes,
        record.allow_user_override,
        tags=record.subject.tags,
        allow_client_tags=record.allow_client_tags,
        allow_client_budgets=record.allow_client_budgets,
    )


def signed_with_sigv4(headers: Mapping[str, str]) -> bool:
    """Whether a request presents an AWS SigV4 signature (boto3 and the other AWS SDKs)."""
    return headers.get("authorization", "").startswith("AWS4-HMAC-SHA256")


def authenticate_sigv4(
    method: str, url: str, headers: Mapping[str, str], body: bytes, config: GatewayConfig
) -> KeyConfig:
    """The virtual key whose SigV4 secret signed the request: its access key id is the key's
    name (:attr:`KeyConfig.sigv4_secret`), the signature recomputed with botocore
    (:func:`tokenward.guard.wire.sigv4.verify_sigv4`).

    Raises:
        GatewayError: 401 naming what is wrong (no secret is ever echoed).
    """
    from tokenward.guard.wire.sigv4 import SigV4Problem, verify_sigv4

    signing = {k.name: k for k in config.keys if k.sigv4_secret}
    try:
        name = verify_sigv4(
            method, url, headers, body, lambda akid: signing[akid].sigv4_secret if akid in signing else None
        )
    except SigV4Problem as problem:
        raise GatewayError(
            401, f"SigV4 signature refused: {problem}", type="authentication_error", code="invalid_signature"
        ) from None
    return signing[name]


def header_values(headers: Mapping[str, str], name: str) -> list[str]:
    """Every value of header ``name``: a header sent on several lines has several (a plain
    mapping, one at most)."""
    getlist = getattr(headers, "getlist", None)
    if getlist is not None:
        return list(getlist(name))
    value = headers.get(name)
    return [] if value is None else [value]


def list_header(headers: Mapping[str, str], name: str) -> str | None:
    """A comma-separated header (``x-tokenward-tags``, ``x-tokenward-session-budget``) sent on
    several lines, joined by commas as HTTP defines it (RFC 9110, 5.3), so no line is dropped;
    None when absent."""
    values = header_values(headers, name)
    return ", ".join(values) if values else None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    values = {v for v in header_values(headers, name) if v != ""}
    if len(values) > 1:
        raise GatewayError(
            400,
            f"header {name} sent with different values ({', '.join(sorted(values))}); send one",
            param=name,
        )
    value = values.pop() if values else None
    if value is None:
        return None
    if not _VALUE.match(value):
        raise GatewayError(400, f"header {name}: use 1-200 letters, digits and _.:@/-", param=name)
    return value


def body_user(body: Mapping[str, Any]) -> str | None:
    """The end user a request body names: OpenAI's ``user`` field, or Anthropic's
    ``metadata.user_id``."""
    user = body.get("user")
    if not isinstance(user, str):
        metadata = body.get("metadata")
        user = metadata.get("user_id") if isinstance(metadata, Mapping) else None
    return user if isinstance(user, str) and _VALUE.match(user) else None


_TAGS_HEADER = "x-tokenward-tags"
MAX_CLIENT_TAGS = 16
"""Tags a client may add with ``x-tokenward-tags`` on one call: each is kept on the call's event
and is a dimension of chargeback reports, so a client cannot make either grow without bound."""


def _tags(headers: Mapping[str, str], key: KeyConfig) -> tuple[tuple[str, str], ...]:
    """The key's own tags plus the ``x-tokenward-tags`` header's, in the key's project's namespace.

    Raises:
        GatewayError: 400 for the header on a key without ``allow_client_tags``, a malformed
            header, more than :data:`MAX_CLIENT_TAGS` tags, or a header tag that would replace
            one of the key's own.
    """
    project = key.subject.get("project")
    own = dict(Subject(project=project, tags=key.tags).namespaced().tags)
    header = list_header(headers, _TAGS_HEADER)
    if header is None or not header.strip():
        return tuple(sorted(own.items()))
    if not key.allow_client_tags:
        raise GatewayError(
            400,
            f"key {key.name!r} may not add tags ({_TAGS_HEADER}); set allow_client_tags: true on the key, "
            "or drop the header",
            code="client_tags_forbidden",
            param=_TAGS_HEADER,
        )
    items = header.split(",")
    if len(items) > MAX_CLIENT_TAGS:
        raise GatewayError(
            400,
            f"header {_TAGS_HEADER}: {len(items)} tags; a call may add at most {MAX_CLIENT_TAGS}",
            param=_TAGS_HEADER,
        )
    added: dict[str, str] = {}
    for item in items:
        name, eq, value = item.strip().partition("=")
        try:
            if not eq:
                raise ValueError(f"{item.strip()!r} is not NAME=VALUE")
            name, value = tag_pair(name.strip(), value.strip())
            if added.get(name, value) != value:
                raise ValueError(f"tag {name} given twice ({added[name]!r}, {value!r})")
        except ValueError as exc:
            raise GatewayError(
                400, f"header {_TAGS_HEADER}: {exc} (expected NAME=VALUE, ...)", param=_TAGS_HEADER
            ) from None
        added[name] = value
    added = dict(Subject(project=project, tags=tuple(added.items())).namespaced().tags)
    for name, value in added.items():
        if name in own and own[name] != value:
            raise GatewayError(
                400,
                f"header {_TAGS_HEADER}: tag {name} is set by key {key.name!r} to {own[name]!r}; "
                "header tags add to the key's own, never replace them",
                param=_TAGS_HEADER,
            )
    return tuple(sorted({**added, **own}.items()))


def subject_for(headers: Mapping[str, str], key: KeyConfig, body: Mapping[str, Any] | None = None) -> Subject:
    """The subject of one request.

    A key with ``allow_user_override`` charges the user named by ``x-tokenward-user``, else by the
    body (``user`` / ``metadata.user_id``); any other key charges its own user, and a body's user
    is ignored (it stays in the event's metadata as the end user). The user, agent, session and
    task of a key with a project are in that project's namespace (``<project>/<value>``).

    Tags are the key's own plus, where the key allows it, the ``x-tokenward-tags`` header's.

    Raises:
        GatewayError: 403 when the key may not name another user in the header; 400 on a
            malformed header, or tags the key may not add (see the module docstring).
    """
    scopes = dict(key.subject)
    own = Subject(project=scopes.get("project"), user=scopes.get("user")).namespaced().user
    user = _header(headers, "x-tokenward-user")
    if user is None and key.allow_user_override and body is not None:
        user = body_user(body)
    if user is not None:
        user = Subject(project=scopes.get("project"), user=user).namespaced().user
    if user is not None and user != own:
        if not key.allow_user_override:
            raise GatewayError(
                403,
                f"key {key.name!r} may not charge another user; allow_user_override is off",
                type="permission_error",
                code="user_override_forbidden",
            )
        scopes["user"] = user
    return Subject(
        org=scopes.get("org"),
        project=scopes.get("project"),
        team=scopes.get("team"),
        user=scopes.get("user"),
        key=key.name,
        agent=_header(headers, "x-tokenward-agent"),
        session=_header(headers, "x-tokenward-session"),
        task=_header(headers, "x-tokenward-task"),
        tags=_tags(headers, key),
    ).namespaced()
