"""No 500s: the admin API fuzzed from its own OpenAPI document (schemathesis), and the proxy
endpoints fed malformed bodies (hypothesis)."""

from __future__ import annotations

import json

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.fixtures import KEY
from tokenward.gateway.admin import openapi

pytestmark = pytest.mark.slow

ADMIN = "tw-admin-root"

schema = schemathesis.openapi.from_dict(openapi())


@pytest.fixture(scope="module")
def admin_gateway(tmp_path_factory, request):
    """One gateway for the whole module (the fuzzers make many calls)."""
    from tests.support.servers import ThreadedServer
    from tokenward.fake import FakeSettings
    from tokenward.fake import create_app as create_fake
    from tokenward.gateway import GatewayConfig, create_app

    fake = ThreadedServer(create_fake(FakeSettings()))
    fake.start()
    config = GatewayConfig.from_mapping(
        {
            "ledger": f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'ledger.db'}",
            "upstreams": [{"name": "fake", "provider": "fake", "base_url": fake.url}],
            "keys": [{"key": KEY, "name": "test-key", "user": "alice", "project": "demo"}],
            "admin_keys": [{"key": ADMIN, "name": "root"}],
            "budgets": [{"name": "b", "scope": "user", "meter": "total_tokens", "limit": 10**9}],
        }
    )
    server = ThreadedServer(create_app(config))
    server.start()
    yield server.url
    server.stop()
    fake.stop()


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_admin_api_never_answers_500(case, admin_gateway) -> None:
    case.headers = {**(case.headers or {}), "authorization": f"Bearer {ADMIN}"}
    response = case.call(base_url=admin_gateway)
    assert response.status_code < 500, (case.method, case.path, response.text)
    case.validate_response(response, checks=[schemathesis.checks.status_code_conformance])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "model": JSON | st.sampled_from(["gpt-4o-mini", "claude-sonnet-4-6", ""]),
        "messages": JSON | st.just([{"role": "user", "content": "hi"}]),
        "input": JSON,
        "prompt": JSON,
        "contents": JSON,
        "max_tokens": JSON,
        "max_completion_tokens": JSON,
        "max_output_tokens": JSON,
        "stream": JSON,
        "stream_options": JSON,
        "n": JSON,
        "tools": JSON,
        "user": JSON,
        "metadata": JSON,
        "generationConfig": JSON,
    },
)
PATHS = [
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/messages",
    "/v1beta/models/gemini-2.5-flash:generateContent",
]


@given(path=st.sampled_from(PATHS), body=FIELDS | JSON, raw=st.booleans())
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
def test_proxy_endpoints_never_answer_500_to_malformed_bodies(
    admin_gateway, path: str, body, raw: bool
) -> None:
    content = json.dumps(body).encode()
    if raw:
        content = content[: len(content) // 2]  # truncated JSON
    response = httpx.post(
        f"{admin_gateway}{path}",
        content=content,
        headers={"authorization": f"Bearer {KEY}", "x-goog-api-key": KEY},
    )
    assert response.status_code < 500, (path, body, response.text)
