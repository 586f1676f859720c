"""A storm: 200 streaming requests, 12 at a time, a quarter of the clients leaving after their first chunk,
some aborted by id, bad bodies among them, on a server that checks its KV accounting after
every step. Afterwards nothing runs, a flush frees every slot, and memory is where it was."""

from __future__ import annotations

import asyncio
import random

import httpx
import psutil
import pytest

from tests.reliability.conftest import POOL_TOKENS, assert_serving

pytestmark = pytest.mark.slow

CONCURRENCY = 12  # under the server's 16 open sequences, with room for aborts in flight
BAD_BODIES = [
    b"{",
    b"[1, 2]",
    b'{"text": 5}',
    b'{"text": "x", "sampling_params": {"top_p": 7}}',
    b'{"text": "x", "sampling_params": {"n": 999999}}',
    b'{"input_ids": [-1]}',
    b'{"text": "x", "stream": "yes"}',
]


def rss(pid: int) -> int:
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])


async def one(client: httpx.AsyncClient, i: int, rng: random.Random) -> str:
    if i % 10 == 9:
        r = await client.post("/generate", content=rng.choice(BAD_BODIES))
        assert 400 <= r.status_code < 500, r.text
        return "bad"
    rid = f"storm-{i}"
    body = {
        "text": f"Request {i}: " + "tell me about the sea " * rng.randint(1, 30),
        "sampling_params": {"max_new_tokens": rng.randint(1, 24), "temperature": 0.7},
        "stream": True,
        "rid": rid,
    }
    leave = rng.random() < 0.25
    abort = not leave and rng.random() < 0.15
    async with client.stream("POST", "/generate", json=body) as r:
        assert r.status_code in (200, 503), await r.aread()
        if r.status_code == 503:
            return "busy"
        async for line in r.aiter_lines():
            if leave and line.startswith("data:"):
                return "left"
            if abort and line.startswith("data:"):
                await client.post("/abort_request", json={"rid": rid})
                abort = False
    return "done"


async def storm(url: str) -> dict[str, int]:
    rng = random.Random(0)
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        sem = asyncio.Semaphore(CONCURRENCY)

        async def bounded(i: int) -> str:
            async with sem:
                return await one(client, i, rng)

        kinds = await asyncio.gather(*(bounded(i) for i in range(200)))
    return {k: kinds.count(k) for k in set(kinds)}


def test_storm_leaves_nothing_behind(server, client):
    assert_serving(client)
    before = rss(server.proc.pid)
    kinds = asyncio.run(storm(server.url))
    assert kinds.get("bad") == 20 and kinds.get("left", 0) > 10 and kinds.get("done", 0) > 100
    assert kinds.get("busy", 0) < 20, kinds
    info = client.get("/get_server_info").json()
    assert info["num_running_reqs"] == 0 and info["num_waiting_reqs"] == 0
    assert client.post("/flush_cache").status_code == 200
    info = client.get("/get_server_info").json()
    assert info["kv_free_tokens"] == POOL_TOKENS and info["cache_tokens"] == 0
    assert rss(server.proc.pid) < before + 300 * 2**20  # no growth beyond allocator slack
    assert_serving(client)
