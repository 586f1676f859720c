"""Rotary position embeddings (rotate-half layout), with linear and Llama-3 frequency scaling."""

from __future__ import annotations

import math

import torch
from torch import nn

from kernels.cpu import kernels_apply


def rope_inv_freq(head_dim: int, theta: float, scaling: dict | None) -> tuple[torch.Tensor, float]:
    """Returns the inverse frequencies and the factor applied to cos/sin."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").float() / head_dim
    inv_freq = 1.0 / (theta**exponents)
    kind = (scaling or {}).get("rope_type", "default")
    if kind == "default":
        return inv_freq, 1.0
    if kind == "linear":
        return inv_freq / float(scaling["factor"]), 1.0
    if kind == "llama3":
        factor = float(scaling["factor"])
        low = float(scaling.get("low_freq_factor", 1.0))
        high = float(scaling.get("high_freq_factor", 4.0))
        old_ctx = float(scaling["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv_freq
        # Long wavelengths are slowed by `factor`, short ones kept, the band between blended.
        scaled = torch.where(wavelen > old_ctx / low, inv_freq / factor, inv_freq)
        smooth = (old_ctx / wavelen - low) / (high - low)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_ctx / high) & (wavelen <= old_ctx / low)
        return torch.where(medium, blended, scaled), 1.0
    raise ValueError(f"rope_scaling: type {kind!r} is not supported (default, linear, llama3)")


class RotaryEmbedding(nn.Module):
    def __init__(
        self, head_dim: int, max_position: int, theta: float, scaling: dict | None
    ) -> None:
        super().__init__()
        self.args = (head_dim, max_position, theta, scaling)
        self.build("cpu")

    def build(self, device: str | torch.device) -> None:
        """Computes the cos/sin tables on `device` (also after the model is built on `meta`)."""
        head_dim, max_position, theta, scaling = self.args
        inv_freq, attn_factor = rope_inv_freq(head_dim, theta, scaling)
        t = torch.arange(max_position, dtype=torch.float32, device="cpu")
        freqs = torch.outer(t, inv_freq)
        emb = torch.cat([freqs, freqs], dim=-1)
        self.cos = (emb.cos() * attn_factor).to(device)  # [max_pos, head_dim]
        self.sin = (emb.sin() * attn_factor).to(device)

    @staticmethod
    def _rotate_half(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([-x2, x1], dim=-1)

    def cos_sin(
        self, positions: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Looked up once per forward and shared by every layer: `[T, 1, head_dim]` each."""
        return self.cos[positions].unsqueeze(1).to(dtype), self.sin[positions].unsqueeze(1).to(
            dtype
        )

    @classmethod
    def apply(cls, cos_sin: tuple[torch.Tensor, torch.Tensor], q: torch.Tensor, k: torch.Tensor):
        """q: [T, H, D], k: [T, Hkv, D]. In bfloat16 on a CPU with the C++ kernels, rotated in
        place (q and k are views of the QKV projection's output), rounded as the torch ops are."""
        cos, sin = cos_sin
        if kernels_apply(q) and _packed_heads(q) and _packed_heads(k):
            torch.ops.radixserve_cpu.rotary_(q, k, cos, sin)
            return q, k
        return q * cos + cls._rotate_half(q) * sin, k * cos + cls._rotate_half(k) * sin


def _packed_heads(x: torch.Tensor) -> bool:
    """Rows may be strided; within a row, heads and dims lie packed."""
    return x.stride(2) == 1 and x.stride(1) == x.shape[2]
