"""GGUF blocks read as codes and scales must give exactly the numbers gguf's own dequantizer gives."""

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

from runtime.model_loader.gguf_loader import _unpermute_rope, unpermute_index
from runtime.model_loader.gguf_quant import (
    quantize_int4,
    quantize_int8_blocks,
    quantize_int8_per_channel,
    read_group_quantized,
)


@pytest.mark.parametrize("kind", [T.Q4_0, T.Q4_1, T.Q8_0])
def test_blocks_dequantize_like_gguf(kind):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((24, 96)) * rng.uniform(0.01, 3, (24, 1))).astype(np.float32)
    blocks = quantize(w, kind)
    q = read_group_quantized(kind.name, blocks, w.shape)
    assert q.bits == (8 if kind is T.Q8_0 else 4)
    assert int(q.codes.min()) >= (-128 if q.bits == 8 else 0)
    assert int(q.codes.max()) <= (127 if q.bits == 8 else 15)
    np.testing.assert_array_equal(q.dequantize().numpy(), dequantize(blocks, kind))


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="Q2_K"):
        read_group_quantized("Q2_K", np.zeros((1, 84), np.uint8), (1, 256))


def test_rows_reorder_like_the_rotary_unpermute():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    q = read_group_quantized("Q4_1", quantize(w, T.Q4_1), w.shape)
    index = unpermute_index(64, 4)
    np.testing.assert_array_equal(
        q.take_rows(index).dequantize().numpy(), _unpermute_rope(q.dequantize().numpy(), 4)
    )


def test_int4_quantization_error_is_within_half_a_step():
    w = torch.randn(16, 128) * 2
    q = quantize_int4(w)
    step = q.scales.repeat_interleave(q.group, dim=1)
    assert ((q.dequantize() - w).abs() <= step / 2 + 1e-5).all()


def test_int8_per_channel_error_is_within_half_a_step():
    w = torch.randn(16, 128)
    codes, scale = quantize_int8_per_channel(w)
    assert codes.dtype == torch.int8
    assert ((codes.float() * scale[:, None] - w).abs() <= scale[:, None] / 2 + 1e-6).all()


@pytest.mark.parametrize("kind", [T.Q4_0, T.Q4_1, T.Q8_0])
def test_unsigned_codes_keep_the_file_numbers(kind):
    """The block kernel's form (w = code*scale + min, codes unsigned) is the same weight."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((16, 64)).astype(np.float32)
    q = read_group_quantized(kind.name, quantize(w, kind), w.shape)
    codes, scales, mins = q.unsigned()
    assert codes.dtype == torch.uint8
    per_input = lambda t: t.repeat_interleave(32, 1)  # noqa: E731
    rebuilt = codes.float() * per_input(scales) + per_input(mins)
    np.testing.assert_array_equal(rebuilt.numpy(), q.dequantize().numpy())
    # scales and minimums are float16 in the file: the kernel's float16 copy loses nothing
    assert torch.equal(scales.half().float(), scales) and torch.equal(mins.half().float(), mins)


def test_int8_blocks_error_is_within_half_a_step():
    w = torch.randn(8, 96) * torch.linspace(0.01, 5, 96)
    q = quantize_int8_blocks(w)
    assert q.bits == 8 and q.codes.dtype == torch.int8 and q.scales.shape == (8, 3)
    step = q.scales.repeat_interleave(32, dim=1)
    assert ((q.dequantize() - w).abs() <= step / 2 + 1e-6).all()
