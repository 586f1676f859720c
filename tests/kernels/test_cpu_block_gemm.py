"""The C++ block GEMM against the same arithmetic in float32: weights w = scale*code + min per
block of 32, activations quantized to int8 per row and block."""

from __future__ import annotations

import pytest
import torch

from kernels.cpu import cpu_kernels_loaded
from kernels.cpu.block_pack import pack_blocks

pytestmark = pytest.mark.skipif(
    not cpu_kernels_loaded(), reason="needs AVX512-BF16, VNNI and a C++ compiler"
)


def quantized_rows(x: torch.Tensor) -> torch.Tensor:
    """x as the kernel sees it: symmetric int8 per block of 32, scale max|x|/127, codes rounded
    half to even from x times the scale's float32 reciprocal (as the kernel computes them)."""
    b = x.float().reshape(x.shape[0], -1, 32)
    e = b.abs().amax(-1, keepdim=True) / 127
    inv = torch.where(e > 0, 1 / e, 0)
    return ((b * inv).round() * e).reshape(x.shape)


def weights(codes, scales, mins):
    """The float32 weight the packed form stands for (scales and mins stored as float16)."""

    def per_input(t):
        return t.half().float().repeat_interleave(32, 1)

    return codes.float() * per_input(scales) + per_input(mins)


def random_blocks(n, k, bits, seed=0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 2**bits, (n, k), dtype=torch.uint8, generator=g)
    scales = torch.rand(n, k // 32, generator=g) * 0.01 + 1e-3
    mins = -torch.rand(n, k // 32, generator=g) * 0.05
    return codes, scales, mins


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("rows,n,k", [(1, 576, 576), (3, 40, 64), (9, 17, 96), (33, 64, 1536)])
def test_matches_float32_over_quantized_activations(bits, rows, n, k):
    codes, scales, mins = random_blocks(n, k, bits)
    x = torch.randn(rows, k).bfloat16()
    out = torch.ops.radixserve_cpu.block_gemm(x, pack_blocks(codes, scales, mins, bits), n, bits)
    assert out.shape == (rows, n) and out.dtype == torch.bfloat16
    ref = quantized_rows(x) @ weights(codes, scales, mins).t()
    # only the bfloat16 rounding of the output (2^-8 relative) and float32 order
    assert ((out.float() - ref).abs() <= ref.abs() * 2**-8 + 1e-3 * ref.abs().max()).all()


def test_rows_do_not_depend_on_their_batch():
    codes, scales, mins = random_blocks(48, 128, 4)
    packed = pack_blocks(codes, scales, mins, 4)
    x = torch.randn(13, 128).bfloat16()
    whole = torch.ops.radixserve_cpu.block_gemm(x, packed, 48, 4)
    for r in (0, 5, 12):
        alone = torch.ops.radixserve_cpu.block_gemm(x[r : r + 1], packed, 48, 4)
        assert torch.equal(alone[0], whole[r])


def test_strided_rows_and_zero_rows():
    codes, scales, mins = random_blocks(16, 64, 4)
    packed = pack_blocks(codes, scales, mins, 4)
    wide = torch.randn(4, 96).bfloat16()
    strided = torch.ops.radixserve_cpu.block_gemm(wide[:, :64], packed, 16, 4)
    dense = torch.ops.radixserve_cpu.block_gemm(wide[:, :64].clone(), packed, 16, 4)
    assert torch.equal(strided, dense)
    zero = torch.ops.radixserve_cpu.block_gemm(wide[:0, :64], packed, 16, 4)
    assert zero.shape == (0, 16)


def test_zero_activations_give_zero():
    codes, scales, mins = random_blocks(16, 64, 4)
    out = torch.ops.radixserve_cpu.block_gemm(
        torch.zeros(1, 64).bfloat16(), pack_blocks(codes, scales, mins, 4), 16, 4
    )
    assert torch.equal(out, torch.zeros(1, 16).bfloat16())


def test_wrong_shapes_are_refused():
    codes, scales, mins = random_blocks(16, 64, 4)
    packed = pack_blocks(codes, scales, mins, 4)
    with pytest.raises(RuntimeError, match="multiple of 32"):
        torch.ops.radixserve_cpu.block_gemm(torch.randn(1, 48).bfloat16(), packed, 16, 4)
    with pytest.raises(RuntimeError, match="bytes"):
        torch.ops.radixserve_cpu.block_gemm(torch.randn(1, 64).bfloat16(), packed, 32, 4)
    with pytest.raises(RuntimeError, match="bfloat16"):
        torch.ops.radixserve_cpu.block_gemm(torch.randn(1, 64), packed, 16, 4)
    with pytest.raises(RuntimeError, match="bits"):
        torch.ops.radixserve_cpu.block_gemm(torch.randn(1, 64).bfloat16(), packed, 16, 2)


def test_packing_refuses_codes_out_of_range():
    codes, scales, mins = random_blocks(16, 64, 8)
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        pack_blocks(codes, scales, mins, 4)
    with pytest.raises(ValueError, match="multiple of 32"):
        pack_blocks(codes[:, :48], scales[:, :1], mins[:, :1], 8)


def test_compiled_graph_calls_the_kernel():
    codes, scales, mins = random_blocks(32, 64, 4)
    packed = pack_blocks(codes, scales, mins, 4)

    def f(x):
        return torch.ops.radixserve_cpu.block_gemm(x * 2, packed, 32, 4) + 1

    x = torch.randn(5, 64).bfloat16()
    assert torch.equal(torch.compile(f, fullgraph=True)(x), f(x))
