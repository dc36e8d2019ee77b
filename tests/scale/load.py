"""A steady load on gateway replicas from a background thread, for the fault tests."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

__all__ = ["BODY", "Load", "Result"]

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 20}


@dataclass(frozen=True, slots=True)
class Result:
    """One answered request: when it started (monotonic seconds since the load began), its
    status, error code, request id and key."""

    at: float
    status: int
    code: str | None
    request_id: str
    key: str


@dataclass
class Load:
    """``workers`` concurrent clients sending requests one after another, round-robin over
    ``urls`` and ``keys``, for ``seconds``."""

    urls: list[str]
    keys: list[str]
    seconds: float
    workers: int = 12
    results: list[Result] = field(default_factory=list)
    _thread: threading.Thread | None = None
    started: float = 0.0

    def start(self) -> Load:
        self.started = time.monotonic()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def join(self) -> list[Result]:
        assert self._thread is not None
        self._thread.join(self.seconds + 120)
        return self.results

    async def _run(self) -> None:
        numbers = itertools.count()
        deadline = self.started + self.seconds
        async with httpx.AsyncClient(timeout=60) as client:

            async def worker() -> None:
                while time.monotonic() < deadline:
                    n = next(numbers)
                    url, key = self.urls[n % len(self.urls)], self.keys[n % len(self.keys)]
                    rid = f"load-{n}"
                    at = time.monotonic() - self.started
                    try:
                        response = await client.post(
                            f"{url}/v1/chat/completions",
                            json=BODY,
                            headers={"authorization": f"Bearer {key}", "x-request-id": rid},
                        )
                    except httpx.HTTPError:
                        self.results.append(Result(at, 0, "client_error", rid, key))
                        continue
                    code = None
                    if response.status_code != 200:
                        code = response.json().get("error", {}).get("code")
                    rid = response.headers.get("x-tokenward-request-id", rid)  # the ledger's id
                    self.results.append(Result(at, response.status_code, code, rid, key))

            await asyncio.gather(*(worker() for _ in range(self.workers)))

    def statuses(self, key: str | None = None) -> Counter[int]:
        """How many answers of each status (of one key)."""
        return Counter(r.status for r in self.results if key is None or r.key == key)

    def answered(self, key: str | None = None) -> set[str]:
        """The request ids answered 200 (of one key)."""
        return {r.request_id for r in self.results if r.status == 200 and (key is None or r.key == key)}
