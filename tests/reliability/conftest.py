"""A server with tight limits, shared by the limit and storm tests."""

from __future__ import annotations

import httpx
import pytest

from runtime.server_process import ServerProcess

POOL_TOKENS = 4096
LIMIT_FLAGS = [
    "--max-total-tokens",
    str(POOL_TOKENS),
    "--max-fanout",
    "16",
    "--max-queued-requests",
    "16",
    "--max-request-bytes",
    "200000",
    "--grammar-compile-timeout",
    "1",
    "--debug-check-memory",  # a broken KV account stops the scheduler, and the test sees it
    "--log-level",
    "warning",
]


@pytest.fixture(scope="package")
def server():
    srv = ServerProcess(*LIMIT_FLAGS)
    yield srv
    srv.stop()


@pytest.fixture(scope="package")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


def generate(client: httpx.Client, text: str = "Hello", **params) -> httpx.Response:
    body = {"text": text, "sampling_params": {"max_new_tokens": 4, "temperature": 0, **params}}
    return client.post("/generate", json=body)


def assert_serving(client: httpx.Client) -> None:
    """The server answers health and a good request, and holds no request's KV."""
    assert client.get("/health").status_code == 200
    r = generate(client)
    assert r.status_code == 200 and r.json()["meta_info"]["finish_reason"]["type"] == "length"
