"""The HTTP client ``tokenward batch run`` sends records with: ``httpx`` behind the SDK's guarded
transport (:mod:`tokenward.sdk.transport`), so each record is estimated, admitted, bounded and
charged as a wrapped ``openai`` client's call would be; when the base URL is a tokenward gateway
the transport sends the attribution headers (``x-tokenward-task: batch:<job>``) and the gateway
enforces and charges instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tokenward.batch.records import BatchRecord

__all__ = ["HttpCaller"]


class HttpCaller:
    """``call(record)`` for :func:`tokenward.batch.run`: POST the record's body to
    ``base_url`` + the record's path (``/v1`` dropped from the path when the base URL ends with it).

    Args:
        guard: the :class:`tokenward.Guard`.
        base_url: the upstream (``https://api.openai.com/v1``, a compatible server, the fake
            provider) or a tokenward gateway (``http://127.0.0.1:8080/v1``).
        api_key: sent as ``authorization: Bearer``; None sends none.
        provider: provider kind for prices when the host does not tell (``openai``...).
        timeout: seconds per request.
        transport: the inner httpx transport (tests: the fake provider in process).
    """

    def __init__(
        self,
        guard: Any,
        base_url: str,
        *,
        api_key: str | None = None,
        provider: str | None = None,
        timeout: float = 600.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        from tokenward.guard.wire.degrade import Degrade
        from tokenward.sdk.clients import transport_classes_for
        from tokenward.sdk.transport import TransportSettings

        sync_cls, _ = transport_classes_for(httpx)
        settings = TransportSettings(
            degrade=Degrade(marked_only=True), provider=provider, subject=guard.subject
        )
        inner = transport or httpx.HTTPTransport(retries=0)
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.base = base_url.rstrip("/")
        self.client = httpx.Client(
            transport=sync_cls(inner, guard, settings, guard.gateways), headers=headers, timeout=timeout
        )

    def url(self, record: BatchRecord) -> str:
        path = record.url
        if self.base.endswith("/v1") and path.startswith("/v1/"):
            path = path[3:]
        return self.base + path

    def __call__(self, record: BatchRecord) -> httpx.Response:
        return self.client.post(self.url(record), json=dict(record.body))

    def close(self) -> None:
        self.client.close()

    def as_call(self) -> Callable[[BatchRecord], httpx.Response]:
        return self.__call__
