"""Reads a GGUF file's quantized blocks as integer codes and per-group scales, without rounding.

llama.cpp's block formats, per 32 values:
- Q4_1: fp16 scale d, fp16 minimum m, 4-bit codes q: w = d*q + m
- Q4_0: fp16 scale d, 4-bit codes q: w = d*(q - 8), so m = -8d
- Q8_0: fp16 scale d, int8 codes q: w = d*q
Every 4-bit format is returned as codes in [0, 15] with w = q*scale + min per group, the file's
own numbers; Q8_0 as int8 codes with one scale per group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

GROUP = 32


@dataclass
class GroupQuantized:
    """A weight `[out, in]` as integer codes with one (scale, zero) per `group` inputs."""

    bits: int  # 4: codes in [0, 15], w = q * scale + min; 8: int8 codes, w = q * scale
    codes: torch.Tensor  # [out, in] uint8 (4 bits) or int8
    scales: torch.Tensor  # [out, in // group] float32
    mins: torch.Tensor | None  # [out, in // group] float32, 4 bits only
    group: int = GROUP

    def dequantize(self) -> torch.Tensor:
        s = self.scales.repeat_interleave(self.group, dim=1)
        if self.bits == 8:
            return self.codes.float() * s
        return self.codes.float() * s + self.mins.repeat_interleave(self.group, dim=1)

    def unsigned(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(codes as uint8, scales, mins) with w = code*scale + min in both widths: int8 codes
        shift by 128 (min = -128*scale, exact in any binary float)."""
        if self.bits == 4:
            return self.codes, self.scales, self.mins
        return (self.codes.to(torch.int16) + 128).to(torch.uint8), self.scales, -128 * self.scales

    def take_rows(self, index: np.ndarray) -> GroupQuantized:
        """The same weight with its output rows reordered (the rotary unpermute of Q and K)."""
        idx = torch.from_numpy(index)
        mins = None if self.mins is None else self.mins[idx]
        return GroupQuantized(self.bits, self.codes[idx], self.scales[idx], mins, self.group)


def _blocks(data: np.ndarray, rows: int, block_bytes: int) -> np.ndarray:
    return np.ascontiguousarray(data).view(np.uint8).reshape(rows, -1, block_bytes)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """16 bytes per block -> 32 codes: low nibbles are values 0-15, high nibbles 16-31."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def read_group_quantized(kind: str, data: np.ndarray, shape: tuple[int, int]) -> GroupQuantized:
    """`kind` is the GGUF type name; `shape` is (out, in) as the model sees the weight."""
    rows, cols = shape
    if kind == "Q4_1":
        b = _blocks(data, rows, 20)
        d = b[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
        m = b[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
        codes = _nibbles(b[..., 4:20])
    elif kind == "Q4_0":
        b = _blocks(data, rows, 18)
        d = b[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
        codes = _nibbles(b[..., 2:18])
        m = -8 * d
    elif kind == "Q8_0":
        b = _blocks(data, rows, 34)
        d = b[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
        codes = b[..., 2:34].copy().view(np.int8)
        return GroupQuantized(
            8, torch.from_numpy(codes.reshape(rows, cols)), torch.from_numpy(d), None
        )
    else:
        raise ValueError(f"GGUF type {kind} is not kept quantized (Q4_0, Q4_1, Q8_0 are)")
    return GroupQuantized(
        4,
        torch.from_numpy(np.ascontiguousarray(codes).reshape(rows, cols)),
        torch.from_numpy(d),
        torch.from_numpy(m),
    )


def quantize_int4(w: torch.Tensor, group: int = GROUP) -> GroupQuantized:
    """Asymmetric 4-bit groups along the input dimension, for dense checkpoints."""
    out, inp = w.shape
    g = w.float().reshape(out, inp // group, group)
    lo, hi = g.amin(-1), g.amax(-1)
    scale = ((hi - lo) / 15).clamp(min=1e-10)
    q = ((g - lo[..., None]) / scale[..., None]).round().clamp(0, 15)
    return GroupQuantized(4, q.to(torch.uint8).reshape(out, inp), scale, lo, group)


def quantize_int8_blocks(w: torch.Tensor, group: int = GROUP) -> GroupQuantized:
    """Symmetric int8 per group of 32 inputs (Q8_0's form), for dense weights."""
    out, inp = w.shape
    g = w.float().reshape(out, inp // group, group)
    scale = (g.abs().amax(-1) / 127).clamp(min=1e-10)
    q = (g / scale[..., None]).round().clamp(-127, 127).to(torch.int8)
    return GroupQuantized(8, q.reshape(out, inp), scale, None, group)


def quantize_int8_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one scale per output row: the form torch's int8 CPU kernel takes."""
    w = w.float()
    scale = (w.abs().amax(1) / 127).clamp(min=1e-10)
    return (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8), scale
