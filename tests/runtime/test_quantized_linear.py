"""The weight-only layers compute what a dense layer over their dequantized weights computes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize

from kernels.cpu import avx2_gemm_loaded, cpu_kernels_loaded
from runtime.layers.packed_linear import dense_linear
from runtime.layers.quantized_linear import BlockLinear, Int4Linear, Int8Linear
from runtime.model_loader.gguf_quant import (
    quantize_int4,
    quantize_int8_per_channel,
    read_group_quantized,
)
from tests.kernels.test_cpu_block_gemm import quantized_rows

needs_kernels = pytest.mark.skipif(not cpu_kernels_loaded(), reason="needs the CPU kernels")


@pytest.mark.parametrize("rows", [1, 3, 16])
def test_int4_matches_its_dequantized_weight_in_float32(rows):
    torch.manual_seed(0)
    q = quantize_int4(torch.randn(48, 64))
    bias = torch.randn(48)
    layer = Int4Linear(q, bias, torch.float32)
    x = torch.randn(rows, 64)
    torch.testing.assert_close(layer(x), F.linear(x, q.dequantize(), bias), rtol=1e-5, atol=1e-4)


def test_int4_in_bfloat16_is_close_to_float32():
    torch.manual_seed(0)
    q = quantize_int4(torch.randn(64, 128))
    x = torch.randn(2, 128)
    out = Int4Linear(q, None, torch.bfloat16)(x.bfloat16())
    assert out.dtype == torch.bfloat16
    ref = F.linear(x, q.dequantize())
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()


def test_dense_weight_takes_batches_from_its_threshold():
    torch.manual_seed(0)
    w = torch.randn(32, 64)
    q = quantize_int4(w)
    layer = Int4Linear(q, None, torch.float32, dense=dense_linear(w, None), dense_from=4)
    small, large = torch.randn(3, 64), torch.randn(4, 64)
    torch.testing.assert_close(layer(small), F.linear(small, q.dequantize()), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(layer(large), F.linear(large, w))  # the dense weight, not q


def test_int8_matches_its_per_channel_weight():
    torch.manual_seed(0)
    w = torch.randn(40, 64)
    layer = Int8Linear(w, None, torch.float32)
    codes, scale = quantize_int8_per_channel(w)
    x = torch.randn(5, 64)
    torch.testing.assert_close(layer(x), F.linear(x, codes.float() * scale[:, None]))


def test_leading_dimensions_are_kept():
    layer = Int4Linear(quantize_int4(torch.randn(16, 32)), None, torch.float32)
    assert layer(torch.randn(2, 3, 32)).shape == (2, 3, 16)


@pytest.mark.parametrize(
    "make",
    [
        lambda w: Int4Linear(quantize_int4(w), None, torch.float32),
        lambda w: Int8Linear(w, None, torch.float32),
    ],
)
def test_no_rows_give_no_rows(make):
    """A prefill whose request keeps no logits (max_new_tokens 0) projects zero rows."""
    assert make(torch.randn(16, 32))(torch.randn(0, 32)).shape == (0, 16)


@needs_kernels
@pytest.mark.parametrize("kind", [T.Q4_1, T.Q4_0, T.Q8_0])
def test_block_layer_multiplies_the_file_blocks(kind):
    """A GGUF tensor on the block kernel: the file's weight times the int8-rounded activations."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((40, 128)).astype(np.float32)
    q = read_group_quantized(kind.name, quantize(w, kind), w.shape)
    bias = torch.randn(40).bfloat16()
    layer = BlockLinear(q, bias)
    x = torch.randn(2, 3, 128).bfloat16()
    out = layer(x)
    assert out.shape == (2, 3, 40) and out.dtype == torch.bfloat16
    ref = quantized_rows(x.reshape(6, 128)) @ q.dequantize().t()
    got = (out.float().reshape(6, 40) - bias.float()).float()
    assert (got - ref).abs().max() < 0.02 * ref.abs().max()
    # 3 tiles of 16 rows (the last padded) x 4 blocks, each codes plus float16 scales and mins
    assert layer.weight_bytes() == 3 * 4 * (q.bits * 64 + 64)


@pytest.mark.skipif(not avx2_gemm_loaded(), reason="needs AVX2 and a C++ compiler")
@pytest.mark.parametrize("kind", [T.Q4_1, T.Q8_0])
def test_block_layer_in_float32_is_the_dequantized_product(kind):
    """In float32 the activations go in two int8 parts: the result is the file's weight times
    the activations to well within bfloat16's precision."""
    rng = np.random.default_rng(4)
    w = rng.standard_normal((40, 128)).astype(np.float32)
    q = read_group_quantized(kind.name, quantize(w, kind), w.shape)
    bias = torch.randn(40)
    x = torch.randn(2, 3, 128)
    out = BlockLinear(q, bias)(x)
    assert out.shape == (2, 3, 40) and out.dtype == torch.float32
    ref = torch.nn.functional.linear(x, q.dequantize(), bias)
    assert (out - ref).abs().max() < 2e-4 * ref.abs().max()


@pytest.mark.skipif(not avx2_gemm_loaded(), reason="needs AVX2 and a C++ compiler")
def test_float32_batches_from_the_threshold_run_the_dequantized_weight():
    w = np.random.default_rng(5).standard_normal((48, 64)).astype(np.float32)
    q = read_group_quantized("Q4_1", quantize(w, T.Q4_1), w.shape)  # float16 scales, as packed
    layer = BlockLinear(q, None, dequantize_from=4)
    dense = q.dequantize()
    big = torch.randn(5, 64)
    assert torch.allclose(layer(big), big @ dense.t(), rtol=1e-5, atol=1e-5)
    small = big[:3]
    # below it the two-part kernel: close to the dense product, and the same rows as alone
    assert torch.allclose(layer(small), small @ dense.t(), rtol=1e-3, atol=1e-3)
    assert torch.equal(layer(small)[1], layer(small[1:2])[0])


@needs_kernels
def test_block_layer_keeps_no_dense_weight():
    layer = BlockLinear(quantize_int4(torch.randn(32, 64)), None)
    assert layer.dense is None
    assert layer(torch.randn(0, 64).bfloat16()).shape == (0, 32)
