"""Builds a forward's tensors from the scheduler's host lists, and records its KV slots.

Per step every integer the forward needs (token ids, positions, request slots, lengths, the new
tokens' KV slots) goes into one host tensor and reaches the device in one copy: on CUDA from a
pinned buffer without blocking, on the CPU as views of that tensor. The request-to-token table
learns where the new tokens' KV lives with one indexed write, on the device.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from kernels.forward_batch import ForwardBatch, ForwardMode
from runtime.memory_pool import KVPool, ReqToTokenPool


class BatchBuilder:
    def __init__(
        self, req_to_token_pool: ReqToTokenPool, kv_pool: KVPool, device: torch.device
    ) -> None:
        self.req_to_token = req_to_token_pool.req_to_token
        self.kv_pool = kv_pool
        self.device = device
        self._pinned = torch.empty(0, dtype=torch.int64)

    def _upload(self, lists: list[list[int]], slots: torch.Tensor) -> list[torch.Tensor]:
        """The lists, then `slots`, as int64 tensors on the device, from one host buffer."""
        sizes = [len(x) for x in lists] + [slots.numel()]
        n, head = sum(sizes), sum(sizes[:-1])
        on_cpu = self.device.type == "cpu"
        if on_cpu:
            host = torch.empty(n, dtype=torch.int64)
        else:
            # Reused next step: by then this copy is done, since every step waits for its
            # sampled tokens on the host.
            if self._pinned.numel() < n:
                self._pinned = torch.empty(2 * n, dtype=torch.int64).pin_memory()
            host = self._pinned[:n]
        flat = itertools.chain.from_iterable(lists)
        host.numpy()[:head] = np.fromiter(flat, dtype=np.int64, count=head)
        host[head:] = slots
        out = host if on_cpu else host.to(self.device, non_blocking=True)
        return list(out.split(sizes))

    def build(
        self,
        mode: ForwardMode,
        input_ids: list[int],
        positions: list[int],
        out_cache_loc: torch.Tensor,
        req_pool_indices: list[int],
        seq_lens: list[int],
        prefix_lens: list[int] | None = None,
        extend_lens: list[int] | None = None,
        columns: list[int] | None = None,
    ) -> ForwardBatch:
        """A batch whose new tokens (one per request in decode, `extend_lens` of them in
        extend) sit at `positions` and write their KV to `out_cache_loc` (CPU int64).

        A token's KV slot goes into its request's table at its position, or at `columns`
        (decode only) for compressed requests, whose tables dropped some prompt positions."""
        lists = [input_ids, positions, req_pool_indices, seq_lens, extend_lens or []]
        ids_t, pos_t, pool_t, seq_t, ext_t, *cols, loc_t = self._upload(
            lists + ([columns] if columns is not None else []), out_cache_loc
        )
        rows = pool_t
        if mode is ForwardMode.EXTEND:
            rows = pool_t.repeat_interleave(ext_t, output_size=len(input_ids))
        self.req_to_token[rows, cols[0] if cols else pos_t] = loc_t
        batch = ForwardBatch(
            mode=mode,
            input_ids=ids_t,
            positions=pos_t,
            out_cache_loc=loc_t,
            req_pool_indices=pool_t,
            seq_lens=seq_t,
            req_to_token=self.req_to_token,
            kv_cache=self.kv_pool,
            seq_lens_cpu=seq_lens,
            prefix_lens_cpu=prefix_lens or [],
            extend_lens_cpu=extend_lens or [],
        )
        self.kv_pool.plan(batch)
        return batch
