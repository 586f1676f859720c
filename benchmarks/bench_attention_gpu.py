"""Decode attention kernels, cascade attention and whole-model decode on a CUDA GPU.

Three tables, each measured in one run on one device:
  decode    time per call of one layer's decode attention for batch B and context L (Llama-3-8B
            attention: 32 query heads, 8 KV heads, head dim 128, bfloat16): our Triton kernel
            over the paged pool (slots scattered), FlashInfer's paged decode over the same
            slots, and torch's scaled_dot_product_attention over dense contiguous K/V. Achieved
            bandwidth = K+V bytes read / time, and its share of the device's peak.
  cascade   N requests sharing a P-token prefix plus 128 own tokens each: plain decode (every
            request reads the prefix) against cascade decode (each group reads it once), ours
            and FlashInfer's (MultiLevelCascadeAttentionWrapper).
  model     whole-model greedy decode throughput of the Engine (default model) per batch size,
            Triton with and without CUDA graphs, and FlashInfer; once with nothing shared, once
            with every prompt opening with one cached prefix (cascade decode).

Run it on a GPU machine:
    python benchmarks/bench_attention_gpu.py
    python benchmarks/bench_attention_gpu.py --only decode --batch-sizes 1,64 --contexts 512,8192
`--smoke` runs tiny shapes on any device (Triton's interpreter on the CPU) to check the script
itself; its timings mean nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

if "--smoke" in sys.argv and not __import__("torch").cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels.attention.kv_indices import host_indptr, ragged_kv_indices  # noqa: E402
from kernels.attention.triton_backend import TritonBackend  # noqa: E402
from kernels.triton_ops.decode_attention import cascade_decode_attention  # noqa: E402

logger = logging.getLogger("bench_attention_gpu")
CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"
# Peak HBM bandwidth by device name, bytes/s (SXM parts).
PEAK_BANDWIDTH = {"H200": 4.8e12, "H100": 3.35e12, "A100": 2.0e12}


def peak_bandwidth() -> float | None:
    if not CUDA:
        return None
    name = torch.cuda.get_device_name()
    return next((bw for key, bw in PEAK_BANDWIDTH.items() if key in name), None)


def timed(iters: int, fn, *args, **kwargs) -> float:
    """Median seconds per call of fn(*args, **kwargs) after warm-up."""
    for _ in range(3):
        fn(*args, **kwargs)
    times = []
    for _ in range(iters):
        if CUDA:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(*args, **kwargs)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn(*args, **kwargs)
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def flashinfer_or_none():
    if not CUDA:
        return None
    try:
        import flashinfer

        return flashinfer
    except ImportError:
        logger.warning("flashinfer is not installed: its columns stay empty")
        return None


class Setup:
    """One layer's pool with scattered slots, and the table rows of B requests."""

    def __init__(self, lens: list[int], heads: int, kv_heads: int, dim: int, dtype, shared=0):
        total = sum(lens) + shared + 1
        self.k = torch.randn(total, kv_heads, dim, device=DEV, dtype=dtype)
        self.v = torch.randn(total, kv_heads, dim, device=DEV, dtype=dtype)
        perm = torch.randperm(total - 1, device=DEV) + 1
        self.prefix = perm[:shared]
        width = shared + max(lens)
        self.table = torch.zeros(len(lens), width, dtype=torch.int64, device=DEV)
        at = shared
        for i, n in enumerate(lens):
            self.table[i, :shared] = self.prefix
            self.table[i, shared : shared + n] = perm[at : at + n]
            at += n
        self.rows = torch.arange(len(lens), device=DEV)
        self.seq = [shared + n for n in lens]
        self.q = torch.randn(len(lens), heads, dim, device=DEV, dtype=dtype)
        self.heads, self.kv_heads, self.dim, self.dtype = heads, kv_heads, dim, dtype

    def decode_meta(self, shared: int = 0):
        """Our decode metadata, as the Triton backend builds it for the server: all rows as one
        prefix group when `shared` tokens open every row, else plain decode."""
        backend = TritonBackend(self.heads, self.kv_heads, self.dim, DEV)
        groups = [(list(range(len(self.seq))), shared)] if shared else []
        return backend.decode_metadata(self.table, self.rows, self.seq, groups)

    def flat_indices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(host indptr, device indices), as FlashInfer's planners take them."""
        b = len(self.seq)
        return ragged_kv_indices(self.table, self.rows, [0] * b, self.seq)


