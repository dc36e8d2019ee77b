"""Checking an AWS Signature Version 4 a client put on a request, with botocore's own signer.

The signature is recomputed over the request as it arrived (the method, the path as sent,
percent-encoding included, the query, the headers it lists as signed, the body) for the secret of
the access key it names, at the instant it states (``X-Amz-Date``), and compared in constant time
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html, read
2026-12-07). Used by the gateway to accept boto3 with a tokenward key id as its access key and a
per-key secret, and by the fake provider to check the gateway's own signature.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from tokenward.errors import ConfigError

__all__ = ["SCHEME", "SigV4Problem", "verify_sigv4"]

SCHEME = "AWS4-HMAC-SHA256"
_HEADER = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<akid>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/,\s]+)/"
    r"(?P<service>[^/,\s]+)/aws4_request,\s*SignedHeaders=(?P<signed>[a-z0-9\-;]+),\s*Signature=(?P<sig>[0-9a-f]{64})$"
)
_SKEW = timedelta(minutes=15)  # AWS refuses a signature more than 15 minutes off


class SigV4Problem(Exception):
    """Why a SigV4 signature was refused (the message says, without any secret)."""


def verify_sigv4(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    secret_for: Callable[[str], str | None],
    *,
    now: datetime | None = None,
) -> str:
    """The access key id whose secret signed the request.

    Args:
        method: the HTTP method.
        url: the full URL as sent (its path percent-encoded as the client encoded it).
        headers: the request headers (any case).
        body: the request body.
        secret_for: the secret access key of an access key id, or None for an unknown one.
        now: the current instant (tests).

    Raises:
        SigV4Problem: no or a malformed ``Authorization``, an unknown key, a date too far off,
            or a signature that does not match.
        ConfigError: botocore is not installed.
    """
    try:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials
    except ImportError:
        raise ConfigError(
            'checking SigV4 signatures needs botocore: pip install "tokenward[bedrock]"'
        ) from None
    lowered = {k.lower(): v for k, v in headers.items()}
    found = _HEADER.match(lowered.get("authorization", "").strip())
    if found is None:
        raise SigV4Problem("no AWS4-HMAC-SHA256 Authorization header")
    secret = secret_for(found["akid"])
    if secret is None:
        raise SigV4Problem(f"unknown access key id {found['akid']!r}")
    stamp = lowered.get("x-amz-date", "")
    try:
        at = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise SigV4Problem("X-Amz-Date is missing or malformed") from None
    if abs((now or datetime.now(UTC)) - at) > _SKEW or stamp[:8] != found["date"]:
        raise SigV4Problem("the signature's date is more than 15 minutes off, or does not match its scope")
    signed = found["signed"].split(";")
    if "host" not in signed:
        raise SigV4Problem("the signature must cover the host header")
    missing = [h for h in signed if h not in lowered]
    if missing:
        raise SigV4Problem(f"signed headers missing from the request: {', '.join(missing)}")
    request = AWSRequest(method=method, url=url, data=body, headers={h: lowered[h] for h in signed})
    request.context["timestamp"] = stamp
    signer = SigV4Auth(Credentials(found["akid"], secret), found["service"], found["region"])
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, found["sig"]):
        raise SigV4Problem("the request signature does not match (wrong secret, or the request was altered)")
    return str(found["akid"])
