"""The attention layer: holds the layer's shape and hands the work to the batch's backend."""

from __future__ import annotations

import torch
from torch import nn


class PagedAttention(nn.Module):
    def __init__(self, layer_id: int, num_heads: int, num_kv_heads: int, head_dim: int) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.scaling = head_dim**-0.5
        self.backend = None  # set by the model runner

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch) -> torch.Tensor:
        """q: [T, H, D], k/v: [T, Hkv, D] -> [T, H * D]."""
        out = _eager_attention(self.backend, q, k, v, self, batch)
        if batch.query_capture is not None:  # after the backend stored this step's keys
            batch.query_capture.record(self.layer_id, q, batch)
        return out.reshape(q.shape[0], self.num_heads * self.head_dim)


@torch._dynamo.disable
def _eager_attention(backend, q, k, v, layer, batch) -> torch.Tensor:
    """Outside torch.compile's graphs: backends build per-step metadata in Python."""
    return backend.forward(q, k, v, layer, batch)
