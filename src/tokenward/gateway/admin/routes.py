"""The admin API: budgets, virtual keys, balances, usage events, adjustments, the audit log.

Every route needs an admin key (``Authorization: Bearer <key>`` or ``x-admin-key``) from the
config's ``admin_keys``. A project-scoped admin key sees and changes only its project: budgets
of scope ``project`` with its id (and of those only the ones its project's administrators set:
see :mod:`tokenward.gateway.admin.tenancy`), keys owned by the project, and the events, balances
and adjustments of subjects in it. Every change is written to the audit log (who, what, when,
before and after). Changes go to the ledger, which every replica reads, so they apply at once.
The OpenAPI document is served at ``/admin/openapi.json``.

Inputs are checked before they reach the ledger (:mod:`tokenward.gateway.admin.inputs`); a ledger
failure is answered 503 without its message (which may name the store), and logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tokenward.clock import parse_instant
from tokenward.core.budgets import SCOPES, Subject
from tokenward.errors import ConfigError, TokenwardError, ValidationError
from tokenward.gateway.admin import inputs, operations
from tokenward.gateway.admin.openapi import openapi
from tokenward.gateway.admin.operations import AdminError, check_set_by_project, key_view, owns
from tokenward.gateway.auth import presented_key
from tokenward.gateway.config import AdminKeyConfig, GatewayConfig
from tokenward.gateway.relay import GatewayState
from tokenward.gateway.supervised import ask_supervisor_to_reload

__all__ = ["admin_routes"]

log = logging.getLogger("tokenward.gateway")

Handler = Callable[[Request, AdminKeyConfig], Awaitable[Response]]
Reload = Callable[[GatewayState, Path], Awaitable[GatewayConfig]]
"""Reads the config file again and uses it from the next request on (the app's ``reload_config``)."""


def _error(status: int, message: str, code: str, param: str | None = None) -> JSONResponse:
    if len(message) > 1000:  # a message quoting a huge value says enough in its first thousand characters
        message = message[:1000] + "..."
    body = {"error": {"message": message, "type": "admin_error", "code": code, "param": param}}
    return JSONResponse(body, status_code=status)


def _guarded(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        state = request.app.state.gateway
        presented = request.headers.get("x-admin-key") or presented_key(request.headers)
        admin = state.config.admin_key_for(presented) if presented else None
        if admin is None:
            return _error(401, "an admin key is required (Authorization: Bearer <admin key>)", "unauthorized")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in request.scope["path"]):
            # Starlette's route patterns end in "$", which also matches before a final newline:
            # /admin/budgets/b%0A would otherwise reach budget "b"
            return _error(404, "no such route (the path holds control characters)", "not_found")
        try:
            return await handler(request, admin)
        except AdminError as exc:
            return _error(exc.status, exc.message, exc.code, exc.param)
        except inputs.InputError as exc:
            return _error(400, exc.message, "invalid_request", exc.field)
        except (ValidationError, ConfigError) as exc:
            return _error(400, str(exc), "invalid_request", getattr(exc, "field", None))
        except TokenwardError as exc:
            # the store's own message may name its URL or echo a database error: logged, not answered
            log.error("admin %s %s: the ledger failed: %s", request.method, request.url.path, exc)
            return _error(503, "the ledger is unavailable; nothing was changed", "ledger_unavailable")

    return endpoint


async def _json(request: Request) -> dict[str, Any]:
    try:
        # decimals stay exact: 0.1 is 0.1, 1e999999 is out of range rather than a float infinity
        body = json.loads(await request.body(), parse_float=Decimal)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise AdminError(400, "the request body is not valid JSON", param="body") from None
    if not isinstance(body, dict):
        raise AdminError(400, "the request body must be a JSON object", param="body")
    return body


def _ledger(request: Request) -> Any:
    return request.app.state.gateway.guard.ledger


def _subject_from_query(request: Request, admin: AdminKeyConfig) -> Subject:
    """The subject a query names; with a project (always a project admin's own), its user, agent,
    session and task are taken in that project's namespace, as the gateway stores them."""
    values: dict[str, Any] = {s: inputs.text(request.query_params.get(s) or None, s) for s in SCOPES}
    if admin.project is not None:
        if values.get("project") not in (None, admin.project):
            raise AdminError(403, f"this admin key manages project {admin.project!r} only", code="forbidden")
        values["project"] = admin.project
    return Subject(**{k: v for k, v in values.items() if v}).namespaced()


def _instant(request: Request, name: str) -> datetime | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    try:
        return parse_instant(value, field=name)
    except ValidationError as exc:
        raise AdminError(400, str(exc), param=name) from None


def _limit(request: Request) -> int:
    value = inputs.whole_number(request.query_params.get("limit", "100"))
    if value is None or not 1 <= value <= 10000:
        raise AdminError(400, "limit must be a whole number from 1 to 10000", param="limit")
    return value


# -- budgets -----------------------------------------------------------------------------------
async def list_budgets(request: Request, admin: AdminKeyConfig) -> Response:
    budgets = [b for b in await _ledger(request).budgets() if owns(admin, b)]
    return JSONResponse({"budgets": [b.to_dict() for b in budgets]})


async def get_budget(request: Request, admin: AdminKeyConfig) -> Response:
    budget = await _ledger(request).get_budget(request.path_params["name"])
    if budget is None or not owns(admin, budget):
        raise AdminError(404, f"no budget named {request.path_params['name']!r}", code="not_found")
    return JSONResponse(budget.to_dict())


async def put_budget(request: Request, admin: AdminKeyConfig) -> Response:
    stored, created = await operations.put_budget(_ledger(request), admin, await _json(request))
    return JSONResponse(stored, status_code=201 if created else 200)


async def delete_budget(request: Request, admin: AdminKeyConfig) -> Response:
    await operations.delete_budget(_ledger(request), admin, request.path_params["name"])
    return Response(status_code=204)


# -- keys --------------------------------------------------------------------------------------
async def list_keys(request: Request, admin: AdminKeyConfig) -> Response:
    records = await _ledger(request).keys(project=admin.project)
    return JSONResponse({"keys": [key_view(r) for r in records]})


async def create_key(request: Request, admin: AdminKeyConfig) -> Response:
    body = await _json(request)
    view = await operations.create_key(_ledger(request), request.app.state.gateway.config, admin, body)
    return JSONResponse(view, status_code=201)


async def revoke_key(request: Request, admin: AdminKeyConfig) -> Response:
    view = await operations.revoke_key(_ledger(request), admin, request.path_params["key_id"])
    return JSONResponse(view)


# -- balances, events, adjustments, audit ---------------------------------------------------------
async def balances(request: Request, admin: AdminKeyConfig) -> Response:
    subject = _subject_from_query(request, admin)
    rows = await _ledger(request).balances(subject)
    return JSONResponse(
        {
            "subject": subject.to_dict(),
            "balances": [
                {
                    **b.budget.to_dict(),
                    "subject_id": b.subject_id,
                    "window_key": b.window_key,
                    "spent": str(b.spent),
                    "held": str(b.held),
                    "remaining": str(b.remaining),
                    "reset_at": b.reset_at.isoformat().replace("+00:00", "Z") if b.reset_at else None,
                }
                for b in rows
                if owns(admin, b.budget)
            ],
        }
    )


async def events(request: Request, admin: AdminKeyConfig) -> Response:
    subject = _subject_from_query(request, admin)
    found = await _ledger(request).events(
        subject=subject,
        since=_instant(request, "since"),
        until=_instant(request, "until"),
        limit=_limit(request),
    )
    return JSONResponse({"events": [e.to_dict() for e in found]})


async def denials(request: Request, admin: AdminKeyConfig) -> Response:
    """Recorded denials, newest first (:meth:`Ledger.denials`), filtered by the subject the
    query names (a project admin: its own project only), ``since``/``until``, ``budget``, paged
    by ``limit`` and ``offset``."""
    subject = _subject_from_query(request, admin)
    offset = inputs.whole_number(request.query_params.get("offset", "0"))
    if offset is None:
        raise AdminError(400, "offset must be a whole number from 0 to 10^18 - 1", param="offset")
    found = await _ledger(request).denials(
        since=_instant(request, "since"),
        until=_instant(request, "until"),
        subject=subject if subject.to_dict() else None,
        budget=inputs.text(request.query_params.get("budget") or None, "budget"),
        limit=_limit(request),
        offset=offset,
    )
    return JSONResponse({"denials": [d.to_dict() for d in found], "refusals": sum(d.count for d in found)})


_ADJUSTMENT_FIELDS = {"budget", "subject", "subject_id", "amounts", "reason", "id"}


async def adjust(request: Request, admin: AdminKeyConfig) -> Response:
    body = await _json(request)
    unknown = set(body) - _ADJUSTMENT_FIELDS
    if unknown:
        raise AdminError(
            400,
            f"unknown fields {sorted(unknown)}; known: {sorted(_ADJUSTMENT_FIELDS)}",
            param=sorted(unknown)[0],
        )
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise AdminError(400, "reason is required", param="reason")
    inputs.text(reason, "reason", longest=2000, lines=True)
    adjustment_id = inputs.identifier(body.get("id"), "id")
    subject_id = inputs.identifier(body.get("subject_id"), "subject_id")
    if ("budget" in body) == ("subject" in body):
        raise AdminError(400, "name a budget (budget) or a subject (subject), not both", param="budget")
    ledger = _ledger(request)
    budgets = await ledger.budgets()
    if "budget" in body:
        if not isinstance(body["budget"], str):
            raise AdminError(400, "budget must be a budget's name", param="budget")
        budget = next((b for b in budgets if b.name == body["budget"]), None)
        if budget is None or not owns(admin, budget):
            raise AdminError(404, f"no budget named {body['budget']!r}", code="not_found")
        amounts = inputs.amounts(body.get("amounts"), budgets, budget)
        if any(a < 0 for a in amounts.values()):
            await check_set_by_project(ledger, admin, budget.name, "credit")
        target: Any = budget.name
    else:
        if admin.project is not None:
            # A subject reaches every budget that applies to it (user, org...), most of which a
            # project admin does not own: it adjusts its project's budgets by name only.
            raise AdminError(
                403,
                f"this admin key adjusts the budgets of project {admin.project!r} by name (budget) only",
                code="forbidden",
            )
        target = inputs.subject(body["subject"]).namespaced()
        amounts = inputs.amounts(body.get("amounts"), budgets, None)
    adjustment = await ledger.adjust(
        target,
        amounts,
        reason=reason,
        actor=admin.name,
        subject_id=subject_id,
        adjustment_id=adjustment_id,
    )
    view = adjustment.to_dict()
    await ledger.audit(admin.name, "adjustment", adjustment.id, None, view, project=admin.project)
    return JSONResponse(view, status_code=201)


async def audit_log(request: Request, admin: AdminKeyConfig) -> Response:
    raw = request.query_params.get("after")
    after = None if raw is None else inputs.whole_number(raw)
    if raw is not None and after is None:
        raise AdminError(400, "after must be an entry id (a whole number)", param="after")
    entries = await _ledger(request).audit_log(
        since=_instant(request, "since"),
        after=after,
        limit=_limit(request),
        project=admin.project,
    )
    return JSONResponse({"entries": [e.to_dict() for e in entries]})


def _reload(reload_config: Reload) -> Handler:
    async def reload(request: Request, admin: AdminKeyConfig) -> Response:
        state = request.app.state.gateway
        if admin.project is not None:
            raise AdminError(403, "only a full admin key may reload the configuration", code="forbidden")
        path = getattr(request.app.state, "config_path", None)
        if path is None:
            raise AdminError(409, "this gateway was not started from a config file", code="no_config_file")
        config = await reload_config(state, path)
        await state.guard.ledger.audit(
            admin.name, "config.reload", str(path), None, {"source": config.source}
        )
        # under ``tokenward serve --workers N``: the supervisor reloads every worker (SIGHUP)
        ask_supervisor_to_reload()
        return JSONResponse({"reloaded": str(path)})

    return reload


async def openapi_document(request: Request) -> Response:
    return JSONResponse(openapi())


def admin_routes(reload_config: Reload) -> list[Route]:
    """The admin API's routes (mounted under ``/admin``); ``POST /admin/reload`` runs ``reload_config``."""
    return [
        Route("/admin/openapi.json", openapi_document, methods=["GET"]),
        Route("/admin/budgets", _guarded(list_budgets), methods=["GET"]),
        Route("/admin/budgets", _guarded(put_budget), methods=["POST"]),
        Route("/admin/budgets/{name:path}", _guarded(get_budget), methods=["GET"]),
        Route("/admin/budgets/{name:path}", _guarded(delete_budget), methods=["DELETE"]),
        Route("/admin/keys", _guarded(list_keys), methods=["GET"]),
        Route("/admin/keys", _guarded(create_key), methods=["POST"]),
        Route("/admin/keys/{key_id}", _guarded(revoke_key), methods=["DELETE"]),
        Route("/admin/balances", _guarded(balances), methods=["GET"]),
        Route("/admin/events", _guarded(events), methods=["GET"]),
        Route("/admin/denials", _guarded(denials), methods=["GET"]),
        Route("/admin/adjustments", _guarded(adjust), methods=["POST"]),
        Route("/admin/audit", _guarded(audit_log), methods=["GET"]),
        Route("/admin/reload", _guarded(_reload(reload_config)), methods=["POST"]),
    ]
