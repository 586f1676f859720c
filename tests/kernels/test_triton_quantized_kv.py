"""The Triton kernels reading int8 and fp8 codes straight from the pool, dequantizing in
registers, against plain attention over what the pool dequantizes to (small shapes: on the CPU
they run in Triton's interpreter)."""

from __future__ import annotations

import pytest
import torch

from kernels.triton_ops.decode_attention import DecodeItems, cascade_decode_attention
from kernels.triton_ops.extend_attention import extend_attention
from runtime.kv_cache_dtype import create_kv_pool
from tests.kernels.reference import attention

H, HKV, D = 4, 2, 16
FORMATS = ["int8", "fp8_e4m3", "fp8_e5m2"]


def filled_pool(fmt: str, n: int, seed: int):
    """A one-layer pool of format `fmt` whose slots 1..n hold random K/V (channels of unequal
    range, so per-slot and per-head scales matter)."""
    g = torch.Generator().manual_seed(seed)
    pool = create_kv_pool(fmt, n, 1, HKV, D, 1, 1, torch.float32, "cpu")
    spread = torch.linspace(0.2, 4.0, HKV * D).view(1, HKV, D)
    k = torch.randn(n, HKV, D, generator=g) * spread
    v = torch.randn(n, HKV, D, generator=g) * spread.flip(-1)
    pool.set_kv(0, torch.arange(1, n + 1), k, v)
    return pool


def indptr(lengths):
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)


@pytest.mark.parametrize("fmt", FORMATS)
def test_cascade_decode_reads_the_codes(fmt):
    """Three rows share a 20-slot prefix; a fourth decodes alone; slots are scattered."""
    pool = filled_pool(fmt, 80, seed=1)
    order = (torch.randperm(80, generator=torch.Generator().manual_seed(2)) + 1).tolist()
    prefix, own_lens = order[:20], [5, 9, 1, 17]
    own, at = [], 20
    for n in own_lens:
        own.append(order[at : at + n])
        at += n
    q = torch.randn(4, H, D)
    rows = torch.arange(5, dtype=torch.int32)
    own_items = DecodeItems(
        rows, rows[:4].long(), indptr(own_lens), torch.tensor(sum(own, []), dtype=torch.int32),
        1, 2,
    )  # fmt: skip
    shared = DecodeItems(
        torch.tensor([0, 3], dtype=torch.int32), torch.tensor([0, 1, 2]), indptr([20]),
        torch.tensor(prefix, dtype=torch.int32), 3, 1,
    )  # fmt: skip
    k_codes, v_codes = pool.get_kv(0)
    out, lse = cascade_decode_attention(
        q, k_codes, v_codes, own_items, shared, D**-0.5, pool.kv_scales(0)
    )
    for i in range(4):
        slots = torch.tensor((prefix if i < 3 else []) + own[i])
        keys, vals = pool.read_kv(0, slots, torch.float32)
        ref, ref_lse = attention(q[i : i + 1], keys, vals, D**-0.5)
        assert torch.allclose(out[i], ref[0], atol=1e-4), (fmt, i)
        assert torch.allclose(lse[i], ref_lse[0], atol=1e-4), (fmt, i)


@pytest.mark.parametrize("fmt", FORMATS)
def test_extend_reads_the_codes(fmt):
    """Two requests: one with a cached prefix, one without; queries see keys causally."""
    pool = filled_pool(fmt, 60, seed=3)
    order = (torch.randperm(60, generator=torch.Generator().manual_seed(4)) + 1).tolist()
    prefix_lens, ext_lens = [11, 0], [7, 13]
    slots = [order[:18], order[18:31]]
    q = torch.randn(sum(ext_lens), H, D)
    k_codes, v_codes = pool.get_kv(0)
    out = extend_attention(
        q, k_codes, v_codes, indptr(ext_lens), indptr([18, 13]),
        torch.tensor(slots[0] + slots[1], dtype=torch.int32),
        torch.tensor(prefix_lens, dtype=torch.int32), max(ext_lens), D**-0.5,
        pool.kv_scales(0),
    )  # fmt: skip
    start = 0
    for s, p, e in zip(slots, prefix_lens, ext_lens):
        keys, vals = pool.read_kv(0, torch.tensor(s), torch.float32)
        ref, _ = attention(q[start : start + e], keys, vals, D**-0.5, torch.arange(p, p + e))
        assert torch.allclose(out[start : start + e], ref, atol=1e-4), fmt
        start += e


def test_reading_codes_without_scales_is_not_what_the_pool_holds():
    """The scales matter: the same kernel over the int8 codes read as values is far off."""
    pool = filled_pool("int8", 30, seed=5)
    q = torch.randn(1, H, D)
    rows = torch.arange(2, dtype=torch.int32)
    items = DecodeItems(
        rows, rows[:1].long(), indptr([30]), torch.arange(1, 31, dtype=torch.int32), 1, 1
    )
    k_codes, v_codes = pool.get_kv(0)
    keys, vals = pool.read_kv(0, torch.arange(1, 31), torch.float32)
    ref, _ = attention(q, keys, vals, D**-0.5)
    good, _ = cascade_decode_attention(q, k_codes, v_codes, items, None, D**-0.5, pool.kv_scales(0))
    raw, _ = cascade_decode_attention(q, k_codes.float(), v_codes.float(), items, None, D**-0.5)
    assert torch.allclose(good, ref[0:1].squeeze(0), atol=1e-4)
    assert not torch.allclose(raw, ref[0:1].squeeze(0), atol=1e-1)
