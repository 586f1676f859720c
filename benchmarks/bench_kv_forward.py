"""Times one model forward per KV format, without the server: a decode step over long contexts,
a prompt's full prefill, and a prompt's tail extended over a cached prefix.

CPU time of this process (`time.process_time`), best of `--repeats`, the formats interleaved:
on a shared machine the process's own CPU time moves far less with the load than wall time.

    python benchmarks/bench_kv_forward.py --formats bfloat16 int4 --batch 8 --context 1500 \
        --prompt 1385 --tail 41
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kernels.forward_batch import ForwardMode  # noqa: E402
from runtime.batch_builder import BatchBuilder  # noqa: E402
from runtime.model_runner import ModelRunner  # noqa: E402
from runtime.server_args import SchedulerArgs  # noqa: E402


class Setting:
    """One model runner with its own pool of the format `fmt`."""

    def __init__(self, fmt: str, batch: int, context: int, page: int) -> None:
        args = SchedulerArgs(
            max_total_tokens=batch * (context + 64) + 2 * (context + page),
            max_running_requests=batch + 1,
            kv_cache_dtype=fmt,
            page_size=page,
        )
        self.runner = ModelRunner(args)
        self.builder = BatchBuilder(
            self.runner.req_to_token_pool, self.runner.kv_pool, self.runner.device
        )

    def _extend(self, rows, prefixes, news):
        r = self.runner
        locs = [r.kv_pool.alloc(n) for n in news]
        ids = [t for p, n in zip(prefixes, news) for t in self.ids[p : p + n]]
        positions = [i for p, n in zip(prefixes, news) for i in range(p, p + n)]
        seqs = [p + n for p, n in zip(prefixes, news)]
        fb = self.builder.build(
            ForwardMode.EXTEND, ids, positions, torch.cat(locs), rows, seqs,
            prefix_lens=list(prefixes), extend_lens=list(news),
        )  # fmt: skip
        return fb, locs

    def prefill_rows(self, batch: int, context: int) -> None:
        """`batch` requests of `context` tokens, whose decode steps the repeats time."""
        r = self.runner
        g = torch.Generator().manual_seed(0)
        vocab = r.config.vocab_size
        self.ids = torch.randint(100, vocab - 100, (context + 64,), generator=g).tolist()
        self.rows = [r.req_to_token_pool.alloc() for _ in range(batch)]
        self.lens = [context] * batch
        fb, _ = self._extend(self.rows, [0] * batch, self.lens)
        r.forward(fb, torch.arange(1, batch + 1) * context - 1)

    def time_all(self, prompt: int, tail: int) -> dict[str, float]:
        """CPU seconds of: one decode step of the rows (one token longer each repeat); a
        `prompt`-token prefill; its last `tail` tokens extended over the rest as a cached
        prefix. The prompt's slots are freed afterwards."""
        r, rows, lens = self.runner, self.rows, self.lens
        loc = r.kv_pool.alloc(len(rows))
        fb = self.builder.build(
            ForwardMode.DECODE, [self.ids[n] for n in lens], list(lens), loc, rows,
            [n + 1 for n in lens],
        )  # fmt: skip
        out = {}
        t0 = time.process_time()
        r.forward(fb)
        out["decode"] = time.process_time() - t0
        self.lens = [n + 1 for n in lens]
        row = r.req_to_token_pool.alloc()
        fb, _ = self._extend([row], [0], [prompt])
        t0 = time.process_time()
        r.forward(fb, torch.tensor([prompt - 1]))
        out["prefill"] = time.process_time() - t0
        table = r.req_to_token_pool.req_to_token
        r.kv_pool.free(table[row, prompt - tail : prompt].clone())
        fb, _ = self._extend([row], [prompt - tail], [tail])
        t0 = time.process_time()
        r.forward(fb, torch.tensor([tail - 1]))
        out["tail"] = time.process_time() - t0
        r.kv_pool.free(table[row, :prompt].clone())
        r.req_to_token_pool.free(row)
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--formats", nargs="+", default=["bfloat16", "int4"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--context", type=int, default=1500)
    ap.add_argument("--prompt", type=int, default=1385)
    ap.add_argument("--tail", type=int, default=41, help="new tokens over a cached prefix")
    ap.add_argument("--page-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5, help="at most 64 (the rows grow each)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = {f: Setting(f, args.batch, args.context, args.page_size) for f in args.formats}
    for s in settings.values():
        s.prefill_rows(args.batch, args.context)
    best: dict[str, dict[str, float]] = {f: {} for f in args.formats}
    for _ in range(args.repeats):
        for fmt, s in settings.items():
            for name, sec in s.time_all(args.prompt, args.tail).items():
                best[fmt][name] = min(sec, best[fmt].get(name, float("inf")))
    print(
        f"CPU ms, best of {args.repeats}: decode step {args.batch} x {args.context} tokens, "
        f"prefill {args.prompt}, tail {args.tail} over {args.prompt - args.tail} cached"
    )
    print(f"{'format':<10} {'decode':>8} {'prefill':>8} {'tail':>8}")
    for fmt, b in best.items():
        print(
            f"{fmt:<10} {b['decode'] * 1e3:8.1f} {b['prefill'] * 1e3:8.1f} {b['tail'] * 1e3:8.1f}"
        )


if __name__ == "__main__":
    main()
