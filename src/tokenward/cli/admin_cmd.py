"""``tokenward budgets ...`` and ``tokenward keys ...``: manage budgets and virtual keys through
the admin API of a running gateway (which sees changes at once), or offline on a ledger.

The gateway's URL comes from ``--gateway`` or ``TOKENWARD_GATEWAY`` (default
``http://127.0.0.1:8080``), the admin key from ``--admin-key`` or ``TOKENWARD_ADMIN_KEY``. With
``--ledger URL`` the commands work on that ledger directly, no gateway needed
(:mod:`tokenward.cli.offline_admin`), audited as ``cli:<user>``. Changing or deleting a budget the
gateway's config file wrote prints a warning: the file puts its version back at the next start or
reload.
"""

from __future__ import annotations

import os
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer
from rich.markup import escape
from rich.table import Table

from tokenward.cli.common import Command, Group, err, friendly, out, print_json
from tokenward.errors import ConfigError, TokenwardError

__all__ = ["register"]

budgets_app = typer.Typer(
    cls=Group, help="Budgets, on a running gateway (admin API) or a ledger (--ledger).", no_args_is_help=True
)
keys_app = typer.Typer(
    cls=Group,
    help="Virtual keys, on a running gateway (admin API) or a ledger (--ledger).",
    no_args_is_help=True,
)

