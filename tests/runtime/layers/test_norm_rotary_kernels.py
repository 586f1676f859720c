"""RMSNorm and rotary on the C++ kernels against the torch ops they replace, in bfloat16."""

from __future__ import annotations

import pytest
import torch

from kernels.cpu import cpu_kernels_loaded
from runtime.layers import rmsnorm, rotary
from runtime.layers.rmsnorm import RMSNorm
from runtime.layers.rotary import RotaryEmbedding

pytestmark = pytest.mark.skipif(
    not cpu_kernels_loaded(), reason="needs AVX512-BF16 and a C++ compiler"
)


def _torch_ops(monkeypatch, module):
    monkeypatch.setattr(module, "kernels_apply", lambda x: False)


def _within_an_ulp(a: torch.Tensor, b: torch.Tensor) -> None:
    """bfloat16 results whose float32 reductions were summed in another order: nearly all
    equal, the rest one rounding apart."""
    assert a.dtype == b.dtype == torch.bfloat16 and a.shape == b.shape
    assert torch.allclose(a.float(), b.float(), rtol=2**-7, atol=1e-30)
    assert (a == b).float().mean() > 0.99


@pytest.mark.parametrize("hidden", [576, 100])  # 100: a tail shorter than one vector
def test_rms_norm_matches_the_torch_ops(monkeypatch, hidden):
    torch.manual_seed(0)
    norm = RMSNorm(hidden, 1e-5).to(torch.bfloat16)
    with torch.no_grad():
        norm.weight.normal_(1, 0.3)
    x = (torch.randn(37, hidden) * 3).to(torch.bfloat16)
    residual = torch.randn(37, hidden).to(torch.bfloat16)
    with torch.no_grad():
        fused = norm(x)
        fused_sum, fused_norm = norm.add_forward(x, residual)
        _torch_ops(monkeypatch, rmsnorm)
        ref = norm(x)
        ref_sum, ref_norm = norm.add_forward(x, residual)
    _within_an_ulp(fused, ref)
    assert torch.equal(fused_sum, ref_sum)  # one bfloat16 add, rounded alike
    _within_an_ulp(fused_norm, ref_norm)


def test_rms_norm_reads_strided_rows(monkeypatch):
    torch.manual_seed(1)
    norm = RMSNorm(64, 1e-6).to(torch.bfloat16)
    wide = torch.randn(5, 192).to(torch.bfloat16)
    x = wide[:, 64:128]  # rows 192 apart
    with torch.no_grad():
        fused = norm(x)
        _torch_ops(monkeypatch, rmsnorm)
        _within_an_ulp(fused, norm(x))


def test_rotary_in_place_equals_the_torch_ops_bit_for_bit(monkeypatch):
    torch.manual_seed(2)
    rope = RotaryEmbedding(64, 512, 10000.0, None)
    t, heads, kv_heads = 11, 9, 3
    positions = torch.randint(0, 512, (t,))
    cos_sin = rope.cos_sin(positions, torch.bfloat16)
    qkv = torch.randn(t, (heads + 2 * kv_heads) * 64).to(torch.bfloat16)
    q, k, v = qkv.split([heads * 64, kv_heads * 64, kv_heads * 64], dim=-1)
    q, k = q.view(t, heads, 64), k.view(t, kv_heads, 64)
    v_before = v.clone()
    _torch_ops(monkeypatch, rotary)
    ref_q, ref_k = RotaryEmbedding.apply(cos_sin, q, k)
    monkeypatch.undo()
    out_q, out_k = RotaryEmbedding.apply(cos_sin, q, k)
    assert out_q.data_ptr() == q.data_ptr()  # rotated in place
    assert torch.equal(out_q, ref_q) and torch.equal(out_k, ref_k)
    assert torch.equal(v, v_before)
