"""What a project-scoped admin key may do beyond its project's name: whose budgets it may change,
and which keys it may make.

* A budget is the project administrator's to replace, delete or credit only when that project's
  administrators set it: the latest ``budget.put`` in the audit log was theirs. A budget the config
  file or a full administrator set (or one written straight to the ledger, with no audit entry) is
  a cap over the project: its administrators see it and may charge against it, never lift it.
* A key a project administrator makes names no ``org`` or ``team`` (those group projects, and are a
  full administrator's to give), and neither its name (the ``key`` scope value) nor its user may be
  one that a key of another project, or a key of no project, already has: such a key would spend
  that tenant's ``key`` budgets, or the budgets a full administrator set for that user by id.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tokenward.core.budgets import Subject
from tokenward.gateway.config import GatewayConfig
from tokenward.gateway.config_budgets import CONFIG_ACTOR

__all__ = ["foreign_key_field", "set_by_project"]


async def set_by_project(ledger: Any, name: str, project: str) -> bool:
    """Whether budget ``name`` was last written by an administrator of ``project`` (not by the
    config file or a full administrator), going by the audit log."""
    latest = None
    for entry in await ledger.audit_log():
        if entry.action == "budget.put" and entry.target == name:
            latest = entry
    return latest is not None and latest.actor != CONFIG_ACTOR and latest.project == project


def _bare(subject: Subject | dict[str, str], scope: str) -> str | None:
    values = subject.to_dict() if isinstance(subject, Subject) else subject
    value, project = values.get(scope), values.get("project")
    if value is None:
        return None
    return value.removeprefix(f"{project}/") if project else value


def foreign_key_field(
    project: str, name: str, user: str | None, config: GatewayConfig, stored: Iterable[Any]
) -> str | None:
    """``"name"`` or ``"user"`` when a key of another project (or of none) already has that key
    name or that user (compared without the project prefix), else None.

    Args:
        project: the project the new key is for.
        name: the new key's name.
        user: the new key's user, as given.
        config: the gateway's configuration (its keys).
        stored: the keys in the ledger (:class:`~tokenward.ledger.records.KeyRecord`).
    """
    others: list[tuple[str, dict[str, str]]] = [
        (k.name, dict(k.subject)) for k in config.keys if k.subject.get("project") != project
    ]
    others += [(r.name, r.subject.to_dict()) for r in stored if r.project != project]
    wanted = _bare({"project": project, "user": user} if user else {}, "user")
    for other_name, subject in others:
        if other_name == name:
            return "name"
        if wanted is not None and _bare(subject, "user") == wanted:
            return "user"
    return None
