"""silu(gate) * up on the C++ kernel against the torch ops it replaces, in bfloat16."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kernels.cpu import cpu_kernels_loaded
from runtime.layers import activation
from runtime.layers.activation import silu_and_mul


def _torch_ops(x: torch.Tensor) -> torch.Tensor:
    gate, up = x.chunk(2, dim=-1)
    return F.silu(gate) * up


@pytest.mark.skipif(not cpu_kernels_loaded(), reason="needs the CPU kernels")
@pytest.mark.parametrize("inter", [1536, 40])  # 40: a tail shorter than one vector
def test_kernel_rounds_like_the_torch_ops(inter):
    torch.manual_seed(0)
    x = (torch.randn(9, 2 * inter) * 6).bfloat16()  # gates far into both tails of the sigmoid
    x[0, :4] = torch.tensor([0.0, -100.0, 100.0, -0.0])
    out = silu_and_mul(x)
    ref = _torch_ops(x)
    assert out.shape == (9, inter) and out.dtype == torch.bfloat16
    # silu's exp is not torch's: a value may round to the neighbouring bfloat16
    assert torch.allclose(out.float(), ref.float(), rtol=2**-7, atol=1e-30)
    assert (out == ref).float().mean() > 0.99


@pytest.mark.skipif(not cpu_kernels_loaded(), reason="needs the CPU kernels")
def test_strided_rows_take_the_kernel_too():
    wide = torch.randn(4, 100).bfloat16()
    rows = wide[:, :64]  # rows 100 apart
    assert torch.equal(silu_and_mul(rows), silu_and_mul(rows.clone()))


def test_elsewhere_it_is_the_torch_ops(monkeypatch):
    x = torch.randn(3, 2, 64)
    assert torch.equal(silu_and_mul(x), _torch_ops(x))  # float32 and 3-D: the torch ops
    monkeypatch.setattr(activation, "kernels_apply", lambda x: False)
    xb = torch.randn(5, 64).bfloat16()
    assert torch.equal(silu_and_mul(xb), _torch_ops(xb))


def test_odd_widths_are_refused_by_the_kernel():
    if not cpu_kernels_loaded():
        pytest.skip("needs the CPU kernels")
    with pytest.raises(RuntimeError, match=r"\[T, 2I\]"):
        torch.ops.radixserve_cpu.silu_mul(torch.randn(2, 33).bfloat16())
