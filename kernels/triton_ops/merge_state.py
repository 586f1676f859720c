"""Combines two partial attention results over disjoint key sets by their log-sum-exp."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.triton_ops.online_softmax import empty_result, finish, merge_partial


@triton.jit
def _merge_state_kernel(
    Va,
    Sa,
    Vb,
    Sb,
    Out,
    SOut,
    stride_va_n,
    stride_va_h,
    stride_vb_n,
    stride_vb_h,
    stride_o_n,
    stride_o_h,
    num_heads,
    HEAD_DIM: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    n = tl.program_id(0)
    h = tl.arange(0, BLOCK_H)
    h_valid = h < num_heads
    d = tl.arange(0, HEAD_DIM)
    mask = h_valid[:, None]
    sa = tl.load(Sa + n * num_heads + h, mask=h_valid, other=float("-inf"))
    sb = tl.load(Sb + n * num_heads + h, mask=h_valid, other=float("-inf"))
    va = tl.load(Va + n * stride_va_n + h[:, None] * stride_va_h + d[None, :], mask=mask, other=0.0)
    vb = tl.load(Vb + n * stride_vb_n + h[:, None] * stride_vb_h + d[None, :], mask=mask, other=0.0)
    top, total, acc = empty_result(BLOCK_H, HEAD_DIM)
    top, total, acc = merge_partial(top, total, acc, sa, va.to(tl.float32))
    top, total, acc = merge_partial(top, total, acc, sb, vb.to(tl.float32))
    out, lse = finish(top, total, acc)
    tl.store(
        Out + n * stride_o_n + h[:, None] * stride_o_h + d[None, :],
        out.to(Out.dtype.element_ty),
        mask=mask,
    )
    tl.store(SOut + n * num_heads + h, lse, mask=h_valid)


def merge_state(
    v_a: torch.Tensor, s_a: torch.Tensor, v_b: torch.Tensor, s_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """v: [N, H, D] attention outputs, s: [N, H] float32 log-sum-exp of their scores.

    Returns the attention over the union of both key sets: (out like v_a, float32 lse). An empty
    side has lse -inf and contributes nothing.
    """
    n, h, d = v_a.shape
    out = torch.empty_like(v_a)
    s_out = torch.empty(n, h, dtype=torch.float32, device=v_a.device)
    if n == 0:
        return out, s_out
    _merge_state_kernel[(n,)](
        v_a, s_a.contiguous(), v_b, s_b.contiguous(), out, s_out,
        v_a.stride(0), v_a.stride(1),
        v_b.stride(0), v_b.stride(1),
        out.stride(0), out.stride(1),
        h,
        HEAD_DIM=d, BLOCK_H=triton.next_power_of_2(h),
    )  # fmt: skip
    return out, s_out
