"""One server for the frontend tests, started by `Runtime` (and so a test of it too)."""

from __future__ import annotations

import pytest

FEWSHOT = (
    "The capital of Japan is Tokyo.\nThe capital of Italy is Rome.\n"
    "The capital of Spain is Madrid.\n"
)


@pytest.fixture(scope="session")
def runtime():
    from frontend_lang import Runtime

    rt = Runtime(max_total_tokens=16384, log_level="warning")
    yield rt
    rt.shutdown()
    assert rt.server.proc.poll() is not None  # the server is gone with it
