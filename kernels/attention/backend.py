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

    def forward(self, q, k, v, layer, batch: ForwardBatch) -> torch.Tensor:
        if batch.is_decode:
            return self.forward_decode(q, k, v, layer, batch)
        return self.forward_extend(q, k, v, layer, batch)


def create_backend(name: str) -> AttentionBackend:
    if name == "torch_native":
        from kernels.attention.torch_native import TorchNativeBackend

        return TorchNativeBackend()
    raise ValueError(f"attention_backend: unknown backend {name!r}")
