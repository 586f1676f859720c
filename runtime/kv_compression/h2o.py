"""H2O while decoding: a request keeps a fixed budget of private KV per layer and KV head, the
most recent tokens and the "heavy hitters" by attention accumulated over every query so far.

Each decode step adds the attention the new query pays to each of the request's private columns
(per KV head, the mean over its query heads). When the private columns reach budget plus
`EVICT_EVERY`, the request is compacted in place: per layer and head it keeps its last
`recent_size` columns and the best-scored of the rest; kept column j of head h moves to the
request's j-th private slot, and the freed slots go back to the pool. Evicting in steps of
`EVICT_EVERY` copies K/V once per that many tokens instead of every step.
"""

from __future__ import annotations

import torch

EVICT_EVERY = 32


def is_h2o(req) -> bool:
    return req.kv_state is not None and req.kv_compression["method"] == "h2o"


def start_scores(req, num_layers: int, num_kv_heads: int, device) -> torch.Tensor:
    """The score buffer: [layers, Hkv, budget + EVICT_EVERY] per private column."""
    width = req.kv_compression["budget"] + EVICT_EVERY
    return torch.zeros(num_layers, num_kv_heads, width, device=device)


class AttentionObserver:
    """Set as a decode batch's `query_capture`: after each layer's attention it adds what the
    H2O rows' queries paid to their private columns. rows: (batch row, request)."""

    def __init__(self, rows: list) -> None:
        self.rows = rows

    def record(self, layer_id: int, q: torch.Tensor, batch) -> None:
        """q: [batch, num_heads, head_dim]; the new keys are in the pool by now."""
        for i, req in self.rows:
            n = batch.seq_lens_cpu[i]
            slots = batch.req_to_token[req.req_pool_idx, :n]
            keys, _ = batch.kv_cache.read_kv(layer_id, slots, torch.float32)  # [n, Hkv, D]
            hkv, d = keys.shape[1], keys.shape[2]
            qg = q[i].float().view(hkv, -1, d)  # [Hkv, group, D]
            probs = torch.softmax(torch.einsum("hgd,nhd->hgn", qg, keys) * d**-0.5, dim=-1)
            own = req.cache_owned_len
            _fit(req.kv_state, n - own)
            req.kv_state.scores[layer_id, :, : n - own] += probs.mean(dim=1)[:, own:]


def _fit(state, width: int) -> None:
    """Widens the score buffer when a request holds more private columns than it planned for
    (its prompt could not be compacted)."""
    have = state.scores.shape[-1]
    if width > have:
        state.scores = torch.nn.functional.pad(state.scores, (0, width - have))


def observer_for(reqs: list) -> AttentionObserver | None:
    rows = [(i, r) for i, r in enumerate(reqs) if is_h2o(r)]
    return AttentionObserver(rows) if rows else None


def evict(req, kv_pool, table: torch.Tensor) -> None:
    """Compacts the request's private columns to its budget once they reach budget plus
    `EVICT_EVERY`; before a decode step, so every column holds KV."""
    spec, state = req.kv_compression, req.kv_state
    budget, recent = spec["budget"], spec["recent_size"]
    own, end = req.cache_owned_len, req.kv_len - req.kv_dropped
    m = end - own
    if m < budget + EVICT_EVERY:
        return
    slots = table[req.req_pool_idx, own:end].clone()  # [m]
    _fit(state, m)
    heads = torch.arange(kv_pool.num_kv_heads, device=slots.device)[:, None]
    for layer in range(kv_pool.num_layers):
        scores = state.scores[layer, :, :m].clone()
        if recent:
            scores[:, m - recent :] = float("inf")
        idx = scores.topk(budget, dim=-1).indices.sort(dim=-1).values  # [Hkv, budget]
        k_buf, v_buf = kv_pool.get_kv(layer)
        src = slots[idx]
        k, v = k_buf[src, heads].transpose(0, 1), v_buf[src, heads].transpose(0, 1)
        kv_pool.set_kv(layer, slots[:budget], k, v)  # gathered copies first: safe in place
        kept = state.scores[layer].gather(1, idx)
        state.scores[layer].zero_()
        state.scores[layer, :, :budget] = kept
    kv_pool.free(slots[budget:].cpu())
    req.kv_dropped += m - budget
