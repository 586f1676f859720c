"""Decode and extend attention over the int4 pool, read in registers (see int4_rows).

Decode: a query is the last token of its request, so the only slots it reads exactly are those
of the page this forward fills (its own; a partial own page is staged, exact in both views).
Extend: queries of one block may sit in different pages; a block of keys before the block's
first query page is read stored, and the keys from that page on in both views, each query
taking the exact one for keys of its own page.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.triton_ops.int4_rows import (
    Int4KV,
    attend_two_views,
    exact_rows,
    slot_state,
    stored_rows,
)
from kernels.triton_ops.online_softmax import attend_block, empty_result, finish


@triton.jit
def _int4_partial_kernel(
    Q, KCodes, VCodes, KScale, KOffset, VScale, VOffset, PageOf, RowOf, OwnRow,
    KStage, VStage, KOwn, VOwn,
    stride_cs, stride_ch, stride_kss, stride_ksh, stride_vss, stride_vsh, stride_xs, stride_xh,
    MidO, MidLse, q_indptr, q_rows, kv_indptr, kv_indices, scale,
    stride_qt, stride_qh, stride_mo_q, stride_mo_h, stride_mo_s, stride_ml_q, stride_ml_h,
    num_m_blocks, num_splits,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    V_GROUP: tl.constexpr,
):  # fmt: skip
    """Stage 1 of decode_attention (decode_attention.py) over the int4 pool."""
    item = tl.program_id(0)
    kv_head = tl.program_id(1) // num_m_blocks
    m_block = tl.program_id(1) % num_m_blocks
    split = tl.program_id(2)
    q_start = tl.load(q_indptr + item)
    num_q = tl.load(q_indptr + item + 1) - q_start
    kv_start = tl.load(kv_indptr + item)
    kv_len = tl.load(kv_indptr + item + 1) - kv_start

    offs_m = m_block * BLOCK_M + tl.arange(0, BLOCK_M)
    q_local = offs_m // GROUP
    head = kv_head * GROUP + offs_m % GROUP
    m_valid = q_local < num_q
    row_q = tl.load(q_rows + q_start + q_local, mask=m_valid, other=0).to(tl.int64)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(
        Q + row_q[:, None] * stride_qt + head[:, None] * stride_qh + offs_d[None, :],
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
        slot = tl.load(kv_indices + kv_start + n, mask=n_valid, other=0).to(tl.int64)
        rec, row, own = slot_state(PageOf, RowOf, OwnRow, slot, n_valid)
        k = stored_rows(
            KCodes, KScale, KOffset, KStage, slot, rec, row, kv_head, stride_cs, stride_ch,
            stride_kss, stride_ksh, stride_xs, stride_xh, offs_d, n_valid, 1,
        )  # fmt: skip
        v = stored_rows(
            VCodes, VScale, VOffset, VStage, slot, slot, row, kv_head, stride_cs, stride_ch,
            stride_vss, stride_vsh, stride_xs, stride_xh, offs_d, n_valid, V_GROUP,
        )  # fmt: skip
        filled = (own >= 0)[:, None]
        k = tl.where(
            filled, exact_rows(KStage, KOwn, row, own, kv_head, stride_xs, stride_xh, offs_d), k
        )
        v = tl.where(
            filled, exact_rows(VStage, VOwn, row, own, kv_head, stride_xs, stride_xh, offs_d), v
        )
        top, total, acc = attend_block(q, k, v, n_valid[None, :], scale, top, total, acc)
    out, lse = finish(top, total, acc)
    q_out = q_start + q_local
    tl.store(
        MidO + q_out[:, None] * stride_mo_q + head[:, None] * stride_mo_h + split * stride_mo_s
        + offs_d[None, :],
        out,
        mask=m_valid[:, None],
    )  # fmt: skip
    tl.store(MidLse + q_out * stride_ml_q + head * stride_ml_h + split, lse, mask=m_valid)


def int4_partial(q, kv: Int4KV, items, scale, mid_o, mid_lse, block_m, num_m_blocks) -> None:
    """Launches stage 1 of decode over the int4 pool into (mid_o, mid_lse)."""
    _, num_heads, head_dim = q.shape
    num_kv_heads = kv.k_codes.shape[1]
    grid = (items.q_indptr.numel() - 1, num_kv_heads * num_m_blocks, items.num_splits)
    _int4_partial_kernel[grid](
        q, *kv.args(), mid_o, mid_lse,
        items.q_indptr, items.q_rows, items.kv_indptr, items.kv_indices, scale,
        q.stride(0), q.stride(1),
        mid_o.stride(0), mid_o.stride(1), mid_o.stride(2), mid_lse.stride(0), mid_lse.stride(1),
        num_m_blocks, items.num_splits,
        GROUP=num_heads // num_kv_heads, HEAD_DIM=head_dim, BLOCK_M=block_m,
        BLOCK_N=32 if head_dim > 64 else 64, V_GROUP=kv.group,
    )  # fmt: skip


@triton.jit
def _int4_extend_kernel(
    Q, KCodes, VCodes, KScale, KOffset, VScale, VOffset, PageOf, RowOf, OwnRow,
    KStage, VStage, KOwn, VOwn,
    stride_cs, stride_ch, stride_kss, stride_ksh, stride_vss, stride_vsh, stride_xs, stride_xh,
    Out, qo_indptr, kv_indptr, kv_indices, prefix_lens, scale,
    stride_qt, stride_qh, stride_ot, stride_oh,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    V_GROUP: tl.constexpr, PAGE: tl.constexpr,
):  # fmt: skip
    """extend_attention (extend_attention.py) over the int4 pool, with the own-page rule."""
    req = tl.program_id(0)
    head = tl.program_id(1)
    m_block = tl.program_id(2)
    kv_head = head // GROUP
    q_start = tl.load(qo_indptr + req).to(tl.int64)
    ext_len = tl.load(qo_indptr + req + 1) - q_start
    kv_start = tl.load(kv_indptr + req)
    prefix = tl.load(prefix_lens + req)

    offs_m = m_block * BLOCK_M + tl.arange(0, BLOCK_M)
    m_valid = offs_m < ext_len
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(
        Q + (q_start + offs_m)[:, None] * stride_qt + head * stride_qh + offs_d[None, :],
        mask=m_valid[:, None],
        other=0.0,
    )
    q_pos = prefix + offs_m
    hi = tl.where(
        m_block * BLOCK_M < ext_len, prefix + tl.minimum(ext_len, (m_block + 1) * BLOCK_M), 0
    )
    # Keys before the page of the block's first query are stored for every query of the block.
    own_lo = tl.minimum((prefix + m_block * BLOCK_M) // PAGE * PAGE, hi)
    own_lo = own_lo // BLOCK_N * BLOCK_N
    top, total, acc = empty_result(BLOCK_M, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    for start in range(0, own_lo, BLOCK_N):
        n = start + offs_n
        slot = tl.load(kv_indices + kv_start + n).to(tl.int64)
        rec, row, own = slot_state(PageOf, RowOf, OwnRow, slot, n < own_lo)
        k = stored_rows(
            KCodes, KScale, KOffset, KStage, slot, rec, row, kv_head, stride_cs, stride_ch,
            stride_kss, stride_ksh, stride_xs, stride_xh, offs_d, n < own_lo, 1,
        )  # fmt: skip
        v = stored_rows(
            VCodes, VScale, VOffset, VStage, slot, slot, row, kv_head, stride_cs, stride_ch,
            stride_vss, stride_vsh, stride_xs, stride_xh, offs_d, n < own_lo, V_GROUP,
        )  # fmt: skip
        visible = (n < own_lo)[None, :] & m_valid[:, None]
        top, total, acc = attend_block(q, k, v, visible, scale, top, total, acc)
    for start in range(own_lo, hi, BLOCK_N):
        n = start + offs_n
        n_valid = n < hi
        slot = tl.load(kv_indices + kv_start + n, mask=n_valid, other=0).to(tl.int64)
        rec, row, own = slot_state(PageOf, RowOf, OwnRow, slot, n_valid)
        k_st = stored_rows(
            KCodes, KScale, KOffset, KStage, slot, rec, row, kv_head, stride_cs, stride_ch,
            stride_kss, stride_ksh, stride_xs, stride_xh, offs_d, n_valid, 1,
        )  # fmt: skip
        v_st = stored_rows(
            VCodes, VScale, VOffset, VStage, slot, slot, row, kv_head, stride_cs, stride_ch,
            stride_vss, stride_vsh, stride_xs, stride_xh, offs_d, n_valid, V_GROUP,
        )  # fmt: skip
        k_ex = exact_rows(KStage, KOwn, row, own, kv_head, stride_xs, stride_xh, offs_d)
        v_ex = exact_rows(VStage, VOwn, row, own, kv_head, stride_xs, stride_xh, offs_d)
        visible = n_valid[None, :] & (n[None, :] <= q_pos[:, None])
        exact = (n // PAGE)[None, :] == (q_pos // PAGE)[:, None]
        top, total, acc = attend_two_views(
            q, k_st, v_st, k_ex, v_ex, exact, visible, scale, top, total, acc
        )
    out, _ = finish(top, total, acc)
    tl.store(
        Out + (q_start + offs_m)[:, None] * stride_ot + head * stride_oh + offs_d[None, :],
        out.to(Out.dtype.element_ty),
        mask=m_valid[:, None],
    )


def int4_extend(q, kv: Int4KV, qo_indptr, kv_indptr, kv_indices, prefix_lens, max_extend_len,
                scale) -> torch.Tensor:  # fmt: skip
    """extend_attention's contract over the int4 pool."""
    num_tokens, num_heads, head_dim = q.shape
    out = torch.empty_like(q)
    if num_tokens == 0:
        return out
    block = 64 if head_dim <= 64 else 32
    grid = (qo_indptr.numel() - 1, num_heads, triton.cdiv(max_extend_len, block))
    _int4_extend_kernel[grid](
        q, *kv.args(), out, qo_indptr, kv_indptr, kv_indices, prefix_lens, scale,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1),
        GROUP=num_heads // kv.k_codes.shape[1], HEAD_DIM=head_dim, BLOCK_M=block, BLOCK_N=block,
        V_GROUP=kv.group, PAGE=kv.page_size,
    )  # fmt: skip
    return out
