"""How the Triton kernels read the int4 pool in registers, with the two views a query needs.

A query sees its own page exactly and earlier pages quantized (see runtime/int4_kv_pool.py). The
stored view of a slot is its int4 codes (keys: a scale and offset per channel of its page
record; values: per token, per group of channels), or its staging row while its page is partial.
The exact view is the staging row, or, for a page this forward fills, the page's exact K/V that
the forward keeps at hand. Neither view is ever written out dequantized.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl


@dataclass
class Int4KV:
    """One layer of the int4 pool as the kernels read it; `kv_scales` of the pool gives it."""

    k_codes: torch.Tensor  # [slots, Hkv, D/2] uint8, even channel in the low nibble
    v_codes: torch.Tensor
    k_scale: torch.Tensor  # [records, Hkv, D] per channel of a page
    k_offset: torch.Tensor
    v_scale: torch.Tensor  # [slots, Hkv, D/group] per token and group
    v_offset: torch.Tensor
    page_of_slot: torch.Tensor  # [slots] page record, -1 while staged
    row_of_slot: torch.Tensor  # [slots] staging row, -1 when not staged
    own_row_of_slot: torch.Tensor  # [slots] row in k_own/v_own, -1 when the page is not filling
    k_stage: torch.Tensor  # [rows, Hkv, D] exact
    v_stage: torch.Tensor
    k_own: torch.Tensor  # [filled page tokens, Hkv, D] exact (k_stage when none)
    v_own: torch.Tensor
    page_size: int
    group: int

    def __post_init__(self) -> None:
        for t in (self.k_stage, self.v_stage, self.k_own, self.v_own):
            if t.stride() != self.k_stage.stride():
                raise ValueError("Int4KV: staging and own buffers must share one layout")
        pairs = ((self.k_codes, self.v_codes), (self.k_scale, self.k_offset))
        if any(a.stride() != b.stride() for a, b in pairs + ((self.v_scale, self.v_offset),)):
            raise ValueError("Int4KV: codes, scales and offsets of K and V must share layouts")

    def args(self) -> tuple:
        """The pointer and stride arguments of the int4 kernels, in their order."""
        return (
            self.k_codes, self.v_codes, self.k_scale, self.k_offset, self.v_scale, self.v_offset,
            self.page_of_slot, self.row_of_slot, self.own_row_of_slot,
            self.k_stage, self.v_stage, self.k_own, self.v_own,
            self.k_codes.stride(0), self.k_codes.stride(1),
            self.k_scale.stride(0), self.k_scale.stride(1),
            self.v_scale.stride(0), self.v_scale.stride(1),
            self.k_stage.stride(0), self.k_stage.stride(1),
        )  # fmt: skip


@triton.jit
def slot_state(PageOf, RowOf, OwnRow, slot, valid):
    """(page record, staging row, own row) of each slot; -1 where absent or not `valid`."""
    rec = tl.load(PageOf + slot, mask=valid, other=-1)
    row = tl.load(RowOf + slot, mask=valid, other=-1)
    own = tl.load(OwnRow + slot, mask=valid, other=-1)
    return rec, row, own


@triton.jit
def stored_rows(
    Codes, Scale, Offset, Stage, slot, scale_idx, row, head, stride_cs, stride_ch,
    stride_ss, stride_sh, stride_xs, stride_xh, offs_d, valid, SCALE_GROUP: tl.constexpr,
):  # fmt: skip
    """The stored view, [len(slot), D] float32, 0 where not `valid`: codes * scale + offset,
    the scale at `scale_idx` (the page record for keys, the slot for values) and channel
    d // SCALE_GROUP; the staging row for a staged slot."""
    byte = tl.load(Codes + slot[:, None] * stride_cs + head * stride_ch + (offs_d // 2)[None, :])
    code = (byte.to(tl.int32) >> ((offs_d % 2) * 4)[None, :]) & 15
    at = tl.maximum(scale_idx, 0)[:, None] * stride_ss + head * stride_sh
    at += (offs_d // SCALE_GROUP)[None, :]
    x = code.to(tl.float32) * tl.load(Scale + at).to(tl.float32) + tl.load(Offset + at).to(
        tl.float32
    )
    staged = row >= 0
    exact = tl.load(
        Stage + tl.maximum(row, 0)[:, None] * stride_xs + head * stride_xh + offs_d[None, :],
        mask=staged[:, None],
        other=0.0,
    ).to(tl.float32)
    return tl.where(valid[:, None], tl.where(staged[:, None], exact, x), 0.0)


@triton.jit
def exact_rows(Stage, Own, row, own, head, stride_xs, stride_xh, offs_d):
    """The exact view, [len(row), D] float32: the filled page's row, else the staging row (0
    where neither, which a query's own page never has)."""
    filled = own >= 0
    staged = (row >= 0) & (own < 0)
    cols = head * stride_xh + offs_d[None, :]
    x_own = tl.load(Own + tl.maximum(own, 0)[:, None] * stride_xs + cols, mask=filled[:, None])
    x_stage = tl.load(Stage + tl.maximum(row, 0)[:, None] * stride_xs + cols, mask=staged[:, None])
    return tl.where(
        filled[:, None],
        x_own.to(tl.float32),
        tl.where(staged[:, None], x_stage.to(tl.float32), 0.0),
    )


@triton.jit
def attend_two_views(q, k_st, v_st, k_ex, v_ex, exact, visible, scale, top, total, acc):
    """attend_block (online_softmax) where each (query, key) pair reads the key's exact view
    where `exact` [M, N] holds and its stored view elsewhere, in one softmax."""
    s_st = tl.dot(q, tl.trans(k_st).to(q.dtype))
    s_ex = tl.dot(q, tl.trans(k_ex).to(q.dtype))
    s = tl.where(exact, s_ex, s_st) * scale
    s = tl.where(visible, s, float("-inf"))
    new_top = tl.maximum(top, tl.max(s, 1))
    safe = tl.where(new_top == float("-inf"), 0.0, new_top)
    alpha = tl.exp(top - safe)
    p = tl.exp(s - safe[:, None])
    total = total * alpha + tl.sum(p, 1)
    p_ex = tl.where(exact, p, 0.0).to(q.dtype)
    p_st = tl.where(exact, 0.0, p).to(q.dtype)
    acc = acc * alpha[:, None] + tl.dot(p_st, v_st.to(q.dtype)) + tl.dot(p_ex, v_ex.to(q.dtype))
    return new_top, total, acc
