"""The admin changes themselves (budgets put and deleted, keys created and revoked), shared by
the admin API (:mod:`tokenward.gateway.admin.routes`), ``tokenward budgets|keys --ledger`` (which
serves those routes in-process) and the dashboard (:mod:`tokenward.gateway.ui`): one place for
their validation, their tenancy rules (:mod:`tokenward.gateway.admin.tenancy`) and their audit
entries.

Each function takes the (async) ledger, the acting :class:`~tokenward.gateway.config.AdminKeyConfig`
and the request's values, and raises :class:`AdminError` (an HTTP status, a message, a code, the
field), :class:`~tokenward.gateway.admin.inputs.InputError`, or the core's
:class:`~tokenward.errors.ValidationError` for a bad budget. ``actor`` names who is written to the
audit log (the admin key's name unless given: the dashboard writes ``dashboard:<name>``).
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from tokenward.clock import parse_instant
from tokenward.core.budgets import Budget, Subject
from tokenward.gateway.admin import inputs
from tokenward.gateway.admin.tenancy import foreign_key_field, set_by_project
from tokenward.gateway.config import AdminKeyConfig, GatewayConfig, key_tags, project_problem
from tokenward.ledger.base import new_id
from tokenward.ledger.records import KeyRecord

__all__ = [
    "AdminError",
    "check_set_by_project",
    "create_key",
    "delete_budget",
    "key_view",
    "owns",
    "put_budget",
    "revoke_key",
]


class AdminError(Exception):
    """An admin error answer: ``status`` (HTTP), ``message``, ``code``, ``param`` (the field)."""

    def __init__(
        self, status: int, message: str, *, code: str = "invalid_request", param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def owns(admin: AdminKeyConfig, budget: Budget) -> bool:
    """Whether ``admin`` sees ``budget``: a full admin sees all, a project admin its project's."""
    return admin.project is None or (budget.scope == "project" and budget.subject_id == admin.project)


async def check_set_by_project(ledger: Any, admin: AdminKeyConfig, name: str, what: str) -> None:
    """Refuse a project admin's change to a budget its project's administrators did not set.

    Raises:
        AdminError: 403.
    """
    if admin.project is not None and not await set_by_project(ledger, name, admin.project):
        raise AdminError(
            403,
            f"budget {name!r} was set by a full administrator (or the config file); "
            f"this admin key cannot {what} it",
            code="forbidden",
        )


async def put_budget(
    ledger: Any, admin: AdminKeyConfig, body: dict[str, Any], *, actor: str | None = None
) -> tuple[dict[str, Any], bool]:
    """Create or replace a budget from its JSON form (:meth:`Budget.from_dict`), audited as
    ``budget.put``.

    Returns:
        The stored budget's JSON form, and whether it was created (not replaced).

    Raises:
        ValidationError / InputError: a malformed budget.
        AdminError: 403 when ``admin`` may not write it.
    """
    budget = Budget.from_dict(body)
    inputs.amount(str(budget.limit), "limit")
    inputs.text(budget.subject_id, "id")
    if not owns(admin, budget):
        raise AdminError(
            403, f"this admin key manages budgets of scope project={admin.project} only", code="forbidden"
        )
    before = await ledger.get_budget(budget.name)
    if before is not None and not owns(admin, before):
        raise AdminError(403, f"budget {budget.name!r} belongs to another project", code="forbidden")
    if before is not None:
        await check_set_by_project(ledger, admin, budget.name, "replace")
    await ledger.put_budget(budget)
    await ledger.audit(
        actor or admin.name,
        "budget.put",
        budget.name,
        before.to_dict() if before else None,
        budget.to_dict(),
        project=admin.project,
    )
    return budget.to_dict(), before is None


async def delete_budget(ledger: Any, admin: AdminKeyConfig, name: str, *, actor: str | None = None) -> None:
    """Delete budget ``name``, audited as ``budget.delete``.

    Raises:
        AdminError: 404 for a budget ``admin`` cannot see, 403 for one it may not delete.
    """
    budget = await ledger.get_budget(name)
    if budget is None or not owns(admin, budget):
        raise AdminError(404, f"no budget named {name!r}", code="not_found")
    await check_set_by_project(ledger, admin, name, "delete")
    await ledger.delete_budget(name)
    await ledger.audit(
        actor or admin.name, "budget.delete", name, budget.to_dict(), None, project=admin.project
    )


def key_view(record: KeyRecord) -> dict[str, Any]:
    """A key's JSON form without its digest."""
    view = record.to_dict()
    view.pop("key_sha256", None)
    return view


_KEY_FIELDS = {
    "name", "user", "team", "org", "project", "allow_user_override", "expires_at", "tags",
    "allow_client_tags", "allow_client_budgets",
}  # fmt: skip


async def create_key(
    ledger: Any,
    config: GatewayConfig,
    admin: AdminKeyConfig,
    body: dict[str, Any],
    *,
    actor: str | None = None,
) -> dict[str, Any]:
    """Create a virtual key, audited as ``key.create``.

    Args:
        body: ``name`` (required), ``user``, ``team``, ``org``, ``project``, ``tags`` (name to
            value), ``allow_user_override``, ``allow_client_tags``, ``allow_client_budgets``,
            ``expires_at`` (ISO 8601).

    Returns:
        The key's JSON form with ``key``: the secret, shown this once (only its SHA-256 is kept).

    Raises:
        AdminError: 400 for a bad field, 403 for a project admin's key naming another tenant.
    """
    unknown = set(body) - _KEY_FIELDS
    if unknown:
        raise AdminError(
            400, f"unknown fields {sorted(unknown)}; known: {sorted(_KEY_FIELDS)}", param=sorted(unknown)[0]
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
        await _check_project_key(ledger, config, admin.project, name.strip(), scopes)
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
        **flags,
        expires_at=expires,
        project=project,
        prefix=secret[:7],
    )
    stored = await ledger.put_key(record)
    await ledger.audit(
        actor or admin.name, "key.create", stored.id, None, key_view(stored), project=stored.project
    )
    return {**key_view(stored), "key": secret}


async def _check_project_key(
    ledger: Any, config: GatewayConfig, project: str, name: str, scopes: dict[str, Any]
) -> None:
    """Refuse a project admin's key that names an org or team, or another tenant's name or user."""
    for scope in ("org", "team"):
        if scopes.get(scope):
            raise AdminError(
                403, f"only a full administrator may set {scope} on a key", code="forbidden", param=scope
            )
    clash = foreign_key_field(project, name, scopes.get("user"), config, await ledger.keys())
    if clash is not None:
        value = name if clash == "name" else scopes.get("user")
        raise AdminError(
            403,
            f"the key {clash} {value!r} belongs to another project (or to a key of no project)",
            code="forbidden",
            param=clash,
        )


async def revoke_key(
    ledger: Any, admin: AdminKeyConfig, key_id: str, *, actor: str | None = None
) -> dict[str, Any]:
    """Revoke key ``key_id`` now, audited as ``key.revoke`` (once: revoking again changes nothing).

    Returns:
        The key's JSON form after.

    Raises:
        AdminError: 404 for a key ``admin`` cannot see.
    """
    record = await ledger.get_key(key_id)
    if record is None or (admin.project is not None and record.project != admin.project):
        raise AdminError(404, f"no key {key_id!r}", code="not_found")
    changed = await ledger.revoke_key(record.id)
    after = await ledger.get_key(record.id)
    if changed:
        await ledger.audit(
            actor or admin.name,
            "key.revoke",
            record.id,
            key_view(record),
            key_view(after),
            project=record.project,
        )
    return key_view(after)
