"""Shared-prefix workload: groups of requests that share a long system prompt, shuffled arrival.

This is where the radix cache pays: each group's ~700-token system prompt is computed once and
reused by the group's other requests. The same requests run through the engine with the radix
cache (lpm and fcfs), without it, and through transformers' `generate` at batch 1 and 8, all in
one run on the same machine.
    .venv/bin/python benchmarks/bench_shared_prefix.py [--groups 4 --per-group 16]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import time

import torch
from bench_throughput import left_pad  # benchmarks run as scripts from this folder

logger = logging.getLogger("bench_shared_prefix")

TOPICS = [
    "a public library",
    "a mountain railway",
    "a seaside hotel",
    "a city hospital",
    "a football club",
    "a music school",
    "a software company",
    "a farm cooperative",
]
WORDS = (
    "policy rule member visitor schedule ticket room service staff fee refund season "
    "weekday weekend holiday booking account card safety access parking guide event "
    "request complaint manager desk hours price discount group child adult senior"
).split()


def system_prompt(group: int, approx_tokens: int) -> str:
    rng = random.Random(group)
    topic = TOPICS[group % len(TOPICS)]
    header = f"You are the help desk assistant of {topic}. Answer briefly and follow these rules."
    return rules_prompt(header, WORDS, approx_tokens * 0.7, rng)


def rules_prompt(header: str, words: list[str], min_words: float, rng: random.Random) -> str:
    """A system prompt of numbered rules drawn from `words`, at least `min_words` words long."""
    lines = [header]
    i = 0
    while len(" ".join(lines).split()) < min_words:
        i += 1
        w = rng.sample(words, 5)
        lines.append(
            f"Rule {i}: every {w[0]} about the {w[1]} goes to the {w[2]} desk; "
            f"the {w[3]} and the {w[4]} are checked first."
        )
    return "\n".join(lines)


def build_prompts(groups: int, per_group: int, approx_tokens: int, seed: int):
    """[(group, text)], shuffled: each group's questions share its system prompt."""
    prompts = []
    for g in range(groups):
        system = system_prompt(g, approx_tokens)
        for q in range(per_group):
            w = random.Random(g * 1000 + q).sample(WORDS, 2)
            text = f"{system}\n\nQuestion {q}: who handles the {w[0]} and the {w[1]}?\nAnswer:"
            prompts.append((g, text))
    random.Random(seed).shuffle(prompts)
    return prompts


def build_requests(tok, groups: int, per_group: int, approx_tokens: int, seed: int):
    return [(g, tok.encode(t)) for g, t in build_prompts(groups, per_group, approx_tokens, seed)]


def run_ours(reqs, new_tokens: int, arrival_gap: float, **engine_args) -> dict:
    """Request i arrives at i * arrival_gap seconds; its TTFT counts from its arrival."""
    params = {"temperature": 0, "max_new_tokens": new_tokens, "ignore_eos": True}

    async def one(eng, i: int, ids: list[int]) -> tuple[float, dict]:
        await asyncio.sleep(i * arrival_gap)
        return await ttft_and_last(eng, ids, params)

    async def all_requests(eng) -> list[tuple[float, dict]]:
        return await asyncio.gather(*(one(eng, i, ids) for i, (_, ids) in enumerate(reqs)))

    res = timed_engine_run(
        all_requests,
        max_total_tokens=32768,
        max_running_requests=64,
        log_level="warning",
        **engine_args,
    )
    return {
        "seconds": res["seconds"],
        "ttft": res["ttft"],
        "hit": res["hit"],
        "outputs": sum(c["meta_info"]["completion_tokens"] for c in res["last"]),
        "prefill_tokens": res["info"]["prefill_tokens"],
    }


async def ttft_and_last(eng, ids: list[int], params: dict) -> tuple[float, dict]:
    """Streams one request: (seconds to its first chunk, its last chunk)."""
    t0 = time.perf_counter()
    first, last = None, None
    async for chunk in await eng.async_generate(input_ids=ids, sampling_params=params, stream=True):
        first = first if first is not None else time.perf_counter() - t0
        last = chunk
    return first, last


def timed_engine_run(driver, **engine_args) -> dict:
    """Times `driver(eng)`, a coroutine function returning [(TTFT, last chunk)] per request, on
    a new engine after a warm-up request and a cache flush; with its server info and hit rate."""
    from runtime import Engine

    with Engine(**engine_args) as eng:
        eng.generate(input_ids=[1, 2, 3], sampling_params={"max_new_tokens": 2})  # warm-up
        eng.flush_cache()
        t0 = time.perf_counter()
        done = asyncio.run(driver(eng))
        elapsed = time.perf_counter() - t0
        info = eng.get_server_info()
    last = [c for _, c in done]
    cached = sum(c["meta_info"]["cached_tokens"] for c in last)
    prompt = sum(c["meta_info"]["prompt_tokens"] for c in last)
    return {
        "seconds": elapsed,
        "ttft": [t for t, _ in done],
        "last": last,
        "info": info,
        "hit": cached / prompt,
    }


