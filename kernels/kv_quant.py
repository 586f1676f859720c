"""Quantize and dequantize K/V for the paged pool: the formats and nothing about slots.

Scales and offsets are stored in float16 and the codes are made from the stored (rounded)
values, so dequantizing reproduces exactly what quantizing meant. Every function works on any
leading shape; the last axis is the head dimension.
"""

from __future__ import annotations

import torch

SCALE_DTYPE = torch.float16
_TINY = 1e-6  # a constant row still gets a usable scale

FP8_DTYPES = {"fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
FP8_HEADROOM = 2.0  # later tokens may exceed the prefill's range by this much before clipping


def _affine(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, levels: int):
    """Codes in [0, levels] for x given its range; returns (codes uint8, scale, offset)."""
    scale = ((hi - lo) / levels).clamp(min=_TINY).to(SCALE_DTYPE)
    offset = lo.to(SCALE_DTYPE)
    codes = ((x - offset.float()) / scale.float()).round().clamp(0, levels).to(torch.uint8)
    return codes, scale, offset


def quantize_int8(x: torch.Tensor):
    """Asymmetric, one (scale, offset) per vector along the last axis (per token and head).
    x: [..., D] -> (codes uint8 [..., D], scale [...], offset [...])."""
    x = x.float()
    codes, scale, offset = _affine(x, x.amin(-1, keepdim=True), x.amax(-1, keepdim=True), 255)
    return codes, scale.squeeze(-1), offset.squeeze(-1)


def dequantize_int8(codes, scale, offset, dtype=torch.float32) -> torch.Tensor:
    return (codes.to(dtype) * scale.to(dtype)[..., None] + offset.to(dtype)[..., None]).to(dtype)


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """[..., D] codes in 0..15 -> [..., D/2] bytes: even channel low nibble, odd channel high."""
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def unpack_int4(packed: torch.Tensor, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """[..., D/2] bytes -> [..., D] codes in `dtype`, written straight into one new tensor (a
    stack then a cast would make three copies of the largest tensor a read touches)."""
    out = torch.empty(*packed.shape, 2, dtype=dtype, device=packed.device)
    out[..., 0] = packed & 15
    out[..., 1] = packed >> 4
    return out.flatten(-2)


def quantize_int4_keys(pages: torch.Tensor):
    """KIVI keys: one (scale, offset) per channel over the tokens of a page, so an outlier
    channel costs only its own range. pages: [P, page, H, D] -> (packed [P, page, H, D/2],
    scale [P, H, D], offset [P, H, D])."""
    x = pages.float()
    codes, scale, offset = _affine(x, x.amin(1, keepdim=True), x.amax(1, keepdim=True), 15)
    return pack_int4(codes), scale.squeeze(1), offset.squeeze(1)


def dequantize_int4_keys(packed, scale, offset, dtype=torch.float32) -> torch.Tensor:
    """packed: [..., H, D/2] with scale/offset [..., H, D] broadcast to the same tokens: a
    page's scales may come once per page (`[P, 1, H, D]` against `[P, page, H, D/2]`)."""
    return unpack_int4(packed, dtype).mul_(scale.to(dtype)).add_(offset.to(dtype))


def quantize_int4_values(x: torch.Tensor, group: int):
    """KIVI values: per token, one (scale, offset) per `group` channels.
    x: [..., D] -> (packed [..., D/2], scale [..., D/group], offset [..., D/group])."""
    g = x.float().unflatten(-1, (-1, group))  # [..., D/group, group]
    codes, scale, offset = _affine(g, g.amin(-1, keepdim=True), g.amax(-1, keepdim=True), 15)
    return pack_int4(codes.flatten(-2)), scale.squeeze(-1), offset.squeeze(-1)


def dequantize_int4_values(packed, scale, offset, group: int, dtype=torch.float32):
    codes = unpack_int4(packed, dtype).unflatten(-1, (-1, group))
    return codes.mul_(scale.to(dtype)[..., None]).add_(offset.to(dtype)[..., None]).flatten(-2)


def fp8_head_scale(x: torch.Tensor, fp8_dtype: torch.dtype) -> torch.Tensor:
    """One float32 scale per head from a prefill's K or V `[T, H, D]`, with headroom."""
    amax = x.float().abs().amax(dim=(0, 2)).clamp(min=_TINY)
    return amax * FP8_HEADROOM / torch.finfo(fp8_dtype).max


def quantize_fp8(x: torch.Tensor, head_scale: torch.Tensor, fp8_dtype: torch.dtype):
    """x: [T, H, D], head_scale: [H] -> fp8 [T, H, D]; values past the range saturate."""
    fmax = torch.finfo(fp8_dtype).max
    return (x.float() / head_scale[:, None]).clamp(-fmax, fmax).to(fp8_dtype)


def dequantize_fp8(codes, head_scale, dtype=torch.float32) -> torch.Tensor:
    """codes: [..., H, D], head_scale: [H]."""
    return codes.to(dtype) * head_scale.to(dtype)[:, None]
