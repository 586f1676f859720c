"""SGLang's native protocol over HTTP, against the real server on the default model."""

from __future__ import annotations

import json
import re
import threading
import time

import httpx
import pytest

from tests.runtime.entrypoints.conftest import API_KEY

pytestmark = pytest.mark.slow
GREEDY = {"temperature": 0, "max_new_tokens": 8}


def sse_events(resp: httpx.Response) -> list:
    events = []
    for line in resp.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def wait_idle(client, timeout: float = 30) -> dict:
    """Server info once nothing runs or waits; asserts the KV pool is whole."""
    deadline = time.time() + timeout
    while True:
        info = client.get("/get_server_info").json()
        if info["num_running_reqs"] == 0 and info["num_waiting_reqs"] == 0:
            break
        assert time.time() < deadline, f"requests still running: {info}"
        time.sleep(0.2)
    assert info["kv_free_tokens"] + info["cache_tokens"] == info["max_total_tokens"]
    return info


def test_generate_text_batch_and_ids(client):
    r = client.post(
        "/generate", json={"text": "The capital of France is", "sampling_params": GREEDY}
    )
    assert r.status_code == 200
    out = r.json()
    assert "Paris" in out["text"]
    meta = out["meta_info"]
    assert meta["completion_tokens"] == 8 and meta["prompt_tokens"] == 5
    assert meta["finish_reason"] == {"type": "length", "length": 8}
    assert isinstance(meta["id"], str) and "cached_tokens" in meta

    batch = client.post(
        "/generate",
        json={"text": ["The capital of France is", "1, 2, 3,"], "sampling_params": GREEDY},
    ).json()
    assert isinstance(batch, list) and len(batch) == 2
    assert batch[0]["text"] == out["text"]
    assert batch[0]["meta_info"]["cached_tokens"] >= 4  # the first call's prompt is cached

    ids = client.post(
        "/generate", json={"input_ids": out["output_ids"][:0] + [504, 3575, 282, 4649, 314]}
    )
    assert ids.status_code == 200


def test_stream_is_cumulative_then_done(client):
    body = {"text": "Count: 1, 2, 3,", "sampling_params": GREEDY, "stream": True}
    with client.stream("POST", "/generate", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len(chunks) >= 2
    texts = [c["text"] for c in chunks]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))  # cumulative
    assert chunks[-1]["meta_info"]["finish_reason"]["type"] == "length"
    plain = client.post("/generate", json={**body, "stream": False}).json()
    assert texts[-1] == plain["text"]


def test_prefill_only_logprobs_as_sglang_gives_them(client):
    text = "The capital of France is Paris"
    r = client.post(
        "/generate",
        json={
            "text": text,
            "sampling_params": {"max_new_tokens": 0, "temperature": 0},
            "return_logprob": True,
            "return_text_in_logprobs": True,
            "logprob_start_len": 3,
            "top_logprobs_num": 2,
        },
    ).json()
    meta = r["meta_info"]
    assert r["text"] == "" and meta["completion_tokens"] == 0
    entries = meta["input_token_logprobs"]
    assert len(entries) == meta["prompt_tokens"] - 3
    for lp, tid, tok in entries:
        assert isinstance(tid, int) and isinstance(tok, str)
        assert lp is None or lp <= 0
    assert entries[-1][2] == " Paris"
    assert all(len(t) == 2 for t in meta["input_top_logprobs"] if t)
    assert meta["output_token_logprobs"] == []


def test_info_routes(client, server):
    assert httpx.get(f"{server.url}/health").status_code == 200  # no key needed
    assert client.get("/health_generate").status_code == 200
    info = client.get("/get_model_info").json()
    assert info["model_path"].endswith(".gguf") and info["is_generation"] is True
    s1, s2 = client.get("/get_server_info").json(), client.get("/server_info").json()
    assert s1["max_total_tokens"] == s2["max_total_tokens"] == 8192
    assert "api_key" not in s1
    for key in ("num_running_reqs", "num_waiting_reqs", "token_usage", "cache_hit_rate"):
        assert key in s1


def test_flush_cache_and_abort_request(client):
    wait_idle(client)
    assert client.post("/flush_cache").status_code == 200
    assert wait_idle(client)["cache_tokens"] == 0

    result = {}
    body = {
        "text": "Write a long story.",
        "sampling_params": {"max_new_tokens": 2000, "ignore_eos": True},
        "rid": "to-abort",
    }
    t = threading.Thread(target=lambda: result.update(client.post("/generate", json=body).json()))
    t.start()
    deadline = time.time() + 30
    while client.get("/get_server_info").json()["num_running_reqs"] == 0:
        assert time.time() < deadline
        time.sleep(0.1)
    refused = client.post("/flush_cache")
    assert refused.status_code == 400 and "running" in refused.json()["error"]["message"]
    assert client.post("/abort_request", json={"rid": "to-abort"}).status_code == 200
    t.join(30)
    assert result["meta_info"]["finish_reason"]["type"] == "abort"
    assert result["meta_info"]["completion_tokens"] < 2000
    assert client.post("/abort_request", json={}).status_code == 400
    wait_idle(client)