def run_hf(model, tok, reqs, new_tokens: int, batch: int) -> dict:
    from transformers import LogitsProcessor

    class FirstToken(LogitsProcessor):
        """Notes when a batch's first logits arrive: its prefill is done."""

        def __init__(self) -> None:
            self.at = None

        def __call__(self, input_ids, scores):
            if self.at is None:
                self.at = time.perf_counter()
            return scores

    ttft, outputs = [], 0
    t0 = time.perf_counter()
    for s in range(0, len(reqs), batch):
        chunk = [ids for _, ids in reqs[s : s + batch]]
        pad = tok.pad_token_id
        batch_inputs = left_pad(chunk, pad)
        width = batch_inputs["input_ids"].shape[1]
        marker = FirstToken()
        with torch.inference_mode():
            out = model.generate(
                **batch_inputs,
                do_sample=False,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                pad_token_id=pad,
                logits_processor=[marker],
            )
        ttft += [marker.at - t0] * len(chunk)
        outputs += (out.shape[1] - width) * len(chunk)
    return {
        "seconds": time.perf_counter() - t0,
        "ttft": ttft,
        "hit": 0.0,
        "outputs": outputs,
        "prefill_tokens": sum(len(ids) for _, ids in reqs),
    }


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def add_workload_args(ap: argparse.ArgumentParser) -> None:
    """The shape of the shared-prefix workload, for every script that runs it."""
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--per-group", type=int, default=16)
    ap.add_argument("--system-tokens", type=int, default=700)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_workload_args(ap)
    ap.add_argument(
        "--arrival-gap",
        type=float,
        default=0.0,
        help="seconds between arrivals (0: all at once); transformers runs only at 0",
    )
    ap.add_argument("--skip-hf", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(message)s")

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from runtime.model_loader import default_model_path, prepare_model_folder

    folder = prepare_model_folder(default_model_path())
    tok = AutoTokenizer.from_pretrained(folder)
    reqs = build_requests(tok, args.groups, args.per_group, args.system_tokens, args.seed)
    lens = [len(ids) for _, ids in reqs]
    logger.info("%d requests, prompts %d-%d tokens", len(reqs), min(lens), max(lens))

    results = {}
    for name, kwargs in [
        ("ours, radix cache (lpm)", {}),
        ("ours, radix cache (fcfs)", {"schedule_policy": "fcfs"}),
        ("ours, no cache", {"disable_radix_cache": True}),
    ]:
        logger.info("running %s", name)
        results[name] = run_ours(reqs, args.new_tokens, args.arrival_gap, **kwargs)
    if not args.skip_hf and args.arrival_gap == 0:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        for b in (1, 8):
            logger.info("running transformers batch %d", b)
            results[f"transformers, batch {b}"] = run_hf(model, tok, reqs, args.new_tokens, b)

    print(
        f"{len(reqs)} requests: {args.groups} groups x {args.per_group}, prompts {min(lens)}-{max(lens)} "
        f"tokens, {args.new_tokens} new tokens each, shuffled, one every {args.arrival_gap}s; "
        f"torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"{'system':26} {'seconds':>8} {'req/s':>7} {'out tok/s':>9} {'ttft p50':>9} {'ttft p99':>9} "
        f"{'hit rate':>8} {'prefilled':>9}"
    )
    for name, r in results.items():
        print(
            f"{name:26} {r['seconds']:8.2f} {len(reqs) / r['seconds']:7.2f} {r['outputs'] / r['seconds']:9.1f} "
            f"{statistics.median(r['ttft']):9.2f} {pct(r['ttft'], 0.99):9.2f} {r['hit']:8.1%} "
            f"{r['prefill_tokens']:9d}"
        )
    rps = {k: len(reqs) / r["seconds"] for k, r in results.items()}
    radix = rps["ours, radix cache (lpm)"]
    print(f"radix / no cache: {radix / rps['ours, no cache']:.1f}x")
    hf = [v for k, v in rps.items() if k.startswith("transformers")]
    if hf:
        print(f"radix / best transformers: {radix / max(hf):.1f}x")


if __name__ == "__main__":
    main()
