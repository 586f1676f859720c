"""The decoder's GEMMs on the CPU: 4-bit blocks on our kernels against the dense and
weight-only kernels torch offers, at decode and prefill row counts.

The weights are the shapes of the default model (SmolLM2-135M: 30 layers of qkv 960x576, o
576x576, gate_up 3072x576, down 576x1536) with random codes, all layers in turn, so each layer's
weights come from memory as in a real step, not from cache. Prints milliseconds per pass over
all layers, interleaved over repeats. `--dtype bfloat16` runs the VNNI kernel against oneDNN
(AVX512-BF16 CPUs); `--dtype float32` the AVX2 kernel against the float32 GEMM, with two more
kinds: `fine` (activations in two int8 parts) and `dequant` (the blocks dequantized for the
call, then the dense GEMM).

    .venv/bin/python benchmarks/bench_block_gemm.py --rows 1 4 8 16 32 64 256 --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch

from kernels.cpu import avx2_gemm_loaded, cpu_kernels_loaded
from kernels.cpu.block_pack import pack_blocks
from runtime.layers.packed_linear import dense_linear

SHAPES = ((960, 576), (576, 576), (3072, 576), (576, 1536))
LAYERS = 30


def make_layers(seed: int, dtype: torch.dtype) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    layers = []
    for _ in range(LAYERS):
        for n, k in SHAPES:
            codes = torch.randint(0, 16, (n, k), dtype=torch.uint8, generator=g)
            d = torch.rand(n, k // 32, generator=g) * 0.01
            m = -8 * d
            w = (codes.float() * d.repeat_interleave(32, 1) + m.repeat_interleave(32, 1)).to(dtype)
            zeros = m + 8 * d
            int4 = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), 1)
            sz = torch.stack([d.t(), zeros.t()], dim=-1).to(dtype).contiguous()
            layers.append(
                {
                    "n": n,
                    "k": k,
                    "blocks": pack_blocks(codes, d, m, 4),
                    "dense": dense_linear(w, None),
                    "int4": (int4, sz),
                }
            )
    return layers


def run(kind: str, layers: list[dict], rows: int, dtype: torch.dtype) -> float:
    xs = {k: torch.randn(rows, k).to(dtype) for k in (576, 1536)}
    gemm = (
        torch.ops.radixserve_cpu.block_gemm
        if dtype == torch.bfloat16
        else torch.ops.radixserve_cpu.block_gemm_f32
    )
    t0 = time.perf_counter()
    for layer in layers:
        x = xs[layer["k"]]
        if kind == "blocks":
            gemm(x, layer["blocks"], layer["n"], 4)
        elif kind == "fine":
            gemm(x, layer["blocks"], layer["n"], 4, True)
        elif kind == "dequant":
            w = torch.ops.radixserve_cpu.block_dequantize_f32(
                layer["blocks"], layer["n"], x.shape[1], 4
            )
            torch.nn.functional.linear(x, w)
        elif kind == "dense":
            layer["dense"](x)
        else:
            torch.ops.aten._weight_int4pack_mm_for_cpu(x, *layer["int4"][:1], 32, layer["int4"][1])
    return (time.perf_counter() - t0) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 4, 8, 16, 32, 64, 256])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    ap.add_argument("--kinds", nargs="+", default=None, help="default: all for the dtype")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    f32_only = {"fine", "dequant"}  # the bfloat16 kernel has one int8 part and no dequantize
    if args.kinds is None:
        args.kinds = ["blocks", "fine", "dequant", "dense", "int4"]
        if dtype == torch.bfloat16:
            args.kinds = [k for k in args.kinds if k not in f32_only]
    elif dtype == torch.bfloat16 and f32_only & set(args.kinds):
        raise SystemExit(f"--kinds {' '.join(sorted(f32_only))} run with --dtype float32 only")
    if not (cpu_kernels_loaded() if dtype == torch.bfloat16 else avx2_gemm_loaded()):
        raise SystemExit(f"our {args.dtype} block GEMM is not built on this machine")
    layers = make_layers(0, dtype)
    print(f"{'rows':>5} " + " ".join(f"{k:>10}" for k in args.kinds) + "   (ms per pass, best)")
    for rows in args.rows:
        best = {k: float("inf") for k in args.kinds}
        for _ in range(args.repeats):
            for kind in args.kinds:
                best[kind] = min(best[kind], run(kind, layers, rows, dtype))
        print(f"{rows:>5} " + " ".join(f"{best[k]:>10.2f}" for k in args.kinds))


if __name__ == "__main__":
    main()
