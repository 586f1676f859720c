"""The contract every attention backend keeps."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from kernels.forward_batch import ForwardBatch


class AttentionBackend(ABC):
    """Computes attention for one layer, reading and writing the paged KV cache.

    One backend serves every layer of a model. Per forward, `init_forward_metadata(batch)` runs
    once and stores in `batch.attn_metadata` whatever index tensors the layers share; then each
    layer calls `forward(q, k, v, layer, batch)` with q `[num_tokens, num_heads, head_dim]` and
    k, v `[num_tokens, num_kv_heads, head_dim]`. The backend stores k and v at
    `batch.out_cache_loc` before attending, and returns `[num_tokens, num_heads, head_dim]` in
    q's dtype. It reads only the `ForwardBatch` (never the runtime's objects), and it never
    syncs the device to learn a shape: the host copies (`seq_lens_cpu`...) are there for that.
    `layer` gives `layer_id`, `num_heads`, `num_kv_heads` and `scaling`.
    """

    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, device) -> None:
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.device = torch.device(device)

    @abstractmethod
    def init_forward_metadata(self, batch: ForwardBatch) -> None:
        """Builds the per-batch index tensors the kernels share across layers."""

    @abstractmethod
    def forward_extend(self, q, k, v, layer, batch: ForwardBatch) -> torch.Tensor:
        """Prefill: each request's new tokens attend causally to its prefix and to each other."""

    @abstractmethod
    def forward_decode(self, q, k, v, layer, batch: ForwardBatch) -> torch.Tensor:
        """One new token per request, attending to its whole sequence; requests listed together
        in `batch.prefix_groups` may read their shared prefix once (cascade)."""

    def reads_pool(self, pool) -> bool:
        """Whether the kernels read `pool` as it is stored (else a CompactKVBackend wraps
        them): by default exact buffers only."""
        return pool.codes is None

    # CUDA graphs: a backend that supports them keeps its decode metadata in fixed buffers,
    # which replays refill in place. A cascade graph also runs the shared-prefix pass.
    supports_cuda_graph = False

    def init_cuda_graph_state(self, max_bs: int, max_kv_tokens: int) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not capture CUDA graphs")

    def cuda_graph_metadata(self, bs: int, cascade: bool) -> object:
        """The decode metadata a graph of `bs` rows is captured with (views of the buffers)."""
        raise NotImplementedError(f"{type(self).__name__} does not capture CUDA graphs")

    def cuda_graph_fits(self, seq_lens: list[int], prefix_groups) -> bool:
        """Whether a (padded) decode step's metadata fits the buffers; else it runs eagerly."""
        raise NotImplementedError(f"{type(self).__name__} does not capture CUDA graphs")

    def fill_cuda_graph_metadata(self, batch: ForwardBatch, cascade: bool) -> None:
        """Writes a (padded) decode batch's metadata into the buffers before a replay."""
        raise NotImplementedError(f"{type(self).__name__} does not capture CUDA graphs")

    def forward(self, q, k, v, layer, batch: ForwardBatch) -> torch.Tensor:
        if batch.is_decode:
            return self.forward_decode(q, k, v, layer, batch)
        return self.forward_extend(q, k, v, layer, batch)
