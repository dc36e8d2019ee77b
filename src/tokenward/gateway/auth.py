"""Who is calling: the virtual key, and the subject the call is charged to.

Precedence (highest first):

1. the key's own subject (``org``, ``project``, ``team``, ``user``, and the key's name as ``key``);
2. ``x-tokenward-user``, only for keys with ``allow_user_override`` (else 403);
3. ``x-tokenward-session``, ``x-tokenward-agent``, ``x-tokenward-task`` add finer attribution,
   which a key cannot use to escape its own user or project budgets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from tokenward.core.budgets import Subject
from tokenward.gateway.config import GatewayConfig, KeyConfig
from tokenward.gateway.errors import GatewayError

__all__ = ["authenticate", "subject_for"]

_VALUE = re.compile(r"^[\w.:@/\-]{1,200}$")


def authenticate(headers: Mapping[str, str], config: GatewayConfig) -> KeyConfig:
    """The virtual key presented as ``Authorization: Bearer <key>`` or ``x-api-key: <key>``.

    Raises:
        GatewayError: 401 when no key, or an unknown one, is presented.
    """
    presented = headers.get("x-api-key", "").strip()
    auth = headers.get("authorization", "")
    if not presented and auth[:7].lower() == "bearer ":
        presented = auth[7:].strip()
    if not presented:
        raise GatewayError(
            401,
            "no tokenward key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
            type="authentication_error",
            code="missing_api_key",
        )
    key = config.key_for(presented)
    if key is None:
        raise GatewayError(401, "unknown tokenward key", type="authentication_error", code="invalid_api_key")
    return key


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None or value == "":
        return None
    if not _VALUE.match(value):
        raise GatewayError(400, f"header {name}: use 1-200 letters, digits and _.:@/-", param=name)
    return value


def subject_for(headers: Mapping[str, str], key: KeyConfig) -> Subject:
    """The subject of one request.

    Raises:
        GatewayError: 403 when the key may not name another user; 400 on a malformed header.
    """
    scopes = dict(key.subject)
    user = _header(headers, "x-tokenward-user")
    if user is not None and user != scopes.get("user"):
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
    )
