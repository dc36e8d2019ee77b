"""The admin API's OpenAPI 3.1 document (served at ``/admin/openapi.json``)."""

from __future__ import annotations

from typing import Any

from tokenward.core.budgets import METERS, SCOPES

__all__ = ["openapi"]

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "code": {"type": "string"},
                "param": {"type": ["string", "null"]},
            },
        }
    },
}


def _errors(*codes: int) -> dict[str, Any]:
    descriptions = {
        400: "invalid input (the message names the field)",
        401: "no or unknown admin key",
        403: "outside this admin key's project, or a cap a full administrator set",
        404: "not found",
        409: "not possible in this state",
        503: "the ledger is unavailable",
    }
    return {
        str(code): {
            "description": descriptions[code],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for code in codes
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_SCOPE_PARAMS = [
    {"name": scope, "in": "query", "required": False, "schema": {"type": "string"}} for scope in SCOPES
]
_TIME_PARAMS = [
    {"name": "since", "in": "query", "required": False, "schema": {"type": "string", "format": "date-time"}},
    {"name": "until", "in": "query", "required": False, "schema": {"type": "string", "format": "date-time"}},
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
    },
]
_OBJECT = {"type": "object"}


def openapi() -> dict[str, Any]:
    """The document: paths, parameters, request and response schemas."""
    budget = {
        "type": "object",
        "required": ["scope", "meter", "limit"],
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9_.:@/=\\-]{1,200}$"},
            "scope": {"type": "string", "description": f"one of {', '.join(SCOPES)}, or tag:NAME"},
            "id": {"type": ["string", "null"], "description": "the scope value; leave out for each value"},
            "meter": {"type": "string", "description": f"{', '.join(METERS)}, or a custom meter"},
            "limit": {
                "type": ["string", "number"],
                "description": "tokens, USD or calls; at most 10^15 and 12 decimal places",
            },
            "window": {
                "type": ["string", "null"],
                "description": "none, hour, day, week, month[@Zone], rolling:DURATION",
            },
            "mode": {"type": "string", "enum": ["hard", "soft", "shadow"]},
            "unpriced": {"type": "string", "enum": ["deny", "allow"]},
            "thresholds": {"type": "array", "items": {"type": ["string", "number"]}},
            "action": {"type": "string", "enum": ["deny", "clamp", "degrade", "stop"]},
            "custom": {"type": "boolean", "description": "meter is a custom meter"},
            "models": {
                "type": "array",
                "items": {"type": "string"},
                "description": "model names or patterns (claude-*) it applies to, by canonical name",
            },
        },
    }
    key_create = {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "user": {"type": "string"},
            "team": {"type": "string"},
            "org": {"type": "string"},
            "project": {"type": "string"},
            "allow_user_override": {"type": "boolean"},
            "tags": {"type": "object", "additionalProperties": {"type": "string"}},
            "allow_client_tags": {"type": "boolean", "description": "may add tags (x-tokenward-tags)"},
            "allow_client_budgets": {
                "type": "boolean",
                "description": "may carry session/task budgets (x-tokenward-session-budget)",
            },
            "expires_at": {"type": "string", "format": "date-time"},
        },
    }
    value = {"type": "string", "pattern": "^[\\w.:@/=\\-]{1,200}$"}
    subject = {
        "type": "object",
        "additionalProperties": False,
        "minProperties": 1,
        "properties": {
            **{scope: value for scope in SCOPES},
            "tags": {"type": "object", "additionalProperties": value},
        },
    }
    adjustment = {
        "type": "object",
        "required": ["amounts", "reason"],
        "additionalProperties": False,
        "properties": {
            "budget": {"type": "string", "description": "a budget's name (or give a subject)"},
            "subject_id": {**value, "description": "the instance of a template budget"},
            "subject": subject,
            "amounts": {
                "type": "object",
                "description": f"{', '.join(METERS)} or a budget's custom meter; a named budget's own "
                "meter only. Signed, at most 10^15 in size and 12 decimal places",
                "additionalProperties": {"type": ["string", "number"]},
                "minProperties": 1,
            },
            "reason": {"type": "string", "minLength": 1},
            "id": {
                "type": "string",
                "pattern": "^[A-Za-z0-9_.:\\-]{1,200}$",
                "description": "idempotency key: a retried request with the same id is applied once",
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tokenward admin API",
            "version": "1",
            "description": "Budgets, virtual keys, balances, usage events, adjustments and the audit log. "
            "Authenticate with an admin key: Authorization: Bearer <key>.",
        },
        "components": {
            "securitySchemes": {"adminKey": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": _ERROR, "Budget": budget, "KeyCreate": key_create, "Adjustment": adjustment},
        },
        "security": [{"adminKey": []}],
        "paths": {
            "/admin/budgets": {
                "get": {
                    "summary": "List budgets",
                    "responses": {"200": _json(_OBJECT, "the budgets"), **_errors(401, 503)},
                },
                "post": {
                    "summary": "Create or replace a budget (by name)",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Budget"}}},
                    },
                    "responses": {
                        "200": _json(_OBJECT, "replaced"),
                        "201": _json(_OBJECT, "created"),
                        **_errors(400, 401, 403, 503),
                    },
                },
            },
            "/admin/budgets/{name}": {
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "get": {
                    "summary": "One budget",
                    "responses": {"200": _json(_OBJECT, "the budget"), **_errors(401, 404, 503)},
                },
                "delete": {
                    "summary": "Delete a budget (its events and spend stay)",
                    "responses": {"204": {"description": "deleted"}, **_errors(401, 403, 404, 503)},
                },
            },
            "/admin/keys": {
                "get": {
                    "summary": "List virtual keys (never the keys themselves)",
                    "responses": {"200": _json(_OBJECT, "the keys"), **_errors(401, 503)},
                },
                "post": {
                    "summary": "Create a virtual key; the key is in the answer, once",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/KeyCreate"}}
                        },
                    },
                    "responses": {
                        "201": _json(_OBJECT, "the key, shown once"),
                        **_errors(400, 401, 403, 503),
                    },
                },
            },
            "/admin/keys/{key_id}": {
                "parameters": [
                    {"name": "key_id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "delete": {
                    "summary": "Revoke a key",
                    "responses": {"200": _json(_OBJECT, "the revoked key"), **_errors(401, 404, 503)},
                },
            },
            "/admin/balances": {
                "get": {
                    "summary": "Budgets that apply to a subject, with spent, held and remaining",
                    "parameters": _SCOPE_PARAMS,
                    "responses": {"200": _json(_OBJECT, "the balances"), **_errors(400, 401, 403, 503)},
                }
            },
            "/admin/events": {
                "get": {
                    "summary": "Usage events, oldest first",
                    "parameters": _SCOPE_PARAMS + _TIME_PARAMS,
                    "responses": {"200": _json(_OBJECT, "the events"), **_errors(400, 401, 403, 503)},
                }
            },
            "/admin/denials": {
                "get": {
                    "summary": "Calls a budget refused (402/429), newest first; floods past the rate "
                    "are one record per subject, budget and minute with a count",
                    "parameters": _SCOPE_PARAMS
                    + _TIME_PARAMS
                    + [
                        {"name": "budget", "in": "query", "schema": {"type": "string"}},
                        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    ],
                    "responses": {"200": _json(_OBJECT, "the denials"), **_errors(400, 401, 403, 503)},
                }
            },
            "/admin/adjustments": {
                "post": {
                    "summary": "Record a credit, refund or correction (never an edit of past events)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Adjustment"}}
                        },
                    },
                    "responses": {
                        "201": _json(_OBJECT, "the adjustment"),
                        **_errors(400, 401, 403, 404, 503),
                    },
                }
            },
            "/admin/audit": {
                "get": {
                    "summary": "The audit log: who changed what, when, before and after",
                    "parameters": [
                        {
                            "name": "after",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 0},
                        },
                        *_TIME_PARAMS[:1],
                        _TIME_PARAMS[2],
                    ],
                    "responses": {"200": _json(_OBJECT, "entries"), **_errors(400, 401, 503)},
                }
            },
            "/admin/reload": {
                "post": {
                    "summary": "Reload the gateway's config file",
                    "responses": {"200": _json(_OBJECT, "reloaded"), **_errors(400, 401, 403, 409, 503)},
                }
            },
        },
    }
