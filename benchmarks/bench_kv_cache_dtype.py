"""Capacity and speed of each `--kv-cache-dtype` under one fixed memory budget.

Sixteen agents each have a ~1,500-token system prompt; rounds of requests visit every agent in
a shuffled order, a closed loop of clients sending them. In bfloat16 the budget holds only a few
agents' prompts beside the running requests, so the radix cache keeps evicting what the next
round needs; a smaller format keeps more of them and serves them from the cache. Every format
gets the same bytes (pool tokens = budget / bytes per token, after int4's staging area) and the
same page size, one after the other in one run; with `--repeats` the order rotates.
    .venv/bin/python benchmarks/bench_kv_cache_dtype.py [--budget-mb 300 --rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics

import torch
from bench_shared_prefix import (  # benchmarks run as scripts from this folder
    system_prompt,
    timed_engine_run,
    ttft_and_last,
)

from runtime.kv_cache_dtype import kv_bytes_per_token, kv_fixed_bytes
from runtime.model_runner import resolve_dtype

logger = logging.getLogger("bench_kv_cache_dtype")

FORMATS = ["bfloat16", "fp8_e4m3", "int8", "int4"]


def build_requests(tok, agents: int, rounds: int, prompt_tokens: int, seed: int):
    """[(agent, ids)]: each round asks every agent one question, agents shuffled per round."""
    systems = [system_prompt(a, prompt_tokens) for a in range(agents)]
    rng = random.Random(seed)
    reqs = []
    for r in range(rounds):
        order = list(range(agents))
        rng.shuffle(order)
        for a in order:
            text = f"{systems[a]}\n\nQuestion {r}: which desk handles refunds?\nAnswer:"
            reqs.append((a, tok.encode(text)))
    return reqs


def pool_tokens(fmt: str, budget: int, cfg, page: int, running: int) -> int:
    shape = (cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, page)
    model_dtype = resolve_dtype("auto", torch.device("cpu"))  # the engine's default
    fixed = kv_fixed_bytes(fmt, *shape, running, model_dtype)
    return int((budget - fixed) // kv_bytes_per_token(fmt, *shape))


def run(fmt: str, reqs, tokens: int, page: int, clients: int, new_tokens: int) -> dict:
    params = {"temperature": 0, "max_new_tokens": new_tokens, "ignore_eos": True}
    queue = list(enumerate(reqs))

    async def client(eng, done: list) -> None:
        while queue:
            _, (_, ids) = queue.pop(0)
            done.append(await ttft_and_last(eng, ids, params))

    async def all_clients(eng) -> list:
        done: list = []
        await asyncio.gather(*(client(eng, done) for _ in range(clients)))
        return done

    res = timed_engine_run(
        all_clients,
        max_total_tokens=tokens,
        kv_cache_dtype=fmt,
        page_size=page,
        max_running_requests=clients,
        log_level="warning",
    )
    return {
        "seconds": res["seconds"],
        "req_s": len(res["last"]) / res["seconds"],
        "ttft": res["ttft"],
        "hit": res["hit"],
        "bytes_per_token": res["info"]["kv_bytes_per_token"],
        "tokens": res["info"]["max_total_tokens"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--formats", nargs="+", default=FORMATS)
    ap.add_argument("--budget-mb", type=float, default=300.0, help="KV bytes, the same for all")
    ap.add_argument("--agents", type=int, default=16)
    ap.add_argument("--prompt-tokens", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--page-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from runtime.model_loader.loader import load_config, load_tokenizer, prepare_model_folder

    folder = prepare_model_folder(None, None)
    cfg = load_config(folder)
    tok = load_tokenizer(folder)
    reqs = build_requests(tok, args.agents, args.rounds, args.prompt_tokens, args.seed)
    mean_prompt = statistics.mean(len(ids) for _, ids in reqs)
    budget = int(args.budget_mb * 2**20)
    logger.info(
        "%d agents x %d rounds, prompts %.0f tokens (working set %.0f tokens), budget %.0f MiB, "
        "page %d, %d clients, %d new tokens",
        args.agents, args.rounds, mean_prompt, args.agents * mean_prompt, args.budget_mb,
        args.page_size, args.clients, args.new_tokens,
    )  # fmt: skip
    results: dict[str, list[dict]] = {f: [] for f in args.formats}
    for rep in range(args.repeats):
        order = args.formats[rep % len(args.formats) :] + args.formats[: rep % len(args.formats)]
        for fmt in order:
            tokens = pool_tokens(fmt, budget, cfg, args.page_size, args.clients)
            res = run(fmt, reqs, tokens, args.page_size, args.clients, args.new_tokens)
            results[fmt].append(res)
            logger.info("repeat %d %s: %.1f s, hit %.2f", rep, fmt, res["seconds"], res["hit"])
    base = args.formats[0]
    base_tokens = results[base][0]["tokens"]
    base_s = statistics.median(r["seconds"] for r in results[base])
    print(
        f"{'kv-cache-dtype':<14} {'B/token':>8} {'tokens':>7} {'x tok':>6} {'hit':>5} "
        f"{'req/s':>6} {'TTFT p50':>9} {'TTFT p90':>9} {'seconds':>8} {'x speed':>7}"
    )
    for fmt, runs in results.items():
        ttft = sorted(t for r in runs for t in r["ttft"])
        secs = statistics.median(r["seconds"] for r in runs)
        print(
            f"{fmt:<14} {runs[0]['bytes_per_token']:>8.0f} {runs[0]['tokens']:>7} "
            f"{runs[0]['tokens'] / base_tokens:>6.2f} "
            f"{statistics.median(r['hit'] for r in runs):>5.2f} "
            f"{statistics.median(r['req_s'] for r in runs):>6.2f} "
            f"{ttft[len(ttft) // 2]:>9.2f} {ttft[int(len(ttft) * 0.9)]:>9.2f} "
            f"{secs:>8.1f} {base_s / secs:>7.2f}"
        )


if __name__ == "__main__":
    main()
