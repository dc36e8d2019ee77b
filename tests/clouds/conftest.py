"""Fixtures of the cloud-platform suites: the fake provider with Vertex AI's service-account
check (a key made for the session, its public half given to the fake)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.fixtures import UPSTREAM_KEY
from tests.support.servers import ThreadedServer, serving
from tokenward.fake import FakeSettings
from tokenward.fake import create_app as create_fake

_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE_PEM = _KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
PUBLIC_PEM = (
    _KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def service_account(path: Path, token_uri: str, private_pem: str = PRIVATE_PEM) -> Path:
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "proj",
                "private_key_id": "fake-key-1",
                "private_key": private_pem,
                "client_email": "gateway@proj.iam.gserviceaccount.com",
                "client_id": "1234567890",
                "token_uri": token_uri,
            }
        )
    )
    return path


@pytest.fixture
def vertex_fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadedServer]:
    settings = FakeSettings(reply_tokens=20, api_key=UPSTREAM_KEY, google_service_account_key=PUBLIC_PEM)
    with serving(create_fake(settings)) as server:
        adc = service_account(tmp_path / "adc.json", f"{server.url}/_fake/google/token")
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
        yield server
