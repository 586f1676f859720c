"""Decode steps replayed from CUDA graphs: one graph per captured batch size, so a step costs
one launch instead of a few hundred small ones.

A batch is padded up to the next captured size. Padding rows read one key and write the pool's
scratch slot 0, so they disturb nothing. Each size has two graphs: plain decode, and cascade
decode for batches with shared-prefix groups (the backend lays the shared pass out in a shape
that depends on the batch size alone).
"""

from __future__ import annotations

import bisect
import logging
import time

import torch

from kernels.forward_batch import ForwardBatch, ForwardMode

logger = logging.getLogger(__name__)


def capture_sizes(max_bs: int) -> list[int]:
    sizes = [1, 2, 4] + list(range(8, 33, 8)) + list(range(48, 513, 16))
    return [s for s in sizes if s < max_bs] + [max_bs]


class _CapturedGraph:
    """A decode forward captured as a CUDA graph; `replay` rewrites `output` in place."""

    def __init__(self, fn, pool) -> None:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm up: Triton compiles, allocators settle
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.output = fn()

    def replay(self) -> None:
        self.graph.replay()


class CudaGraphRunner:
    """`graph_type(fn, pool)` captures `fn` and has `replay()` and `output`; tests on the CPU
    pass one that re-runs `fn`, which exercises all the buffer handling."""

    def __init__(self, runner, graph_type=_CapturedGraph) -> None:
        self.runner = runner
        self.graph_type = graph_type
        self.backend = runner.backend
        self.max_bs = min(runner.args.cuda_graph_max_bs, runner.args.max_running_requests)
        self.sizes = capture_sizes(self.max_bs)
        dev = runner.device
        n = self.max_bs
        self.input_ids = torch.zeros(n, dtype=torch.int64, device=dev)
        self.positions = torch.zeros(n, dtype=torch.int64, device=dev)
        self.out_cache_loc = torch.zeros(n, dtype=torch.int64, device=dev)
        self.req_pool_indices = torch.zeros(n, dtype=torch.int64, device=dev)
        self.seq_lens = torch.ones(n, dtype=torch.int64, device=dev)
        self.backend.init_cuda_graph_state(n, runner.max_total_tokens + n)
        self.graphs: dict[tuple[int, bool], _CapturedGraph] = {}
        t0 = time.perf_counter()
        self.pool = torch.cuda.graph_pool_handle() if graph_type is _CapturedGraph else None
        for bs in reversed(self.sizes):  # largest first: smaller graphs reuse its memory
            for cascade in (True, False):
                self._capture(bs, cascade)
        logger.info(
            "captured decode CUDA graphs for batch sizes %s in %.1fs",
            self.sizes,
            time.perf_counter() - t0,
        )

    def _batch(self, bs: int, seq_lens_cpu: list[int]) -> ForwardBatch:
        return ForwardBatch(
            mode=ForwardMode.DECODE,
            input_ids=self.input_ids[:bs],
            positions=self.positions[:bs],
            out_cache_loc=self.out_cache_loc[:bs],
            req_pool_indices=self.req_pool_indices[:bs],
            seq_lens=self.seq_lens[:bs],
            req_to_token=self.runner.req_to_token_pool.req_to_token,
            kv_cache=self.runner.kv_pool,
            seq_lens_cpu=seq_lens_cpu,
        )

    @torch.inference_mode()
    def _capture(self, bs: int, cascade: bool) -> None:
        model = self.runner.model
        batch = self._batch(bs, [1] * bs)
        self.backend.fill_cuda_graph_metadata(batch, cascade)
        batch.attn_metadata = self.backend.cuda_graph_metadata(bs, cascade)

        def run() -> torch.Tensor:
            return model.compute_logits(model(batch))

        self.graphs[bs, cascade] = self.graph_type(run, self.pool)

    def _padded_size(self, raw: int) -> int:
        return self.sizes[bisect.bisect_left(self.sizes, raw)]

    def can_run(self, batch: ForwardBatch) -> bool:
        raw = len(batch.seq_lens_cpu)
        if not batch.is_decode or raw > self.max_bs or batch.kv_holes or batch.query_capture:
            return False
        padding = [1] * (self._padded_size(raw) - raw)
        return self.backend.cuda_graph_fits(batch.seq_lens_cpu + padding, batch.prefix_groups)

    @torch.inference_mode()
    def replay(self, batch: ForwardBatch) -> torch.Tensor:
        """Logits `[batch, vocab]` of a decode batch, computed by the graph of its padded size."""
        raw = len(batch.seq_lens_cpu)
        bs = self._padded_size(raw)
        self.input_ids[:raw].copy_(batch.input_ids)
        self.positions[:raw].copy_(batch.positions)
        self.out_cache_loc[:raw].copy_(batch.out_cache_loc)
        self.req_pool_indices[:raw].copy_(batch.req_pool_indices)
        self.seq_lens[:raw].copy_(batch.seq_lens)
        if bs > raw:  # padding rows: one key, written to the scratch slot
            self.input_ids[raw:bs].zero_()
            self.positions[raw:bs].zero_()
            self.out_cache_loc[raw:bs].zero_()
            self.req_pool_indices[raw:bs].zero_()
            self.seq_lens[raw:bs].fill_(1)
        padded = self._batch(bs, batch.seq_lens_cpu + [1] * (bs - raw))
        padded.prefix_groups = batch.prefix_groups
        cascade = bool(batch.prefix_groups)
        self.backend.fill_cuda_graph_metadata(padded, cascade)
        graph = self.graphs[bs, cascade]
        graph.replay()
        return graph.output[:raw]
