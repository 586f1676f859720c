"""Load over HTTP: the shared-prefix workload through the real server, at several concurrencies.

A closed loop of C clients, each sending its next request when the previous one finished, every
request a streaming `/generate` (so time to first token is seen as a client sees it). Between
levels the prefix cache is flushed, so each level starts cold. Prints requests/s, output
tokens/s, and latency / TTFT percentiles per level.
    .venv/bin/python benchmarks/bench_http_load.py [--concurrency 1 8 32] [--url URL]
With no --url it starts `python -m runtime.launch` itself (add server flags after --).
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
from bench_shared_prefix import build_prompts, pct  # benchmarks run as scripts from this folder

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from runtime.server_process import ServerProcess  # noqa: E402

logger = logging.getLogger("bench_http_load")


async def one_request(c: httpx.AsyncClient, text: str, new_tokens: int) -> dict:
    body = {
        "text": text,
        "sampling_params": {"temperature": 0, "max_new_tokens": new_tokens, "ignore_eos": True},
        "stream": True,
    }
    start = time.perf_counter()
    first, meta = None, None
    async with c.stream("POST", "/generate", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and chunk["meta_info"]["completion_tokens"] > 0:
                first = time.perf_counter()
            meta = chunk["meta_info"]
    end = time.perf_counter()
    return {"latency": end - start, "ttft": first - start, "meta": meta}


async def run_level(url: str, headers: dict, prompts: list[str], concurrency: int, new_tokens: int):
    queue: asyncio.Queue = asyncio.Queue()
    for p in prompts:
        queue.put_nowait(p)
    results = []

    async def client_loop(c: httpx.AsyncClient) -> None:
        while not queue.empty():
            results.append(await one_request(c, queue.get_nowait(), new_tokens))

    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600, limits=limits) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop(c) for _ in range(concurrency)))
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", help="a running server (default: start one)")
    ap.add_argument("--api-key")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--per-group", type=int, default=16)
    ap.add_argument("--system-tokens", type=int, default=700)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
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
    try:
        rows = []
        for c in args.concurrency:
            httpx.post(f"{url}/flush_cache", headers=headers, timeout=60).raise_for_status()
            row = asyncio.run(run_level(url, headers, prompts, c, args.new_tokens))
            rows.append(row)
            logger.info(
                "%s", {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
            )
    finally:
        if server is not None:
            server.stop()
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
        "| concurrency | req/s | out tok/s | total tok/s | latency p50 / p90 / p99 (s) "
        "| TTFT p50 / p99 (s) | cached prompt share |"
    )
    logger.info("|---|---|---|---|---|---|---|")
    for r in rows:
        logger.info(
            "| %d | %.2f | %.1f | %.0f | %.2f / %.2f / %.2f | %.2f / %.2f | %.1f%% |",
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
