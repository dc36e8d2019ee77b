"""Wrapping the official ``openai`` and ``anthropic`` clients.

:func:`wrap` puts a guarded transport in front of the client's own HTTP transport (and of any
transport mounted for proxies), in place: the client keeps its configuration, timeouts, retries
and proxies. tokenward's errors are raised through the SDK as subclasses of both the tokenward
error and the SDK's base error (``openai.OpenAIError`` / ``anthropic.AnthropicError``), which the
SDKs pass on to the caller unchanged and never retry; ``except tokenward.BudgetExceeded`` catches
them.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any, TypeVar

from tokenward.errors import ConfigError
from tokenward.sdk.transport import GatewayMemory, TransportSettings, transport_classes

__all__ = ["sdk_error", "wrap_client"]

C = TypeVar("C")


@functools.cache
def _mixed(cls: type[Exception], bases: tuple[type[Exception], ...]) -> type[Exception]:
    return type(cls.__name__, (cls, *bases), {"__module__": cls.__module__, "__doc__": cls.__doc__})


def sdk_error(exc: Exception, bases: tuple[type[Exception], ...]) -> Exception:
    """``exc`` re-typed as a subclass of its own class and of every class in ``bases``, with the
    same fields (each extra base's ``__init__`` runs first, so attributes it sets exist)."""
    missing = tuple(base for base in bases if not isinstance(exc, base))
    if not missing:
        return exc
    mixed = _mixed(type(exc), missing)
    new = mixed.__new__(mixed)
    for base in missing:
        base.__init__(new, *exc.args)
    new.__dict__.update(exc.__dict__)
    new.args = exc.args
    return new


def _sdk_base(client: Any) -> type[Exception]:
    package = type(client).__module__.split(".")[0]
    if type(client).__module__.startswith("google.genai"):
        return Exception  # google-genai retries only its own APIError and httpx errors
    if package == "openai":
        import openai

        return openai.OpenAIError
    if package == "anthropic":
        import anthropic

        return anthropic.AnthropicError
    raise ConfigError(
        "tokenward can wrap openai, anthropic and google-genai clients, not "
        f"{type(client).__module__}.{type(client).__name__}"
    )


def wrap_client(
    client: C,
    *,
    sync_guard: Any,
    async_guard: Any,
    settings: TransportSettings,
    gateways: GatewayMemory,
    error_bases: tuple[type[Exception], ...] = (),
) -> C:
    """Install guarded transports in ``client`` (in place) and return it.

    Raises:
        ConfigError: not an ``openai``/``anthropic`` client, or one without an httpx client.
    """
    base = _sdk_base(client)
    if type(client).__module__.startswith("google.genai"):
        return _wrap_genai(client, sync_guard, async_guard, settings, gateways, error_bases)
    http = getattr(client, "_client", None)
    if http is None or not hasattr(http, "_transport"):
        raise ConfigError(f"{type(client).__name__} has no httpx client tokenward knows how to guard")
    roots = [k.__module__.split(".")[0] for k in type(http).__mro__]
    module_name = next((root for root in roots if root in ("httpx", "httpx2")), None)
    if module_name is None:
        raise ConfigError(f"{type(client).__name__}'s HTTP client is not an httpx client")
    module = importlib.import_module(module_name)
    sync_cls, async_cls = transport_classes_for(module)
    is_async = isinstance(http, module.AsyncClient)
    guard = async_guard if is_async else sync_guard
    cls = async_cls if is_async else sync_cls
    settings = TransportSettings(
        degrade=settings.degrade,
        provider=settings.provider,
        raise_as=functools.partial(sdk_error, bases=(base, *error_bases)),
        subject=settings.subject,
        check=settings.check,
        bound_non_streamed=settings.bound_non_streamed,
        carried=settings.carried,
        deployments=settings.deployments,
        unmetered=settings.unmetered,
        # AnthropicBedrock signs (SigV4) before the transport: a rewritten body is signed again
        resign=getattr(client, "_prepare_request", None)
        if type(client).__name__.endswith("AnthropicBedrock")
        else None,
    )
    if not _guarded_by(http._transport, cls, guard):
        http._transport = cls(http._transport, guard, settings, gateways)
    mounts = getattr(http, "_mounts", {})
    for pattern, transport in list(mounts.items()):
        if transport is not None and not _guarded_by(transport, cls, guard):
            mounts[pattern] = cls(transport, guard, settings, gateways)
    return client


def _guarded_by(transport: Any, cls: type, guard: Any) -> bool:
    """Whether ``guard`` already guards ``transport`` (at any depth): wrapping again with the same
    guard is a no-op, while another guard (an application's own, and the pytest plugin's) nests
    around it, so each one meters and enforces the call."""
    while isinstance(transport, cls):
        if transport.guard is guard:  # type: ignore[attr-defined]
            return True
        transport = transport.inner  # type: ignore[attr-defined]
    return False


def _wrap_genai(
    client: C,
    sync_guard: Any,
    async_guard: Any,
    settings: TransportSettings,
    gateways: GatewayMemory,
    error_bases: tuple[type[Exception], ...],
) -> C:
    """Install guarded transports in a ``google.genai.Client``'s two httpx clients (its
    ``aio`` side is made to use httpx rather than aiohttp, whose sessions tokenward cannot guard).

    Raises:
        ConfigError: a client whose httpx clients tokenward cannot find.
    """
    api: Any = getattr(client, "_api_client", None)
    sync_http: Any = getattr(api, "_httpx_client", None)
    async_http: Any = getattr(api, "_async_httpx_client", None)
    roots = [k.__module__.split(".")[0] for k in type(sync_http).__mro__]
    module_name = next((root for root in roots if root in ("httpx", "httpx2")), None)
    if module_name is None or async_http is None:
        raise ConfigError("this google.genai.Client has no httpx clients tokenward knows how to guard")
    module = importlib.import_module(module_name)
    sync_cls, async_cls = transport_classes_for(module)
    guarded = TransportSettings(
        degrade=settings.degrade,
        provider=settings.provider,
        raise_as=functools.partial(sdk_error, bases=error_bases),
        subject=settings.subject,
        check=settings.check,
        bound_non_streamed=settings.bound_non_streamed,
        carried=settings.carried,
        unmetered=settings.unmetered,
    )
    pairs: list[tuple[Any, type, Any]] = [
        (sync_http, sync_cls, sync_guard),
        (async_http, async_cls, async_guard),
    ]
    for http, cls, guard in pairs:
        if not isinstance(http._transport, cls):
            http._transport = cls(http._transport, guard, guarded, gateways)
        inner = getattr(http, "_inner_client_cls", None)
        if inner is not None and not getattr(inner, "_tokenward", False):
            # google-genai's async client sends through one inner client per event loop, built
            # on demand: each gets the guarded transport in front of its own pool
            http._inner_client_cls = _guarded_inner(inner, cls, guard, guarded, gateways)
    options = getattr(api, "_http_options", None)
    if options is not None and getattr(options, "httpx_async_client", None) is None:
        options.httpx_async_client = async_http  # never aiohttp: its calls would go unguarded
    return client


def _guarded_inner(
    inner: type, cls: type, guard: Any, settings: TransportSettings, gateways: GatewayMemory
) -> type:
    """A subclass of an httpx client class whose instances put a guarded transport in front of
    their own."""

    def __init__(self: Any, **kwargs: Any) -> None:
        inner.__init__(self, **kwargs)  # type: ignore[misc]
        self._transport = cls(self._transport, guard, settings, gateways)

    return type(inner.__name__, (inner,), {"__init__": __init__, "_tokenward": True})


@functools.cache
def transport_classes_for(module: Any) -> tuple[type, type]:
    """The guarded transport classes for an httpx-like module, built once."""
    return transport_classes(module)
