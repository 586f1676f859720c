"""A real server on the default model, started as `python -m runtime.launch` on a free port."""

from __future__ import annotations

import os

import httpx
import pytest

from runtime.server_process import ServerProcess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
API_KEY = "test-key"


@pytest.fixture(scope="session")
def server():
    """Shared by the HTTP tests: API key on, KV accounting checked after every step."""
    srv = ServerProcess(
        "--max-total-tokens",
        "8192",
        "--api-key",
        API_KEY,
        "--debug-check-memory",
        "--log-level",
        "warning",
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def client(server):
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120
    ) as c:
        yield c
