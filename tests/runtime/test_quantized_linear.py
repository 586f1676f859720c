"""The weight-only layers compute what a dense layer over their dequantized weights computes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize

from kernels.cpu import cpu_kernels_loaded
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


@needs_kernels
def test_block_layer_keeps_no_dense_weight():
    layer = BlockLinear(quantize_int4(torch.randn(32, 64)), None)
    assert layer.dense is None
    assert layer(torch.randn(0, 64).bfloat16()).shape == (0, 32)
