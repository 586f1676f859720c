"""What bfloat16 and quantized weights cost in quality, against the float32 reference.

Per mode, over varied prompts: the float32 model's greedy continuation (64 tokens) is fed back
to each mode, and we count how often the mode's top-1 token agrees with it (teacher-forced, so
one early difference does not spoil the rest), and the mean absolute difference of the prompt
tokens' log-probabilities. Then, in the running engine, how often greedy outputs differ between
a request alone, the same request batched with others, and the same request after its prefix
is cached.

    python benchmarks/bench_quality.py --modes bfloat16 bfloat16+auto bfloat16+auto+det
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_decode_step import parse_mode  # noqa: E402
from runtime import Engine  # noqa: E402
from runtime.model_runner import ModelRunner  # noqa: E402
from runtime.server_args import SchedulerArgs  # noqa: E402
from tests.conftest import prefill_logits  # noqa: E402

SYSTEM = "You are a careful assistant. Answer briefly and precisely."
QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers.",
    "How do I reverse a list in Python?",
    "Explain photosynthesis to a child.",
    "What is 17 times 23?",
    "Name the planets of the solar system.",
    "Translate 'good morning' into Spanish.",
    "Why is the sky blue?",
    "Give me a recipe for pancakes.",
    "Who wrote Pride and Prejudice?",
    "What does HTTP stand for?",
]
RAW = [
    "The quick brown fox",
    "def fibonacci(n):\n",
    "Once upon a time, in a small village,",
    "1, 2, 3, 4, 5,",
    "The history of the Roman Empire",
    "import numpy as np\n",
]
NEW_TOKENS = 64


def prompts(tok) -> list[list[int]]:
    chats = [
        tok.apply_chat_template(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for q in QUESTIONS
    ]
    return [tok.encode(c) for c in chats] + [tok.encode(r) for r in RAW]


def greedy(runner: ModelRunner, ids: list[int], n: int) -> list[int]:
    """The reference continuation, by full prefills: slow, and free of any cache effect."""
    out = []
    for _ in range(n):
        out.append(int(prefill_logits(runner, ids + out)[-1].argmax()))
    return out


def teacher_forced(runner: ModelRunner, ids: list[int], cont: list[int]) -> torch.Tensor:
    return prefill_logits(runner, ids + cont).float().log_softmax(-1)


def runner_for(mode: str) -> ModelRunner:
    return ModelRunner(
        SchedulerArgs(max_total_tokens=4096, max_running_requests=4, **parse_mode(mode))
    )


def agreement(modes: list[str], ids_list: list[list[int]]) -> dict:
    ref = runner_for("float32")
    conts = [greedy(ref, ids, NEW_TOKENS) for ids in ids_list]
    ref_lp = [teacher_forced(ref, ids, c) for ids, c in zip(ids_list, conts)]
    del ref
    out = {}
    for mode in modes:
        r = runner_for(mode)
        agree = total = 0
        diffs = []
        for ids, cont, lp_ref in zip(ids_list, conts, ref_lp):
            lp = teacher_forced(r, ids, cont)
            n = len(ids)
            agree += int((lp[n - 1 : -1].argmax(-1) == torch.tensor(cont)).sum())
            total += len(cont)
            target = torch.tensor(ids[1:])
            rows = torch.arange(n - 1)
            diffs.append((lp[rows, target] - lp_ref[rows, target]).abs().mean().item())
        out[mode] = {"top1_agreement": agree / total, "prompt_logprob_mad": sum(diffs) / len(diffs)}
        print(
            f"{mode:24s} top-1 agreement {agree / total:.3f}  prompt logprob MAD {out[mode]['prompt_logprob_mad']:.4f}",
            flush=True,
        )
        del r
    return out


def consistency(mode: str, ids_list: list[list[int]]) -> dict:
    """Greedy outputs alone (cache flushed before each), batched, and again with the cache warm."""
    params = {"temperature": 0, "max_new_tokens": NEW_TOKENS, "ignore_eos": True}
    with Engine(max_total_tokens=8192, log_level="warning", **parse_mode(mode)) as eng:
        alone = []
        for ids in ids_list:
            eng.flush_cache()
            alone.append(eng.generate(input_ids=ids, sampling_params=params)["output_ids"])
        eng.flush_cache()
        batched = [
            r["output_ids"] for r in eng.generate(input_ids=ids_list, sampling_params=params)
        ]
        cached = [
            eng.generate(input_ids=ids, sampling_params=params)["output_ids"] for ids in ids_list
        ]
    n = len(ids_list)
    res = {
        "batched_differs": sum(a != b for a, b in zip(alone, batched)) / n,
        "cached_differs": sum(a != c for a, c in zip(alone, cached)) / n,
    }
    print(
        f"{mode:24s} greedy differs batched {res['batched_differs']:.2f}, with the cache warm {res['cached_differs']:.2f}",
        flush=True,
    )
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--modes",
        nargs="+",
        default=["bfloat16", "bfloat16+auto", "bfloat16+auto+det", "bfloat16+int8"],
    )
    ap.add_argument(
        "--consistency", nargs="*", default=None, help="modes to check (default: --modes)"
    )
    ap.add_argument("--prompts", type=int, default=None, help="use the first N prompts only")
    ap.add_argument("--skip-agreement", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from runtime.model_loader.loader import load_tokenizer, prepare_model_folder

    tok = load_tokenizer(prepare_model_folder(None))
    ids_list = prompts(tok)[: args.prompts]
    print(f"{len(ids_list)} prompts, {NEW_TOKENS} tokens each, against float32")
    result = {"agreement": {} if args.skip_agreement else agreement(args.modes, ids_list)}
    result["consistency"] = {}
    for mode in args.consistency if args.consistency is not None else ["float32", *args.modes]:
        result["consistency"][mode] = consistency(mode, ids_list)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
