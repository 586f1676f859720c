"""Capacity and speed of KV compression under one fixed KV pool: long-document requests with
full KV and with each compression spec, one after the other in one run (order rotating over
`--repeats`).

Every request is a different document (`--min-tokens` to `--max-tokens` tokens) and a question;
all arrive at once. Full KV holds a request's whole prompt while it decodes; a compressed one
holds `budget` prompt tokens per layer once its prefill is done, and its exact prompt stays in
the radix cache only until the next admission needs the room. Reported: the most requests
running at once (polled), requests per second, TTFT, and the prompt KV tokens kept.
    .venv/bin/python benchmarks/bench_kv_compression_capacity.py \
        [--requests 16 --pool-tokens 24000 --specs full snapkv:512 streamingllm:512]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import threading

from bench_shared_prefix import (  # benchmarks run as scripts from this folder
    system_prompt,
    timed_engine_run,
    ttft_and_last,
)

logger = logging.getLogger("bench_kv_compression_capacity")


def build_requests(tok, n: int, min_tokens: int, max_tokens: int) -> list[list[int]]:
    """n different documents, lengths spread evenly over [min_tokens, max_tokens]."""
    reqs = []
    for i in range(n):
        target = min_tokens + (max_tokens - min_tokens) * i // max(1, n - 1)
        text = system_prompt(1000 + i, target)
        ids = tok.encode(f"{text}\n\nQuestion: which desk handles refunds?\nAnswer:")
        reqs.append(ids[-target:] if len(ids) > target else ids)
    return reqs


def parse_spec(name: str) -> dict | None:
    """ "full", or "method:budget" (e.g. snapkv:512)."""
    if name == "full":
        return None
    method, budget = name.split(":")
    return {"method": method, "budget": int(budget)}


def run(spec: dict | None, reqs, pool: int, running: int, new_tokens: int) -> dict:
    params = {"temperature": 0, "max_new_tokens": new_tokens, "ignore_eos": True}
    if spec is not None:
        params["kv_compression"] = spec

    peak = [0]

    async def all_at_once(eng) -> list:
        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(0.5):
                peak[0] = max(peak[0], eng.get_server_info()["num_running_reqs"])

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            return await asyncio.gather(*(ttft_and_last(eng, ids, params) for ids in reqs))
        finally:
            stop.set()
            poller.join()

    res = timed_engine_run(
        all_at_once, max_total_tokens=pool, max_running_requests=running, log_level="warning"
    )
    done, elapsed = list(zip(res["ttft"], res["last"])), res["seconds"]
    metas = [last["meta_info"] for _, last in done]
    prompt = [m["prompt_tokens"] for m in metas]
    kept = [m.get("kv_tokens_kept", m["prompt_tokens"]) for m in metas]
    return {
        "seconds": elapsed,
        "req_s": len(done) / elapsed,
        "ttft": sorted(t for t, _ in done),
        "peak": peak[0],
        "kept": statistics.mean(kept),
        "prompt": statistics.mean(prompt),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--specs", nargs="+", default=["full", "snapkv:512", "streamingllm:512"])
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--min-tokens", type=int, default=4000)
    ap.add_argument("--max-tokens", type=int, default=6000)
    ap.add_argument("--pool-tokens", type=int, default=24000, help="the fixed KV pool")
    ap.add_argument("--max-running", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from runtime.model_loader.loader import load_tokenizer, prepare_model_folder

    tok = load_tokenizer(prepare_model_folder(None, None))
    reqs = build_requests(tok, args.requests, args.min_tokens, args.max_tokens)
    logger.info(
        "%d requests of %d-%d tokens, pool %d tokens, %d new tokens each",
        len(reqs), min(map(len, reqs)), max(map(len, reqs)), args.pool_tokens, args.new_tokens,
    )  # fmt: skip
    results: dict[str, list[dict]] = {s: [] for s in args.specs}
    for rep in range(args.repeats):
        order = args.specs[rep % len(args.specs) :] + args.specs[: rep % len(args.specs)]
        for name in order:
            res = run(parse_spec(name), reqs, args.pool_tokens, args.max_running, args.new_tokens)
            results[name].append(res)
            logger.info(
                "repeat %d %s: %.1f s, peak %d running", rep, name, res["seconds"], res["peak"]
            )
    base = args.specs[0]
    base_rs = statistics.median(r["req_s"] for r in results[base])
    base_peak = max(1, statistics.median(r["peak"] for r in results[base]))
    print(
        f"{'spec':<18} {'prompt':>7} {'kept':>7} {'peak run':>8} {'x run':>6} {'req/s':>6} "
        f"{'x req/s':>7} {'TTFT p50':>9} {'TTFT p90':>9} {'seconds':>8}"
    )
    for name, runs in results.items():
        ttft = sorted(t for r in runs for t in r["ttft"])
        peak = statistics.median(r["peak"] for r in runs)
        req_s = statistics.median(r["req_s"] for r in runs)
        print(
            f"{name:<18} {runs[0]['prompt']:>7.0f} {runs[0]['kept']:>7.0f} {peak:>8.0f} "
            f"{peak / base_peak:>6.2f} {req_s:>6.3f} {req_s / base_rs:>7.2f} "
            f"{ttft[len(ttft) // 2]:>9.2f} {ttft[int(len(ttft) * 0.9)]:>9.2f} "
            f"{statistics.median(r['seconds'] for r in runs):>8.1f}"
        )


if __name__ == "__main__":
    main()
