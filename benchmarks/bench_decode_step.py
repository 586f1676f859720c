"""Times the model runner's forward alone, without the server: prefill, then decode steps.

It isolates the arithmetic and dispatch of one step from scheduling and HTTP, per `--dtype` /
`--quantization` / `--compile` / KV cache format setting, interleaved over repeats so the
settings see the same machine. `--profile` prints torch's operator table for one setting's
decode steps; `--cpu-time` times this process's CPU time, which on a shared machine moves far
less with the load than wall time; `--tail N` also times a prompt's last N tokens extended over
the rest as a cached prefix; `--chunk N` prefills in chunks of N tokens, as the server does.

    python benchmarks/bench_decode_step.py --modes float32 bfloat16 bfloat16+int4 --batch 1 8 32
    python benchmarks/bench_decode_step.py --modes bfloat16+auto+kv=bfloat16+page=32 \
        bfloat16+auto+kv=int4+page=32 --batch 1 8 --prompt-len 1385 --tail 41 --cpu-time
"""

from __future__ import annotations

import argparse
import json
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

clock = time.perf_counter  # or time.process_time, with --cpu-time


def parse_mode(mode: str) -> dict:
    """`bfloat16+auto+compile` -> SchedulerArgs fields (`det`: deterministic inference,
    `plain`: the plain GEMM, no weights reordered ahead of time, `kv=int4`: the KV cache
    format, `page=32`: the pool's page size)."""
    parts = mode.split("+")
    fields = {"dtype": parts[0], "quantization": "none"}
    flags = {
        "compile": "enable_torch_compile",
        "det": "enable_deterministic_inference",
        "plain": "disable_packed_gemm",
    }
    for p in parts[1:]:
        if p.startswith("kv="):
            fields["kv_cache_dtype"] = p[3:]
        elif p.startswith("page="):
            fields["page_size"] = int(p[5:])
        elif p in flags:
            fields[flags[p]] = True
        else:
            fields["quantization"] = p
    return fields


class Setting:
    def __init__(self, mode: str, max_batch: int, prompt_len: int, chunk: int = 0) -> None:
        self.mode, self.chunk = mode, chunk
        fields = parse_mode(mode)
        page = fields.get("page_size", 1)
        args = SchedulerArgs(
            max_total_tokens=max_batch * (prompt_len + 512 + page) + 16,
            max_running_requests=max_batch,
            **fields,
        )
        t0 = time.perf_counter()
        self.runner = ModelRunner(args)
        self.load_s = time.perf_counter() - t0
        self.builder = BatchBuilder(
            self.runner.req_to_token_pool, self.runner.kv_pool, self.runner.device
        )
        self.prompt_len = prompt_len

    def _timed_extend(self, ids, slots, start: int, m: int, loc) -> tuple[torch.Tensor, float]:
        """Extends each request of `slots` by its tokens start..start+m (`ids`: the requests'
        prompts end to end) into the KV slots `loc`; (each one's last logits, seconds)."""
        n, rows = self.prompt_len, len(slots)
        fb = self.builder.build(
            ForwardMode.EXTEND,
            [ids[b * n + p] for b in range(rows) for p in range(start, start + m)],
            [p for _ in range(rows) for p in range(start, start + m)],
            loc, slots, [start + m] * rows, prefix_lens=[start] * rows, extend_lens=[m] * rows,
        )  # fmt: skip
        t0 = clock()
        logits = self.runner.forward(fb, torch.arange(1, rows + 1) * m - 1)
        return logits, clock() - t0

    def run(self, batch: int, steps: int, tail: int = 0) -> tuple[float, float, float]:
        """Prefill `batch` prompts, then `steps` decode steps; (prefill s, decode s per step,
        s to extend the first prompt's last `tail` tokens again over the rest, cached)."""
        r = self.runner
        g = torch.Generator().manual_seed(batch)
        vocab = r.config.vocab_size
        slots = [r.req_to_token_pool.alloc() for _ in range(batch)]
        lens = [self.prompt_len] * batch
        ids = torch.randint(100, vocab - 100, (batch * self.prompt_len,), generator=g).tolist()
        locs = [r.kv_pool.alloc(self.prompt_len) for _ in range(batch)]
        n, prefill = self.prompt_len, 0.0
        chunk = self.chunk or n  # the server prefills long prompts in chunks this long
        for done in range(0, n, chunk):
            m = min(chunk, n - done)
            loc = torch.cat([own[done : done + m] for own in locs])
            logits, seconds = self._timed_extend(ids, slots, done, m, loc)
            prefill += seconds
        tokens = logits.argmax(-1).tolist()
        extend = 0.0
        if tail:
            start = self.prompt_len - tail
            r.kv_pool.free(locs[0][start:])
            locs[0] = locs[0][:start]
            loc = r.kv_pool.alloc(tail)
            locs.append(loc)
            _, extend = self._timed_extend(ids, slots[:1], start, tail, loc)
        t0 = clock()
        for _ in range(steps):
            loc = r.kv_pool.alloc(batch)
            locs.append(loc)
            positions = list(lens)
            lens = [k + 1 for k in lens]
            fb = self.builder.build(ForwardMode.DECODE, tokens, positions, loc, slots, lens)
            tokens = r.forward(fb).argmax(-1).tolist()
        decode = (clock() - t0) / steps
        for loc in locs:
            r.kv_pool.free(loc)
        for s in slots:
            r.req_to_token_pool.free(s)
        return prefill, decode, extend


def rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--modes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--batch", nargs="+", type=int, default=[1, 8, 32])
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=0, help="prefill in chunks this long (0: whole)")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--tail",
        type=int,
        default=0,
        help="also time this many new tokens over a cached prefix (batch 1)",
    )
    ap.add_argument(
        "--cpu-time", action="store_true", help="time CPU time of this process, not wall time"
    )
    ap.add_argument("--profile", default=None, help="a mode whose decode steps to profile")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    pages = {parse_mode(m).get("page_size", 1) for m in args.modes}
    if args.tail and any((args.prompt_len - args.tail) % p for p in pages):
        ap.error("--prompt-len minus --tail must be a whole number of pages (--modes ...+page=N)")
    if args.cpu_time:
        global clock
        clock = time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    max_batch = max(args.batch)
    settings = []
    for mode in args.modes:
        before = rss_mib()
        s = Setting(mode, max_batch, args.prompt_len, args.chunk)
        s.run(max_batch, 4)  # warm up, and touch the pool pages the runs use
        s.rss_delta = rss_mib() - before
        settings.append(s)
        print(f"{mode}: loaded in {s.load_s:.1f}s, +{s.rss_delta:.0f} MiB resident", flush=True)
    results: dict = {s.mode: {b: [] for b in args.batch} for s in settings}
    prefill: dict = {s.mode: [] for s in settings}
    tail: dict = {s.mode: [] for s in settings}
    for _ in range(args.repeats):
        for b in args.batch:
            for s in settings:
                p, d, t = s.run(b, args.steps, args.tail if b == 1 else 0)
                results[s.mode][b].append(d)
                if b == 1:
                    prefill[s.mode].append(p)
                    tail[s.mode].append(t)
    width = max(28, *(len(m) + 2 for m in args.modes))
    print(
        f"\nprompt {args.prompt_len} tokens, {args.steps} steps, best of {args.repeats}"
        + (", CPU time" if args.cpu_time else "")
    )
    print(
        "mode".ljust(width)
        + "".join(f"bs={b} tok/s".rjust(14) for b in args.batch)
        + "  prefill tok/s"
        + (f"  tail {args.tail} ms" if args.tail and 1 in args.batch else "")
    )
    out = {}
    for s in settings:
        best = {b: min(v) for b, v in results[s.mode].items()}
        pf = args.prompt_len / min(prefill[s.mode]) if prefill[s.mode] else float("nan")
        row = "".join(f"{b / best[b]:14.1f}" for b in args.batch)
        tail_ms = min(tail[s.mode]) * 1e3 if tail[s.mode] and args.tail else None
        print(s.mode.ljust(width) + row + f"{pf:15.0f}" + (f"{tail_ms:13.1f}" if tail_ms else ""))
        out[s.mode] = {
            "decode_tok_s": {b: b / best[b] for b in args.batch},
            "prefill_tok_s": pf,
            "tail_ms": tail_ms,
            "rss_delta_mib": s.rss_delta,
        }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    if args.profile:
        s = next(s for s in settings if s.mode == args.profile)
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            s.run(args.batch[0], args.steps)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
