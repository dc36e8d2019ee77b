"""The dashboard's sign-in sessions and CSRF tokens.

Signing in with an admin key gives the browser a cookie (``tw_ui``) holding a random session id,
the admin key's name, project and fingerprint (the HMAC of its digest), and an expiry, signed with
HMAC-SHA256; never the key. The cookie is ``HttpOnly``, ``SameSite=Strict``, ``Path=/ui`` and
``Secure`` when the page was served over HTTPS. The signing secret is the config's
``dashboard_secret``, else the ledger's shared secret ``dashboard``
(:meth:`~tokenward.ledger.admin.AdminRecords.secret`), so a cookie made by one worker or replica is
honoured by every other. A session is valid while it has not expired, its admin key is still in the
configuration with the same name and project (removing a key, or replacing it with another under
the same name, ends its sessions), and its id is still open in the ledger: signing in takes a lease
``dashboard-signin:<id>`` (the ledger's lease records, :mod:`tokenward.ledger.leases`, living as
long as the cookie), signing out gives it back, so a copy of the cookie taken before sign-out is
refused by every worker and replica afterwards.

Every change (a POST) carries a CSRF token, the HMAC of the session id under the same secret,
in a form field ``csrf`` or the ``x-csrf-token`` header; a POST without it, or from another
origin (``Origin`` header), is refused with 403 and changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tokenward.gateway.config import AdminKeyConfig

__all__ = [
    "COOKIE",
    "SESSION_SECONDS",
    "UiSession",
    "clear_cookie",
    "csrf_ok",
    "read_session",
    "set_cookie",
    "sign_out",
    "signing_key",
]

COOKIE = "tw_ui"
SESSION_SECONDS = 8 * 3600
"""How long a sign-in lasts (8 hours)."""
LEASE_PREFIX = "dashboard-signin:"
"""The ledger lease key of a signed-in session is this prefix and its id."""
_HOLDER = "dashboard"


def _ledger(request: Request) -> Any:
    return request.app.state.gateway.guard.ledger


@dataclass(frozen=True, slots=True)
class UiSession:
    """A signed-in browser: its random id, the admin key it signed in with, when it expires
    (Unix seconds), and its CSRF token."""

    sid: str
    admin: AdminKeyConfig
    expires: int
    csrf: str


async def signing_key(request: Request) -> bytes:
    """The key signing cookies: the config's ``dashboard_secret``, else the ledger's shared one
    (read once per process)."""
    state = request.app.state
    cached = getattr(state, "ui_secret", None)
    if cached is None:
        gateway = state.gateway
        configured = gateway.config.dashboard_secret
        secret = configured or await gateway.guard.ledger.secret("dashboard")
        cached = state.ui_secret = hashlib.sha256(("tokenward-dashboard:" + secret).encode()).digest()
    return bytes(cached)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())


def _same(presented: str, expected: str) -> bool:
    """Whether ``presented`` equals ``expected``, in constant time; as bytes, since
    ``hmac.compare_digest`` raises TypeError on text holding other than ASCII characters (which a
    client may send in a cookie, a header or a form field)."""
    return hmac.compare_digest(
        presented.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def _csrf(key: bytes, sid: str) -> str:
    return _sign(key, "csrf:" + sid)


def _fingerprint(key: bytes, admin: AdminKeyConfig) -> str:
    """Which key of ``admin`` a session signed in with (the HMAC of its digest): a key replaced
    under the same name ends the sessions of the old one."""
    return _sign(key, "admin:" + admin.key_sha256)[:22]


def _admins(request: Request) -> tuple[AdminKeyConfig, ...]:
    state = request.app.state
    return (*state.gateway.config.admin_keys, *getattr(state, "ui_admins", ()))


async def set_cookie(request: Request, response: Response, admin: AdminKeyConfig) -> None:
    """Sign ``admin`` in: a new random session id in the cookie of ``response``."""
    key = await signing_key(request)
    sid = secrets.token_urlsafe(24)
    await _ledger(request).join_lease(LEASE_PREFIX + sid, _HOLDER, ttl=timedelta(seconds=SESSION_SECONDS))
    body = {
        "sid": sid,
        "a": admin.name,
        "p": admin.project,
        "k": _fingerprint(key, admin),
        "exp": int(time.time()) + SESSION_SECONDS,
    }
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    response.set_cookie(
        COOKIE,
        f"{payload}.{_sign(key, payload)}",
        max_age=SESSION_SECONDS,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


async def sign_out(request: Request, response: Response, session: UiSession) -> None:
    """Sign ``session`` out: its id is closed in the ledger (every copy of its cookie is refused
    from now on, by every worker and replica) and the cookie is removed from the browser."""
    await _ledger(request).leave_lease(LEASE_PREFIX + session.sid, _HOLDER)
    clear_cookie(request, response)


def clear_cookie(request: Request, response: Response) -> None:
    """Remove the cookie from the browser (the session stays open in the ledger: see
    :func:`sign_out`)."""
    response.delete_cookie(
        COOKIE, path="/ui", httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )


async def read_session(request: Request) -> UiSession | None:
    """The signed-in session of ``request``, or None (no cookie, a bad signature, expired, its
    admin key is gone, or it was signed out)."""
    raw = request.cookies.get(COOKIE)
    if not raw or raw.count(".") != 1:
        return None
    payload, signature = raw.split(".")
    key = await signing_key(request)
    if not _same(signature, _sign(key, payload)):
        return None
    try:
        body: dict[str, Any] = json.loads(_unb64(payload))
    except ValueError:
        return None
    if not isinstance(body, dict) or int(body.get("exp", 0)) <= time.time():
        return None
    signed_with = body.get("k")
    admin = next(
        (
            a
            for a in _admins(request)
            if a.name == body.get("a")
            and a.project == body.get("p")
            and isinstance(signed_with, str)
            and _same(signed_with, _fingerprint(key, a))
        ),
        None,
    )
    if admin is None:
        return None
    sid = str(body["sid"])
    if await _ledger(request).lease_group(LEASE_PREFIX + sid) is None:
        return None  # signed out (or never opened in this ledger)
    return UiSession(sid, admin, int(body["exp"]), _csrf(key, sid))


def same_origin(request: Request) -> bool:
    """Whether a POST comes from this site: its ``Origin`` (when sent) is ours."""
    origin = request.headers.get("origin")
    if origin is None:  # same-origin form posts from older browsers send none; SameSite still holds
        return True
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


def csrf_ok(request: Request, session: UiSession, form: Any) -> bool:
    """Whether a POST carries this session's CSRF token (form field or header) and comes from
    this origin."""
    if not same_origin(request):
        return False
    token = request.headers.get("x-csrf-token") or (form.get("csrf") if form is not None else None) or ""
    return isinstance(token, str) and _same(token, session.csrf)
