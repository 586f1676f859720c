"""The pieces every attention kernel here shares: reading K/V rows through pool slots, folding a
block of keys into a running softmax, and merging partial results by their log-sum-exp.

A running result is (top, total, acc): the largest score (or partial lse) seen, the sum of
exp(score - top), and the exp-weighted sum of values. `finish` turns it into (out, lse); a row
that saw nothing gets out 0 and lse -inf.
"""

import triton
import triton.language as tl


@triton.jit
def load_kv_rows(
    Buf, Scale, Offset, slot, stride_slot, head, stride_head, scale_stride, offs_d, valid,
    DEQUANT: tl.constexpr, HAS_OFFSET: tl.constexpr,
):  # fmt: skip
    """Rows `slot` of KV head `head` of a pool buffer: [len(slot), head_dim], 0 where not `valid`.
    With DEQUANT the buffer holds codes, turned into values here: code * scale (+ offset), the
    scale at `slot * scale_stride + head` (see KVScales)."""
    ptrs = Buf + slot[:, None] * stride_slot + head * stride_head + offs_d[None, :]
    if DEQUANT:
        # Rows not `valid` read slot 0 (every caller passes the scratch slot there) and are zeroed
        # after: a masked load cannot fill fp8 codes with a default.
        at = slot * scale_stride + head
        x = tl.load(ptrs).to(tl.float32) * tl.load(Scale + at).to(tl.float32)[:, None]
        if HAS_OFFSET:
            x += tl.load(Offset + at).to(tl.float32)[:, None]
        x = tl.where(valid[:, None], x, 0.0)
    else:
        x = tl.load(ptrs, mask=valid[:, None], other=0.0)
    return x


@triton.jit
def load_kv_block(
    kv_indices, n, n_valid, K, V, KScale, KOffset, VScale, VOffset, stride_ks, stride_kh,
    stride_vs, stride_vh, kv_head, scale_stride, offs_d,
    DEQUANT: tl.constexpr, HAS_OFFSET: tl.constexpr,
):  # fmt: skip
    """K and V of KV head `kv_head` for the block of list positions `n` of `kv_indices` (the
    slots of a request's keys), 0 where not `n_valid`."""
    slot = tl.load(kv_indices + n, mask=n_valid, other=0).to(tl.int64)
    k = load_kv_rows(
        K, KScale, KOffset, slot, stride_ks, kv_head, stride_kh, scale_stride, offs_d, n_valid,
        DEQUANT, HAS_OFFSET,
    )  # fmt: skip
    v = load_kv_rows(
        V, VScale, VOffset, slot, stride_vs, kv_head, stride_vh, scale_stride, offs_d, n_valid,
        DEQUANT, HAS_OFFSET,
    )  # fmt: skip
    return k, v


@triton.jit
def empty_result(ROWS: tl.constexpr, HEAD_DIM: tl.constexpr):
    """A running result that has seen nothing: (top -inf, total 0, acc 0)."""
    top = tl.full([ROWS], float("-inf"), tl.float32)
    return top, tl.zeros([ROWS], tl.float32), tl.zeros([ROWS, HEAD_DIM], tl.float32)


@triton.jit
def attend_block(q, k, v, visible, scale, top, total, acc):
    """Folds one block of keys into the running result of each query row.

    q: [M, D]; k, v: [N, D]; visible: [M, N] which keys each query may see.
    """
    s = tl.dot(q, tl.trans(k).to(q.dtype)) * scale
    s = tl.where(visible, s, float("-inf"))
    new_top = tl.maximum(top, tl.max(s, 1))
    safe = tl.where(new_top == float("-inf"), 0.0, new_top)  # all masked so far: no nan
    alpha = tl.exp(top - safe)
    p = tl.exp(s - safe[:, None])
    total = total * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(q.dtype), v.to(q.dtype))
    return new_top, total, acc


@triton.jit
def merge_partial(top, total, acc, lse, out):
    """Folds a finished partial result (out [M, D], lse [M]) into a running one."""
    new_top = tl.maximum(top, lse)
    safe = tl.where(new_top == float("-inf"), 0.0, new_top)
    alpha = tl.exp(top - safe)
    w = tl.exp(lse - safe)
    return new_top, total * alpha + w, acc * alpha[:, None] + out * w[:, None]


@triton.jit
def finish(top, total, acc):
    """(out [M, D], lse [M]) of a running result."""
    inv = tl.where(total > 0, 1.0 / total, 0.0)
    return acc * inv[:, None], tl.where(total > 0, top + tl.log(total), float("-inf"))
