"""H2O while decoding: the attention each step adds per private column, and the in-place
eviction down to the budget (recent columns and the best-scored of the rest, per KV head)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from runtime.kv_compression import h2o
from runtime.kv_compression.capture import CompressionState
from runtime.memory_pool import KVPool, ReqToTokenPool

BUDGET, RECENT = 4, 2
M = BUDGET + h2o.EVICT_EVERY  # private columns when eviction starts


def make(own: int = 0):
    pool = KVPool(128, 2, 2, 4, torch.float32, "cpu")
    table = ReqToTokenPool(2, 64, "cpu")
    slots = pool.alloc(own + M)
    table.req_to_token[0, : own + M] = slots
    for layer in range(2):
        k, v = pool.get_kv(layer)
        for h in range(2):  # column c of head h in layer l holds 100 l + 10 h + c
            k[slots, h] = (100 * layer + 10 * h + torch.arange(float(own + M)))[:, None]
            v[slots, h] = -k[slots, h]
    spec = {"method": "h2o", "budget": BUDGET, "recent_size": RECENT, "window_size": None}
    state = CompressionState(start=own, window=0, num_layers=2)
    req = SimpleNamespace(
        req_pool_idx=0, kv_len=own + M, kv_dropped=0, cache_owned_len=own,
        kv_compression=spec, kv_state=state,
    )  # fmt: skip
    state.scores = h2o.start_scores(req, 2, 2, "cpu")
    return pool, table, slots, req


def test_eviction_keeps_recent_and_heavy_hitters_per_head_in_place():
    pool, table, slots, req = make()
    # heavy hitters: head 0 likes columns 3 and 7, head 1 columns 0 and 5 (layer 0); layer 1
    # likes 1 and 2 on both heads
    req.kv_state.scores[0, 0, [3, 7]] = torch.tensor([5.0, 4.0])
    req.kv_state.scores[0, 1, [0, 5]] = torch.tensor([3.0, 6.0])
    req.kv_state.scores[1, :, [1, 2]] = 1.0
    free = pool.available_size()
    h2o.evict(req, pool, table.req_to_token)
    want = {
        (0, 0): [3, 7, M - 2, M - 1],
        (0, 1): [0, 5, M - 2, M - 1],
        (1, 0): [1, 2, M - 2, M - 1],
        (1, 1): [1, 2, M - 2, M - 1],
    }
    for (layer, h), cols in want.items():
        k, v = pool.get_kv(layer)
        got = k[slots[:BUDGET], h, 0]
        assert got.tolist() == [100 * layer + 10 * h + c for c in cols]
        assert torch.equal(v[slots[:BUDGET], h, 0], -got)
    assert req.kv_dropped == M - BUDGET
    assert pool.available_size() == free + M - BUDGET
    assert req.kv_state.scores[0, 0, :BUDGET].tolist() == [5.0, 4.0, 0.0, 0.0]
    assert req.kv_state.scores[0, :, BUDGET:].abs().sum() == 0


def test_no_eviction_below_budget_plus_step():
    pool, table, slots, req = make()
    req.kv_len -= 1
    h2o.evict(req, pool, table.req_to_token)
    assert req.kv_dropped == 0


def test_observer_adds_each_heads_attention_to_private_columns():
    own = 3  # a shared prefix the request does not own: read, never scored
    pool, table, slots, req = make(own)
    n = own + M
    q = torch.randn(1, 4, 4)  # 4 query heads over 2 KV heads
    batch = SimpleNamespace(seq_lens_cpu=[n], req_to_token=table.req_to_token, kv_cache=pool)
    h2o.observer_for([req]).record(1, q, batch)
    keys = pool.get_kv(1)[0][slots]  # [n, 2, 4]
    for h in range(2):
        logits = q[0, 2 * h : 2 * h + 2] @ keys[:, h].T / 2.0  # head_dim 4: scale 1/2
        want = torch.softmax(logits, dim=-1).mean(0)[own:]
        torch.testing.assert_close(req.kv_state.scores[1, h, :M], want)
    assert req.kv_state.scores[0].abs().sum() == 0  # only the recorded layer
