"""RMSNorm computed in float32 whatever the activation dtype, as the reference models do.

In bfloat16 on a CPU with the C++ kernels, each norm (and the residual add before it) is one
call rounded as the torch ops are; elsewhere, and inside torch.compile's graphs, the torch ops.
"""

import torch
import torch.nn.functional as F
from torch import nn

from kernels.cpu import kernels_apply


def _on_kernel(x: torch.Tensor) -> bool:
    return kernels_apply(x) and x.dim() == 2 and x.stride(-1) == 1


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        if _on_kernel(x):
            return torch.ops.radixserve_cpu.rms_norm(x, self.weight, self.eps)
        normed = F.rms_norm(x.float(), self.weight.shape, None, self.eps)
        return self.weight * normed.to(x.dtype)

    def add_forward(
        self, x: torch.Tensor, residual: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(residual + x, the norm of it): a layer's residual add and the next norm."""
        if _on_kernel(x) and residual.is_contiguous():
            return torch.ops.radixserve_cpu.add_rms_norm(x, residual, self.weight, self.eps)
        total = residual + x
        return total, self(total)
