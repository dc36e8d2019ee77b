"""Fixtures of the fake provider's tests: one fake per test module on a real socket, and clients."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from tests.fake.helpers import running
from tokenward.fake import create_app


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with running(create_app()) as base:
        yield base


@pytest.fixture
def oai(url: str) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(api_key="test-key", base_url=f"{url}/v1", max_retries=0)
    yield client
    client.close()


@pytest.fixture
def ant(url: str) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(api_key="test-key", base_url=url, max_retries=0)
    yield client
    client.close()


@pytest.fixture
def raw(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=10) as client:
        yield client
