"""Throughput of our Engine next to Hugging Face transformers, measured in the same run on the CPU.

A throughput number means little alone, and only the same machine, weights, prompts and token
counts make two numbers comparable. So this script loads both systems in one process, on the
default model (SmolLM2-135M-Instruct; transformers reads the float32 folder our engine converted
from the GGUF), feeds both the same token ids, decodes greedily for a fixed number of tokens
(end-of-sequence ignored), and prints one table with the ours/HF ratio per workload.

Workloads:
  decode       B prompts of 20-60 tokens, N new tokens; tokens/s = B*N / wall time (with prefill)
  decode-only  the same, minus a 1-new-token run on same-length prompts: B*(N-1) / (T_N - T_1)
  prefill      8 prompts of --prefill-len tokens, one new token for us, one forward pass for HF
               (last-position logits only, as we compute); tokens/s = prompt tokens / wall time

Run it:
    .venv/bin/python benchmarks/bench_throughput.py
    .venv/bin/python benchmarks/bench_throughput.py --batch-sizes 1,8 --new-tokens 16 --prefill-len 128
On a machine shared with other work, --repeats 3 keeps the fastest of three runs of everything.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time
from dataclasses import dataclass

import torch

logger = logging.getLogger("bench_throughput")

# Prompt material: plain English sentences, cycled and cut to an exact token count.
SENTENCES = [
    "A small bakery at the corner of the square sells bread before the sun comes up.",
    "The committee postponed its vote because two members were stuck in traffic.",
    "Rivers carry sand from the mountains and leave it where the water slows down.",
    "He kept a notebook of every bird he saw on his morning walk to the station.",
    "The new library has a reading room on the roof with a view over the harbour.",
    "Compilers turn source code into machine instructions that a processor can run.",
    "On rainy afternoons the children built castles out of cushions and blankets.",
    "The museum guide explained how the ancient map had been drawn by hand on leather.",
    "Most of the ocean floor has never been seen by human eyes or mapped in detail.",
    "She tuned the old piano herself, one string at a time, over a whole weekend.",
    "Farmers in the valley rotate their crops so that the soil keeps its strength.",
    "The train left on time, but a fallen tree stopped it halfway through the forest.",
]


@dataclass
class Row:
    """One timed measurement."""

    workload: str
    system: str
    batch: int
    tokens: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")


def make_prompt_ids(tokenizer, lengths: list[int], tag: str) -> list[list[int]]:
    """One prompt of exactly `lengths[i]` tokens per entry, deterministic.

    Each begins with its own `tag` header, so no two runs share a prefix (a prefix cache could
    otherwise skip part of the prefill), and continues with the sentences from a rotating start.
    """
    body_ids = [tokenizer.encode(" " + s, add_special_tokens=False) for s in SENTENCES]
    prompts = []
    for i, length in enumerate(lengths):
        ids = tokenizer.encode(f"[{tag} #{i}]", add_special_tokens=False)
        k = i
        while len(ids) < length:
            ids += body_ids[k % len(body_ids)]
            k += 1
        prompts.append(ids[:length])
    return prompts


def short_lengths(batch: int) -> list[int]:
    """Prompt lengths spread over 20..60 tokens."""
    return [20 + (i * 17) % 41 for i in range(batch)]


def left_pad(prompts: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """A transformers batch with left padding: input_ids and attention_mask."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[row, width - len(p) :] = 1
    return {"input_ids": ids, "attention_mask": mask}


def run_ours(engine, prompts: list[list[int]], new_tokens: int) -> tuple[float, list[list[int]]]:
    """One batched `generate` call; returns (seconds, output ids per prompt)."""
    params = {"temperature": 0.0, "max_new_tokens": new_tokens, "ignore_eos": True}
    t0 = time.perf_counter()
    outs = engine.generate(input_ids=prompts, sampling_params=params)
    elapsed = time.perf_counter() - t0
    for o in outs:
        meta = o["meta_info"]
        if meta["completion_tokens"] != new_tokens:
            raise RuntimeError(f"ours: {meta['completion_tokens']} tokens, wanted {new_tokens}")
        if meta["cached_tokens"]:
            logger.warning("ours: %d prompt tokens came from the cache", meta["cached_tokens"])
    return elapsed, [o["output_ids"] for o in outs]


