"""The interface every attention backend implements, and the registry that picks one."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from runtime.forward_batch import ForwardBatch


class AttentionBackend:
    """Computes attention for one layer, reading and writing the paged KV pool.

    q: [num_tokens, num_heads, head_dim]; k, v: [num_tokens, num_kv_heads, head_dim].
    The backend stores k and v at `batch.out_cache_loc` before attending.
    """

    def init_forward_metadata(self, batch: ForwardBatch) -> None:
        """Builds whatever per-batch index tensors the kernels share across layers."""

    def forward_extend(self, q, k, v, layer, batch: ForwardBatch) -> torch.Tensor:
        raise NotImplementedError

    def forward_decode(self, q, k, v, layer, batch: ForwardBatch) -> torch.Tensor:
        raise NotImplementedError

    # CUDA graphs: a backend that supports them keeps its decode metadata in fixed buffers,
    # which replays refill in place. A cascade graph also runs the shared-prefix pass.
    supports_cuda_graph = False

    def init_cuda_graph_state(self, max_bs: int, max_kv_tokens: int) -> None:
        raise NotImplementedError

    def cuda_graph_metadata(self, bs: int, cascade: bool) -> object:
        """The decode metadata a graph of `bs` rows is captured with (views of the buffers)."""
        raise NotImplementedError

    def cuda_graph_fits(self, seq_lens: list[int], prefix_groups) -> bool:
        """Whether a (padded) decode step's metadata fits the buffers; else it runs eagerly."""
        raise NotImplementedError

    def fill_cuda_graph_metadata(self, batch: ForwardBatch, cascade: bool) -> None:
        """Writes a (padded) decode batch's metadata into the buffers before a replay."""
        raise NotImplementedError

    def forward(self, q, k, v, layer, batch: ForwardBatch) -> torch.Tensor:
        if batch.is_decode:
            return self.forward_decode(q, k, v, layer, batch)
        return self.forward_extend(q, k, v, layer, batch)


def create_backend(
    name: str, *, num_heads: int, num_kv_heads: int, head_dim: int, device: torch.device
) -> AttentionBackend:
    """Imports the backend's kernels only when it is picked: FlashInfer needs CUDA to import."""
    if name == "torch_native":
        from kernels.attention.torch_native import TorchNativeBackend

        return TorchNativeBackend()
    if name == "triton":
        from kernels.attention.triton_backend import TritonBackend

        return TritonBackend(num_heads, num_kv_heads, head_dim, device)
    if name == "flashinfer":
        from kernels.attention.flashinfer_backend import FlashInferBackend

        return FlashInferBackend(num_heads, num_kv_heads, head_dim, device)
    raise ValueError(f"attention_backend: unknown backend {name!r}")
