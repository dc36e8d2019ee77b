"""The dashboard's pages: server-rendered (Jinja2, every value escaped), live parts refreshed by
htmx every second from the ledger, changes through :mod:`tokenward.gateway.admin.operations`
(the admin API's own validation, tenancy rules and audit), each POST checked for its CSRF token.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from tokenward.errors import ConfigError, TokenwardError, ValidationError
from tokenward.gateway.admin import inputs, operations
from tokenward.gateway.admin.operations import AdminError
from tokenward.gateway.ui import data
from tokenward.gateway.ui.session import UiSession, csrf_ok, read_session, set_cookie, sign_out

__all__ = ["ui_routes"]

log = logging.getLogger("tokenward.gateway")

_HERE = Path(__file__).parent
PAGE_SIZE = 50

try:
    import jinja2
except ImportError:  # pragma: no cover - a main dependency; a broken install says so
    jinja2 = None  # type: ignore[assignment]

_env: Any = None


def _templates() -> Any:
    global _env
    if _env is None:
        if jinja2 is None:  # pragma: no cover
            raise ConfigError('the dashboard needs Jinja2: pip install "jinja2>=3.1"')
        _env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(_HERE / "templates")),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        _env.filters["usd"] = _usd
        _env.filters["num"] = lambda n: "-" if n is None else f"{n:,}"
        _env.filters["when"] = _when
        _env.filters["amount"] = _amount
    return _env


def _amount(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value.normalize():f}" if isinstance(value, Decimal) else str(value)


def _usd(value: Decimal | None) -> str:
    if value is None:
        return "unpriced"
    if value and abs(value) < Decimal("0.01"):
        return f"${value:.6f}"
    return f"${value:,.2f}"


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",  # "no-referrer" would make form posts send Origin: null
    "cache-control": "no-store",
}


def render(name: str, code: int = 200, /, **context: Any) -> HTMLResponse:
    """Render template ``name`` with the dashboard's security headers."""
    html = _templates().get_template(name).render(**context)
    return HTMLResponse(html, status_code=code, headers=_HEADERS)


Page = Callable[[Request, UiSession], Awaitable[Response]]


