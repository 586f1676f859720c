"""How a kernel reads a quantized pool's codes as K/V: value = code * scale (+ offset).

The kernels load the codes of the slots they visit and dequantize them in registers, so no
dequantized copy of the pool (or of the batch's slots) is ever made. One layout of scales fits
the formats a kernel reads this way: int8 keeps a (scale, offset) per slot and head, fp8 a scale
per head (a slot stride of 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class KVScales:
    """One layer's scales: `[slots, Hkv]` when `per_slot`, else `[Hkv]`; offsets optional."""

    k_scale: torch.Tensor
    v_scale: torch.Tensor
    k_offset: torch.Tensor | None = None
    v_offset: torch.Tensor | None = None
    per_slot: bool = True

    def __post_init__(self) -> None:
        for t in (self.k_scale, self.v_scale, self.k_offset, self.v_offset):
            if t is not None and t.stride(-1) != 1:
                raise ValueError("KVScales: the head axis of a scale tensor must be contiguous")
        if (self.k_offset is None) != (self.v_offset is None):
            raise ValueError("KVScales: K and V both have offsets or neither has")


def scale_args(scales: KVScales | None, k_buf: torch.Tensor) -> tuple[tuple, dict]:
    """(pointer and stride arguments, constexpr flags) a kernel takes for `scales`; exact
    buffers (None) pass `k_buf` where a pointer is due, never read."""
    if scales is None:
        return (k_buf, k_buf, k_buf, k_buf, 0), {"DEQUANT": False, "HAS_OFFSET": False}
    has_offset = scales.k_offset is not None
    k_off = scales.k_offset if has_offset else scales.k_scale
    v_off = scales.v_offset if has_offset else scales.v_scale
    stride = scales.k_scale.stride(0) if scales.per_slot else 0
    if scales.per_slot and scales.v_scale.stride(0) != stride:
        raise ValueError("KVScales: K and V scales must share one layout")
    args = (scales.k_scale, k_off, scales.v_scale, v_off, stride)
    return args, {"DEQUANT": True, "HAS_OFFSET": has_offset}