GatewayOption = Annotated[
    str | None,
    typer.Option("--gateway", help="Gateway URL (default: $TOKENWARD_GATEWAY or http://127.0.0.1:8080)."),
]
AdminKeyOption = Annotated[
    str | None, typer.Option("--admin-key", help="Admin key (default: $TOKENWARD_ADMIN_KEY).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
LedgerOption = Annotated[
    str | None,
    typer.Option(
        "--ledger",
        help="Work on this ledger directly, without a gateway (e.g. sqlite:///examples/tokenward.db); "
        "changes are audited as cli:<user>.",
    ),
]


class AdminAPIError(TokenwardError):
    """The admin API refused the request (its message is shown)."""


def _call(
    method: str,
    path: str,
    gateway: str | None,
    admin_key: str | None,
    body: Any = None,
    ledger: str | None = None,
    *,
    creates: bool = False,
) -> Any:
    """One admin API request, to the gateway or (with ``ledger``) in this process over the ledger;
    ``creates``: the request may create a missing SQLite ledger file (others refuse one)."""
    if ledger is not None:
        from tokenward.cli.ledgers import check_exists
        from tokenward.cli.offline_admin import offline_request

        if not creates:
            check_exists(ledger)
        return _answer(offline_request(ledger, method, path, body), ledger, path)
    url = (gateway or os.environ.get("TOKENWARD_GATEWAY") or "http://127.0.0.1:8080").rstrip("/")
    key = admin_key or os.environ.get("TOKENWARD_ADMIN_KEY")
    if not key:
        raise ConfigError(
            "no admin key: pass --admin-key or set TOKENWARD_ADMIN_KEY (or work on a ledger directly with --ledger URL)"
        )
    try:
        response = httpx.request(
            method, url + path, json=body, headers={"authorization": f"Bearer {key}"}, timeout=30
        )
    except httpx.HTTPError as exc:
        raise ConfigError(
            f"cannot reach the gateway at {url}: {exc} (without a gateway, work on its ledger with --ledger URL)"
        ) from None
    return _answer(response, url, path)


def _answer(response: httpx.Response, url: str, path: str) -> Any:
    """The JSON of an admin API answer, or the error it stands for."""
    if response.status_code == 204:
        return None
    if response.status_code == 401:
        # A key was sent (none is caught above), so the gateway's "an admin key is required"
        # means this one is not in its admin_keys.
        raise AdminAPIError(
            f"401: the admin key was refused by {url} (TOKENWARD_ADMIN_KEY / --admin-key); "
            "check it against the gateway config's admin_keys"
        )
    try:
        data = response.json()
    except ValueError:
        raise AdminAPIError(f"{url}{path} answered {response.status_code} without JSON") from None
    if response.status_code >= 400:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        raise AdminAPIError(f"{response.status_code}: {error.get('message', data)}")
    return data


@budgets_app.command("list", cls=Command)
@friendly
def budgets_list(
    gateway: GatewayOption = None,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
    ledger: LedgerOption = None,
) -> None:
    """List the budgets."""
    data = _call("GET", "/admin/budgets", gateway, admin_key, ledger=ledger)
    if as_json:
        print_json(data)
        return
    table = Table(title="budgets")
    for column in ("name", "scope", "meter", "limit", "window", "mode", "action"):
        # Nothing is cut (values fold); the name, which `budgets delete` takes, stays on one line.
        table.add_column(column, no_wrap=column == "name", overflow="fold")
    for b in data["budgets"]:
        scope = b["scope"] + (f"={b['subject_id']}" if b.get("subject_id") else " (each)")
        table.add_row(
            *(
                escape(str(x))
                for x in (
                    b["name"],
                    scope,
                    b["meter"],
                    b["limit"],
                    b["window"],
                    b["mode"],
                    b.get("action", ""),
                )
            )
        )
    out.print(table)


@budgets_app.command("set", cls=Command)
@friendly
def budgets_set(
    spec: Annotated[
        str,
        typer.Argument(help=escape("SCOPE[=ID]:METER=LIMIT[/WINDOW], e.g. user=alice:cost_usd=5/day.")),
    ],
    name: Annotated[str | None, typer.Option(help="The budget's name (default: the spec).")] = None,
    mode: Annotated[
        str | None, typer.Option(help="hard, soft or shadow (default: the spec's, else hard).")
    ] = None,
    models: Annotated[
        str | None,
        typer.Option(help="Only calls to these models count: names or patterns, e.g. 'gpt-5,claude-*'."),
    ] = None,
    gateway: GatewayOption = None,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
    ledger: LedgerOption = None,
) -> None:
    """Create or replace a budget."""
    from tokenward.core.budgets import parse_budget_spec

    # --models as part of the spec, so the default name tells per-model budgets apart
    options = (f";models={models}" if models is not None else "") + (f";name={name}" if name else "")
    budget = parse_budget_spec(spec + options).to_dict()
    if mode is not None:
        budget["mode"] = mode
    data = _call("POST", "/admin/budgets", gateway, admin_key, budget, ledger, creates=True)
    if as_json:
        print_json(data)
    else:
        scope = data["scope"] + (f"={data['subject_id']}" if data.get("subject_id") else " (each)")
        only = f" (models {', '.join(data['models'])} only)" if data.get("models") else ""
        out.print(
            f"budget {escape(data['name'])} set: {escape(scope)} {data['meter']} limit {data['limit']}{escape(only)}"
        )
    _warn_if_config_owned(data["name"], "changed", gateway, admin_key, ledger)
    _warn_unknown_models(data["name"], data.get("models") or [])
    _warn_alike(data, _call("GET", "/admin/budgets", gateway, admin_key, ledger=ledger)["budgets"])


def _warn_alike(made: dict[str, Any], budgets: list[dict[str, Any]]) -> None:
    """Warn about the other budgets on the same subject, meter, window and models as the one just
    set: the default name holds the limit, so setting ``user=alice:cost_usd=10/day`` after
    ``...=5/day`` makes a second budget, and the first, tighter one still decides."""

    def shape(b: dict[str, Any]) -> tuple[Any, ...]:
        return (b["scope"], b.get("subject_id"), b["meter"], b["window"], tuple(b.get("models") or ()))

    for other in budgets:
        if other["name"] != made["name"] and shape(other) == shape(made):
            err.print(
                f"warning: budget {other['name']!r} limits the same {made['meter']} (limit "
                f"{other['limit']}): both apply, and the tighter decides; to change that limit, set it "
                f"under its name (--name {other['name']!r}) or delete it (tokenward budgets delete)",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )


def _warn_unknown_models(name: str, models: list[str]) -> None:
    """Warn about a plain model name (no ``*?[``) the pinned price table does not know: a misspelt
    ``gpt-4o-mni`` makes a budget that applies to no call."""
    from tokenward.core.pricebook import PriceBook

    book = PriceBook.default()
    for model in models:
        if not set(model) & set("*?[") and book.resolve(model) is None:
            err.print(
                f"warning: budget {name!r} counts calls to model {model!r}, which the price table does not "
                "know: if it is misspelt, the budget applies to no call",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )


@budgets_app.command("delete", cls=Command)
@friendly
def budgets_delete(
    name: Annotated[str, typer.Argument(help="The budget's name.")],
    gateway: GatewayOption = None,
    admin_key: AdminKeyOption = None,
    ledger: LedgerOption = None,
) -> None:
    """Delete a budget (its spend and events stay in the ledger)."""
    _call("DELETE", f"/admin/budgets/{quote(name, safe='')}", gateway, admin_key, ledger=ledger)
    out.print(f"budget {escape(name)} deleted")
    _warn_if_config_owned(name, "deleted", gateway, admin_key, ledger)


def _warn_if_config_owned(
    name: str, done: str, gateway: str | None, admin_key: str | None, ledger: str | None
) -> None:
    """Warn when the budget just changed was last written, before this change, by the gateway's
    config file: the file writes its version back at the gateway's next start or reload."""
    from tokenward.gateway.config_budgets import CONFIG_ACTOR

    writers: list[str] = []
    after = 0
    while True:
        page = _call("GET", f"/admin/audit?after={after}&limit=10000", gateway, admin_key, ledger=ledger)
        entries = page["entries"]
        writers += [
            e["actor"]
            for e in entries
            if e["target"] == name and e["action"] in ("budget.put", "budget.delete")
        ]
        if len(entries) < 10000:
            break
        after = entries[-1]["id"]
    if len(writers) >= 2 and writers[-2] == CONFIG_ACTOR:
        err.print(
            f"warning: budget {name!r} was written by the gateway's config file: the gateway's next "
            f"start or reload writes the file's version back, so the budget {done} here will not last; "
            "change it in the config file",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


@keys_app.command("create", cls=Command)
@friendly
def keys_create(
    name: Annotated[str, typer.Argument(help="The key's name (its calls are charged to key=<name>).")],
    user: Annotated[str | None, typer.Option(help="The user it charges.")] = None,
    project: Annotated[str | None, typer.Option(help="The project it charges.")] = None,
    team: Annotated[str | None, typer.Option(help="The team it charges.")] = None,
    org: Annotated[str | None, typer.Option(help="The org it charges.")] = None,
    allow_user_override: Annotated[
        bool,
        typer.Option("--allow-user-override", help="May name another user per request (x-tokenward-user)."),
    ] = False,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", help="NAME=VALUE: a tag every call of the key carries (repeat for more)."),
    ] = None,
    allow_client_tags: Annotated[
        bool, typer.Option("--allow-client-tags", help="Clients may add tags (x-tokenward-tags).")
    ] = False,
    allow_client_budgets: Annotated[
        bool,
        typer.Option(
            "--allow-client-budgets",
            help="Clients may carry their session's or task's budget (x-tokenward-session-budget).",
        ),
    ] = False,
    expires_at: Annotated[
        str | None, typer.Option(help="ISO 8601 instant after which it stops working.")
    ] = None,
    gateway: GatewayOption = None,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
    ledger: LedgerOption = None,
) -> None:
    """Create a virtual key. The key is shown once: store it now."""
    body: dict[str, Any] = {
        "name": name,
        "allow_user_override": allow_user_override,
        "allow_client_tags": allow_client_tags,
        "allow_client_budgets": allow_client_budgets,
    }
    if tag:
        pairs = [t.partition("=") for t in tag]
        bad = next((t for t, (_, eq, v) in zip(tag, pairs, strict=True) if not eq or not v), None)
        if bad is not None:
            from tokenward.errors import ConfigError

            raise ConfigError(f"--tag {bad!r}: expected NAME=VALUE")
        body["tags"] = {k.strip(): v.strip() for k, _, v in pairs}
    for field, value in (
        ("user", user),
        ("project", project),
        ("team", team),
        ("org", org),
        ("expires_at", expires_at),
    ):
        if value is not None:
            body[field] = value
    data = _call("POST", "/admin/keys", gateway, admin_key, body, ledger, creates=True)
    if as_json:
        print_json(data)
        return
    out.print(f"key {escape(data['id'])} ({escape(data['name'])}) created. It is shown once; store it now:")
    out.print(data["key"], highlight=False, markup=False)


@keys_app.command("list", cls=Command)
@friendly
def keys_list(
    gateway: GatewayOption = None,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
    ledger: LedgerOption = None,
) -> None:
    """List virtual keys (never the keys themselves)."""
    data = _call("GET", "/admin/keys", gateway, admin_key, ledger=ledger)
    if as_json:
        print_json(data)
        return
    table = Table(title="virtual keys")
    for column in ("id", "name", "prefix", "subject", "created", "expires", "revoked"):
        # Nothing is cut (values fold); the id, which `keys revoke` takes, stays on one line.
        table.add_column(column, no_wrap=column == "id", overflow="fold")
    for k in data["keys"]:
        who = k.get("subject") or {}
        subject = " ".join(
            [f"{a}={b}" for a, b in who.items() if a != "tags"]
            + [f"tag:{a}={b}" for a, b in (who.get("tags") or {}).items()]
        )
        table.add_row(
            *(
                escape(str(x or ""))
                for x in (
                    k["id"],
                    k["name"],
                    k.get("prefix"),
                    subject,
                    k.get("created_at"),
                    k.get("expires_at"),
                    k.get("revoked_at"),
                )
            )
        )
    out.print(table)
    out.print("keys defined in the config file are not listed", style="dim", highlight=False)


@keys_app.command("revoke", cls=Command)
@friendly
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id.")],
    gateway: GatewayOption = None,
    admin_key: AdminKeyOption = None,
    ledger: LedgerOption = None,
) -> None:
    """Revoke a virtual key (refused from the next request on)."""
    data = _call("DELETE", f"/admin/keys/{quote(key_id, safe='')}", gateway, admin_key, ledger=ledger)
    out.print(f"key {escape(data['id'])} revoked at {data['revoked_at']}")


def register(app: typer.Typer) -> None:
    """Add the command groups to the CLI."""
    app.add_typer(budgets_app, name="budgets")
    app.add_typer(keys_app, name="keys")
