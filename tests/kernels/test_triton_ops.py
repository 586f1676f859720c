"""The Triton kernels against plain attention on random shapes and slot layouts.

On the CPU they run in Triton's interpreter on small shapes; on CUDA at full size in float16
and bfloat16.
"""

from __future__ import annotations

import random

import pytest
import torch

from kernels.triton_ops.decode_attention import (
    DecodeItems,
    cascade_decode_attention,
    decode_attention,
)
from kernels.triton_ops.extend_attention import extend_attention
from kernels.triton_ops.merge_state import merge_state
from tests.kernels.reference import attention

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
DTYPES = [torch.float16, torch.bfloat16] if CUDA else [torch.float32]
MAX_LEN = 4096 if CUDA else 70  # keys per request
TOL = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 4e-2}
# (query heads, KV heads, head dim): MHA and GQA ratios 3, 4 and 8
SHAPES = [(4, 4, 64), (6, 2, 64), (8, 2, 128), (8, 1, 64)]


class Pool:
    """One layer's K/V pool; `take` hands out slots laid out contiguously or scattered."""

    def __init__(self, size, kv_heads, head_dim, dtype, seed):
        g = torch.Generator().manual_seed(seed)
        self.k = torch.randn(size, kv_heads, head_dim, generator=g).to(DEVICE, dtype)
        self.v = torch.randn(size, kv_heads, head_dim, generator=g).to(DEVICE, dtype)
        self.order = torch.randperm(size - 1, generator=g) + 1  # slot 0 stays scratch
        self.next = 0

    def take(self, n, scattered):
        if scattered:
            out = self.order[self.next : self.next + n]
        else:
            start = int(self.order[self.next])
            out = torch.arange(start, start + n) % (self.k.shape[0] - 1) + 1
        self.next += n
        return out.to(DEVICE)


def _items(q_groups, kv_lists, splits):
    """Decode items from per-item query rows and KV slot tensors."""
    q_indptr, kv_indptr = [0], [0]
    for rows, kv in zip(q_groups, kv_lists):
        q_indptr.append(q_indptr[-1] + len(rows))
        kv_indptr.append(kv_indptr[-1] + len(kv))
    flat = [r for rows in q_groups for r in rows]
    return DecodeItems(
        torch.tensor(q_indptr, dtype=torch.int32, device=DEVICE),
        torch.tensor(flat, dtype=torch.int64, device=DEVICE),
        torch.tensor(kv_indptr, dtype=torch.int32, device=DEVICE),
        torch.cat(kv_lists).to(torch.int32),
        max(len(rows) for rows in q_groups),
        splits,
    )


def _close(got, want, dtype):
    tol = TOL[dtype]
    assert torch.allclose(got.float(), want, atol=tol, rtol=tol), (got.float() - want).abs().max()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads,kv_heads,head_dim", SHAPES)
