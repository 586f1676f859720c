"""Every route fuzzed from the server's own OpenAPI schema: no 5xx, no hang, alive after.

Generated bodies keep their shape, but asking for many or long outputs is clamped (a
completion of thousands of tokens per case would only measure the CPU)."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

from tests.reliability.conftest import assert_serving  # noqa: E402

pytestmark = pytest.mark.slow

EXAMPLES = 30  # per route
CLAMPS = {"max_tokens": 4, "max_completion_tokens": 4, "n": 2, "best_of": 2, "top_logprobs": 2}


def clamp(body) -> None:
    if isinstance(body, dict):
        for name, cap in CLAMPS.items():
            value = body.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > cap:
                body[name] = cap
        if body.get("max_tokens") is None and "messages" in body:
            body["max_tokens"] = 4


def fuzz(op, url: str):
    """A hypothesis test of one route: generated requests, none answered 5xx."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy())
    def no_5xx(case):
        clamp(case.body)
        response = case.call(base_url=url, timeout=60)
        assert response.status_code < 500, (op.label, case.body, response.text[:500])

    return no_5xx


def test_no_route_answers_5xx(server):
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert any(op.path == "/v1/chat/completions" for op in operations)
    for op in operations:
        fuzz(op, server.url)()


def test_alive_after_fuzzing(client):
    assert_serving(client)
