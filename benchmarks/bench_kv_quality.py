"""What each `--kv-cache-dtype` costs in quality, against the exact (float32) cache.

Per format, on the default model: greedy agreement over 64 tokens on 16-18 varied prompts (the
share of positions equal to the exact cache's output, and the share of prompts equal to the
end), the mean absolute difference of the prompts' token logprobs, and retrieval of a key hidden
in a 2,000-6,000-token filler and asked for at the end.
    .venv/bin/python benchmarks/bench_kv_quality.py [--needles 5]
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics

import kv_tasks  # benchmarks run as scripts from this folder
from bench_shared_prefix import system_prompt

logger = logging.getLogger("bench_kv_quality")

FORMATS = ["float32", "bfloat16", "fp8_e4m3", "fp8_e5m2", "int8", "int4"]
QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Explain in two sentences how a rainbow forms.",
    "List three uses of a paperclip.",
    "What is 17 times 23? Show your steps.",
    "Translate 'good morning, my friend' into Spanish.",
    "Write a Python function that reverses a string.",
    "Give me a short recipe for pancakes.",
    "Why do cats purr?",
    "Summarize the plot of Romeo and Juliet in one paragraph.",
    "What are the planets of the solar system, in order?",
    "Describe the smell of rain to someone who has never smelled it.",
    "Continue the sequence: 2, 4, 8, 16, ...",
    "Write a polite email declining a meeting invitation.",
]
FILLER = kv_tasks.FILLER[:8]  # the needle prompts' filler, shared with the task generator


def chat(tok, text: str) -> list[int]:
    enc = tok.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
    )
    return list(enc["input_ids"] if hasattr(enc, "keys") else enc)


def varied_prompts(tok, n_long: int) -> list[list[int]]:
    """Fourteen short chat questions and `n_long` long prompts (400-1,000 tokens of rules)."""
    long = [
        chat(tok, f"{system_prompt(g, n)}\n\nWhich desk handles a refund request?")
        for g, n in enumerate((400, 600, 800, 1000)[:n_long])
    ]
    return [chat(tok, q) for q in QUESTIONS] + long


def needle_prompts(tok, count: int, seed: int) -> list[tuple[list[int], str]]:
    """(ids, key): a 4-digit key at a random depth of a 2,000-6,000-token filler."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        length = 2000 + (4000 * i) // max(1, count - 1)
        key = str(rng.randrange(1000, 10000))
        sentences = []
        while len(tok.encode(" ".join(sentences))) < length:
            sentences.extend(rng.sample(FILLER, len(FILLER)))
        sentences.insert(rng.randrange(len(sentences)), f"The secret pass code is {key}.")
        text = " ".join(sentences) + "\n\nWhat is the secret pass code? Answer with the number."
        out.append((chat(tok, text) + tok.encode("The secret pass code is"), key))
    return out


def run(fmt: str, prompts, needles, page: int, new_tokens: int) -> dict:
    from runtime import Engine

    greedy = {"temperature": 0, "max_new_tokens": new_tokens, "ignore_eos": True}
    with Engine(
        max_total_tokens=16384,
        context_length=8192,
        kv_cache_dtype=fmt,
        page_size=page,
        disable_packed_gemm=True,  # quality only: the packed copies would cost memory
        log_level="warning",
    ) as eng:
        out = eng.generate(
            input_ids=prompts, sampling_params=greedy, return_logprob=True, logprob_start_len=0
        )
        found = []
        for ids, key in needles:
            eng.flush_cache()
            r = eng.generate(input_ids=ids, sampling_params={"temperature": 0, "max_new_tokens": 8})
            found.append(key in r["text"])
    return {
        "outputs": [r["output_ids"] for r in out],
        "logprobs": [[e[0] for e in r["meta_info"]["input_token_logprobs"]] for r in out],
        "needles": found,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--formats", nargs="+", default=FORMATS, help="the first is the reference")
    ap.add_argument("--needles", type=int, default=5)
    ap.add_argument("--long-prompts", type=int, default=4, help="of the 16 prompts, up to 4")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--page-size", type=int, default=32, help="the same for every format")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from runtime.model_loader.loader import load_tokenizer, prepare_model_folder

    tok = load_tokenizer(prepare_model_folder(None, None))
    prompts = varied_prompts(tok, args.long_prompts)
    needles = needle_prompts(tok, args.needles, args.seed)
    logger.info(
        "%d prompts (%d-%d tokens), %d needles (%d-%d tokens), page %d",
        len(prompts), min(map(len, prompts)), max(map(len, prompts)),
        len(needles), min(len(n) for n, _ in needles), max(len(n) for n, _ in needles),
        args.page_size,
    )  # fmt: skip
    results = {}
    for fmt in args.formats:
        results[fmt] = run(fmt, prompts, needles, args.page_size, args.new_tokens)
        logger.info("%s done", fmt)
    ref = results[args.formats[0]]
    print(f"{'kv-cache-dtype':<14} {'agree':>6} {'equal':>6} {'|dlogprob|':>10} {'needle':>7}")
    for fmt, res in results.items():
        agree = statistics.mean(
            sum(a == b for a, b in zip(o, r)) / len(r)
            for o, r in zip(res["outputs"], ref["outputs"])
        )
        equal = sum(o == r for o, r in zip(res["outputs"], ref["outputs"]))
        diffs = [
            abs(a - b)
            for lp, rp in zip(res["logprobs"], ref["logprobs"])
            for a, b in zip(lp, rp)
            if a is not None and b is not None
        ]
        print(
            f"{fmt:<14} {agree:>6.3f} {equal:>3}/{len(prompts):<2} {statistics.mean(diffs):>10.4f} "
            f"{sum(res['needles']):>3}/{len(needles):<3}"
        )


if __name__ == "__main__":
    main()
