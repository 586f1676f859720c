"""JSON decoding with a schema: the same OpenAI chat request with `response_format` to every
system that supports it, so each constrains decoding with its own grammar engine (chat, because
our `/v1/completions` does not take `response_format`)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from peers.workloads import pct

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": {"type": "string", "maxLength": 16},
        "role": {"type": "string", "enum": ["engineer", "teacher", "doctor", "artist"]},
        "active": {"type": "boolean"},
    },
    "required": ["name", "age", "city", "role", "active"],
    "additionalProperties": False,
}
PEOPLE = ["Ada", "Bruno", "Chen", "Dalia", "Emeka", "Farah", "Goran", "Hana", "Ivo", "Jun"]


def json_body(prompt: str, max_tokens: int) -> dict:
    return {
        "model": "default",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": SCHEMA},
        },
    }


def is_valid(text: str) -> bool:
    """Parses and matches the schema (jsonschema where installed, else the required keys)."""
    try:
        obj = json.loads(text)
    except ValueError:
        return False
    try:
        import jsonschema
    except ImportError:
        return isinstance(obj, dict) and set(SCHEMA["required"]) <= set(obj)
    try:
        jsonschema.validate(obj, SCHEMA)
    except jsonschema.ValidationError:
        return False
    return True


def run_json(url: str, salt: str, n: int, concurrency: int = 8, max_tokens: int = 96) -> dict:
    """`n` profiles, `concurrency` at a time: requests/s, output tokens/s, share valid."""
    prompts = [
        f"[{salt}-{i}] Write a JSON profile of {PEOPLE[i % len(PEOPLE)]}, a person from a story."
        for i in range(n)
    ]

    async def main() -> tuple[float, list]:
        sem = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(base_url=url, timeout=1800) as client:

            async def one(p: str) -> tuple[float, dict]:
                async with sem:
                    t0 = time.perf_counter()
                    r = await client.post("/v1/chat/completions", json=json_body(p, max_tokens))
                    r.raise_for_status()
                    return time.perf_counter() - t0, r.json()

            t0 = time.perf_counter()
            out = await asyncio.gather(*(one(p) for p in prompts))
            return time.perf_counter() - t0, out

    wall, out = asyncio.run(main())
    texts = [o["choices"][0]["message"]["content"] for _, o in out]
    tokens = sum((o.get("usage") or {}).get("completion_tokens", 0) for _, o in out)
    return {
        "programs": n,
        "wall_s": wall,
        "programs_per_s": n / wall,
        "out_tokens_per_s": tokens / wall,
        "latency_p50_s": pct([t for t, _ in out], 0.5),
        "latency_p99_s": pct([t for t, _ in out], 0.99),
        "valid": sum(map(is_valid, texts)) / n,
    }
