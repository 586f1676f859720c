"""`--kv-cache-dtype`: which pool stores K/V, what a token costs in it, and building it.

The storage format is a setting of its own, apart from the model's dtype: `auto` stores K/V
exactly in whatever dtype the model computes in.
"""

from __future__ import annotations

import torch

from kernels.kv_quant import FP8_DTYPES
from runtime.int4_kv_pool import Int4KVPool, check_int4_shape, stage_rows
from runtime.memory_pool import KVPool
from runtime.quantized_kv_pool import Fp8KVPool, Int8KVPool

KV_CACHE_DTYPES = ("auto", "float32", "bfloat16", "fp8_e4m3", "fp8_e5m2", "int8", "int4")


def resolve_kv_cache_dtype(name: str, model_dtype: torch.dtype) -> str:
    """The format's name, with `auto` replaced by the model's own dtype."""
    if name not in KV_CACHE_DTYPES:
        raise ValueError(f"kv_cache_dtype: must be one of {KV_CACHE_DTYPES}, got {name!r}")
    return str(model_dtype).removeprefix("torch.") if name == "auto" else name


def kv_bytes_per_token(
    name: str, num_layers: int, num_kv_heads: int, head_dim: int, page_size: int
) -> float:
    """Bytes one cached token takes in format `name` (resolved), scales included."""
    if name == "int8":
        return Int8KVPool.bytes_per_token(num_layers, num_kv_heads, head_dim)
    if name == "int4":
        return Int4KVPool.bytes_per_token(num_layers, num_kv_heads, head_dim, page_size)
    dtype = FP8_DTYPES.get(name) or getattr(torch, name)
    return KVPool.bytes_per_token(num_layers, num_kv_heads, head_dim, dtype)


def kv_fixed_bytes(
    name: str,
    num_layers: int,
    num_kv_heads: int,
    head_dim: int,
    page_size: int,
    max_requests: int,
    model_dtype: torch.dtype,
) -> int:
    """Bytes a pool takes whatever its token count: int4's exact staging for partial pages."""
    if name != "int4":
        return 0
    check_int4_shape(head_dim, page_size)
    per_row = KVPool.bytes_per_token(num_layers, num_kv_heads, head_dim, model_dtype)
    return stage_rows(page_size, max_requests) * per_row


def create_kv_pool(
    name: str,
    size: int,
    num_layers: int,
    num_kv_heads: int,
    head_dim: int,
    page_size: int,
    max_requests: int,
    model_dtype: torch.dtype,
    device,
) -> KVPool:
    """The pool for format `name` (resolved); int4 stages partial pages in `model_dtype`."""
    shape = (size, num_layers, num_kv_heads, head_dim)
    if name == "int8":
        return Int8KVPool(*shape, device)
    if name == "int4":
        return Int4KVPool(*shape, page_size, max_requests, model_dtype, device)
    if name in FP8_DTYPES:
        return Fp8KVPool(*shape, FP8_DTYPES[name], model_dtype, device)
    return KVPool(*shape, getattr(torch, name), device)
