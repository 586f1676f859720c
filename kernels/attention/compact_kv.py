"""Lets a backend whose kernels cannot read a pool's format (FlashInfer on int8 and int4) serve
it: per batch, the slots the batch reads are dequantized into a compact exact buffer, and the
kernels run on a copy of the batch whose table points into it. Only those slots are ever
dequantized, never the whole pool; the quantized pool keeps the only lasting copy.

A pool that reads a query's own page apart (`own_page_size`, int4) gets, in an extend batch, a
second copy of each request's slots from the page of its first new token on, read exactly; each
request is cut into one item per page it writes, whose queries see the earlier pages through
the first copy and their own page through the second. The items keep the queries' order.
"""

from __future__ import annotations

import dataclasses

import torch

from kernels.attention.backend import AttentionBackend
from kernels.attention.kv_indices import gather_rows
from kernels.forward_batch import ForwardBatch


class _CompactKV:
    """The batch's slots of one pool, dequantized one layer at a time as the layer writes."""

    quantized = False
    codes = None
    own_page_size = 0

    def __init__(self, pool, slots, own_slots, out_cache_loc, dtype) -> None:
        self.pool = pool
        self.slots = slots  # [U] pool slots, compact index i holds slots[i]
        self.own_slots = own_slots  # None, or slots read exactly again, at U + j
        self.out_cache_loc = out_cache_loc  # the new tokens' pool slots
        self.dtype = dtype
        self.k = self.v = None

    def set_kv(self, layer_id: int, loc: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Stores the new tokens in the pool, then reads the layer's slots back (`loc` is the
        compact index, which the pool does not know)."""
        self.pool.set_kv(layer_id, self.out_cache_loc, k, v)
        if self.own_slots is None:  # decode: a row's own page is in its slots
            self.k, self.v = self.pool.read_own_page(layer_id, self.slots, self.dtype)
            return
        k, v = self.pool.read_kv(layer_id, self.slots, self.dtype)
        k_own, v_own = self.pool.read_exact(layer_id, self.own_slots, self.dtype)
        self.k, self.v = torch.cat([k, k_own]), torch.cat([v, v_own])

    def get_kv(self, layer_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k, self.v

    def kv_scales(self, layer_id: int) -> None:
        return None

    def read_kv(self, layer_id, slots, dtype, paged=False):  # exact already: pages or not
        return gather_rows(self.k, slots).to(dtype), gather_rows(self.v, slots).to(dtype)

    read_own_page = read_exact = read_kv

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
    ps = batch.kv_cache.own_page_size
    if ps and not batch.is_decode:
        return _page_items(batch, dtype, table, slots, inverse, new_loc, ps)
    view = _CompactKV(batch.kv_cache, slots, None, batch.out_cache_loc, dtype)
    return dataclasses.replace(
        batch,
        out_cache_loc=new_loc,
        req_pool_indices=torch.arange(len(seq_lens), device=table.device),
        req_to_token=inverse,
        kv_cache=view,
        attn_metadata=None,
    )


def _page_items(batch, dtype, table, slots, inverse, new_loc, ps) -> ForwardBatch:
    """The extend batch cut into one item per (request, page it writes); see the module."""
    firsts = [p - p % ps for p in batch.prefix_lens_cpu]
    req, starts, q_firsts, ends, own_at = [], [], [], [], []
    at = 0
    for i, (p, n, f) in enumerate(zip(batch.prefix_lens_cpu, batch.seq_lens_cpu, firsts)):
        for start in range(f, n, ps):
            req.append(i)
            starts.append(start)
            q_firsts.append(max(p, start))
            ends.append(min(n, start + ps))
            own_at.append(at + start - f)  # where the item's page begins in the own copy
        at += n - f
    dev = table.device
    own_slots = torch.cat(
        [table[i, f:n] for i, (f, n) in enumerate(zip(firsts, batch.seq_lens_cpu))]
    )
    req_t, start_t, end_t, own_t = (
        torch.tensor(x, device=dev) for x in (req, starts, ends, own_at)
    )
    cols = torch.arange(max(ends), device=dev)[None, :]
    before = inverse[req_t][:, : cols.shape[1]]  # earlier pages: the stored copy
    own = slots.numel() + own_t[:, None] + cols - start_t[:, None]  # its page: the exact copy
    items = torch.where(cols < start_t[:, None], before, own)
    items = items.masked_fill(cols >= end_t[:, None], 0)
    view = _CompactKV(batch.kv_cache, slots, own_slots, batch.out_cache_loc, dtype)
    return dataclasses.replace(
        batch,
        out_cache_loc=new_loc,
        req_pool_indices=torch.arange(len(req), device=dev),
        seq_lens=end_t,
        req_to_token=items,
        kv_cache=view,
        attn_metadata=None,
        seq_lens_cpu=ends,
        prefix_lens_cpu=q_firsts,
        extend_lens_cpu=[e - q for e, q in zip(ends, q_firsts)],
    )


class CompactKVBackend(AttentionBackend):
    """Wraps a backend so that it serves a pool its kernels cannot read (see the module)."""

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
