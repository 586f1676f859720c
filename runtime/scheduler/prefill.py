"""Admission: which requests prefill together in the next extend batch.

One batch is held to a token budget (`max_prefill_tokens`), to `chunked_prefill_size` tokens per
request, to `max_running_requests`, and to the KV room left after what running requests may
still need. A request whose prompt does not fit its chunk is cut there and finishes in later
steps, first in line; chunked and fresh requests are added down the same path.
"""

from __future__ import annotations

import torch

from kernels.forward_batch import ForwardMode
from runtime.batch_builder import BatchBuilder
from runtime.kv_compression.compactor import compaction_slots
from runtime.memory_pool import ReqToTokenPool
from runtime.scheduler.memory import MemoryManager
from runtime.scheduler.output import input_logprob_positions
from runtime.scheduler.prefix_cache import PrefixCache
from runtime.scheduler.req import Req
from runtime.server_args import SchedulerArgs

# A waiting request that shares this many more tokens with one admitted in the same batch than
# the cache holds waits a step and reuses that one's KV instead of computing the prefix twice.
IN_BATCH_SHARE_MIN = 32
NO_CHUNKING = 1 << 60


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n, limit = 0, min(len(a), len(b))
    while n < limit and a[n] == b[n]:
        n += 1
    return n


class PrefillAdder:
    def __init__(
        self,
        args: SchedulerArgs,
        memory: MemoryManager,
        cache: PrefixCache,
        req_to_token_pool: ReqToTokenPool,
        running: list[Req],
    ) -> None:
        self.memory = memory
        self.cache = cache
        self.req_to_token_pool = req_to_token_pool
        self.budget = args.max_prefill_tokens
        self.chunk = args.chunked_prefill_size if args.chunked_prefill_size > 0 else NO_CHUNKING
        self.max_running = args.max_running_requests
        self.running = running
        self.num_running = len(running)
        self.spent = 0  # slots this batch has claimed so far (its tokens and output shares)
        self.batch: list[Req] = []
        self.admitted: list[Req] = []  # taken from the waiting queue
        self.chunked: Req | None = None  # cut at its chunk; continues next step

    def _next_extend(self, req: Req) -> int:
        return min(req.fill_len - req.kv_len, self.budget, self.chunk)

    def _add(self, req: Req) -> None:
        req.extend_len = self._next_extend(req)
        self.budget -= req.extend_len
        self.spent += req.extend_len
        self.batch.append(req)
        if req.kv_len + req.extend_len < req.fill_len:
            self.chunked = req

    def add_chunked(self, req: Req) -> bool:
        """The next chunk of a request already admitted; False when decoding requests have
        outgrown the room (decode, and retract, first)."""
        ext, copies = self._next_extend(req), 0
        if req.kv_state is not None and req.kv_len + ext >= req.fill_len:  # compacts after
            region = req.fill_len - req.kv_state.start
            copies = compaction_slots(req.kv_compression, region, self.memory.kv_pool.num_layers)
        if ext + copies > self.memory.room():
            return False
        self.num_running += 1
        self.spent += self.memory.reserve_output(req)
        self._add(req)
        return True

    def _can_admit(self) -> bool:
        return (
            self.chunked is None
            and self.budget > 0
            and self.num_running < self.max_running
            and self.req_to_token_pool.available_size() > 0
        )

    def add_waiting(self, ordered: list[Req]) -> None:
        """Admits requests in the policy's order until a budget or the room runs out."""
        if not self._can_admit():
            return
        # What running requests may still take is counted only when someone could join them.
        room = self.memory.room() - sum(self.memory.reserve(r) for r in self.running) - self.spent
        for req in ordered:
            if not self._can_admit():
                return
            indices, handle = self.cache.match_prefix(req.match_ids())
            if any(
                common_prefix_len(req.fill_ids, b.fill_ids) - len(indices) >= IN_BATCH_SHARE_MIN
                for b in self.batch
            ):
                continue  # computed by a request in this batch; reuse it next step
            before = self.cache.evictable_size()
            self.cache.inc_lock_ref(handle)
            locked = before - self.cache.evictable_size()  # no longer evictable room
            cost = req.fill_len - len(indices) + self.memory.reserve_output(req)
            cost += compaction_slots(  # its compacted copies, once its prompt is in
                req.kv_compression, req.fill_len - len(indices), self.memory.kv_pool.num_layers
            )
            if cost > room - locked:
                self.cache.dec_lock_ref(handle)
                return
            room -= locked + cost
            self.memory.assign(req, indices, handle)
            self.admitted.append(req)
            self.num_running += 1
            self._add(req)


def extend_batch(batch: list[Req], memory: MemoryManager, builder: BatchBuilder) -> tuple:
    """(the forward batch, the token rows whose logits are needed, per request a plan:
    (its first input-logprob row, its input-logprob positions, its sampling row or None))."""
    ids, positions, locs, prefix_lens, ext_lens, seq_lens = [], [], [], [], [], []
    logit_rows: list[int] = []
    plans = []
    row = 0
    for req in batch:
        start, ext, fill = req.kv_len, req.extend_len, req.fill_ids
        locs.append(memory.alloc_kv(ext))
        ids.extend(fill[start : start + ext])
        positions.extend(range(start, start + ext))
        prefix_lens.append(start)
        ext_lens.append(ext)
        seq_lens.append(start + ext)
        lp_pos = input_logprob_positions(req)
        lp_first = len(logit_rows)
        logit_rows.extend(row + p - start for p in lp_pos)
        sample_row = None
        if start + ext == len(fill) and req.params.max_new_tokens > len(req.output_ids):
            sample_row = len(logit_rows)
            logit_rows.append(row + ext - 1)
        plans.append((lp_first, lp_pos, sample_row))
        row += ext
    fb = builder.build(
        ForwardMode.EXTEND,
        ids,
        positions,
        torch.cat(locs),
        [r.req_pool_idx for r in batch],
        seq_lens,
        prefix_lens,
        ext_lens,
    )
    return fb, logit_rows, plans
