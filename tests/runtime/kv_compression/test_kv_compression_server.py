"""KV compression through the real server: the per-request spec on /generate and the OpenAI
routes, the server's default for long prompts, 400s that name the field, and the saved tokens
on /metrics."""

from __future__ import annotations

import httpx
import pytest

from runtime.server_process import ServerProcess

GREEDY = {"temperature": 0, "max_new_tokens": 8, "ignore_eos": True}
SNAP = {"method": "snapkv", "budget": 64}


@pytest.fixture(scope="module")
def client():
    srv = ServerProcess(
        *("--max-total-tokens", "4096", "--debug-check-memory", "--log-level", "warning"),
        *("--kv-compression", "streamingllm", "--kv-compression-budget", "48"),
        *("--kv-compression-min-tokens", "300"),
    )
    try:
        with httpx.Client(base_url=srv.url, timeout=300) as c:
            yield c
    finally:
        srv.stop()


def long_text(seed: int) -> str:
    """About 600 tokens of facts, then a question about one of them."""
    facts = [f"Locker {i} holds {seed * i % 89} red pens." for i in range(55)]
    return (
        f"Inventory {seed}. " + " ".join(facts) + " How many red pens does locker 7 hold? Answer:"
    )


def generate(client, text, **params) -> dict:
    r = client.post("/generate", json={"text": text, "sampling_params": {**GREEDY, **params}})
    assert r.status_code == 200, r.text
    return r.json()


def test_snapkv_request_keeps_its_budget(client):
    out = generate(client, long_text(3), kv_compression=SNAP)
    meta = out["meta_info"]
    assert 500 <= meta["prompt_tokens"] <= 800
    assert meta["kv_tokens_kept"] == meta["cached_tokens"] + 64  # a cached prefix stays whole
    assert out["text"].strip() and meta["completion_tokens"] == 8


def test_server_default_applies_to_long_prompts_only(client):
    meta = generate(client, long_text(5))["meta_info"]
    assert meta["kv_tokens_kept"] == meta["cached_tokens"] + 48
    assert "kv_tokens_kept" not in generate(client, "Say hi.")["meta_info"]


def test_openai_routes_take_the_extra_field(client):
    body = {"model": "default", "max_tokens": 4, "temperature": 0, "kv_compression": SNAP}
    r = client.post("/v1/completions", json={**body, "prompt": long_text(7), "ignore_eos": True})
    assert r.status_code == 200 and r.json()["choices"][0]["text"], r.text
    chat = {**body, "messages": [{"role": "user", "content": long_text(11)}]}
    r = client.post("/v1/chat/completions", json=chat)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"], r.text


BAD = [
    ({"method": "snapkv", "budget": 0}, "sampling_params.kv_compression.budget"),
    ({"method": "snapkv"}, "sampling_params.kv_compression.budget"),
    ({"method": "zip", "budget": 8}, "sampling_params.kv_compression.method"),
    ({"method": "snapkv", "budget": 8, "window_size": 64}, "sampling_params.kv_compression.window"),
    ({"method": "streamingllm", "budget": 8, "kernel_size": 3}, "sampling_params.kv_compression."),
    ("snapkv", "sampling_params.kv_compression"),
]


@pytest.mark.parametrize("spec,field", BAD)
def test_bad_specs_are_refused_naming_the_field(client, spec, field):
    r = client.post("/generate", json={"text": "hi", "sampling_params": {"kv_compression": spec}})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith(field), r.text
    body = {"model": "default", "prompt": "hi", "max_tokens": 2, "kv_compression": spec}
    r = client.post("/v1/completions", json=body)
    openai_field = field.removeprefix("sampling_params.")  # the body's own field there
    assert r.status_code == 400 and openai_field in r.json()["error"]["message"], r.text


def test_metrics_count_the_saved_tokens(client):
    generate(client, long_text(13), kv_compression=SNAP)
    page = client.get("/metrics").text
    line = next(x for x in page.splitlines() if x.startswith("sglang:kv_compression_saved"))
    assert float(line.split()[-1]) >= 400
