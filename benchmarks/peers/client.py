"""Streamed OpenAI completions, the one protocol every system here speaks, timed per request.

Tokens are counted from `usage` where the server reports it, else from the chunks that carry
text (llama.cpp's server sends one per token and no usage in streams).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import httpx


@dataclass
class Completion:
    latency: float
    ttft: float
    prompt_tokens: int
    completion_tokens: int
    text: str


def completion_body(prompt: str, max_tokens: int) -> dict:
    """Greedy, end-of-sequence ignored (where the server honours it), streamed with usage."""
    return {
        "model": "default",
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def stream_completion(client: httpx.AsyncClient, prompt: str, max_tokens: int) -> Completion:
    start = time.perf_counter()
    first, chunks, text, usage = None, 0, "", None
    async with client.stream(
        "POST", "/v1/completions", json=completion_body(prompt, max_tokens)
    ) as r:
        if r.status_code != 200:
            await r.aread()
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:300]}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line.strip() == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            for c in chunk.get("choices") or []:
                if c.get("text"):
                    if first is None:
                        first = time.perf_counter()
                    chunks += 1
                    text += c["text"]
    end = time.perf_counter()
    return Completion(
        latency=end - start,
        ttft=(first or end) - start,
        prompt_tokens=(usage or {}).get("prompt_tokens", 0),
        completion_tokens=(usage or {}).get("completion_tokens", chunks),
        text=text,
    )


def new_client(url: str, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections + 4, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=url, timeout=1800, limits=limits)


async def run_all(url: str, prompts: list[str], max_tokens: int) -> tuple[float, list[Completion]]:
    """Every prompt sent at once; (wall seconds, completions in prompt order)."""
    async with new_client(url, len(prompts)) as client:
        t0 = time.perf_counter()
        out = await asyncio.gather(*(stream_completion(client, p, max_tokens) for p in prompts))
        return time.perf_counter() - t0, list(out)


async def run_closed_loop(
    url: str, prompts: list[str], clients: int, max_tokens: int
) -> tuple[float, list[Completion]]:
    """`clients` clients, each sending its next prompt when its last one finished."""
    queue: asyncio.Queue = asyncio.Queue()
    for p in prompts:
        queue.put_nowait(p)
    results: list[Completion] = []

    async def loop(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            results.append(await stream_completion(client, queue.get_nowait(), max_tokens))

    async with new_client(url, clients) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(loop(client) for _ in range(clients)))
        return time.perf_counter() - t0, results
