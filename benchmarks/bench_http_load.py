"""Load over HTTP: the shared-prefix workload through the real server, at several concurrencies.

A closed loop of C clients, each sending its next request when the previous one finished, every
request a streaming `/generate` (so time to first token is seen as a client sees it). Between
levels the prefix cache is flushed, so each level starts cold. Prints requests/s, output
tokens/s, and latency / TTFT percentiles per level.
    .venv/bin/python benchmarks/bench_http_load.py [--concurrency 1 8 32] [--url URL]
        [--compare-engine] [-- server flags]
With no --url it starts `python -m runtime.launch` itself with the flags after `--`.
`--compare-engine` runs the same levels through the in-process Engine afterwards, to show what
HTTP, SSE and JSON cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time

import httpx
from bench_shared_prefix import (  # benchmarks run as scripts from this folder
    add_workload_args,
    build_prompts,
    pct,
)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from runtime.server_process import ServerProcess  # noqa: E402

logger = logging.getLogger("bench_http_load")


async def timed(chunks) -> dict:
    """Latency, TTFT and the last meta_info of one streamed request."""
    start = time.perf_counter()
    first, meta = None, None
    async for chunk in chunks:
        if first is None and chunk["meta_info"]["completion_tokens"] > 0:
            first = time.perf_counter()
        meta = chunk["meta_info"]
    return {"latency": time.perf_counter() - start, "ttft": first - start, "meta": meta}


def http_sender(url: str, headers: dict, concurrency: int):
    """Streams /generate over HTTP; returns (send(text, params) -> async chunks, closer)."""
    limits = httpx.Limits(max_connections=concurrency + 4)
    client = httpx.AsyncClient(base_url=url, headers=headers, timeout=600, limits=limits)

    async def send(text: str, params: dict):
        body = {"text": text, "sampling_params": params, "stream": True}
        async with client.stream("POST", "/generate", json=body) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    yield json.loads(line[6:])

    return send, client.aclose


def engine_sender(engine):
    """The same requests through the in-process Engine, for the cost of HTTP."""

    async def send(text: str, params: dict):
        async for chunk in await engine.async_generate(text, params, stream=True):
            yield chunk

    async def close() -> None:
        pass

    return send, close


async def run_level(make_sender, prompts: list[str], concurrency: int, new_tokens: int) -> dict:
    """A closed loop: `concurrency` clients, each sending its next request when one finishes."""
    queue: asyncio.Queue = asyncio.Queue()
    for p in prompts:
        queue.put_nowait(p)
    params = {"temperature": 0, "max_new_tokens": new_tokens, "ignore_eos": True}
    send, close = make_sender(concurrency)
    results = []

    async def client_loop() -> None:
        while not queue.empty():
            results.append(await timed(send(queue.get_nowait(), params)))

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    finally:
        await close()
    wall = time.perf_counter() - t0
    lat = [r["latency"] for r in results]
    ttft = [r["ttft"] for r in results]
    out_tokens = sum(r["meta"]["completion_tokens"] for r in results)
    prompt_tokens = sum(r["meta"]["prompt_tokens"] for r in results)
    cached = sum(r["meta"]["cached_tokens"] for r in results)
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "wall_s": wall,
        "req_per_s": len(results) / wall,
        "out_tok_per_s": out_tokens / wall,
        "total_tok_per_s": (out_tokens + prompt_tokens) / wall,
        "lat_p50": pct(lat, 0.5),
        "lat_p90": pct(lat, 0.9),
        "lat_p99": pct(lat, 0.99),
        "ttft_p50": pct(ttft, 0.5),
        "ttft_p99": pct(ttft, 0.99),
        "cached_share": cached / prompt_tokens,
    }


def parse_flags(flags: list[str]):
    """`--max-total-tokens 16384 --disable-radix-cache` as Engine keywords."""
    i = 0
    while i < len(flags):
        name = flags[i].removeprefix("--").replace("-", "_")
        if i + 1 < len(flags) and not flags[i + 1].startswith("--"):
            value = flags[i + 1]
            yield name, int(value) if value.lstrip("-").isdigit() else value
            i += 2
        else:
            yield name, True
            i += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", help="a running server (default: start one)")
    ap.add_argument("--api-key")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    add_workload_args(ap)
    ap.add_argument(
        "--compare-engine",
        action="store_true",
        help="also run the levels through the in-process Engine (the same flags), for HTTP's cost",
    )
    ap.add_argument("server_flags", nargs="*", help="flags for the server it starts (after --)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    prompts = [
        t for _, t in build_prompts(args.groups, args.per_group, args.system_tokens, args.seed)
    ]
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    server = None
    url = args.url
    if url is None:
        t0 = time.perf_counter()
        server = ServerProcess(*args.server_flags, "--log-level", "warning")
        url = server.url
        logger.info(
            "server up in %.1fs (%s)", time.perf_counter() - t0, " ".join(args.server_flags)
        )
    rows = []
    try:
        for c in args.concurrency:
            httpx.post(f"{url}/flush_cache", headers=headers, timeout=60).raise_for_status()
            row = asyncio.run(
                run_level(lambda n: http_sender(url, headers, n), prompts, c, args.new_tokens)
            )
            rows.append(("HTTP", row))
            logger.info(
                "HTTP %s", {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
            )
    finally:
        if server is not None:
            server.stop()
    if args.compare_engine:
        from runtime import Engine

        engine_flags = {"log_level": "warning", **dict(parse_flags(args.server_flags))}
        with Engine(**engine_flags) as engine:
            for c in args.concurrency:
                engine.flush_cache()
                row = asyncio.run(
                    run_level(lambda n: engine_sender(engine), prompts, c, args.new_tokens)
                )
                rows.append(("Engine", row))
                logger.info(
                    "Engine %s",
                    {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()},
                )
    logger.info(
        "\n%d requests (%d groups x %d, ~%d-token shared system prompt, %d new tokens), HTTP "
        "streaming /generate, closed loop\n",
        len(prompts),
        args.groups,
        args.per_group,
        args.system_tokens,
        args.new_tokens,
    )
    logger.info(
        "| via | concurrency | req/s | out tok/s | total tok/s | latency p50 / p90 / p99 (s) "
        "| TTFT p50 / p99 (s) | cached prompt share |"
    )
    logger.info("|---|---|---|---|---|---|---|---|")
    for via, r in rows:
        logger.info(
            "| %s | %d | %.2f | %.1f | %.0f | %.2f / %.2f / %.2f | %.2f / %.2f | %.1f%% |",
            via,
            r["concurrency"],
            r["req_per_s"],
            r["out_tok_per_s"],
            r["total_tok_per_s"],
            r["lat_p50"],
            r["lat_p90"],
            r["lat_p99"],
            r["ttft_p50"],
            r["ttft_p99"],
            100 * r["cached_share"],
        )


if __name__ == "__main__":
    main()
