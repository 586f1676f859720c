"""Lets a backend whose kernels cannot read a pool's format (FlashInfer on int8 and int4, Triton
on int4) serve it: per batch, the slots the batch reads are dequantized into a compact exact buffer, and the
kernels run on a copy of the batch whose table points into it. Only those slots are ever
dequantized, never the whole pool; the quantized pool keeps the only lasting copy.
"""

from __future__ import annotations

import dataclasses

import torch

from kernels.attention.backend import AttentionBackend
from kernels.forward_batch import ForwardBatch


class _CompactKV:
    """The batch's slots of one pool, dequantized one layer at a time as the layer writes."""

    quantized = False
    codes = None

    def __init__(self, pool, slots: torch.Tensor, out_cache_loc: torch.Tensor, dtype) -> None:
        self.pool = pool
        self.slots = slots  # [U] pool slots, compact index i holds slots[i]
        self.out_cache_loc = out_cache_loc  # the new tokens' pool slots
        self.dtype = dtype
        self.k = self.v = None

    def set_kv(self, layer_id: int, loc: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Stores the new tokens in the pool, then reads the layer's slots back (`loc` is the
        compact index, which the pool does not know)."""
        self.pool.set_kv(layer_id, self.out_cache_loc, k, v)
        self.k, self.v = self.pool.read_kv(layer_id, self.slots, self.dtype)

    def get_kv(self, layer_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k, self.v

    def kv_scales(self, layer_id: int) -> None:
        return None

    def read_kv(self, layer_id, slots, dtype):
        return self.k[slots].to(dtype), self.v[slots].to(dtype)

    def plan(self, batch) -> None:
        pass


def compact_batch(batch: ForwardBatch, dtype: torch.dtype) -> ForwardBatch:
    """A copy of `batch` over a compact table (row i: request i's slots, renumbered) and a
    compact cache that dequantizes to `dtype`."""
    seq_lens = batch.seq_lens_cpu
    width = max(seq_lens)
    table = batch.req_to_token[batch.req_pool_indices, :width]  # [B, L]
    lens = torch.tensor(seq_lens, device=table.device)
    real = torch.arange(width, device=table.device)[None, :] < lens[:, None]
    # slot 0 (the scratch slot) stands where a row is shorter; it is never read
    slots, inverse = torch.unique(table.masked_fill(~real, 0), return_inverse=True)
    new_loc = torch.searchsorted(slots, batch.out_cache_loc)
    view = _CompactKV(batch.kv_cache, slots, batch.out_cache_loc, dtype)
    return dataclasses.replace(
        batch,
        out_cache_loc=new_loc,
        req_pool_indices=torch.arange(len(seq_lens), device=table.device),
        req_to_token=inverse,
        kv_cache=view,
        attn_metadata=None,
    )


class CompactKVBackend(AttentionBackend):
    """Wraps a backend so that it serves a quantized pool (see the module's docstring)."""

    def __init__(self, inner: AttentionBackend, dtype: torch.dtype) -> None:
        """`dtype`: what the kernels compute in (the model's dtype)."""
        super().__init__(inner.num_heads, inner.num_kv_heads, inner.head_dim, inner.device)
        self.inner = inner
        self.dtype = dtype

    def init_forward_metadata(self, batch: ForwardBatch) -> None:
        view = compact_batch(batch, self.dtype)
        self.inner.init_forward_metadata(view)
        batch.attn_metadata = view

    def forward_extend(self, q, k, v, layer, batch) -> torch.Tensor:
        return self.inner.forward_extend(q, k, v, layer, batch.attn_metadata)

    def forward_decode(self, q, k, v, layer, batch) -> torch.Tensor:
        return self.inner.forward_decode(q, k, v, layer, batch.attn_metadata)
