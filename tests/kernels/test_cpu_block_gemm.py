"""The C++ block GEMMs against the same arithmetic in float32: weights w = scale*code + min per
block of 32, activations quantized to int8 per row and block. `bf16` is the AVX512-VNNI kernel
(bfloat16 in and out), `f32` the AVX2 one (float32)."""

from __future__ import annotations

import pytest
import torch

from kernels.cpu import avx2_gemm_loaded, cpu_kernels_loaded
from kernels.cpu.block_pack import pack_blocks

KERNELS = {
    "bf16": (cpu_kernels_loaded, "block_gemm", torch.bfloat16),
    "f32": (avx2_gemm_loaded, "block_gemm_f32", torch.float32),
}


@pytest.fixture(params=list(KERNELS))
def kernel(request):
    """(gemm, activation dtype) for each kernel this machine builds."""
    loaded, name, dtype = KERNELS[request.param]
    if not loaded():
        pytest.skip(f"the {request.param} block GEMM needs its CPU instructions and a compiler")
    return getattr(torch.ops.radixserve_cpu, name), dtype


@pytest.fixture
def f32_gemm():
    if not avx2_gemm_loaded():
        pytest.skip("needs AVX2 and a C++ compiler")
    return torch.ops.radixserve_cpu.block_gemm_f32


def quantized_rows(x: torch.Tensor) -> torch.Tensor:
    """x as the kernel sees it: symmetric int8 per block of 32, scale max|x|/127, codes rounded
    half to even from x times the scale's float32 reciprocal (as the kernel computes them)."""
    b = x.float().reshape(x.shape[0], -1, 32)
    e = b.abs().amax(-1, keepdim=True) / 127
    inv = torch.where(e > 0, 1 / e, 0)
    return ((b * inv).round() * e).reshape(x.shape)


def two_part_rows(x: torch.Tensor) -> torch.Tensor:
    """x as the fine kernel sees it: the int8 part above, then its remainder in int8 again at a
    scale 254 times finer."""
    first = quantized_rows(x).reshape(x.shape[0], -1, 32)
    b = x.float().reshape(first.shape)
    e = b.abs().amax(-1, keepdim=True) / 127 / 254
    inv = torch.where(e > 0, 1 / e, 0)
    second = ((b - first) * inv).round().clamp(-127, 127) * e
    return (first + second).reshape(x.shape)


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


def close(out: torch.Tensor, ref: torch.Tensor) -> bool:
    """Within the output's bfloat16 rounding (2^-8 relative) and float32 summation order."""
    return bool(((out.float() - ref).abs() <= ref.abs() * 2**-8 + 1e-3 * ref.abs().max()).all())


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize(
    "rows,n,k", [(1, 576, 576), (3, 40, 64), (9, 17, 96), (33, 64, 1536), (2, 3, 32)]
)
def test_matches_float32_over_quantized_activations(kernel, bits, rows, n, k):
    gemm, dtype = kernel
    codes, scales, mins = random_blocks(n, k, bits)
    x = torch.randn(rows, k).to(dtype)
    out = gemm(x, pack_blocks(codes, scales, mins, bits), n, bits)
    assert out.shape == (rows, n) and out.dtype == dtype
    assert close(out, quantized_rows(x) @ weights(codes, scales, mins).t())


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("rows,n,k", [(1, 576, 576), (11, 40, 96), (130, 24, 64)])
def test_fine_activations_carry_the_remainder(f32_gemm, bits, rows, n, k):
    codes, scales, mins = random_blocks(n, k, bits, seed=1)
    packed = pack_blocks(codes, scales, mins, bits)
    x = torch.randn(rows, k)
    w = weights(codes, scales, mins).t()
    fine = f32_gemm(x, packed, n, bits, True)
    coarse = f32_gemm(x, packed, n, bits)
    assert close(fine, two_part_rows(x) @ w)
    # against the exact product, the fine error is a small share of the coarse one
    exact = x @ w
    assert (fine - exact).abs().mean() < (coarse - exact).abs().mean() / 20


def test_rows_do_not_depend_on_their_batch(kernel):
    gemm, dtype = kernel
    codes, scales, mins = random_blocks(48, 128, 4)
    packed = pack_blocks(codes, scales, mins, 4)
    x = torch.randn(13, 128).to(dtype)
    whole = gemm(x, packed, 48, 4)
    for r in (0, 5, 12):
        assert torch.equal(gemm(x[r : r + 1], packed, 48, 4)[0], whole[r])


def test_strided_rows_and_zero_rows(kernel):
    gemm, dtype = kernel
    codes, scales, mins = random_blocks(16, 64, 4)
    packed = pack_blocks(codes, scales, mins, 4)
    wide = torch.randn(4, 96).to(dtype)
    assert torch.equal(gemm(wide[:, :64], packed, 16, 4), gemm(wide[:, :64].clone(), packed, 16, 4))
    assert gemm(wide[:0, :64], packed, 16, 4).shape == (0, 16)


def test_zero_activations_give_zero(kernel):
    gemm, dtype = kernel
    codes, scales, mins = random_blocks(16, 64, 4)
    out = gemm(torch.zeros(1, 64).to(dtype), pack_blocks(codes, scales, mins, 4), 16, 4)
    assert torch.equal(out, torch.zeros(1, 16).to(dtype))


def test_wrong_shapes_are_refused(kernel):
    gemm, dtype = kernel
    codes, scales, mins = random_blocks(16, 64, 4)
    packed = pack_blocks(codes, scales, mins, 4)
    with pytest.raises(RuntimeError, match="multiple of 32"):
        gemm(torch.randn(1, 48).to(dtype), packed, 16, 4)
    with pytest.raises(RuntimeError, match="bytes"):
        gemm(torch.randn(1, 64).to(dtype), packed, 32, 4)
    other = torch.float32 if dtype == torch.bfloat16 else torch.bfloat16
    with pytest.raises(RuntimeError, match="must be"):
        gemm(torch.randn(1, 64).to(other), packed, 16, 4)
    with pytest.raises(RuntimeError, match="bits"):
        gemm(torch.randn(1, 64).to(dtype), packed, 16, 2)


def test_packing_refuses_codes_out_of_range():
    codes, scales, mins = random_blocks(16, 64, 8)
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        pack_blocks(codes, scales, mins, 4)
    with pytest.raises(ValueError, match="multiple of 32"):
        pack_blocks(codes[:, :48], scales[:, :1], mins[:, :1], 8)


def test_compiled_graph_calls_the_kernel(kernel):
    gemm, dtype = kernel
    codes, scales, mins = random_blocks(32, 64, 4)
    packed = pack_blocks(codes, scales, mins, 4)

    def f(x):
        return gemm(x * 2, packed, 32, 4) + 1

    x = torch.randn(5, 64).to(dtype)
    assert torch.equal(torch.compile(f, fullgraph=True)(x), f(x))


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("n,k", [(40, 64), (17, 96), (3, 32)])
def test_dequantize_gives_the_weight_back(f32_gemm, bits, n, k):
    codes, scales, mins = random_blocks(n, k, bits)
    packed = pack_blocks(codes, scales, mins, bits)
    w = torch.ops.radixserve_cpu.block_dequantize_f32(packed, n, k, bits)
    assert torch.allclose(w, weights(codes, scales, mins), rtol=1e-6, atol=1e-7)
    with pytest.raises(RuntimeError, match="contiguous uint8 blocks"):
        torch.ops.radixserve_cpu.block_dequantize_f32(packed, n + 16, k, bits)
