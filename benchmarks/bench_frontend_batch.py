"""A frontend_lang `run_batch` of programs that share one long preamble, with and without the
radix cache, side by side in one run.

Each program: a ~1,000-token preamble (a policy document), its own question, one `gen` of 16
tokens. With the cache, the frontend's hint sends the common preamble once before the batch and
every program reuses it; without it, every program computes it again.
    .venv/bin/python benchmarks/bench_frontend_batch.py [--programs 16]
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import frontend_lang as sgl  # noqa: E402

logger = logging.getLogger("bench_frontend_batch")

WORDS = "refund booking ticket desk manager guest parking breakfast pool gym card room".split()


def preamble(approx_words: int) -> str:
    rng = random.Random(0)
    lines = ["You are the front desk of a hotel. Follow the house rules below."]
    while sum(len(x.split()) for x in lines) < approx_words:
        a, b, c = rng.sample(WORDS, 3)
        lines.append(f"Rule {len(lines)}: questions about the {a} and the {b} go to the {c}.")
    return "\n".join(lines)


@sgl.function
def answer(s, doc, question):
    s += doc + f"\n\nGuest: {question}\nDesk:"
    s += sgl.gen("reply", max_tokens=16, temperature=0, ignore_eos=True)


def run(label: str, programs: list[dict], **server_args) -> dict:
    with sgl.Runtime(log_level="warning", max_total_tokens=32768, **server_args) as rt:
        t0 = time.perf_counter()
        states = answer.run_batch(programs, backend=rt, num_threads=len(programs))
        wall = time.perf_counter() - t0
        metas = [s.get_meta_info("reply") for s in states]
        assert all(s.error() is None for s in states)
    cached = [m["cached_tokens"] for m in metas]
    prompt = metas[0]["prompt_tokens"]
    logger.info("%s: %.2f s, cached tokens per program %s", label, wall, cached)
    return {"label": label, "wall": wall, "cached": cached, "prompt": prompt}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--programs", type=int, default=16)
    ap.add_argument("--preamble-words", type=int, default=700)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    doc = preamble(args.preamble_words)
    programs = [
        {"doc": doc, "question": f"Who handles the {a} for room {i}?"}
        for i, a in enumerate((WORDS * 4)[: args.programs])
    ]
    with_cache = run("radix cache", programs)
    without = run("no cache (--disable-radix-cache)", programs, disable_radix_cache=True)
    n = args.programs
    logger.info(
        "\n%d programs, prompts of %d tokens, 16 new tokens each\n\n"
        "| server | run_batch seconds | programs/s | programs with the preamble cached |\n"
        "|---|---|---|---|",
        n,
        with_cache["prompt"],
    )
    for r in (with_cache, without):
        hits = sum(c >= r["prompt"] * 0.8 for c in r["cached"])
        logger.info("| %s | %.2f | %.2f | %d/%d |", r["label"], r["wall"], n / r["wall"], hits, n)
    logger.info("speed-up from the cache: %.1fx", without["wall"] / with_cache["wall"])


if __name__ == "__main__":
    main()
