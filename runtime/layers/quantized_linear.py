"""Quantized linear layers for the CPU: our block kernel where it is built, else torch's int4 /
int8 weight-only kernels.

With AVX512-BF16 and VNNI (bfloat16), or AVX2 (float32), `BlockLinear` serves every layer
(below). Elsewhere: a decode step reads every weight once per token, so at a few rows the int4
kernel, which reads a quarter of bfloat16's bytes, wins. From some batch size on, the step is
bound by arithmetic and the dense GEMM wins again; there the layer uses the model's dense weight
in the activation dtype (`packed_linear.dense_linear`: in bfloat16 oneDNN's reordered form,
which replaces the loaded weight, so not a second copy). The row count at which it switches (`dense_from`) was measured on
this machine by benchmarks/bench_decode_step.py; with no dense weight every batch stays on the
quantized kernel (deterministic inference: one kernel whatever the batch, though torch's kernel
still blocks rows by the batch's row count)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kernels.cpu.block_pack import pack_blocks
from runtime.model_loader.gguf_quant import GroupQuantized, quantize_int8_per_channel


class _WeightOnlyLinear(nn.Module):
    """What both layers share: the dense switch, bias, shapes; `_quantized_mm` is the kernel."""

    def __init__(
        self,
        out_features: int,
        in_features: int,
        bias: torch.Tensor | None,
        dense: nn.Module | None,
        dense_from: int,
    ) -> None:
        super().__init__()
        self.out_features, self.in_features = out_features, in_features
        self.bias = bias
        self.dense, self.dense_from = dense, dense_from

    def _quantized_mm(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _held(self) -> list[torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, self.in_features)
        if x.shape[0] == 0:  # a prefill that keeps no logits
            return x.new_empty(*shape[:-1], self.out_features)
        if self.dense is not None and x.shape[0] >= self.dense_from:
            return self.dense(x).reshape(*shape[:-1], self.out_features)
        out = self._quantized_mm(x.contiguous())
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*shape[:-1], self.out_features)

    def weight_bytes(self) -> int:
        """Bytes of the quantized form (the dense weight, when kept, is the model's own)."""
        return sum(t.numel() * t.element_size() for t in self._held())


class Int4Linear(_WeightOnlyLinear):
    """Asymmetric 4-bit groups, read by torch's int4 CPU kernel as w = (q - 8) * scale + zero."""

    def __init__(
        self,
        weight: GroupQuantized,
        bias: torch.Tensor | None,
        dtype: torch.dtype,
        dense: nn.Module | None = None,
        dense_from: int = 1,
    ) -> None:
        assert weight.bits == 4
        super().__init__(*weight.codes.shape, bias, dense, dense_from)
        self.group = weight.group
        codes = weight.codes.to(torch.int32).contiguous()
        self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
        # [in // group, out, 2]: the kernel's scale-and-zero layout, in the activation dtype
        self.scales_zeros = (
            torch.stack([weight.scales.t(), (weight.mins + 8 * weight.scales).t()], dim=-1)
            .to(dtype)
            .contiguous()
        )

    def _quantized_mm(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(
            x, self.packed, self.group, self.scales_zeros
        )

    def _held(self) -> list[torch.Tensor]:
        return [self.packed, self.scales_zeros]


class Int8Linear(_WeightOnlyLinear):
    """Symmetric int8 with one scale per output row, as torch's int8 CPU kernel reads."""

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        dtype: torch.dtype,
        dense: nn.Module | None = None,
        dense_from: int = 1,
    ) -> None:
        super().__init__(*weight.shape, bias, dense, dense_from)
        self.codes, scales = quantize_int8_per_channel(weight)
        self.scales = scales.to(dtype)

    def _quantized_mm(self, x: torch.Tensor) -> torch.Tensor:
        return torch._weight_int8pack_mm(x, self.codes, self.scales)

    def _held(self) -> list[torch.Tensor]:
        return [self.codes, self.scales]


# float32 batches of this many rows or more dequantize the blocks for the call and run the dense
# GEMM: the two-part int8 kernel lost to it from about 64 rows (benchmarks/bench_block_gemm.py)
DEQUANTIZE_FROM = 64


class BlockLinear(_WeightOnlyLinear):
    """4- or 8-bit blocks of 32 on our kernels, with no dense weight kept: bfloat16 in and out
    on AVX512-VNNI (kernels/cpu/block_gemm.cpp), which beat oneDNN's bfloat16 GEMM at every row
    count measured; float32 on AVX2 (block_gemm_avx2.cpp), which beat float32's GEMM 4-8x at one
    row and up to about 64, where larger batches (`dequantize_from`; None: never) take the dense
    GEMM over a weight dequantized per call. On a kernel, each row is computed alone, so its
    result does not depend on the batch."""

    def __init__(
        self, weight: GroupQuantized, bias: torch.Tensor | None, dequantize_from: int | None = None
    ) -> None:
        super().__init__(*weight.codes.shape, bias, None, 0)
        self.bits = weight.bits
        self.packed = pack_blocks(*weight.unsigned(), weight.bits)
        self.dequantize_from = dequantize_from

    def _quantized_mm(self, x: torch.Tensor) -> torch.Tensor:
        ops = torch.ops.radixserve_cpu
        if x.dtype == torch.bfloat16:
            return ops.block_gemm(x, self.packed, self.out_features, self.bits)
        if self.dequantize_from is not None and x.shape[0] >= self.dequantize_from:
            # bound by arithmetic: float32's GEMM on the weight dequantized for this call
            w = ops.block_dequantize_f32(
                self.packed, self.out_features, self.in_features, self.bits
            )
            return F.linear(x, w)
        # float32 activations in two int8 parts (about 15 bits, not bfloat16's 8): one part
        # moved the default model's greedy answers off float32's
        return ops.block_gemm_f32(x, self.packed, self.out_features, self.bits, True)

    def _held(self) -> list[torch.Tensor]:
        return [self.packed]