def run_hf(
    model, prompts: list[list[int]], new_tokens: int, pad_id: int
) -> tuple[float, list[list[int]]]:
    """One `model.generate` call, greedy, exactly `new_tokens` new tokens per row."""
    batch = left_pad(prompts, pad_id)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            **batch,
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=pad_id,
        )
    elapsed = time.perf_counter() - t0
    new = out[:, batch["input_ids"].shape[1] :]
    if new.shape[1] != new_tokens:
        raise RuntimeError(f"transformers: {new.shape[1]} tokens, wanted {new_tokens}")
    return elapsed, new.tolist()


def hf_forward(model, prompts: list[list[int]], pad_id: int) -> float:
    """One forward pass over the padded batch; only the last position's logits are computed."""
    batch = left_pad(prompts, pad_id)
    t0 = time.perf_counter()
    with torch.inference_mode():
        model(**batch, logits_to_keep=1)
    return time.perf_counter() - t0


def agreement(ours: list[list[int]], ref: list[list[int]]) -> str:
    """How many sequences match token for token, and the mean length of the common prefix."""
    same, prefix = 0, 0
    for a, b in zip(ours, ref):
        n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        prefix += n
        same += a == b
    return f"{same}/{len(ours)} identical, mean common prefix {prefix / len(ours):.1f} tokens"


def machine_line() -> str:
    """CPU model and core counts."""
    name = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), name
            )
    except OSError:
        pass
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{platform.machine()} {name or 'unknown CPU'}, nproc {nproc} (os.cpu_count {os.cpu_count()})"


def print_table(rows: list[Row]) -> None:
    """Results, with ours/HF tokens-per-second on each of our rows that has an HF twin."""
    hf = {(r.workload, r.batch): r for r in rows if r.system == "transformers"}
    head = f"{'workload':<12} {'system':<13} {'batch':>5} {'tokens':>7} {'seconds':>8} {'tokens/s':>9} {'ours/HF':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        ratio = ""
        twin = hf.get((r.workload, r.batch))
        if r.system == "ours" and twin is not None:
            ratio = f"{r.rate / twin.rate:.2f}x"
        print(
            f"{r.workload:<12} {r.system:<13} {r.batch:>5} {r.tokens:>7} {r.seconds:>8.2f} "
            f"{r.rate:>9.1f} {ratio:>8}"
        )


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--batch-sizes", default="1,8,32", help="decode batch sizes, comma-separated")
    ap.add_argument("--new-tokens", type=int, default=64, help="new tokens per decode request")
    ap.add_argument("--prefill-len", type=int, default=512, help="tokens per prefill prompt")
    ap.add_argument("--prefill-batch", type=int, default=8, help="prompts in the prefill run")
    ap.add_argument("--skip-hf", action="store_true", help="measure only our engine")
    ap.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="time every measurement this many times and keep the fastest (noisy machines)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for both systems (default: torch's own choice)",
    )
    args = ap.parse_args()
    args.sizes = [int(x) for x in args.batch_sizes.split(",") if x.strip()]
    if not args.sizes or min(args.sizes) < 1:
        ap.error("--batch-sizes: give positive integers, e.g. 1,8,32")
    if args.new_tokens < 2:
        ap.error("--new-tokens: must be >= 2")
    if args.repeats < 1:
        ap.error("--repeats: must be >= 1")
    if args.prefill_len < 16 or args.prefill_batch < 1:
        ap.error("--prefill-len must be >= 16 and --prefill-batch >= 1")
    return args


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
        # The engine's scheduler is a child process; it reads the thread count from the env.
        os.environ["OMP_NUM_THREADS"] = str(args.threads)

    from runtime import Engine

    t0 = time.perf_counter()
    longest = max(
        max(args.sizes) * (60 + args.new_tokens), args.prefill_batch * (args.prefill_len + 1)
    )
    engine = Engine(
        max_total_tokens=max(32768, 2 * longest),
        max_running_requests=max(64, max(args.sizes)),
        log_level="warning",
    )
    folder = engine.info["model_folder"]
    tok = engine.tokenizer
    pad_id = tok.eos_token_id
    logger.info("engine ready in %.1fs (model folder %s)", time.perf_counter() - t0, folder)

    model = None
    if not args.skip_hf:
        from transformers import AutoModelForCausalLM

        t0 = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        logger.info("transformers model loaded in %.1fs", time.perf_counter() - t0)

    try:
        rows = benchmark(engine, model, tok, pad_id, args)
    finally:
        engine.shutdown()

    print()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
        + (f" (OMP_NUM_THREADS={args.threads} for the engine)" if args.threads else "")
    )
    print(f"machine: {machine_line()}")
    print(f"model: {folder}")
    print(f"best of {args.repeats} run(s) per measurement")
    print()
    print_table(rows)


