"""No 500s and no traceback in the gateway's log: the admin API fuzzed from its own OpenAPI
document (schemathesis), the proxy endpoints fed malformed bodies and model names (hypothesis,
with fixed seeds so a run is repeatable), and named families of hostile input (deep nesting on
every dialect, control characters in paths and models, NUL, a 20 MB body, wrong types, huge
amounts, integer ids, a key in a disguised query parameter)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tests.support.fixtures import KEY
from tokenward.gateway.admin import openapi

pytestmark = pytest.mark.slow

ADMIN = "tw-admin-root"

schema = schemathesis.openapi.from_dict(openapi())


class _Captured(logging.Handler):
    """Every log record of the gateway (its own loggers and uvicorn's), kept for the checks."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def tracebacks(self) -> list[str]:
        """The records that carry a traceback, or say they do."""
        return [
            f"{r.name}: {r.getMessage()[:200]}"
            for r in self.records
            if r.exc_info or "Traceback" in r.getMessage()
        ]


@pytest.fixture(scope="module")
def captured() -> Iterator[_Captured]:
    handler = _Captured()
    loggers = [logging.getLogger(), logging.getLogger("uvicorn"), logging.getLogger("uvicorn.error")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


@pytest.fixture(scope="module")
def admin_gateway(tmp_path_factory, captured):
    """One gateway for the whole module (the fuzzers make many calls), its log captured."""
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
    assert captured.tracebacks() == []


@schema.parametrize()
@seed(14)
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
MODELS = st.sampled_from(["gpt-4o-mini", "claude-sonnet-4-6", ""]) | st.text(max_size=12).map(
    lambda text: f"gpt-4o-mini{text}"  # control characters, NUL, %, ?, # and / included
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "model": JSON | MODELS,
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
@seed(14)
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


@given(model=st.text(min_size=1, max_size=16), prefix=st.sampled_from(["/v1beta/models", "/v1/models"]))
@seed(14)
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_gemini_model_in_the_url_is_served_or_refused_never_a_500(
    admin_gateway, model: str, prefix: str
) -> None:
    url = f"{admin_gateway}{prefix}/{quote(model, safe='')}:generateContent"
    body = {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "generationConfig": {"maxOutputTokens": 4},
    }
    response = httpx.post(url, json=body, headers={"x-goog-api-key": KEY})
    assert response.status_code < 500, (model, response.text)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in model):
        assert response.status_code == 400, (model, response.text)


MESSAGES = [{"role": "user", "content": "hi"}]
DEEP = "[" * 1000 + "]" * 1000
BODIES = {
    "/v1/chat/completions": {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 4},
    "/v1/responses": {"model": "gpt-4o-mini", "input": "hi", "max_output_tokens": 4},
    "/v1/completions": {"model": "gpt-3.5-turbo-instruct", "prompt": "hi", "max_tokens": 4},
    "/v1/embeddings": {"model": "text-embedding-3-small", "input": "hi"},
    "/v1/messages": {"model": "claude-sonnet-4-6", "messages": MESSAGES, "max_tokens": 4},
    "/v1beta/models/gemini-2.5-flash:generateContent": {"contents": [{"parts": [{"text": "hi"}]}]},
    "/v1/models/gemini-2.5-flash:generateContent": {"contents": [{"parts": [{"text": "hi"}]}]},
}
CONTROL = [chr(c) for c in range(0x20)] + ["\x7f"]


def _with(body: dict, field: str, raw: str) -> bytes:
    """``body`` as JSON with ``field`` set to the raw JSON text ``raw``."""
    return (json.dumps(body)[:-1] + f', "{field}": {raw}}}').encode()


def _families() -> Iterator[tuple[str, str, str, bytes, int | None]]:
    """(family, method, path, body, the status it must get or None for any below 500)."""
    for path, body in BODIES.items():
        yield "nesting", "POST", path, _with(body, "extra", DEEP), 400
        yield "nesting", "POST", path, DEEP.encode(), 400
        yield (
            "nul",
            "POST",
            path,
            json.dumps({**body, "user": "a\x00b", "metadata": {"k": "\x00"}}).encode(),
            None,
        )
        for wrong in ("5", "[]", "{}", "null", "true", '"x"', "1e999999", "-1", "1.5"):
            for field in ("model", "messages", "max_tokens", "stream", "n", "contents", "generationConfig"):
                yield "wrong types", "POST", path, _with(body, field, wrong), None
        for wrong in ("[]", '"x"', "5", "null"):
            yield "wrong types", "POST", path, wrong.encode(), 400
    for char in CONTROL:
        escaped = quote(char, safe="")
        for path, body in BODIES.items():
            if "models/" in path:
                yield (
                    "control in model",
                    "POST",
                    path.replace("flash", f"fl{escaped}ash"),
                    json.dumps(body).encode(),
                    400,
                )
            else:
                yield (
                    "control in model",
                    "POST",
                    path,
                    json.dumps({**body, "model": f"m{char}x"}).encode(),
                    400,
                )
        yield "control in path", "POST", f"/v1/chat{escaped}/completions", b"{}", 404
        yield "control in path", "GET", f"/admin/budgets/b{escaped}", b"", 404
        yield "control in path", "DELETE", f"/admin/keys/k{escaped}", b"", 404
    words = ("hello " * (20 * 1024 * 1024 // 6)).strip()
    yield (
        "20 MB body",
        "POST",
        "/v1/chat/completions",
        json.dumps(
            {**BODIES["/v1/chat/completions"], "messages": [{"role": "user", "content": words}]}
        ).encode(),
        None,
    )
    yield (
        "20 MB body",
        "POST",
        "/v1beta/models/gemini-2.5-flash:generateContent",
        json.dumps({"contents": [{"parts": [{"text": words}]}]}).encode(),
        None,
    )
    yield (
        "20 MB body",
        "POST",
        "/admin/budgets",
        json.dumps({"name": "x", "scope": words, "meter": "m", "limit": 1}).encode(),
        400,
    )
    adjust = {"budget": "b", "subject_id": "demo/alice", "amounts": {"total_tokens": "-1"}, "reason": "fuzz"}
    for amount in (
        '"1e999999"',
        "1e999999",
        '"-1e999999"',
        '"NaN"',
        '"Infinity"',
        "1e-999999",
        '"1E+16"',
        "true",
    ):
        yield (
            "huge amounts",
            "POST",
            "/admin/adjustments",
            _with({**adjust, "amounts": {}}, "amounts", f'{{"total_tokens": {amount}}}'),
            400,
        )
    for limit in ('"1e999999"', "1e999999", '"1E+16"'):
        yield (
            "huge amounts",
            "POST",
            "/admin/budgets",
            _with({"name": "h", "scope": "user", "meter": "total_tokens"}, "limit", limit),
            400,
        )
    for field in ("id", "subject_id", "budget", "reason"):
        yield (
            "integer ids",
            "POST",
            "/admin/adjustments",
            _with({k: v for k, v in adjust.items() if k != field}, field, "7"),
            400,
        )
    yield "integer ids", "POST", "/admin/keys", b'{"name": 7}', 400
    yield "integer ids", "GET", "/admin/events?limit=1e999999", b"", 400
    # past a 64-bit id: refused naming the parameter, as every whole-number parameter past 18 digits
    yield "integer ids", "GET", "/admin/audit?after=99999999999999999999999999", b"", 400
    gemini = "/v1beta/models/gemini-2.5-flash:generateContent"
    for query in (f"?%6Bey={KEY}", f"?%6b%65%79={KEY}", f"?KEY={KEY}", f"?key=&%6Bey={KEY}"):
        expected = 401 if query.startswith("?KEY") else 200
        yield "key in the query", "POST", gemini + query, json.dumps(BODIES[gemini]).encode(), expected


def test_named_input_families_never_answer_500_nor_leak(admin_gateway, captured) -> None:
    """Each family's requests get the answer they must (or at least none above 499), no answer
    names the ledger or a database error, and the gateway logs no traceback."""
    bad = []
    with httpx.Client(base_url=admin_gateway, timeout=120) as client:
        for family, method, path, body, status in _families():
            key = ADMIN if path.startswith("/admin") else None
            headers = {"authorization": f"Bearer {key}"} if key else {}
            if not path.startswith("/admin") and "ey=" not in path.lower():
                headers = {"authorization": f"Bearer {KEY}", "x-goog-api-key": KEY}
            answer = client.request(method, path, content=body or None, headers=headers)
            wrong = answer.status_code >= 500 if status is None else answer.status_code != status
            if wrong or "sqlite" in answer.text.lower() or "Traceback" in answer.text:
                bad.append((family, method, path[:80], body[:80], answer.status_code, answer.text[:200]))
    assert bad == []
    assert captured.tracebacks() == []
