"""Extend (prefill) attention: each request's new tokens attend to its cached prefix and,
causally, to each other. The new K/V are already in the pool, so prefix and new keys are read
the same way, through the request's slots."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.triton_ops.int4_attention import int4_extend
from kernels.triton_ops.int4_rows import Int4KV
from kernels.triton_ops.kv_scales import KVScales, scale_args
from kernels.triton_ops.online_softmax import attend_block, empty_result, finish, load_kv_block


@triton.jit
def _extend_kernel(
    Q,
    K,
    V,
    KScale,
    KOffset,
    VScale,
    VOffset,
    Out,
    qo_indptr,
    kv_indptr,
    kv_indices,
    prefix_lens,
    scale,
    stride_qt,
    stride_qh,
    stride_ks,
    stride_kh,
    stride_vs,
    stride_vh,
    scale_stride,
    stride_ot,
    stride_oh,
    GROUP: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    DEQUANT: tl.constexpr,
    HAS_OFFSET: tl.constexpr,
):
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
    q_pos = prefix + offs_m  # query j sits at position prefix + j

    # Keys up to the block's last query; a block past the request's end reads none.
    hi = tl.where(
        m_block * BLOCK_M < ext_len, prefix + tl.minimum(ext_len, (m_block + 1) * BLOCK_M), 0
    )
    top, total, acc = empty_result(BLOCK_M, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    for start in range(0, hi, BLOCK_N):
        n = start + offs_n
        n_valid = n < hi
        k, v = load_kv_block(
            kv_indices + kv_start, n, n_valid, K, V, KScale, KOffset, VScale, VOffset,
            stride_ks, stride_kh, stride_vs, stride_vh, kv_head, scale_stride, offs_d,
            DEQUANT, HAS_OFFSET,
        )  # fmt: skip
        visible = n_valid[None, :] & (n[None, :] <= q_pos[:, None])
        top, total, acc = attend_block(q, k, v, visible, scale, top, total, acc)
    out, _ = finish(top, total, acc)
    tl.store(
        Out + (q_start + offs_m)[:, None] * stride_ot + head * stride_oh + offs_d[None, :],
        out.to(Out.dtype.element_ty),
        mask=m_valid[:, None],
    )


def extend_attention(
    q: torch.Tensor,
    k_buf: torch.Tensor,
    v_buf: torch.Tensor,
    qo_indptr: torch.Tensor,
    kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    prefix_lens: torch.Tensor,
    max_extend_len: int,
    scale: float,
    kv_scales: KVScales | Int4KV | None = None,
) -> torch.Tensor:
    """q: [T, H, D], the new tokens of every request back to back (`qo_indptr`). Request r's
    keys are the slots `kv_indices[kv_indptr[r]:kv_indptr[r+1]]`: its prefix of `prefix_lens[r]`
    tokens, then its new tokens. With `kv_scales` the buffers hold codes, dequantized as they
    load (int4: `kv_scales` holds them all, and a query reads its own page exactly).
    Returns [T, H, D] like q."""
    if isinstance(kv_scales, Int4KV):
        return int4_extend(
            q, kv_scales, qo_indptr, kv_indptr, kv_indices, prefix_lens, max_extend_len, scale
        )
    num_tokens, num_heads, head_dim = q.shape
    group = num_heads // k_buf.shape[1]
    out = torch.empty_like(q)
    if num_tokens == 0:
        return out
    block_m = 64 if head_dim <= 64 else 32
    block_n = 64 if head_dim <= 64 else 32
    grid = (qo_indptr.numel() - 1, num_heads, triton.cdiv(max_extend_len, block_m))
    quant_args, quant_flags = scale_args(kv_scales, k_buf)
    _extend_kernel[grid](
        q, k_buf, v_buf, *quant_args[:4], out,
        qo_indptr, kv_indptr, kv_indices, prefix_lens,
        scale,
        q.stride(0), q.stride(1),
        k_buf.stride(0), k_buf.stride(1),
        v_buf.stride(0), v_buf.stride(1), quant_args[4],
        out.stride(0), out.stride(1),
        GROUP=group, HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, **quant_flags,
    )  # fmt: skip
    return out