def benchmark(engine, model, tok, pad_id: int, args: argparse.Namespace) -> list[Row]:
    """Warm-up, then decode at each batch size and one prefill run; returns the table rows.

    With --repeats R every measurement is taken R times, ours and HF alternating, and the
    fastest kept: other load on the machine only ever slows a run down.
    """
    n, reps = args.new_tokens, args.repeats
    # The warm-up holds one long prompt too, so the prefill run meets no first-time costs.
    warm = make_prompt_ids(tok, short_lengths(3) + [args.prefill_len], "warm-up")
    run_ours(engine, warm, 8)
    if model is not None:
        run_hf(model, warm, 8, pad_id)

    rows: list[Row] = []
    for b in args.sizes:
        lengths = short_lengths(b)
        logger.info("decode: batch %d, %d prompt tokens, %d new tokens each", b, sum(lengths), n)
        times: dict[str, list[float]] = {"ours": [], "ours1": [], "hf": [], "hf1": []}
        for r in range(reps):
            # Fresh prefixes per run (same lengths), so no run can reuse another's KV.
            prompts = make_prompt_ids(tok, lengths, f"decode b{b} r{r}")
            first = make_prompt_ids(tok, lengths, f"first b{b} r{r}")
            t, ours_ids = run_ours(engine, prompts, n)
            times["ours"].append(t)
            times["ours1"].append(run_ours(engine, first, 1)[0])
            if model is not None:
                t, hf_ids = run_hf(model, prompts, n, pad_id)
                times["hf"].append(t)
                times["hf1"].append(run_hf(model, first, 1, pad_id)[0])
                logger.info(
                    "batch %d greedy agreement with transformers: %s",
                    b,
                    agreement(ours_ids, hf_ids),
                )
        best = {k: min(v) for k, v in times.items() if v}
        rows.append(Row("decode", "ours", b, b * n, best["ours"]))
        if model is not None:
            rows.append(Row("decode", "transformers", b, b * n, best["hf"]))
        rows.append(Row("decode-only", "ours", b, b * (n - 1), best["ours"] - best["ours1"]))
        if model is not None:
            rows.append(
                Row("decode-only", "transformers", b, b * (n - 1), best["hf"] - best["hf1"])
            )

    pb = args.prefill_batch
    total = pb * args.prefill_len
    logger.info("prefill: %d prompts x %d tokens", pb, args.prefill_len)
    t_ours = t_hf = float("inf")
    for r in range(reps):
        docs = make_prompt_ids(tok, [args.prefill_len] * pb, f"prefill r{r}")
        t_ours = min(t_ours, run_ours(engine, docs, 1)[0])
        if model is not None:
            t_hf = min(t_hf, hf_forward(model, docs, pad_id))
    rows.append(Row("prefill", "ours", pb, total, t_ours))
    if model is not None:
        rows.append(Row("prefill", "transformers", pb, total, t_hf))
    return rows


if __name__ == "__main__":
    main()
