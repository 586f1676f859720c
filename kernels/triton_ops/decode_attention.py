"""Decode attention with a split-KV reduction, and its cascade over shared radix prefixes.

One launch attends a set of *items*. An item is a list of query rows and a list of KV slots;
every query of the item attends to every one of its slots. A plain decode batch has one item per
request (its own row, its own slots). A cascade group is one item whose rows are all the requests
under a shared prefix and whose slots are that prefix: the prefix is read once per block of
queries instead of once per request.

Stage 1 splits each item's keys into `num_splits` ranges and writes a partial output and its
log-sum-exp per range; stage 2 reduces the ranges. Long contexts with few requests thus still
spread over the whole device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kernels.triton_ops.int4_attention import int4_partial
from kernels.triton_ops.int4_rows import Int4KV
from kernels.triton_ops.kv_scales import KVScales, scale_args
from kernels.triton_ops.merge_state import merge_state
from kernels.triton_ops.online_softmax import (
    attend_block,
    empty_result,
    finish,
    load_kv_block,
    merge_partial,
)

# Bytes the stage-1 partial outputs may take; more splits than this allows are not worth it.
MID_BUFFER_BYTES = 256 << 20
# Query rows x heads of one program; a block reads its keys once for all of them.
MAX_BLOCK_M = 64


@triton.jit
def _partial_kernel(
    Q,
    K,
    V,
    KScale,
    KOffset,
    VScale,
    VOffset,
    MidO,
    MidLse,
    q_indptr,
    q_rows,
    kv_indptr,
    kv_indices,
    scale,
    stride_qt,
    stride_qh,
    stride_ks,
    stride_kh,
    stride_vs,
    stride_vh,
    scale_stride,
    stride_mo_q,
    stride_mo_h,
    stride_mo_s,
    stride_ml_q,
    stride_ml_h,
    num_m_blocks,
    num_splits,
    GROUP: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    DEQUANT: tl.constexpr,
    HAS_OFFSET: tl.constexpr,
):
    item = tl.program_id(0)
    kv_head = tl.program_id(1) // num_m_blocks
    m_block = tl.program_id(1) % num_m_blocks
    split = tl.program_id(2)

    q_start = tl.load(q_indptr + item)
    num_q = tl.load(q_indptr + item + 1) - q_start
    kv_start = tl.load(kv_indptr + item)
    kv_len = tl.load(kv_indptr + item + 1) - kv_start

    # The block's queries: (query row of the item, query head of this KV head), flattened.
    offs_m = m_block * BLOCK_M + tl.arange(0, BLOCK_M)
    q_local = offs_m // GROUP
    head = kv_head * GROUP + offs_m % GROUP
    m_valid = q_local < num_q
    row = tl.load(q_rows + q_start + q_local, mask=m_valid, other=0).to(tl.int64)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(
        Q + row[:, None] * stride_qt + head[:, None] * stride_qh + offs_d[None, :],
        mask=m_valid[:, None],
        other=0.0,
    )

    split_len = tl.cdiv(kv_len, num_splits)
    lo = split * split_len
    hi = tl.minimum(lo + split_len, kv_len)
    top, total, acc = empty_result(BLOCK_M, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    for start in range(lo, hi, BLOCK_N):
        n = start + offs_n
        n_valid = n < hi
        k, v = load_kv_block(
            kv_indices + kv_start, n, n_valid, K, V, KScale, KOffset, VScale, VOffset,
            stride_ks, stride_kh, stride_vs, stride_vh, kv_head, scale_stride, offs_d,
            DEQUANT, HAS_OFFSET,
        )  # fmt: skip
        top, total, acc = attend_block(q, k, v, n_valid[None, :], scale, top, total, acc)
    out, lse = finish(top, total, acc)
    q_out = q_start + q_local
    tl.store(
        MidO
        + q_out[:, None] * stride_mo_q
        + head[:, None] * stride_mo_h
        + split * stride_mo_s
        + offs_d[None, :],
        out,
        mask=m_valid[:, None],
    )
    tl.store(MidLse + q_out * stride_ml_q + head * stride_ml_h + split, lse, mask=m_valid)


@triton.jit
def _reduce_kernel(
    MidO,
    MidLse,
    Out,
    Lse,
    stride_mo_q,
    stride_mo_h,
    stride_mo_s,
    stride_ml_q,
    stride_ml_h,
    stride_o_q,
    stride_o_h,
    num_heads,
    num_splits,
    HEAD_DIM: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    j = tl.program_id(0)
    offs_h = tl.arange(0, BLOCK_H)
    h_valid = offs_h < num_heads
    offs_d = tl.arange(0, HEAD_DIM)
    top, total, acc = empty_result(BLOCK_H, HEAD_DIM)
    for s in range(0, num_splits):
        lse_s = tl.load(
            MidLse + j * stride_ml_q + offs_h * stride_ml_h + s, mask=h_valid, other=float("-inf")
        )
        o_s = tl.load(
            MidO + j * stride_mo_q + offs_h[:, None] * stride_mo_h + s * stride_mo_s
            + offs_d[None, :],
            mask=h_valid[:, None],
            other=0.0,
        )  # fmt: skip
        top, total, acc = merge_partial(top, total, acc, lse_s, o_s)
    out, lse = finish(top, total, acc)
    tl.store(
        Out + j * stride_o_q + offs_h[:, None] * stride_o_h + offs_d[None, :],
        out.to(Out.dtype.element_ty),
        mask=h_valid[:, None],
    )
    tl.store(Lse + j * num_heads + offs_h, lse, mask=h_valid)


def choose_num_splits(
    programs_per_split: int,
    max_kv_len: int,
    num_q: int,
    num_heads: int,
    head_dim: int,
    target_programs: int,
    min_split_len: int = 256,
) -> int:
    """Enough key ranges to give the device `target_programs` programs, each range at least
    `min_split_len` keys, and the partial outputs within MID_BUFFER_BYTES."""
    want = triton.cdiv(target_programs, max(1, programs_per_split))
    by_len = triton.cdiv(max(1, max_kv_len), min_split_len)
    by_mem = MID_BUFFER_BYTES // max(1, num_q * num_heads * (head_dim + 1) * 4)
    return max(1, min(want, by_len, by_mem, 64))


def query_blocks(max_q_per_item: int, group: int) -> tuple[int, int]:
    """(BLOCK_M, number of query blocks) for items of up to `max_q_per_item` rows."""
    queries = max_q_per_item * group
    block_m = min(MAX_BLOCK_M, max(16, triton.next_power_of_2(queries)))
    return block_m, triton.cdiv(queries, block_m)


@dataclass
class DecodeItems:
    """One launch's items: item i's queries are rows `q_rows[q_indptr[i]:q_indptr[i+1]]` of q,
    its keys the pool slots `kv_indices[kv_indptr[i]:kv_indptr[i+1]]`. Built once per batch and
    shared by every layer."""

    q_indptr: torch.Tensor
    q_rows: torch.Tensor
    kv_indptr: torch.Tensor
    kv_indices: torch.Tensor
    max_q_per_item: int
    num_splits: int


def _launch_partial(q, k_buf, v_buf, items, scale, kv_scales, mid_o, mid_lse, blocks) -> None:
    """Stage 1 over exact buffers, or codes with per-slot or per-head scales (KVScales)."""
    _, num_heads, head_dim = q.shape
    num_kv_heads = k_buf.shape[1]
    block_m, num_m_blocks = blocks
    quant_args, quant_flags = scale_args(kv_scales, k_buf)
    _partial_kernel[(items.q_indptr.numel() - 1, num_kv_heads * num_m_blocks, items.num_splits)](
        q, k_buf, v_buf, *quant_args[:4], mid_o, mid_lse,
        items.q_indptr, items.q_rows, items.kv_indptr, items.kv_indices,
        scale,
        q.stride(0), q.stride(1),
        k_buf.stride(0), k_buf.stride(1),
        v_buf.stride(0), v_buf.stride(1), quant_args[4],
        mid_o.stride(0), mid_o.stride(1), mid_o.stride(2),
        mid_lse.stride(0), mid_lse.stride(1),
        num_m_blocks, items.num_splits,
        GROUP=num_heads // num_kv_heads, HEAD_DIM=head_dim, BLOCK_M=block_m,
        BLOCK_N=32 if head_dim > 64 else 64, **quant_flags,
    )  # fmt: skip


def decode_attention(
    q: torch.Tensor,
    k_buf: torch.Tensor,
    v_buf: torch.Tensor,
    items: DecodeItems,
    scale: float,
    kv_scales: KVScales | Int4KV | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """q: [T, H, D]; k_buf/v_buf: the pool's [slots, Hkv, D] for one layer, exact values or,
    with `kv_scales`, codes dequantized as they load (int4: `kv_scales` holds them all).

    Returns (out [len(q_rows), H, D] like q, float32 lse [len(q_rows), H]) in q_rows order; a
    query with no keys gets 0 and lse -inf.
    """
    _, num_heads, head_dim = q.shape
    num_q = items.q_rows.numel()
    splits = items.num_splits
    out = torch.empty(num_q, num_heads, head_dim, dtype=q.dtype, device=q.device)
    lse = torch.empty(num_q, num_heads, dtype=torch.float32, device=q.device)
    if num_q == 0:
        return out, lse
    mid_o = torch.empty(num_q, num_heads, splits, head_dim, dtype=torch.float32, device=q.device)
    mid_lse = torch.empty(num_q, num_heads, splits, dtype=torch.float32, device=q.device)
    blocks = query_blocks(items.max_q_per_item, num_heads // k_buf.shape[1])
    if isinstance(kv_scales, Int4KV):
        int4_partial(q, kv_scales, items, scale, mid_o, mid_lse, *blocks)
    else:
        _launch_partial(q, k_buf, v_buf, items, scale, kv_scales, mid_o, mid_lse, blocks)
    _reduce_kernel[(num_q,)](
        mid_o, mid_lse, out, lse,
        mid_o.stride(0), mid_o.stride(1), mid_o.stride(2),
        mid_lse.stride(0), mid_lse.stride(1),
        out.stride(0), out.stride(1),
        num_heads, splits,
        HEAD_DIM=head_dim, BLOCK_H=triton.next_power_of_2(num_heads),
    )  # fmt: skip
    return out, lse


def cascade_decode_attention(
    q: torch.Tensor,
    k_buf: torch.Tensor,
    v_buf: torch.Tensor,
    own: DecodeItems,
    shared: DecodeItems | None,
    scale: float,
    kv_scales: KVScales | Int4KV | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each request attends to its own slots (`own`: one item per request, rows in batch order);
    each group of requests under a shared prefix attends to it together (`shared`: one item per
    group); the two partial results are merged by log-sum-exp. Returns (out [B, H, D], lse)."""
    out, lse = decode_attention(q, k_buf, v_buf, own, scale, kv_scales)
    if shared is None:
        return out, lse
    part, part_lse = decode_attention(q, k_buf, v_buf, shared, scale, kv_scales)
    rows = shared.q_rows
    out[rows], lse[rows] = merge_state(out[rows], lse[rows], part, part_lse)
    return out, lse
