"""Plain attention over gathered K/V: what every kernel is checked against."""

from __future__ import annotations

import torch


def attention(q, keys, values, scale, q_pos=None):
    """q: [Lq, H, D]; keys/values: [L, Hkv, D]; q_pos: each query's position for a causal mask
    (key j is visible when j <= q_pos), or None for no mask. Returns (out [Lq, H, D] float32,
    lse [Lq, H] float32)."""
    group = q.shape[1] // keys.shape[1]
    k = keys.float().repeat_interleave(group, 1)
    v = values.float().repeat_interleave(group, 1)
    s = torch.einsum("qhd,khd->hqk", q.float(), k) * scale
    if q_pos is not None:
        visible = torch.arange(keys.shape[0], device=q.device)[None, :] <= q_pos[:, None]
        s = s.masked_fill(~visible[None], float("-inf"))
    lse = torch.logsumexp(s, -1)  # [H, Lq]
    out = torch.einsum("hqk,khd->qhd", torch.softmax(s, -1), v)
    return out, lse.transpose(0, 1)
