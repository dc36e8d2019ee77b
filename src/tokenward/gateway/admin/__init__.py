"""The gateway's admin API (budgets, keys, balances, events, adjustments, audit log)."""

from tokenward.gateway.admin.openapi import openapi
from tokenward.gateway.admin.routes import admin_routes

__all__ = ["admin_routes", "openapi"]