BAD_REQUESTS = [
    (b"{not json", "body"),
    (b"[1, 2]", "body"),
    ({"text": []}, "text"),
    ({"sampling_params": {}}, "text"),
    ({"text": "hi", "input_ids": [1, 2]}, "text / input_ids"),
    (
        {"text": "hi", "sampling_params": {"max_new_tokens": "many"}},
        "sampling_params.max_new_tokens",
    ),
    ({"text": "hi", "sampling_params": {"temprature": 0.5}}, "sampling_params.temprature"),
    ({"text": "hi", "sampling_params": {"top_p": 0}}, "sampling_params.top_p"),
    ({"text": "hi", "stream": "yes"}, "stream"),
    ({"text": "hi", "prompt": "hi"}, "prompt"),
    ({"input_ids": [[]]}, "input_ids"),
    ({"input_ids": [10**9]}, "input_ids"),
    ({"text": "hi " * 9000}, "sampling_params.max_new_tokens"),  # longer than the context
    ({"text": "hi", "return_logprob": True, "top_logprobs_num": -1}, "top_logprobs_num"),
]


@pytest.mark.parametrize("body,field", BAD_REQUESTS, ids=[b for _, b in BAD_REQUESTS])
def test_bad_input_names_the_field(client, body, field):
    if isinstance(body, bytes):
        r = client.post("/generate", content=body, headers={"content-type": "application/json"})
    else:
        r = client.post("/generate", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["message"].startswith(field), err


def test_bad_requests_leave_concurrent_good_ones_unharmed(client):
    expected = client.post(
        "/generate", json={"text": "Once upon a time", "sampling_params": GREEDY}
    ).json()["text"]
    good: list = []

    def run_good():
        for _ in range(3):
            good.append(
                client.post(
                    "/generate", json={"text": "Once upon a time", "sampling_params": GREEDY}
                ).json()["text"]
            )

    threads = [threading.Thread(target=run_good) for _ in range(3)]
    for t in threads:
        t.start()
    for body, _ in BAD_REQUESTS:
        kw = {"content": body} if isinstance(body, bytes) else {"json": body}
        assert client.post("/generate", **kw).status_code == 400
    for t in threads:
        t.join(60)
    assert good == [expected] * 9
    wait_idle(client)


def test_api_key(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
        r = httpx.post(f"{server.url}/generate", json={"text": "hi"}, headers=headers)
        assert r.status_code == 401 and "API key" in r.json()["error"]["message"]
    assert httpx.get(f"{server.url}/get_model_info").status_code == 401
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_metrics(client):
    client.post("/generate", json={"text": "Metrics, please:", "sampling_params": GREEDY})
    text = client.get("/metrics").text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    model = '{model_name="SmolLM2-135M-Instruct.Q4_1"}'
    assert values[f"sglang:generation_tokens_total{model}"] >= 8
    assert values[f"sglang:prompt_tokens_total{model}"] >= 5
    assert values[f"sglang:time_to_first_token_seconds_count{model}"] >= 1
    assert values[f"sglang:inter_token_latency_seconds_count{model}"] >= 7
    assert values[f"sglang:queue_time_seconds_count{model}"] >= 1
    assert values[f"sglang:time_per_output_token_seconds_count{model}"] >= 1
    finished = (
        'sglang:num_requests_total{finish_reason="length",model_name="SmolLM2-135M-Instruct.Q4_1"}'
    )
    assert values[finished] >= 1
    assert values[f"sglang:gen_throughput{model}"] > 0
    gauges = (
        "num_running_reqs",
        "num_queue_reqs",
        "token_usage",
        "cache_hit_rate",
        "num_used_tokens",
    )
    for gauge in gauges:
        assert f"sglang:{gauge}{model}" in values
    # the KV pool's format, what a token costs in it and how many it holds
    (fmt,) = [k for k in values if k.startswith("sglang:kv_cache_dtype{")]
    size = {"float32": 4, "bfloat16": 2}[re.search(r'dtype="(\w+)"', fmt).group(1)]  # auto
    assert values[f"sglang:kv_bytes_per_token{model}"] == 30 * 2 * 3 * 64 * size  # SmolLM2-135M
    assert values[f"sglang:max_total_num_tokens{model}"] > 0
