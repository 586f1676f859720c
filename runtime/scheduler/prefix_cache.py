"""The prefix-cache interface the scheduler talks to, and the variant that shares nothing.

A KV slot is free, held by the cache, or held by a running request; the scheduler's accounting
check adds the three up. The radix tree implements the same verbs with real sharing.
"""

from __future__ import annotations

import torch

from runtime.memory_pool import KVPool, ReqToTokenPool


class PrefixCache:
    def match_prefix(self, token_ids: list[int]) -> tuple[torch.Tensor, object]:
        """Longest cached prefix of `token_ids`: (its KV slots, a handle to lock)."""
        raise NotImplementedError

    def inc_lock_ref(self, handle) -> None:
        raise NotImplementedError

    def dec_lock_ref(self, handle) -> None:
        raise NotImplementedError

    def cache_finished_req(self, req) -> None:
        """The request is done: keep what is worth keeping, free the rest of its KV."""
        raise NotImplementedError

    def evict(self, num_tokens: int) -> int:
        """Frees up to `num_tokens` unlocked slots; returns how many were freed."""
        raise NotImplementedError

    def evictable_size(self) -> int:
        raise NotImplementedError

    def protected_size(self) -> int:
        raise NotImplementedError

    def total_size(self) -> int:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError


class NoPrefixCache(PrefixCache):
    """Shares nothing: every request computes its whole prompt and frees its KV when done."""

    def __init__(self, req_to_token_pool: ReqToTokenPool, kv_pool: KVPool) -> None:
        self.req_to_token_pool = req_to_token_pool
        self.kv_pool = kv_pool

    def match_prefix(self, token_ids: list[int]) -> tuple[torch.Tensor, object]:
        return torch.empty(0, dtype=torch.int64), None

    def inc_lock_ref(self, handle) -> None:
        pass

    def dec_lock_ref(self, handle) -> None:
        pass

    def cache_finished_req(self, req) -> None:
        slots = self.req_to_token_pool.req_to_token[req.req_pool_idx, : req.kv_len]
        self.kv_pool.free(slots)

    def evict(self, num_tokens: int) -> int:
        return 0

    def evictable_size(self) -> int:
        return 0

    def protected_size(self) -> int:
        return 0

    def total_size(self) -> int:
        return 0

    def reset(self) -> None:
        pass
