"""Compiles every Triton kernel for a Hopper GPU (sm_90) down to a cubin; needs no device.

Run as a module in a process without TRITON_INTERPRET (the interpreter replaces the kernels'
`@triton.jit` functions, which the compiler then cannot use). Prints one line per kernel.
"""

from __future__ import annotations

import inspect
import os
import sys

assert os.environ.get("TRITON_INTERPRET") != "1", "compile with the interpreter off"

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from kernels.triton_ops import (  # noqa: E402
    decode_attention,
    extend_attention,
    int4_attention,
    merge_state,
)

INDEX_POINTERS = {"q_indptr", "kv_indptr", "kv_indices", "qo_indptr", "prefix_lens"}
FLOAT32_POINTERS = {"MidO", "MidLse", "Lse", "SOut", "Sa", "Sb"}

EXACT = {"DEQUANT": False, "HAS_OFFSET": False}
INT8 = {"DEQUANT": True, "HAS_OFFSET": True}  # int8 codes, a float16 scale and offset per slot
INT4 = {"V_GROUP": 32}  # packed int4 codes; values scaled per 32 channels
CASES = [
    (
        decode_attention._partial_kernel,
        {"GROUP": 4, "HEAD_DIM": 128, "BLOCK_M": 16, "BLOCK_N": 32, **EXACT},
    ),
    (
        decode_attention._partial_kernel,
        {"GROUP": 3, "HEAD_DIM": 64, "BLOCK_M": 64, "BLOCK_N": 64, **EXACT},
    ),
    (
        decode_attention._partial_kernel,
        {"GROUP": 4, "HEAD_DIM": 128, "BLOCK_M": 16, "BLOCK_N": 32, **INT8},
    ),
    (decode_attention._reduce_kernel, {"HEAD_DIM": 128, "BLOCK_H": 32}),
    (merge_state._merge_state_kernel, {"HEAD_DIM": 128, "BLOCK_H": 32}),
    (
        extend_attention._extend_kernel,
        {"GROUP": 4, "HEAD_DIM": 128, "BLOCK_M": 32, "BLOCK_N": 32, **EXACT},
    ),
    (
        extend_attention._extend_kernel,
        {"GROUP": 3, "HEAD_DIM": 64, "BLOCK_M": 64, "BLOCK_N": 64, **EXACT},
    ),
    (
        extend_attention._extend_kernel,
        {"GROUP": 4, "HEAD_DIM": 128, "BLOCK_M": 32, "BLOCK_N": 32, **INT8},
    ),
    (
        int4_attention._int4_partial_kernel,
        {"GROUP": 3, "HEAD_DIM": 64, "BLOCK_M": 16, "BLOCK_N": 64, **INT4},
    ),
    (
        int4_attention._int4_extend_kernel,
        {"GROUP": 4, "HEAD_DIM": 128, "BLOCK_M": 32, "BLOCK_N": 32, "PAGE": 32, **INT4},
    ),
]
SCALE_POINTERS = {"KScale", "KOffset", "VScale", "VOffset"}
INT4_CODES = {"KCodes", "VCodes"}
SLOT_MAPS = {"PageOf", "RowOf", "OwnRow"}  # int4: each slot's page record, staging row, own row


def signature(kernel, dtype: str, constexprs: dict) -> dict[str, str]:
    sig = {}
    for name in inspect.signature(kernel.fn).parameters:
        if name in constexprs:
            sig[name] = "constexpr"
        elif constexprs.get("DEQUANT") and name in ("K", "V"):
            sig[name] = "*i8"
        elif name in SCALE_POINTERS:
            sig[name] = "*fp16"
        elif name in INT4_CODES:
            sig[name] = "*u8"
        elif name in SLOT_MAPS:
            sig[name] = "*i64"
        elif name[0].isupper():
            sig[name] = "*fp32" if name in FLOAT32_POINTERS else f"*{dtype}"
        elif name in INDEX_POINTERS:
            sig[name] = "*i32"
        elif name == "q_rows":
            sig[name] = "*i64"
        elif name == "scale":
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    return sig


def main() -> int:
    target = GPUTarget("cuda", 90, 32)
    for dtype in ("bf16", "fp16"):
        for kernel, constexprs in CASES:
            src = ASTSource(kernel, signature(kernel, dtype, constexprs), constexprs)
            compiled = triton.compile(src, target=target)
            assert compiled.asm["cubin"], kernel.fn.__name__
            print(f"{kernel.fn.__name__} {dtype} {constexprs}: {len(compiled.asm['cubin'])} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
