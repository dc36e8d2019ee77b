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

import hashlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tokenward.clock import parse_instant
from tokenward.core.budgets import SCOPES, Budget, Subject
from tokenward.errors import ConfigError, TokenwardError, ValidationError
from tokenward.gateway.admin import inputs
from tokenward.gateway.admin.openapi import openapi
from tokenward.gateway.admin.tenancy import foreign_key_field, set_by_project
from tokenward.gateway.auth import presented_key
from tokenward.gateway.config import AdminKeyConfig, GatewayConfig, key_tags, project_problem
from tokenward.gateway.relay import GatewayState
from tokenward.gateway.supervised import ask_supervisor_to_reload
from tokenward.ledger.base import new_id
from tokenward.ledger.records import KeyRecord

__all__ = ["admin_routes"]

log = logging.getLogger("tokenward.gateway")

Handler = Callable[[Request, AdminKeyConfig], Awaitable[Response]]
Reload = Callable[[GatewayState, Path], Awaitable[GatewayConfig]]
"""Reads the config file again and uses it from the next request on (the app's ``reload_config``)."""


class AdminError(Exception):
    """An admin API error answer."""

    def __init__(
        self, status: int, message: str, *, code: str = "invalid_request", param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


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


def _owns(admin: AdminKeyConfig, budget: Budget) -> bool:
    return admin.project is None or (budget.scope == "project" and budget.subject_id == admin.project)


def _subject_from_query(request: Request, admin: AdminKeyConfig) -> Subject:
    """The subject a query names; with a project (always a project admin's own), its user, agent,
    session and task are taken in that project's namespace, as the gateway stores them."""
    values: dict[str, Any] = {s: inputs.text(request.query_params.get(s) or None, s) for s in SCOPES}
    if admin.project is not None:
        if values.get("project") not in (None, admin.project):
            raise AdminError(403, f"this admin key manages project {admin.project!r} only", code="forbidden")
        values["project"] = admin.project
    return Subject(**{k: v for k, v in values.items() if v}).namespaced()


async def _check_set_by_project(ledger: Any, admin: AdminKeyConfig, name: str, what: str) -> None:
    """Refuse a project admin's change to a budget its project's administrators did not set."""
    if admin.project is not None and not await set_by_project(ledger, name, admin.project):
        raise AdminError(
            403,
            f"budget {name!r} was set by a full administrator (or the config file); "
            f"this admin key cannot {what} it",
            code="forbidden",
        )


def _instant(request: Request, name: str) -> datetime | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    try:
        return parse_instant(value, field=name)
    except ValidationError as exc:
        raise AdminError(400, str(exc), param=name) from None


def _limit(request: Request) -> int:
    value = request.query_params.get("limit", "100")
    if not value.isdigit() or not 1 <= int(value) <= 10000:
        raise AdminError(400, "limit must be a whole number from 1 to 10000", param="limit")
    return int(value)


# -- budgets -----------------------------------------------------------------------------------
async def list_budgets(request: Request, admin: AdminKeyConfig) -> Response:
    budgets = [b for b in await _ledger(request).budgets() if _owns(admin, b)]
    return JSONResponse({"budgets": [b.to_dict() for b in budgets]})


async def put_budget(request: Request, admin: AdminKeyConfig) -> Response:
    budget = Budget.from_dict(await _json(request))
    inputs.amount(str(budget.limit), "limit")
    inputs.text(budget.subject_id, "id")
    if not _owns(admin, budget):
        raise AdminError(
            403, f"this admin key manages budgets of scope project={admin.project} only", code="forbidden"
        )
    ledger = _ledger(request)
    before = await ledger.get_budget(budget.name)
    if before is not None and not _owns(admin, before):
        raise AdminError(403, f"budget {budget.name!r} belongs to another project", code="forbidden")
    if before is not None:
        await _check_set_by_project(ledger, admin, budget.name, "replace")
    await ledger.put_budget(budget)
    await ledger.audit(
        admin.name,
        "budget.put",
        budget.name,
        before.to_dict() if before else None,
        budget.to_dict(),
        project=admin.project,
    )
    return JSONResponse(budget.to_dict(), status_code=200 if before else 201)


async def get_budget(request: Request, admin: AdminKeyConfig) -> Response:
    budget = await _ledger(request).get_budget(request.path_params["name"])
    if budget is None or not _owns(admin, budget):
        raise AdminError(404, f"no budget named {request.path_params['name']!r}", code="not_found")
    return JSONResponse(budget.to_dict())


async def delete_budget(request: Request, admin: AdminKeyConfig) -> Response:
    ledger = _ledger(request)
    name = request.path_params["name"]
    budget = await ledger.get_budget(name)
    if budget is None or not _owns(admin, budget):
        raise AdminError(404, f"no budget named {name!r}", code="not_found")
    await _check_set_by_project(ledger, admin, name, "delete")
    await ledger.delete_budget(name)
    await ledger.audit(admin.name, "budget.delete", name, budget.to_dict(), None, project=admin.project)
    return Response(status_code=204)


# -- keys --------------------------------------------------------------------------------------
def _key_view(record: KeyRecord) -> dict[str, Any]:
    view = record.to_dict()
    view.pop("key_sha256", None)
    return view


async def list_keys(request: Request, admin: AdminKeyConfig) -> Response:
    records = await _ledger(request).keys(project=admin.project)
    return JSONResponse({"keys": [_key_view(r) for r in records]})


async def create_key(request: Request, admin: AdminKeyConfig) -> Response:
    body = await _json(request)
    known = {
        "name", "user", "team", "org", "project", "allow_user_override", "expires_at", "tags",
        "allow_client_tags", "allow_client_budgets",
    }  # fmt: skip
    unknown = set(body) - known
    if unknown:
        raise AdminError(
            400, f"unknown fields {sorted(unknown)}; known: {sorted(known)}", param=sorted(unknown)[0]
        )
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise AdminError(400, "name is required", param="name")
    project = body.get("project") if admin.project is None else admin.project
    if admin.project is not None and body.get("project") not in (None, admin.project):
        raise AdminError(
            403, f"this admin key creates keys for project {admin.project!r} only", code="forbidden"
        )
    inputs.text(name, "name")
    scopes = {s: body.get(s) for s in ("user", "team", "org")}
    for scope, value in scopes.items():
        inputs.text(value, scope)
    if project is not None and (problem := project_problem(project)):
        raise AdminError(400, problem, param="project")
    inputs.text(project, "project")
    if admin.project is not None:
        await _check_project_key(request, admin.project, name.strip(), scopes)
    flags = {}
    for flag in ("allow_user_override", "allow_client_tags", "allow_client_budgets"):
        flags[flag] = body.get(flag, False)
        if not isinstance(flags[flag], bool):
            raise AdminError(400, f"{flag} must be true or false", param=flag)
    try:
        tags = key_tags(body.get("tags"))
    except ValueError as exc:
        raise AdminError(400, str(exc), param="tags") from None
    expires = body.get("expires_at")
    if expires is not None:
        if not isinstance(expires, str):
            raise AdminError(400, "expires_at must be an ISO 8601 instant", param="expires_at")
        expires = parse_instant(expires, field="expires_at")
    secret = "tw-" + secrets.token_urlsafe(32)
    subject = Subject(project=project, tags=tags, **{k: v for k, v in scopes.items() if v}).namespaced()
    record = KeyRecord(
        id=new_id("key"),
        name=name.strip(),
        key_sha256=hashlib.sha256(secret.encode()).hexdigest(),
        subject=subject,
        expires_at=expires,
        project=project,
        prefix=secret[:7],
        **flags,
    )
    ledger = _ledger(request)
    stored = await ledger.put_key(record)
    await ledger.audit(admin.name, "key.create", stored.id, None, _key_view(stored), project=stored.project)
    return JSONResponse({**_key_view(stored), "key": secret}, status_code=201)


async def _check_project_key(request: Request, project: str, name: str, scopes: dict[str, Any]) -> None:
    """Refuse a project admin's key that names an org or team, or another tenant's name or user."""
    for scope in ("org", "team"):
        if scopes.get(scope):
            raise AdminError(
                403, f"only a full administrator may set {scope} on a key", code="forbidden", param=scope
            )
    state = request.app.state.gateway
    clash = foreign_key_field(project, name, scopes.get("user"), state.config, await _ledger(request).keys())
    if clash is not None:
        value = name if clash == "name" else scopes.get("user")
        raise AdminError(
            403,
            f"the key {clash} {value!r} belongs to another project (or to a key of no project)",
            code="forbidden",
            param=clash,
        )


async def revoke_key(request: Request, admin: AdminKeyConfig) -> Response:
    ledger = _ledger(request)
    record = await ledger.get_key(request.path_params["key_id"])
    if record is None or (admin.project is not None and record.project != admin.project):
        raise AdminError(404, f"no key {request.path_params['key_id']!r}", code="not_found")
    changed = await ledger.revoke_key(record.id)
    after = await ledger.get_key(record.id)
    if changed:
        await ledger.audit(
            admin.name, "key.revoke", record.id, _key_view(record), _key_view(after), project=record.project
        )
    return JSONResponse(_key_view(after))


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
                if _owns(admin, b.budget)
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
        if budget is None or not _owns(admin, budget):
            raise AdminError(404, f"no budget named {body['budget']!r}", code="not_found")
        amounts = inputs.amounts(body.get("amounts"), budgets, budget)
        if any(a < 0 for a in amounts.values()):
            await _check_set_by_project(ledger, admin, budget.name, "credit")
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
    after = request.query_params.get("after")
    if after is not None and not after.isdigit():
        raise AdminError(400, "after must be an entry id", param="after")
    entries = await _ledger(request).audit_log(
        since=_instant(request, "since"),
        after=int(after) if after else None,
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
        Route("/admin/adjustments", _guarded(adjust), methods=["POST"]),
        Route("/admin/audit", _guarded(audit_log), methods=["GET"]),
        Route("/admin/reload", _guarded(_reload(reload_config)), methods=["POST"]),
    ]
