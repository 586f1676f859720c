"""The gated MLP's activation, silu(gate) * up, over the fused gate-up projection's output.

In bfloat16 on a CPU with the C++ kernels it is one call (rounded as the torch ops round, up to
one bfloat16 unit from silu's exp); elsewhere, and inside torch.compile's graphs, the torch ops.
"""

import torch
import torch.nn.functional as F

from kernels.cpu import kernels_apply


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x [..., 2I] (gate, then up) -> [..., I]."""
    if kernels_apply(x) and x.dim() == 2 and x.stride(-1) == 1:
        return torch.ops.radixserve_cpu.silu_mul(x)
    gate, up = x.chunk(2, dim=-1)
    return F.silu(gate) * up
