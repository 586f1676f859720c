"""The compaction copy itself: per layer, kept slot j holds for KV head h the K/V of the position
the method chose for (h, j); layers that keep fewer leave their last slots unread (holes)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from runtime.kv_compression import compactor
from runtime.kv_compression.capture import CompressionState
from runtime.memory_pool import KVPool, ReqToTokenPool
from runtime.scheduler.memory import MemoryManager
from runtime.scheduler.prefix_cache import NoPrefixCache
from runtime.server_args import SchedulerArgs

CHOSEN = [
    torch.tensor([[1, 3, 5, 7], [0, 2, 4, 6]]),  # layer 0 keeps 4 per head
    torch.tensor([[8, 9], [2, 9]]),  # layer 1 keeps 2
]


def test_compaction_copies_each_heads_positions_and_frees_the_rest(monkeypatch):
    pool = KVPool(64, 2, 2, 4, torch.float32, "cpu")
    table = ReqToTokenPool(2, 64, "cpu")
    cache = NoPrefixCache(table, pool)
    memory = MemoryManager(cache, pool, table)
    slots = pool.alloc(10)
    table.req_to_token[0, :10] = slots
    for layer in range(2):
        k, v = pool.get_kv(layer)
        for h in range(2):
            k[slots, h] = (100 * layer + 10 * h + torch.arange(10.0))[:, None]
            v[slots, h] = -k[slots, h]
    spec = {"method": "pyramidkv", "budget": 3, "window_size": 1, "kernel_size": 1, "beta": 2}
    req = SimpleNamespace(
        rid="r", req_pool_idx=0, kv_len=10, cache_owned_len=0, prefix_handle=None,
        fill_ids=list(range(10)), kv_compression=spec, kv_dropped=0, kv_tokens_kept=None,
        kv_state=CompressionState(0, 0, 2),
    )  # fmt: skip
    monkeypatch.setattr(compactor, "select_positions", lambda method, *, layer, **kw: CHOSEN[layer])
    args = SchedulerArgs(max_total_tokens=64)
    compactor.KVCompactor(args, memory, cache, table).compress(req)
    new = table.req_to_token[0, :4]
    assert not set(new.tolist()) & set(slots.tolist())
    for layer, idx in enumerate(CHOSEN):
        k, v = pool.get_kv(layer)
        for h in range(2):
            want = 100 * layer + 10 * h + idx[h].float()
            assert torch.equal(k[new[: idx.shape[1]], h, 0], want)
            assert torch.equal(v[new[: idx.shape[1]], h, 0], -want)
    assert req.kv_dropped == 6 and req.kv_state.holes == ([4, 2], 4)
    assert req.kv_tokens_kept == 3
    assert pool.available_size() == 64 - 4  # the ten exact slots were private: freed