def bench_decode(args, fi) -> None:
    heads, kv_heads, dim, dtype = args.heads, args.kv_heads, args.head_dim, args.dtype
    elem = torch.empty((), dtype=dtype).element_size()
    peak = peak_bandwidth()
    print("\n## decode attention, one layer, per call")
    print(
        f"{heads} query heads, {kv_heads} KV heads, head dim {dim}, {dtype}; device: {device_name()}"
    )
    print(
        "| batch | context | ours (us) | FlashInfer (us) | SDPA dense (us) | ours GB/s | % of peak |"
    )
    print("|---|---|---|---|---|---|---|")
    for b in args.batch_sizes:
        for ctx in args.contexts:
            kv_bytes = 2 * b * ctx * kv_heads * dim * elem
            if kv_bytes * 2.2 > args.max_gib * 2**30:  # pool plus the dense copy for SDPA
                continue
            s = Setup([ctx] * b, heads, kv_heads, dim, dtype)
            meta = s.decode_meta()
            ours = timed(
                args.iters, cascade_decode_attention, s.q, s.k, s.v, meta.own, None, dim**-0.5
            )
            fi_t = None
            if fi is not None:
                indptr, indices = s.flat_indices()
                w = fi.BatchDecodeWithPagedKVCacheWrapper(
                    torch.empty(256 << 20, dtype=torch.uint8, device=DEV),
                    "NHD",
                    use_tensor_cores=heads // kv_heads >= 4,
                )
                ones = torch.ones(b, dtype=torch.int32)
                w.plan(
                    indptr,
                    indices,
                    ones,
                    heads,
                    kv_heads,
                    dim,
                    1,
                    q_data_type=dtype,
                    kv_data_type=dtype,
                )
                kv = (s.k[:, None], s.v[:, None])
                fi_t = timed(args.iters, w.run, s.q, kv)
            kd = s.k[s.table].transpose(1, 2).contiguous()  # [B, Hkv, L, D]
            vd = s.v[s.table].transpose(1, 2).contiguous()
            qd = s.q[:, :, None]
            sdpa = timed(args.iters, F.scaled_dot_product_attention, qd, kd, vd, enable_gqa=True)
            del kd, vd
            gbps = kv_bytes / ours / 1e9
            share = f"{100 * kv_bytes / ours / peak:.0f}%" if peak else "-"
            print(
                f"| {b} | {ctx} | {ours * 1e6:.1f} | {fmt_us(fi_t)} | {sdpa * 1e6:.1f} "
                f"| {gbps:.0f} | {share} |"
            )


def fmt_us(t: float | None) -> str:
    return "-" if t is None else f"{t * 1e6:.1f}"


def device_name() -> str:
    return torch.cuda.get_device_name() if CUDA else "CPU (Triton interpreter)"


def bench_cascade(args, fi) -> None:
    heads, kv_heads, dim, dtype = args.heads, args.kv_heads, args.head_dim, args.dtype
    print(
        f"\n## cascade decode: N requests sharing a P-token prefix, {args.own_tokens} own tokens each"
    )
    print(f"one layer, per call; device: {device_name()}")
    print(
        "| requests | prefix | ours plain (us) | ours cascade (us) | speedup "
        "| FlashInfer plain (us) | FlashInfer cascade (us) | speedup |"
    )
    print("|---|---|---|---|---|---|---|---|")
    elem = torch.empty((), dtype=dtype).element_size()
    own = args.own_tokens
    for n in args.requests:
        for p in args.prefixes:
            if 2 * (p + n * own) * kv_heads * dim * elem > args.max_gib * 2**30:
                continue
            s = Setup([own] * n, heads, kv_heads, dim, dtype, shared=p)
            scale = dim**-0.5
            plain, casc = s.decode_meta(), s.decode_meta(shared=p)
            t_plain = timed(
                args.iters, cascade_decode_attention, s.q, s.k, s.v, plain.own, None, scale
            )
            t_casc = timed(
                args.iters, cascade_decode_attention, s.q, s.k, s.v, casc.own, casc.shared, scale
            )
            fi_plain = fi_casc = None
            if fi is not None:
                ws = torch.empty(256 << 20, dtype=torch.uint8, device=DEV)
                kv = (s.k[:, None], s.v[:, None])
                types = {"q_data_type": dtype, "kv_data_type": dtype}
                indptr, indices = s.flat_indices()
                ones = torch.ones(n, dtype=torch.int32)
                dw = fi.BatchDecodeWithPagedKVCacheWrapper(
                    ws, "NHD", use_tensor_cores=heads // kv_heads >= 4
                )
                dw.plan(indptr, indices, ones, heads, kv_heads, dim, 1, **types)
                fi_plain = timed(args.iters, dw.run, s.q, kv)
                cw = fi.MultiLevelCascadeAttentionWrapper(2, ws, "NHD")
                l1_indptr, l1_indices = ragged_kv_indices(s.table, s.rows, [p] * n, s.seq)
                cw.plan(
                    [torch.tensor([0, n], dtype=torch.int32), host_indptr([1] * n)],
                    [torch.tensor([0, p], dtype=torch.int32), l1_indptr],
                    [s.prefix.to(torch.int32), l1_indices],
                    [torch.ones(1, dtype=torch.int32), ones],
                    heads,
                    kv_heads,
                    dim,
                    1,
                    **types,
                )
                fi_casc = timed(args.iters, cw.run, s.q, kv)
            fi_speed = f"{fi_plain / fi_casc:.2f}x" if fi_casc else "-"
            print(
                f"| {n} | {p} | {t_plain * 1e6:.1f} | {t_casc * 1e6:.1f} | {t_plain / t_casc:.2f}x "
                f"| {fmt_us(fi_plain)} | {fmt_us(fi_casc)} | {fi_speed} |"
            )