@pytest.mark.parametrize("batch,splits", [(1, 1), (3, 4), (7, 2)] + ([(64, 8)] if CUDA else []))
def test_decode_matches_reference(batch, splits, heads, kv_heads, head_dim, dtype):
    rng = random.Random(batch * 100 + heads)
    lens = [rng.randint(1, MAX_LEN) for _ in range(batch)]
    pool = Pool(sum(lens) + 8, kv_heads, head_dim, dtype, seed=batch)
    slots = [pool.take(n, scattered=i % 2 == 0) for i, n in enumerate(lens)]
    q = torch.randn(batch, heads, head_dim, device=DEVICE).to(dtype)
    items = _items([[i] for i in range(batch)], slots, splits)
    out, lse = decode_attention(q, pool.k, pool.v, items, head_dim**-0.5)
    for i, s in enumerate(slots):
        ref, ref_lse = attention(q[i : i + 1], pool.k[s], pool.v[s], head_dim**-0.5)
        _close(out[i], ref[0], dtype)
        _close(lse[i], ref_lse[0], torch.float32 if dtype == torch.float32 else dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads,kv_heads,head_dim", SHAPES[:3])
def test_merge_state_equals_attention_over_the_union(heads, kv_heads, head_dim, dtype):
    n = 5
    pool = Pool(64 * n + 8, kv_heads, head_dim, dtype, seed=3)
    q = torch.randn(n, heads, head_dim, device=DEVICE).to(dtype)
    slots = [pool.take(40, scattered=True) for _ in range(n)]
    cut = [0, 1, 17, 39, 40]  # row 0: A is empty; row 4: B is empty
    parts = [([i], s[: cut[i]], s[cut[i] :]) for i, s in enumerate(slots)]
    a = _items([p[0] for p in parts], [p[1] for p in parts], 1)
    b = _items([p[0] for p in parts], [p[2] for p in parts], 1)
    out_a, lse_a = decode_attention(q, pool.k, pool.v, a, head_dim**-0.5)
    out_b, lse_b = decode_attention(q, pool.k, pool.v, b, head_dim**-0.5)
    assert torch.isinf(lse_a[0]).all() and torch.isinf(lse_b[4]).all()
    out, lse = merge_state(out_a, lse_a, out_b, lse_b)
    for i, s in enumerate(slots):
        ref, ref_lse = attention(q[i : i + 1], pool.k[s], pool.v[s], head_dim**-0.5)
        _close(out[i], ref[0], dtype)
        _close(lse[i], ref_lse[0], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads,kv_heads,head_dim", SHAPES)
@pytest.mark.parametrize("group_sizes", [[4], [3, 2, 1]] + ([[64, 64, 32]] if CUDA else []))
def test_cascade_decode_matches_reference(group_sizes, heads, kv_heads, head_dim, dtype):
    """Rows under a shared prefix read it together; lone rows (size 1) have none."""
    rng = random.Random(sum(group_sizes) + heads)
    prefix_max = 4 * MAX_LEN if CUDA else MAX_LEN
    prefixes = [rng.randint(16, prefix_max) if size > 1 else 0 for size in group_sizes]
    own_lens = [rng.randint(1, MAX_LEN // 4 + 1) for size in group_sizes for _ in range(size)]
    pool = Pool(sum(prefixes) + sum(own_lens) + 8, kv_heads, head_dim, dtype, seed=7)
    prefix_slots = [pool.take(p, scattered=True) for p in prefixes]
    rows, full, own = [], [], []
    for g, size in enumerate(group_sizes):
        rows.append(list(range(len(full), len(full) + size)))
        for _ in range(size):
            mine = pool.take(own_lens[len(full)], scattered=len(full) % 2 == 1)
            own.append(mine)
            full.append(torch.cat([prefix_slots[g], mine]))
    b = len(full)
    q = torch.randn(b, heads, head_dim, device=DEVICE).to(dtype)
    grouped = [g for g, size in enumerate(group_sizes) if size > 1]
    own_items = _items([[i] for i in range(b)], own, 2)
    shared = _items([rows[g] for g in grouped], [prefix_slots[g] for g in grouped], 3)
    out, lse = cascade_decode_attention(q, pool.k, pool.v, own_items, shared, head_dim**-0.5)
    for i, s in enumerate(full):
        ref, ref_lse = attention(q[i : i + 1], pool.k[s], pool.v[s], head_dim**-0.5)
        _close(out[i], ref[0], dtype)
        _close(lse[i], ref_lse[0], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads,kv_heads,head_dim", SHAPES)
@pytest.mark.parametrize("reqs", [1, 4] + ([16] if CUDA else []))
def test_extend_matches_causal_reference(reqs, heads, kv_heads, head_dim, dtype):
    """New tokens see the cached prefix and, causally, each other; some requests have no prefix."""
    rng = random.Random(reqs * 10 + heads)
    prefix_lens = [0 if i % 3 == 0 else rng.randint(1, MAX_LEN) for i in range(reqs)]
    ext_lens = [rng.randint(1, MAX_LEN) for _ in range(reqs)]
    pool = Pool(sum(prefix_lens) + sum(ext_lens) + 8, kv_heads, head_dim, dtype, seed=reqs)
    slots = [
        pool.take(p + e, scattered=i % 2 == 0)
        for i, (p, e) in enumerate(zip(prefix_lens, ext_lens))
    ]
    q = torch.randn(sum(ext_lens), heads, head_dim, device=DEVICE).to(dtype)
    qo, kv = [0], [0]
    for p, e in zip(prefix_lens, ext_lens):
        qo.append(qo[-1] + e)
        kv.append(kv[-1] + p + e)
    out = extend_attention(
        q,
        pool.k,
        pool.v,
        torch.tensor(qo, dtype=torch.int32, device=DEVICE),
        torch.tensor(kv, dtype=torch.int32, device=DEVICE),
        torch.cat(slots).to(torch.int32),
        torch.tensor(prefix_lens, dtype=torch.int32, device=DEVICE),
        max(ext_lens),
        head_dim**-0.5,
    )
    for i, (p, e) in enumerate(zip(prefix_lens, ext_lens)):
        q_pos = torch.arange(p, p + e, device=DEVICE)
        ref, _ = attention(
            q[qo[i] : qo[i + 1]], pool.k[slots[i]], pool.v[slots[i]], head_dim**-0.5, q_pos
        )
        _close(out[qo[i] : qo[i + 1]], ref, dtype)
