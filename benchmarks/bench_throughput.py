"""Decode and prefill throughput of the engine beside transformers, side by side in one run.

Both run the default model in float32 on the CPU, on the same prompts, greedy, with a fixed
number of new tokens (end-of-sequence ignored), so the work is the same token for token.
    .venv/bin/python benchmarks/bench_throughput.py [--batch-sizes 1,8,32] [--new-tokens 64]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time

import torch

logger = logging.getLogger("bench_throughput")

SENTENCES = [
    "The old lighthouse keeper climbed the stairs every evening to light the lamp",
    "In the middle of the market, a street musician played a song nobody had heard before",
    "Scientists announced today that the new telescope had found water on a distant planet",
    "She opened the letter slowly, afraid of what the words inside might say",
    "The recipe called for three eggs, a cup of flour and a pinch of salt",
    "After the storm, the village gathered to repair the broken bridge over the river",
    "A young programmer stayed up all night to fix the bug before the launch",
    "The history of the city goes back more than two thousand years to a small fishing port",
]


def make_prompts(n: int) -> list[str]:
    """n distinct prompts of 20 to 60 tokens, the same every run."""
    return [
        f"Story {i}: "
        + " ".join(SENTENCES[(i + j) % len(SENTENCES)] + "." for j in range(1 + i % 3))
        for i in range(n)
    ]


def long_prompts(n: int, approx_tokens: int) -> list[str]:
    words = " ".join(SENTENCES).split()
    return [
        f"Document {i}: "
        + " ".join(words[(i + k) % len(words)] for k in range(approx_tokens * 3 // 4))
        for i in range(n)
    ]


def bench_ours(engine, prompts: list[str], new_tokens: int) -> float:
    params = {"temperature": 0, "max_new_tokens": new_tokens, "ignore_eos": True}
    t0 = time.perf_counter()
    out = engine.generate(prompts, params)
    elapsed = time.perf_counter() - t0
    assert all(r["meta_info"]["completion_tokens"] == new_tokens for r in out)
    return elapsed


def bench_hf(model, tokenizer, prompts: list[str], new_tokens: int) -> float:
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            **batch,
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
    elapsed = time.perf_counter() - t0
    assert out.shape[1] - batch["input_ids"].shape[1] == new_tokens
    return elapsed


def hf_prefill(model, tokenizer, prompts: list[str]) -> tuple[float, int]:
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    t0 = time.perf_counter()
    with torch.inference_mode():
        model(**batch)
    return time.perf_counter() - t0, int(batch["attention_mask"].sum())


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--prefill-len", type=int, default=512)
    ap.add_argument("--prefill-batch", type=int, default=8)
    ap.add_argument("--skip-hf", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(message)s")
    sizes = [int(x) for x in args.batch_sizes.split(",")]

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from runtime import Engine

    engine = Engine(
        max_total_tokens=65536,
        max_running_requests=max(64, max(sizes)),
        max_prefill_tokens=16384,
        chunked_prefill_size=8192,
        log_level="warning",
    )
    folder = engine.info["model_folder"]
    model = tok = None
    if not args.skip_hf:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        tok = AutoTokenizer.from_pretrained(folder)
        tok.padding_side = "left"
        tok.pad_token = tok.eos_token

    rows = []
    warm = make_prompts(4)
    bench_ours(engine, warm, 4)
    if model is not None:
        bench_hf(model, tok, warm, 4)
    for b in sizes:
        prompts = make_prompts(b)
        n = b * args.new_tokens
        logger.info("decode batch %d", b)
        rows.append(("decode", "ours", b, n, bench_ours(engine, prompts, args.new_tokens)))
        if model is not None:
            rows.append(
                ("decode", "transformers", b, n, bench_hf(model, tok, prompts, args.new_tokens))
            )

    docs = long_prompts(args.prefill_batch, args.prefill_len)
    n_tokens = sum(len(engine.tokenizer.encode(d)) for d in docs)
    logger.info("prefill %d x ~%d tokens", args.prefill_batch, args.prefill_len)
    rows.append(("prefill", "ours", args.prefill_batch, n_tokens, bench_ours(engine, docs, 1)))
    if model is not None:
        secs, hf_tokens = hf_prefill(model, tok, docs)
        rows.append(("prefill", "transformers", args.prefill_batch, hf_tokens, secs))
    engine.shutdown()

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"{platform.machine()} {platform.processor() or ''}".rstrip()
    )
    print(
        f"{'workload':8} {'system':13} {'batch':>5} {'tokens':>7} {'seconds':>8} {'tokens/s':>9} {'ours/hf':>8}"
    )
    by_key = {(w, s, b): t / sec for w, s, b, t, sec in rows}
    for w, s, b, t, sec in rows:
        ratio = ""
        if s == "ours" and (w, "transformers", b) in by_key:
            ratio = f"{by_key[(w, s, b)] / by_key[(w, 'transformers', b)]:.2f}x"
        print(f"{w:8} {s:13} {b:5d} {t:7d} {sec:8.2f} {t / sec:9.1f} {ratio:>8}")


if __name__ == "__main__":
    main()
