"""The decode batch: one new token for every running request.

Requests that hold one radix prefix of at least `CASCADE_MIN_PREFIX` tokens are grouped, so the
attention backend reads that prefix once for the whole group (cascade attention).
"""

from __future__ import annotations

from kernels.forward_batch import ForwardBatch, ForwardMode
from radix import shared_prefix_groups
from runtime.batch_builder import BatchBuilder
from runtime.scheduler.memory import MemoryManager
from runtime.scheduler.req import Req

CASCADE_MIN_PREFIX = 16


def decode_batch(
    reqs: list[Req], memory: MemoryManager, builder: BatchBuilder, batch_invariant: bool = False
) -> ForwardBatch:
    """`batch_invariant`: every request attends to its own KV alone, neither through a shared
    prefix's partial result (merging it changes the order of the sums) nor padded to the batch's
    longest row, so a row's numbers do not depend on what it is batched with."""
    slots = memory.alloc_kv(len(reqs))
    kv_lens = [r.kv_len for r in reqs]  # the new tokens' positions
    # Compressed requests' tables dropped positions: a token's column is not its position.
    cols = [r.kv_len - r.kv_dropped for r in reqs] if any(r.kv_dropped for r in reqs) else None
    fb = builder.build(
        ForwardMode.DECODE,
        [r.output_ids[-1] for r in reqs],
        kv_lens,
        slots,
        [r.req_pool_idx for r in reqs],
        [n + 1 for n in cols or kv_lens],
        columns=cols,
    )
    if cols is not None:
        fb.kv_holes = [
            (i, *r.kv_state.holes) for i, r in enumerate(reqs) if r.kv_dropped and r.kv_state.holes
        ]
    fb.batch_invariant = batch_invariant
    if not batch_invariant:
        fb.prefix_groups = cascade_groups(reqs, list(range(len(reqs))))
    return fb


def cascade_groups(reqs: list[Req], rows: list[int]) -> list[tuple[list[int], int]]:
    """The prefix groups among `reqs` (decoding at batch rows `rows`), in batch rows."""
    if len(reqs) < 2:
        return []
    groups = shared_prefix_groups([r.prefix_handle for r in reqs], CASCADE_MIN_PREFIX)
    return [([rows[i] for i in members], length) for members, length in groups]
