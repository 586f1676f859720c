"""Linear layers whose weights are reordered ahead of time for the CPU's GEMM libraries.

A decode step multiplies a few rows by every weight matrix once, and the plain GEMM spends much
of that time re-blocking the weight. In bfloat16, oneDNN takes the weight reordered once into its
blocked layout; that one copy replaces the weight (no extra memory) and serves every row count,
prefill included: 1.3-2x faster than the plain GEMM from 1 to 32 rows here. In float32, MKL's
packed sgemm ran those shapes 1.3-1.5x faster, but a pack serves exactly one row count and is a
second copy, so a batch is padded up to the nearest packed size and larger batches, and prefill,
use the plain GEMM.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

PACK_SIZES = (8, 32)


def onednn_bf16_available(device: torch.device, dtype: torch.dtype) -> bool:
    return (
        device.type == "cpu"
        and dtype == torch.bfloat16
        and torch.backends.mkldnn.is_available()
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def packed_gemm_available(device: torch.device, dtype: torch.dtype) -> bool:
    if onednn_bf16_available(device, dtype):
        return True
    return (
        device.type == "cpu"
        and dtype == torch.float32
        and torch.backends.mkl.is_available()
        and hasattr(torch.ops.mkl, "_mkl_linear")
    )


class OneDNNLinear(nn.Module):
    """A bfloat16 linear layer on oneDNN's reordered weight (the only copy this layer keeps)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight)
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


class DenseLinear(nn.Module):
    """The plain GEMM, for dtypes and devices without a reordered form."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight, self.bias = weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


def dense_linear(
    weight: torch.Tensor, bias: torch.Tensor | None, reorder: bool = True
) -> nn.Module:
    """The fastest dense form of `weight` that holds no second copy of it (`reorder=False`: the
    plain GEMM whatever the dtype)."""
    if reorder and onednn_bf16_available(weight.device, weight.dtype):
        return OneDNNLinear(weight, bias)
    return DenseLinear(weight, bias)


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


def packed_linear(weight: torch.Tensor, bias: torch.Tensor | None, sizes: tuple[int, ...]):
    """The reordered form of one layer: oneDNN's in bfloat16, MKL's packs in float32."""
    if onednn_bf16_available(weight.device, weight.dtype):
        return OneDNNLinear(weight, bias)
    return PackedLinear(weight, bias, sizes)


def pack_linears(model: nn.Module, sizes: tuple[int, ...]) -> int:
    """Swaps every nn.Linear of the model for its reordered form; returns the extra bytes held
    (MKL's packs; oneDNN's reordered weight replaces the original)."""
    extra = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                bias = None if child.bias is None else child.bias.data
                packed = packed_linear(child.weight.data, bias, sizes)
                setattr(module, name, packed)
                if isinstance(packed, PackedLinear):
                    extra += packed.packed_bytes()
    return extra
