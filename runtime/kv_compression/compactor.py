"""Compaction of a request's prompt KV once its prefill is done.

Per layer and KV head the method picks the prompt positions to keep. The kept K/V are copied
into new slots, compacted: for layer l, the request's kept slot j holds, for every KV head h,
the K/V of position idx[l, h, j]. Keys are stored after rotary, so heads from different
positions share a slot and every key keeps its original rotary position; decoding goes on at
position prompt length.

The exact prompt KV stays in the radix tree as an ordinary evictable entry (the prefill put it
there): the next request with the same prefix still hits it, and LRU reclaims it under
pressure. The request keeps its lock only on the prefix it found cached at admission (shared as
before, never compressed); its compacted slots and later tokens are private and never enter the
tree. Layers that keep fewer positions (PyramidKV) leave their last compacted slots unread: the
request takes max over layers of the kept count in slots.
"""

from __future__ import annotations

import logging

import torch

from runtime.kv_compression import h2o
from runtime.kv_compression.capture import CompressionState
from runtime.kv_compression.methods import (
    layer_budget,
    observed_attention,
    queries_needed,
    select_positions,
)
from runtime.kv_compression.spec import server_spec, spec_for

logger = logging.getLogger(__name__)


def compaction_slots(spec: dict | None, region: int, num_layers: int) -> int:
    """Slots a request compressing `region` prompt tokens takes for its compacted copies (the
    largest layer budget; 0 when nothing would be dropped). Admission keeps them free: the
    exact prompts of the requests prefilled beside it stay locked until each compacts."""
    if spec is None:
        return 0
    width = layer_budget(spec, region, 0, num_layers)  # layer 0 keeps the most
    return width if width < region else 0


def options_of(spec: dict) -> dict:
    return {k: v for k, v in spec.items() if k not in ("method", "budget")}


class KVCompactor:
    def __init__(self, args, memory, cache, req_to_token_pool) -> None:
        self.memory = memory
        self.cache = cache
        self.table = req_to_token_pool.req_to_token
        self.kv_pool = memory.kv_pool
        self.num_layers = self.kv_pool.num_layers
        self.default = server_spec(args.kv_compression, args.kv_compression_budget)
        self.min_tokens = args.kv_compression_min_tokens
        # FlashInfer's decode reads one slot list per request for every layer
        self.per_layer = args.attention_backend != "flashinfer"
        if self.default is not None:
            self._check(self.default, "kv_compression")
        self.tokens_saved = 0  # prompt KV tokens dropped, over all compactions

    def spec_for(self, inp) -> dict | None:
        """The spec a new request compresses with (None: it keeps exact KV)."""
        spec = spec_for(
            inp.params.kv_compression, self.default, len(inp.input_ids), self.min_tokens
        )
        if spec is not None:
            self._check(spec, "sampling_params.kv_compression")
        return spec

    def _check(self, spec: dict, field: str) -> None:
        if self.kv_pool.quantized:
            raise ValueError(f"{field}: needs an exact KV cache; this server quantizes it")
        if spec["method"] == "pyramidkv" and not self.per_layer:
            raise ValueError(
                f"{field}.method: pyramidkv needs the torch_native or triton attention backend"
            )

    def admit(self, req) -> None:
        """Starts the bookkeeping of a compressing request that was just given its slot."""
        window = queries_needed(req.kv_compression, req.fill_len - req.kv_len)
        req.kv_state = CompressionState(req.kv_len, window, self.num_layers)
        if h2o.is_h2o(req):
            req.kv_state.scores = h2o.start_scores(
                req, self.num_layers, self.kv_pool.num_kv_heads, self.table.device
            )

    def before_decode(self, reqs: list) -> None:
        """H2O requests past their budget evict before the step."""
        for req in reqs:
            if h2o.is_h2o(req):
                h2o.evict(req, self.kv_pool, self.table)

    def observer(self, reqs: list):
        """What a decode batch records for H2O (None when no request in it uses H2O)."""
        return h2o.observer_for(reqs)

    def select(self, req, slots: torch.Tensor) -> list[torch.Tensor]:
        """Per layer, the kept positions (indices into `slots`) per KV head, [Hkv, k_l]."""
        spec, state = req.kv_compression, req.kv_state
        kept = []
        for layer in range(self.num_layers):
            k_buf, _ = self.kv_pool.get_kv(layer)
            keys = k_buf[slots].transpose(0, 1).float()  # [Hkv, n, D]
            q = state.queries[layer]
            queries = None if q is None else q.transpose(0, 1)  # [H, w, D]
            idx = select_positions(
                spec["method"],
                keys=keys,
                queries=queries,
                budget=spec["budget"],
                layer=layer,
                num_layers=self.num_layers,
                options=options_of(spec),
            ).to(slots.device)
            if state.scores is not None:  # H2O goes on from the prompt's attention
                seen = observed_attention(keys, queries[:, -keys.shape[1] :])[0]
                state.scores[layer, :, : idx.shape[1]] = seen.gather(1, idx)
            kept.append(idx)
        return kept

    def compress(self, req) -> None:
        """Compacts the prompt KV past the cached prefix; leaves it exact when that would not
        save a slot or the pool has no room for the copies."""
        state: CompressionState = req.kv_state
        req.kv_tokens_kept = req.kv_len
        if req.kv_len - state.start > req.kv_compression["budget"]:
            self._compact(req, state)
        state.queries = [None] * self.num_layers  # scored: no longer needed

    def _compact(self, req, state: CompressionState) -> None:
        start, end, row = state.start, req.kv_len, req.req_pool_idx
        slots = self.table[row, start:end].clone()  # [n]
        kept = self.select(req, slots)
        lens = [int(k.shape[1]) for k in kept]
        width = max(lens)
        if width >= end - start:
            return
        try:
            new = self.memory.alloc_kv(width).to(self.table.device)
        except RuntimeError:
            logger.warning("request %s: no room for its compacted KV; it stays exact", req.rid)
            if state.scores is not None:  # they were for the kept positions
                state.scores.zero_()
            return
        heads = torch.arange(self.kv_pool.num_kv_heads, device=slots.device)[:, None]
        for layer, idx in enumerate(kept):
            src = slots[idx]  # [Hkv, k_l] source slot of each kept (head, position)
            k_buf, v_buf = self.kv_pool.get_kv(layer)
            k, v = k_buf[src, heads].transpose(0, 1), v_buf[src, heads].transpose(0, 1)
            self.kv_pool.set_kv(layer, new[: idx.shape[1]], k, v)  # [k_l, Hkv, D]
        private = self.table[row, req.cache_owned_len : end].cpu()  # copied now: freed
        indices, handle = self.cache.match_prefix(req.fill_ids[:start])
        assert len(indices) == start, "the cached prefix a compressing request locks was lost"
        self.cache.inc_lock_ref(handle)
        self.cache.dec_lock_ref(req.prefix_handle)  # the exact prompt becomes evictable
        req.prefix_handle, req.cache_owned_len = handle, start
        self.kv_pool.free(private)
        self.table[row, start : start + width] = new
        req.kv_dropped = end - start - width
        if min(lens) < width:
            state.holes = ([start + n for n in lens], start + width)
        req.kv_tokens_kept = start + round(sum(lens) / len(lens))
        self.tokens_saved += end - req.kv_tokens_kept
