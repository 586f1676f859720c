"""The prefix caches the scheduler talks to: the radix tree over the KV pool, and no sharing.

A KV slot is free, held by the cache, or held by a running request; `Scheduler.check_memory`
adds the three up. A request's first `cache_owned_len` slots belong to the cache (a locked path);
the rest are its own until it hands them over.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from radix import RadixCache
from runtime.memory_pool import KVPool, ReqToTokenPool

_EMPTY = torch.empty(0, dtype=torch.int64)


class PrefixCache(ABC):
    """What the scheduler asks of a prefix cache over the KV pool.

    The cache owns the slots it holds; a request owns the rest of its table. A request's first
    `cache_owned_len` slots are the cache's and stay valid while the request holds the lock on
    `prefix_handle`; locked slots are never evicted. `evict` and the caching calls free slots
    into the KV pool themselves, so the three-way accounting (free, cached, held) stays whole.
    """

    def __init__(self, req_to_token_pool: ReqToTokenPool, kv_pool: KVPool) -> None:
        self.req_to_token_pool = req_to_token_pool
        self.kv_pool = kv_pool

    def _slots(self, req) -> torch.Tensor:
        return self.req_to_token_pool.req_to_token[req.req_pool_idx, : req.kv_len].cpu()

    @abstractmethod
    def match_prefix(self, token_ids: list[int]) -> tuple[torch.Tensor, object]:
        """Longest cached prefix of `token_ids`: (its KV slots, a handle to lock). Matching
        does not lock: the caller locks the handle before it relies on the slots."""

    @abstractmethod
    def inc_lock_ref(self, handle) -> None:
        """Protects the handle's path from eviction (counted: lock once per user)."""

    @abstractmethod
    def dec_lock_ref(self, handle) -> None:
        """Undoes one `inc_lock_ref`."""

    @abstractmethod
    def cache_unfinished_req(self, req) -> None:
        """Shares the request's KV so far while it keeps running: afterwards the cache owns its
        first `cache_owned_len` slots (duplicates freed) and the request locks them."""

    @abstractmethod
    def cache_finished_req(self, req) -> None:
        """The request lets go of its KV and its lock: the cache keeps what it can, the rest
        is freed."""

    @abstractmethod
    def evict(self, num_tokens: int) -> int:
        """Frees at least `num_tokens` unlocked slots if it can; returns how many were freed."""

    @abstractmethod
    def evictable_size(self) -> int:
        """Slots held and not locked: room that admission may count on."""

    @abstractmethod
    def total_size(self) -> int:
        """Every slot the cache holds, locked or not."""

    @abstractmethod
    def reset(self) -> None:
        """Frees everything; only valid while no request holds a lock."""

    @abstractmethod
    def record_hit(self, handle) -> None:
        """Counts a request that reused the prefix ending at `handle` (for inspection)."""

    def release_private(self, req) -> None:
        """A compressed request lets go: its KV past the cached prefix is not the exact prefix,
        so it is freed, never cached; the lock on the prefix is dropped."""
        row = self.req_to_token_pool.req_to_token[req.req_pool_idx]
        self.kv_pool.free(row[req.cache_owned_len : req.kv_len - req.kv_dropped].cpu())
        self.dec_lock_ref(req.prefix_handle)
        req.prefix_handle = None


class NoPrefixCache(PrefixCache):
    """Shares nothing (`--disable-radix-cache`): every request computes its whole prompt."""

    def match_prefix(self, token_ids):
        return _EMPTY, None

    def inc_lock_ref(self, handle) -> None:
        pass

    def dec_lock_ref(self, handle) -> None:
        pass

    def cache_unfinished_req(self, req) -> None:
        pass

    def cache_finished_req(self, req) -> None:
        self.kv_pool.free(self._slots(req))

    def record_hit(self, handle) -> None:
        pass

    def evict(self, num_tokens: int) -> int:
        return 0

    def evictable_size(self) -> int:
        return 0

    def total_size(self) -> int:
        return 0

    def reset(self) -> None:
        pass


class RadixPrefixCache(PrefixCache):
    """The radix tree keyed by prompt + generated tokens, so a chat's next turn reuses the last."""

    def __init__(
        self, req_to_token_pool: ReqToTokenPool, kv_pool: KVPool, page_size: int = 1
    ) -> None:
        super().__init__(req_to_token_pool, kv_pool)
        self.tree = RadixCache(page_size)

    def match_prefix(self, token_ids):
        return self.tree.match_prefix(token_ids)

    def inc_lock_ref(self, handle) -> None:
        self.tree.inc_lock_ref(handle)

    def dec_lock_ref(self, handle) -> None:
        self.tree.dec_lock_ref(handle)

    def _insert(self, req) -> int:
        """Inserts the request's KV; frees its duplicate slots; returns the inserted length."""
        slots = self._slots(req)
        tokens = req.fill_ids[: req.kv_len]
        already = self.tree.insert(tokens, slots)
        self.kv_pool.free(slots[req.cache_owned_len : already])  # the tree holds its own copies
        return len(tokens) - len(tokens) % self.tree.page_size

    def cache_unfinished_req(self, req) -> None:
        inserted = self._insert(req)
        indices, handle = self.tree.match_prefix(req.fill_ids[:inserted])
        table = self.req_to_token_pool.req_to_token
        table[req.req_pool_idx, : len(indices)] = indices.to(table.device)
        self.tree.inc_lock_ref(handle)
        self.tree.dec_lock_ref(req.prefix_handle)
        req.prefix_handle = handle
        req.cache_owned_len = len(indices)

    def cache_finished_req(self, req) -> None:
        inserted = self._insert(req)
        self.kv_pool.free(self._slots(req)[inserted:])  # a partial last page
        self.tree.dec_lock_ref(req.prefix_handle)
        req.prefix_handle = None

    def record_hit(self, handle) -> None:
        self.tree.record_hit(handle)

    def evict(self, num_tokens: int) -> int:
        freed = self.tree.evict(num_tokens)
        self.kv_pool.free(freed)
        return len(freed)

    def evictable_size(self) -> int:
        return self.tree.evictable_size()

    def total_size(self) -> int:
        return self.tree.total_size()

    def reset(self) -> None:
        """Frees every slot the tree holds; only valid while no request holds a lock."""
        assert self.tree.protected_size() == 0, "reset while requests hold cached prefixes"
        self.evict(self.tree.total_size())
        self.tree.reset()