def _page(handler: Page, *, change: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """A signed-in page: without a session, GETs go to the sign-in page and POSTs get 403; a POST
    without this session's CSRF token (or from another origin) gets 403 and changes nothing."""

    async def endpoint(request: Request) -> Response:
        try:
            session = await read_session(request)  # reads the ledger (its secret, the sign-in)
        except TokenwardError as exc:
            return _unavailable(request, exc, None)
        if session is None:
            if change:
                return render("error.html", 403, message="sign in first", session=None)
            return RedirectResponse("/ui/signin", status_code=303)
        if change:
            form = await request.form()
            if not csrf_ok(request, session, form):
                return render("error.html", 403, message="refused: missing or wrong CSRF token", session=None)
        try:
            return await handler(request, session)
        except TokenwardError as exc:
            return _unavailable(request, exc, session)

    return endpoint


def _unavailable(request: Request, exc: TokenwardError, session: UiSession | None) -> Response:
    """A ledger failure: logged, answered 503 without the store's message (it may name its URL)."""
    log.error("dashboard %s %s: the ledger failed: %s", request.method, request.url.path, exc)
    return render(
        "error.html", 503, message="the ledger is unavailable; nothing was changed", session=session
    )


def _public(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """A page open before signing in (the sign-in form): a ledger failure is a 503, as on every
    signed-in page."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except TokenwardError as exc:
            return _unavailable(request, exc, None)

    return endpoint


def _ledger(request: Request) -> Any:
    return request.app.state.gateway.guard.ledger


def _now(request: Request) -> datetime:
    clock = getattr(_ledger(request), "clock", None)
    return clock.now() if clock is not None else datetime.now().astimezone()


def _actor(request: Request, session: UiSession) -> str:
    return f"dashboard:{session.admin.name}"


def _base(request: Request, session: UiSession, **more: Any) -> dict[str, Any]:
    return {"session": session, "admin": session.admin, "now": _now(request), **more}


def _page_number(request: Request) -> int:
    """The ``page`` asked for, 1 when none or not a page number."""
    number = inputs.whole_number(request.query_params.get("page", "1"))
    return number if number is not None and number >= 1 else 1


# -- sign in / out -------------------------------------------------------------------------------
async def signin_page(request: Request) -> Response:
    token = request.query_params.get("token")
    once: set[str] | None = getattr(request.app.state, "ui_once", None)
    if token and once is not None and token in once:
        once.discard(token)  # a one-time sign-in URL works once
        response = RedirectResponse("/ui", status_code=303)
        await set_cookie(request, response, request.app.state.ui_admins[0])
        return response
    return render("signin.html", error=None, session=None)


async def signin(request: Request) -> Response:
    from tokenward.gateway.ui.session import same_origin

    if not same_origin(request):
        return render("error.html", 403, message="refused: cross-origin sign-in", session=None)
    form = await request.form()
    key = form.get("key")
    config = request.app.state.gateway.config
    admin = config.admin_key_for(key) if isinstance(key, str) and key else None
    if admin is None:
        return render("signin.html", 401, error="that is not an admin key", session=None)
    response = RedirectResponse("/ui", status_code=303)
    await set_cookie(request, response, admin)
    return response


async def signout(request: Request, session: UiSession) -> Response:
    response = RedirectResponse("/ui/signin", status_code=303)
    await sign_out(request, response, session)
    return response


# -- overview --------------------------------------------------------------------------------------
def _by(request: Request) -> str:
    by = request.query_params.get("by", "model")
    return by if by in data.DIMENSIONS else "model"


async def overview_page(request: Request, session: UiSession) -> Response:
    view = await data.overview(_ledger(request), session.admin, _now(request), _by(request))
    return render(
        "overview.html", **_base(request, session, view=view, by=_by(request), dimensions=data.DIMENSIONS)
    )


async def overview_live(request: Request, session: UiSession) -> Response:
    view = await data.overview(_ledger(request), session.admin, _now(request), _by(request))
    return render("_overview_live.html", **_base(request, session, view=view, by=_by(request)))


# -- budgets ---------------------------------------------------------------------------------------
async def budgets_page(
    request: Request, session: UiSession, *, error: str | None = None, status: int = 200
) -> Response:
    rows = await data.budget_rows(_ledger(request), session.admin, _now(request))
    return render("budgets.html", status, **_base(request, session, rows=rows, error=error))


async def _budgets_get(request: Request, session: UiSession) -> Response:
    return await budgets_page(request, session)


def _budget_body(form: Any, admin: Any) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for name in ("name", "scope", "id", "meter", "limit", "window", "mode", "action"):
        value = form.get(name)
        if isinstance(value, str) and value.strip():
            body[name] = value.strip()
    if admin.project is not None:
        body.setdefault("scope", "project")
        body.setdefault("id", admin.project)
    return body


async def _change(request: Request, session: UiSession, run: Callable[[], Awaitable[Any]], back: Page) -> Any:
    """Run a change; its refusal is shown on the page (with the admin API's status)."""
    try:
        return await run()
    except AdminError as exc:
        return await back(request, session, error=exc.message, status=exc.status)  # type: ignore[call-arg]
    except inputs.InputError as exc:
        return await back(request, session, error=exc.message, status=400)  # type: ignore[call-arg]
    except (ValidationError, ConfigError) as exc:
        return await back(request, session, error=str(exc), status=400)  # type: ignore[call-arg]


async def budget_put(request: Request, session: UiSession) -> Response:
    form = await request.form()
    body = _budget_body(form, session.admin)

    async def run() -> Response:
        await operations.put_budget(_ledger(request), session.admin, body, actor=_actor(request, session))
        return RedirectResponse("/ui/budgets", status_code=303)

    return await _change(request, session, run, budgets_page)  # type: ignore[no-any-return]


async def budget_delete(request: Request, session: UiSession) -> Response:
    form = await request.form()
    name = str(form.get("name") or "")

    async def run() -> Response:
        await operations.delete_budget(_ledger(request), session.admin, name, actor=_actor(request, session))
        return RedirectResponse("/ui/budgets", status_code=303)

    return await _change(request, session, run, budgets_page)  # type: ignore[no-any-return]


# -- sessions --------------------------------------------------------------------------------------
async def sessions_page(request: Request, session: UiSession) -> Response:
    now = _now(request)
    days = inputs.whole_number(request.query_params.get("days", "1"))
    span = days if days is not None and 1 <= days <= 90 else 1
    status = request.query_params.get("status") or ""
    user = (request.query_params.get("user") or "").strip()
    rows = await data.session_rows(_ledger(request), session.admin, now, now - timedelta(days=span))
    if status:
        rows = [r for r in rows if r.status == status]
    if user:
        rows = [r for r in rows if r.user and (r.user == user or r.user.endswith("/" + user))]
    statuses = ("active", "idle", "ended", "cut off", "refused", "stopped")
    return render(
        "sessions.html",
        **_base(request, session, rows=rows, days=span, status=status, user=user, statuses=statuses),
    )


async def _session_view(request: Request, session: UiSession) -> dict[str, Any] | None:
    sid = request.query_params.get("id") or ""
    if not sid:
        return None
    ledger = _ledger(request)
    events = await ledger.events(subject=data.scope_subject(session.admin, session=sid))
    if not events:
        return None
    steps, context = [], 0
    for e in events:
        context = (e.usage.input_tokens or 0) + (e.usage.output_tokens or 0)
        steps.append(
            {
                "event": e,
                "context": context,
                "clamped_by": e.metadata.get("clamped_by"),
                "bound": e.metadata.get("max_output_tokens"),
                "requested": e.metadata.get("requested_output_tokens"),
            }
        )
    denials, available = await data.visible_denials(ledger, session.admin, session=sid, limit=100)
    refused = [d for d in denials if getattr(getattr(d, "subject", None), "session", None) == sid]
    last_refusal = max(refused, key=lambda d: d.at) if refused else None
    widest = max((s["context"] for s in steps), default=0) or 1
    return {
        "sid": sid,
        "steps": steps,
        "refusal": last_refusal,
        "denials_available": available,
        "widest": widest,
        "total": sum((e.cost_usd or Decimal(0)) for e in events),
    }


async def session_page(request: Request, session: UiSession) -> Response:
    view = await _session_view(request, session)
    if view is None:
        return render("error.html", 404, message="no such session", **_base(request, session))
    return render("session.html", **_base(request, session, view=view))


async def session_live(request: Request, session: UiSession) -> Response:
    view = await _session_view(request, session)
    if view is None:
        return render("error.html", 404, message="no such session", **_base(request, session))
    return render("_session_live.html", **_base(request, session, view=view))


# -- events and denials ----------------------------------------------------------------------------
async def _filtered_events(request: Request, session: UiSession) -> tuple[list[Any], dict[str, str]]:
    q = request.query_params
    values = {
        k: (q.get(k) or "").strip()
        for k in ("user", "project", "session", "model", "status", "since", "until")
    }
    since = until = None
    try:
        from tokenward.clock import parse_instant

        since = parse_instant(values["since"], field="since") if values["since"] else None
        until = parse_instant(values["until"], field="until") if values["until"] else None
    except ValidationError as exc:
        raise AdminError(400, str(exc), param=exc.field or "since") from None
    if since is None and until is None and not values["session"]:
        # no time named: the last day (a month of a busy ledger is too much to page through)
        since = _now(request) - timedelta(days=1)
        values["since"] = since.isoformat().replace("+00:00", "Z")
    project = values["project"] if session.admin.project is None else None
    subject = data.scope_subject(
        session.admin, user=values["user"] or None, session=values["session"] or None, project=project or None
    )
    if subject is not None and subject.project:
        subject = subject.namespaced()
    events = await _ledger(request).events(subject=subject, since=since, until=until)
    events = data.filter_events(events, model=values["model"] or None, status=values["status"] or None)
    events.reverse()  # newest first
    return events, values


async def events_page(request: Request, session: UiSession) -> Response:
    try:
        events, values = await _filtered_events(request, session)
    except AdminError as exc:
        return render("error.html", exc.status, message=exc.message, **_base(request, session))
    number = _page_number(request)
    shown = events[(number - 1) * PAGE_SIZE : number * PAGE_SIZE]
    from urllib.parse import urlencode

    query = urlencode({k: v for k, v in values.items() if v})
    pages = max(1, -(-len(events) // PAGE_SIZE))
    return render(
        "events.html",
        **_base(
            request,
            session,
            events=shown,
            values=values,
            page=number,
            pages=pages,
            total=len(events),
            query=query,
        ),
    )


async def events_csv(request: Request, session: UiSession) -> Response:
    try:
        events, _ = await _filtered_events(request, session)
    except AdminError as exc:
        return render("error.html", exc.status, message=exc.message, **_base(request, session))
    return Response(
        data.events_csv(events),
        media_type="text/csv; charset=utf-8",
        headers={
            "content-disposition": 'attachment; filename="tokenward-events.csv"',
            "cache-control": "no-store",
        },
    )


async def denials_page(request: Request, session: UiSession) -> Response:
    number = _page_number(request)
    denials, available = await data.visible_denials(
        _ledger(request), session.admin, limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE
    )
    return render(
        "denials.html", **_base(request, session, denials=denials, available=available, page=number)
    )


async def denials_live(request: Request, session: UiSession) -> Response:
    denials, available = await data.visible_denials(_ledger(request), session.admin, limit=PAGE_SIZE)
    return render("_denials_live.html", **_base(request, session, denials=denials, available=available))


# -- keys ----------------------------------------------------------------------------------------
async def keys_page(
    request: Request, session: UiSession, *, error: str | None = None, status: int = 200, created: Any = None
) -> Response:
    records = await _ledger(request).keys(project=session.admin.project)
    return render("keys.html", status, **_base(request, session, keys=records, error=error, created=created))


async def _keys_get(request: Request, session: UiSession) -> Response:
    return await keys_page(request, session)


async def key_create(request: Request, session: UiSession) -> Response:
    form = await request.form()
    body: dict[str, Any] = {}
    for name in ("name", "user", "team", "org", "project", "expires_at"):
        value = form.get(name)
        if isinstance(value, str) and value.strip():
            body[name] = value.strip()
    if form.get("allow_user_override"):
        body["allow_user_override"] = True
    config = request.app.state.gateway.config

    async def run() -> Response:
        view = await operations.create_key(
            _ledger(request), config, session.admin, body, actor=_actor(request, session)
        )
        return await keys_page(request, session, created=view, status=201)

    return await _change(request, session, run, keys_page)  # type: ignore[no-any-return]


async def key_revoke(request: Request, session: UiSession) -> Response:
    form = await request.form()
    key_id = str(form.get("id") or "")

    async def run() -> Response:
        await operations.revoke_key(_ledger(request), session.admin, key_id, actor=_actor(request, session))
        return RedirectResponse("/ui/keys", status_code=303)

    return await _change(request, session, run, keys_page)  # type: ignore[no-any-return]


def ui_routes() -> list[BaseRoute]:
    """The dashboard's routes, under ``/ui`` (its assets under ``/ui/static``)."""
    return [
        Route("/ui", _page(overview_page), methods=["GET"]),
        Route("/ui/", _page(overview_page), methods=["GET"]),
        Route("/ui/live/overview", _page(overview_live), methods=["GET"]),
        Route("/ui/signin", _public(signin_page), methods=["GET"]),
        Route("/ui/signin", _public(signin), methods=["POST"]),
        Route("/ui/signout", _page(signout, change=True), methods=["POST"]),
        Route("/ui/budgets", _page(_budgets_get), methods=["GET"]),
        Route("/ui/budgets", _page(budget_put, change=True), methods=["POST"]),
        Route("/ui/budgets/delete", _page(budget_delete, change=True), methods=["POST"]),
        Route("/ui/sessions", _page(sessions_page), methods=["GET"]),
        Route("/ui/session", _page(session_page), methods=["GET"]),
        Route("/ui/live/session", _page(session_live), methods=["GET"]),
        Route("/ui/events", _page(events_page), methods=["GET"]),
        Route("/ui/events.csv", _page(events_csv), methods=["GET"]),
        Route("/ui/denials", _page(denials_page), methods=["GET"]),
        Route("/ui/live/denials", _page(denials_live), methods=["GET"]),
        Route("/ui/keys", _page(_keys_get), methods=["GET"]),
        Route("/ui/keys", _page(key_create, change=True), methods=["POST"]),
        Route("/ui/keys/revoke", _page(key_revoke, change=True), methods=["POST"]),
        Mount("/ui/static", app=StaticFiles(directory=str(_HERE / "static")), name="ui-static"),
    ]
