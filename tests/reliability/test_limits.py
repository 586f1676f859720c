"""Each limit is refused with a 4xx (or a 503 to retry) naming what to change, and the server
goes on serving the next good request."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from runtime.sampling.sampling_params import MAX_STOP_STRINGS
from tests.reliability.conftest import assert_serving, generate
from tests.runtime.constrained.test_compile_worker import PERSON, SLOW_SCHEMA

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "params, status, field",
    [
        ({"n": 1000000}, 400, "n"),
        ({"stop": ["x"] * (MAX_STOP_STRINGS + 1)}, 400, "sampling_params.stop"),
        ({"max_new_tokens": 10**9}, 400, "sampling_params.max_new_tokens"),
    ],
)
def test_bad_sampling_limits(client, params, status, field):
    r = generate(client, **params)
    assert r.status_code == status
    assert r.json()["error"]["message"].startswith(f"{field}: ")
    assert_serving(client)


def test_a_body_over_the_byte_limit_is_413(client):
    r = client.post("/generate", content=json.dumps({"text": "x" * 300000}))
    assert r.status_code == 413 and "max-request-bytes" in r.json()["error"]["message"]
    chunks = (b"x" * 50000 for _ in range(8))  # no content-length: counted as it arrives
    r = client.post("/v1/completions", content=chunks, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert_serving(client)


def test_a_long_prompt_against_the_context_is_400(client):
    r = client.post("/v1/completions", json={"model": "default", "prompt": "word " * 9000})
    assert r.status_code == 400 and "context" in r.json()["error"]["message"]
    assert_serving(client)


def test_user_message_without_content_is_400(client):
    body = {"model": "default", "messages": [{"role": "user", "content": None}]}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400 and "content" in r.json()["error"]["message"]
    assert_serving(client)


def test_a_grammar_past_its_compile_deadline_is_400_and_the_next_one_compiles(client):
    slow = {
        "model": "default",
        "messages": [{"role": "user", "content": "Fill the form."}],
        "max_tokens": 8,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "form", "schema": json.loads(SLOW_SCHEMA)},
        },
    }
    plain: list[httpx.Response] = []
    beside = threading.Thread(target=lambda: plain.append(generate(client, max_new_tokens=16)))
    beside.start()  # runs while the grammar compiles (and is given up on)
    r = client.post("/v1/chat/completions", json=slow)
    beside.join()
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] == (
        "sampling_params.json_schema: grammar did not compile within 1 s"
    )
    assert plain[0].status_code == 200
    good = generate(client, json_schema=PERSON, max_new_tokens=32)
    assert good.status_code == 200, good.text
    assert good.json()["text"].startswith('{"name": "')
    assert_serving(client)


def test_timeout_aborts_with_what_was_generated(client):
    t0 = time.time()
    r = client.post(
        "/generate",
        json={
            "text": "Count to a thousand:",
            "sampling_params": {"max_new_tokens": 3000, "ignore_eos": True, "temperature": 0},
            "timeout": 1.0,
        },
    )
    assert r.status_code == 200 and time.time() - t0 < 30
    fr = r.json()["meta_info"]["finish_reason"]
    assert fr["type"] == "abort" and "timeout" in fr["message"]
    assert_serving(client)


def test_past_the_queue_limit_is_503_with_retry_after(server, client):
    """16 sequences may be open: one request holding 16 leaves no room for the next."""
    body = {
        "text": "Tell a long story:",
        "sampling_params": {"max_new_tokens": 2000, "ignore_eos": True, "n": 16},
        "stream": True,
    }
    started, release = threading.Event(), threading.Event()

    def hold():
        with httpx.stream("POST", f"{server.url}/generate", json=body, timeout=120) as r:
            for _ in r.iter_lines():
                started.set()
                release.wait(60)
                break  # leaving closes the stream, which aborts the 16

    t = threading.Thread(target=hold)
    t.start()
    assert started.wait(60)
    try:
        r = generate(client)
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
        assert "max-queued-requests" in r.json()["error"]["message"]
    finally:
        release.set()
        t.join()
    deadline = time.time() + 30
    while generate(client).status_code == 503:  # the aborts land within a step or two
        assert time.time() < deadline
        time.sleep(0.2)
    assert_serving(client)
