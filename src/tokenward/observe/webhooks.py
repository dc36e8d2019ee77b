"""Webhook delivery of alerts, signed as the Standard Webhooks specification says.

Every delivery is an HTTP ``POST`` of the alert's JSON (:meth:`~tokenward.observe.alerts.Alert.to_dict`,
keys sorted, no spaces) with these headers (https://www.standardwebhooks.com/, "Standard Webhooks"
1.0):

* ``webhook-id``: the alert's id (``alrt_...``), the same on every retry: drop a repeat by it;
* ``webhook-timestamp``: Unix seconds when this attempt was signed;
* ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>">``.

The key is the secret's bytes; a secret written ``whsec_<base64>`` (the specification's format)
is base64-decoded first. :func:`verify` is the receiver's side (it checks the timestamp is within
five minutes, as the specification recommends, and compares in constant time).

A 2xx answer is a delivery; any other status, a timeout or a connection error is a failure the
dispatcher retries with backoff.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from tokenward.errors import ConfigError, TokenwardError
from tokenward.observe.alerts import Alert

__all__ = ["DeliveryError", "Webhook", "WebhookSink", "alert_body", "sign", "verify"]

SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE = 300.0
"""Seconds a signed timestamp may differ from the receiver's clock (the specification's 5 minutes)."""


class DeliveryError(TokenwardError):
    """A sink could not deliver an alert this time (the dispatcher retries it)."""


def _key(secret: str | bytes) -> bytes:
    if isinstance(secret, bytes):
        return secret
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except binascii.Error:
            raise ConfigError(
                "a webhook secret starting with whsec_ must be base64 after the prefix"
            ) from None
    return secret.encode()


def alert_body(alert: Alert) -> bytes:
    """The exact bytes posted for ``alert`` (compact JSON, keys sorted, UTF-8)."""
    return json.dumps(alert.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(secret: str | bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` + base64(HMAC-SHA256(key, id.timestamp.body))."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def verify(
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> bool:
    """Whether a received delivery is authentic: the receiver's check.

    Args:
        secret: the shared secret (``whsec_...`` or any string).
        headers: the request headers (any case).
        body: the raw request body, exactly as received.
        now: the receiver's Unix time (default: the wall clock).
        tolerance: how far the signed timestamp may be from ``now``, in seconds.

    Returns:
        True when one of the space-separated ``v1,...`` signatures matches and the timestamp is
        within the tolerance; False otherwise (missing headers included).
    """
    lower = {k.lower(): v for k, v in headers.items()}
    message_id, stamp, signatures = (
        lower.get("webhook-id"),
        lower.get("webhook-timestamp"),
        lower.get("webhook-signature"),
    )
    if not message_id or not stamp or not signatures:
        return False
    try:
        timestamp = int(stamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, message_id, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in signatures.split())


@dataclass(frozen=True, slots=True)
class Webhook:
    """A webhook endpoint.

    Attributes:
        url: where to ``POST`` (``http://`` or ``https://``).
        secret: the signing secret (``whsec_<base64>`` or any string); None sends unsigned.
        name: the sink's label (``webhook:<name>`` in the outbox); defaults to the URL.
        timeout: seconds for the whole request.
        headers: extra headers (an ``authorization`` for the receiver, say).
    """

    url: str
    secret: str | None = None
    name: str | None = None
    timeout: float = 10.0
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"webhook url must start with http:// or https://, got {self.url!r}")
        if self.secret is not None:
            _key(self.secret)

    @property
    def sink_name(self) -> str:
        """``webhook:<name or url>``."""
        return f"webhook:{self.name or self.url}"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Webhook:
        """From config: ``url``, ``secret`` or ``secret_env`` (an environment variable), ``name``,
        ``timeout_seconds``, ``headers``.

        Raises:
            ConfigError: a missing url, an unknown key, or a ``secret_env`` that is not set.
        """
        import os

        known = {"url", "secret", "secret_env", "name", "timeout_seconds", "headers"}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"webhook: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        if not data.get("url"):
            raise ConfigError("webhook: 'url' is required")
        secret = data.get("secret")
        if data.get("secret_env"):
            secret = os.environ.get(str(data["secret_env"]))
            if secret is None:
                raise ConfigError(
                    f"webhook {data['url']}: environment variable {data['secret_env']} is not set"
                )
        return cls(
            url=str(data["url"]),
            secret=None if secret is None else str(secret),
            name=None if data.get("name") is None else str(data["name"]),
            timeout=float(data.get("timeout_seconds", 10.0)),
            headers={str(k): str(v) for k, v in dict(data.get("headers") or {}).items()},
        )


class WebhookSink:
    """Posts alerts to one :class:`Webhook` (a sink for the dispatcher).

    Args:
        webhook: the endpoint.
        client: an ``httpx.Client`` to use (tests inject a transport); one is made otherwise.
        clock: Unix time for the signature timestamp (default ``time.time``).
    """

    def __init__(self, webhook: Webhook, *, client: httpx.Client | None = None, clock: Any = None) -> None:
        self.webhook = webhook
        self.name = webhook.sink_name
        self._client = client or httpx.Client(timeout=webhook.timeout)
        self._owns_client = client is None
        self._time = clock or time.time

    def send(self, alert: Alert, attempt: int) -> None:
        """POST one alert.

        Raises:
            DeliveryError: a non-2xx answer, a timeout or a connection error.
        """
        body = alert_body(alert)
        stamp = int(self._time())
        headers = {
            **self.webhook.headers,
            "content-type": "application/json",
            "user-agent": "tokenward-alerts",
            "webhook-id": alert.id,
            "webhook-timestamp": str(stamp),
            "x-tokenward-attempt": str(attempt),
        }
        if self.webhook.secret is not None:
            headers["webhook-signature"] = sign(self.webhook.secret, alert.id, stamp, body)
        try:
            response = self._client.post(
                self.webhook.url, content=body, headers=headers, timeout=self.webhook.timeout
            )
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{self.webhook.url}: {type(exc).__name__}: {exc}") from None
        if not 200 <= response.status_code < 300:
            raise DeliveryError(f"{self.webhook.url}: HTTP {response.status_code}")

    def close(self) -> None:
        """Close the HTTP client if this sink made it."""
        if self._owns_client:
            self._client.close()
