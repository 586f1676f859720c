"""KV memory under pressure: allocation that evicts the cache first, release, retraction, and
the share of future output that admission keeps free for running requests.

Admission is optimistic about how many tokens running requests will still generate
(`new_token_ratio` of what they may); when a decode step finds no free slot, the prefix cache is
evicted first, then the newest running request is retracted to the waiting queue (its KV left in
the cache) and resumed later, and the ratio rises so admission becomes more careful.
"""

from __future__ import annotations

import logging

import torch

from runtime.memory_pool import KVPool, ReqToTokenPool
from runtime.scheduler.prefix_cache import PrefixCache
from runtime.scheduler.req import Req

logger = logging.getLogger(__name__)

INIT_NEW_TOKEN_RATIO, MIN_NEW_TOKEN_RATIO, NEW_TOKEN_RATIO_DECAY = 0.7, 0.1, 0.002
RETRACT_RATIO_STEP = 0.2


class MemoryManager:
    def __init__(
        self, cache: PrefixCache, kv_pool: KVPool, req_to_token_pool: ReqToTokenPool
    ) -> None:
        self.cache = cache
        self.kv_pool = kv_pool
        self.req_to_token_pool = req_to_token_pool
        self.new_token_ratio = INIT_NEW_TOKEN_RATIO

    def room(self) -> int:
        """Slots that could be had now: free ones and what the cache could give up."""
        return self.kv_pool.available_size() + self.cache.evictable_size()

    def reserve_output(self, req: Req) -> int:
        """The share of its remaining max_new_tokens that admission keeps free for a request."""
        return int((req.params.max_new_tokens - len(req.output_ids)) * self.new_token_ratio)

    def reserve(self, req: Req) -> int:
        """Slots a running request may still take: the rest of its prompt and its output share."""
        return max(0, req.fill_len - req.kv_len) + self.reserve_output(req)

    def alloc_kv(self, n: int) -> torch.Tensor:
        """`n` free slots (CPU int64), evicting cached prefixes when the free list is short."""
        short = n - self.kv_pool.available_size()
        if short > 0:
            self.cache.evict(short)
        slots = self.kv_pool.alloc(n)
        if slots is None:
            raise RuntimeError(f"out of KV slots: need {n}, {self.kv_pool.available_size()} free")
        return slots

    def assign(self, req: Req, indices: torch.Tensor, handle) -> None:
        """Gives an admitted request a request slot whose table starts with its cached prefix."""
        req.req_pool_idx = self.req_to_token_pool.alloc()
        table = self.req_to_token_pool.req_to_token
        table[req.req_pool_idx, : len(indices)] = indices.to(table.device)
        req.kv_len = req.cache_owned_len = len(indices)
        req.prefix_handle = handle

    def release(self, req: Req) -> None:
        """Hands the request's KV to the cache and frees its request slot."""
        if req.req_pool_idx is not None:
            if req.kv_dropped:
                self.cache.release_private(req)
            else:
                self.cache.cache_finished_req(req)
            self.req_to_token_pool.free(req.req_pool_idx)
            req.req_pool_idx = None
            req.kv_len = req.cache_owned_len = req.kv_dropped = 0
            req.kv_state = None  # a resumed request prefills and compresses again

    def decode_victims(self, running: list[Req]) -> list[Req]:
        """The newest running requests to retract so that each of the rest gets a slot this
        step (after evicting what the cache can give); released, newest first."""
        victims: list[Req] = []
        while len(victims) < len(running):
            short = len(running) - len(victims) - self.kv_pool.available_size()
            if short <= 0 or self.cache.evict(short) >= short:
                break
            req = running[-1 - len(victims)]
            self.release(req)
            victims.append(req)
            self.new_token_ratio = min(1.0, self.new_token_ratio + RETRACT_RATIO_STEP)
            logger.info(
                "KV pool full: retracted request %s after %d tokens; it resumes later",
                req.rid,
                len(req.output_ids),
            )
        return victims

    def decay_ratio(self) -> None:
        """Each decode step without trouble makes admission a little bolder."""
        self.new_token_ratio = max(
            MIN_NEW_TOKEN_RATIO, self.new_token_ratio - NEW_TOKEN_RATIO_DECAY
        )
