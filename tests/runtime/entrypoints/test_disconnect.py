"""Clients that leave early: their requests are aborted and their KV comes back."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from tests.runtime.entrypoints.conftest import API_KEY
from tests.runtime.entrypoints.test_native_api import wait_idle

pytestmark = pytest.mark.slow
HEADERS = {"Authorization": f"Bearer {API_KEY}"}


def test_hundred_streams_half_leaving_early_leave_the_pool_whole(server, client):
    async def one(c: httpx.AsyncClient, i: int) -> tuple[bool, str | None]:
        leave = i % 2 == 1
        body = {
            "text": f"Request {i}: tell me about the number {i}.",
            "sampling_params": {"max_new_tokens": 300 if leave else 12, "ignore_eos": True},
            "stream": True,
        }
        if i % 4 == 0:  # a quarter through the OpenAI protocol
            path, body = (
                "/v1/completions",
                {
                    "model": "m",
                    "prompt": body["text"],
                    "max_tokens": 12,
                    "stream": True,
                    "ignore_eos": True,
                },
            )
        else:
            path = "/generate"
        last = None
        async with c.stream("POST", path, json=body) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    return leave, "done"
                last = json.loads(line[6:])
                if leave and last["meta_info"]["completion_tokens"] >= 2:
                    return leave, "left"  # closing the stream disconnects
        return leave, last

    async def main():
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(
            base_url=server.url, headers=HEADERS, timeout=300, limits=limits
        ) as c:
            return await asyncio.gather(*(one(c, i) for i in range(100)))

    results = asyncio.run(main())
    assert sum(1 for leave, how in results if leave and how == "left") == 50
    assert sum(1 for leave, how in results if not leave and how == "done") == 50
    wait_idle(client, timeout=60)  # aborted requests gave their KV back
    r = client.post(
        "/generate",
        json={"text": "Still there?", "sampling_params": {"max_new_tokens": 4, "ignore_eos": True}},
    )
    assert r.status_code == 200 and r.json()["meta_info"]["completion_tokens"] == 4


def test_non_streaming_client_that_times_out_is_aborted(server, client):
    body = {
        "text": "A very long essay:",
        "sampling_params": {"max_new_tokens": 3000, "ignore_eos": True},
    }
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/generate", json=body, headers=HEADERS, timeout=2)
    t0 = time.time()
    wait_idle(client, timeout=20)
    assert time.time() - t0 < 20
