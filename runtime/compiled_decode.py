"""Decode steps through torch.compile on the CPU.

At a few rows a decode step is hundreds of small operators (norms, rotary, residuals, the
MLP's gate), each a dispatch that costs more than its arithmetic. Inductor fuses them into
generated C++ loops around the matmuls. Paged attention stays eager: its metadata is built
in Python per step, so the attention call is a graph break (see runtime/layers/attention.py).
Shapes are dynamic in the batch size, so one compiled graph serves every size from 2 up
(size 1 is specialized by the compiler and gets its own); batches above `max_bs` and every
prefill run eagerly.
"""

from __future__ import annotations

import logging
import time

import torch

from kernels.forward_batch import ForwardBatch, ForwardMode

logger = logging.getLogger(__name__)


class CompiledDecode:
    def __init__(self, model: torch.nn.Module, max_bs: int) -> None:
        self.model = model
        self.max_bs = max_bs
        self.fn = torch.compile(self._step, dynamic=True)

    def _step(self, batch: ForwardBatch) -> torch.Tensor:
        return self.model.compute_logits(self.model(batch))

    def can_run(self, batch: ForwardBatch) -> bool:
        # H2O's per-step scoring runs Python after each layer: eager
        return (
            batch.is_decode
            and len(batch.seq_lens_cpu) <= self.max_bs
            and batch.query_capture is None
        )

    def __call__(self, batch: ForwardBatch) -> torch.Tensor:
        return self.fn(batch)

    def warm_up(self, backend, req_to_token: torch.Tensor, kv_cache) -> None:
        """Compiles both graphs before serving: rows that read and write the scratch slot 0."""
        t0 = time.perf_counter()
        for bs in sorted({1, min(2, self.max_bs)}):
            zeros = torch.zeros(bs, dtype=torch.int64)
            batch = ForwardBatch(
                mode=ForwardMode.DECODE,
                input_ids=zeros,
                positions=zeros,
                out_cache_loc=zeros,
                req_pool_indices=zeros,
                seq_lens=torch.ones(bs, dtype=torch.int64),
                req_to_token=req_to_token,
                kv_cache=kv_cache,
                seq_lens_cpu=[1] * bs,
            )
            backend.init_forward_metadata(batch)
            with torch.inference_mode():
                self(batch)
        logger.info("decode step compiled in %.1fs", time.perf_counter() - t0)