def decode_seconds(eng, prompts: list[list[int]], new_tokens: int, prefix: list[int]) -> float:
    """Wall time of one greedy batch from an empty cache, in which `prefix` (if any) was cached
    first, so that every request finds it there and decodes under one shared radix prefix."""
    eng.flush_cache()
    if prefix:
        eng.generate(input_ids=prefix, sampling_params={"max_new_tokens": 0})
    t0 = time.perf_counter()
    params = {"max_new_tokens": new_tokens, "temperature": 0, "ignore_eos": True}
    eng.generate(input_ids=prompts, sampling_params=params)
    return time.perf_counter() - t0


def bench_model(args) -> None:
    from runtime.engine import Engine

    configs = {"triton + CUDA graphs" if CUDA else "triton": {"attention_backend": "triton"}}
    if CUDA:
        configs["triton, eager"] = {"attention_backend": "triton", "disable_cuda_graph": True}
        if flashinfer_or_none() is not None:
            configs["flashinfer, eager"] = {"attention_backend": "flashinfer"}
    prefixes = [0] + ([args.model_prefix] if args.model_prefix else [])
    rows: dict[tuple[int, int], list[str]] = {
        (p, b): [] for p in prefixes for b in args.model_batch_sizes
    }
    cascade_tokens: dict[str, int] = {}
    for name, config in configs.items():
        eng = Engine(**config, log_level="error", max_running_requests=max(args.model_batch_sizes))
        try:
            for p in prefixes:
                prefix = [500 + j % 4000 for j in range(p)]
                before = eng.get_server_info()["cascade_decode_tokens"]
                for b in args.model_batch_sizes:
                    own = [[1000 + (i * 7 + j) % 5000 for j in range(32)] for i in range(b)]
                    prompts = [prefix + o for o in own]
                    decode_seconds(eng, prompts, 2, prefix)  # warm-up
                    t_n = decode_seconds(eng, prompts, args.new_tokens, prefix)
                    t_1 = decode_seconds(eng, prompts, 1, prefix)
                    rows[p, b].append(f"{b * (args.new_tokens - 1) / (t_n - t_1):.0f}")
                if p:
                    cascade_tokens[name] = eng.get_server_info()["cascade_decode_tokens"] - before
        finally:
            eng.shutdown()
    for p in prefixes:
        opening = f"after a shared {p}-token prefix" if p else "with nothing shared"
        print(f"\n## whole-model greedy decode (default model), output tokens/s, {opening}")
        print(
            f"{args.new_tokens} new tokens per request, 32 own prompt tokens each; device: {device_name()}"
        )
        print("| batch | " + " | ".join(configs) + " |")
        print("|---|" + "---|" * len(configs))
        for b in args.model_batch_sizes:
            print(f"| {b} | " + " | ".join(rows[p, b]) + " |")
        if p:
            print("tokens decoded by cascade attention: " + ", ".join(
                f"{name} {n}" for name, n in cascade_tokens.items()))  # fmt: skip


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", choices=["decode", "cascade", "model"], action="append")
    ap.add_argument("--batch-sizes", type=ints, default=ints("1,8,32,64,128,256"))
    ap.add_argument("--contexts", type=ints, default=ints("512,2048,8192,32768"))
    ap.add_argument("--requests", type=ints, default=ints("64,128,256"))
    ap.add_argument("--prefixes", type=ints, default=ints("4096,16384,32768"))
    ap.add_argument("--own-tokens", type=int, default=128)
    ap.add_argument("--model-batch-sizes", type=ints, default=ints("1,8,32,64,128"))
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument(
        "--model-prefix", type=int, default=2048, help="shared prefix of the second model table"
    )
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--max-gib", type=float, default=24.0, help="skip shapes whose KV exceeds this")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes; checks the script only")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.dtype = torch.bfloat16 if CUDA else torch.float32
    if args.smoke:
        args.batch_sizes, args.contexts, args.iters = [1, 3], [40], 2
        args.requests, args.prefixes, args.own_tokens = [4], [64], 8
        args.model_batch_sizes, args.new_tokens, args.model_prefix = [2], 3, 24
        args.heads, args.kv_heads, args.head_dim = 4, 2, 64
    elif not CUDA:
        sys.exit("bench_attention_gpu.py needs a CUDA GPU (use --smoke to check it on the CPU)")
    fi = flashinfer_or_none()
    parts = args.only or ["decode", "cascade", "model"]
    if "decode" in parts:
        bench_decode(args, fi)
    if "cascade" in parts:
        bench_cascade(args, fi)
    if "model" in parts:
        bench_model(args)


if __name__ == "__main__":
    main()
