"""Quantize / dequantize error bounds of each KV format, on data with outlier channels (the
case KIVI's per-channel keys are for)."""

from __future__ import annotations

import pytest
import torch

from kernels import kv_quant as kq


def kv_like(*shape, seed=0):
    """Normal data with a few channels ten times larger, as keys have."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    x[..., 3] *= 10
    x[..., -2] += 5
    return x


def test_int8_error_is_half_a_step_per_token_and_head():
    x = kv_like(50, 3, 64)
    codes, scale, offset = kq.quantize_int8(x)
    assert codes.dtype == torch.uint8 and scale.shape == (50, 3) and offset.shape == (50, 3)
    err = (kq.dequantize_int8(codes, scale, offset) - x).abs().amax(-1)
    step = (x.amax(-1) - x.amin(-1)) / 255
    assert bool((err <= 0.5 * step + 2e-3 * x.abs().amax(-1)).all())


def test_int8_constant_vector_is_exact():
    x = torch.full((4, 2, 8), 1.5)
    assert torch.equal(kq.dequantize_int8(*kq.quantize_int8(x)), x)


def test_int4_pack_round_trips():
    codes = torch.randint(0, 16, (5, 2, 8), dtype=torch.uint8)
    packed = kq.pack_int4(codes)
    assert packed.shape == (5, 2, 4)
    assert torch.equal(kq.unpack_int4(packed), codes)


def test_int4_keys_per_channel_over_a_page():
    pages = kv_like(2, 32, 3, 64)  # [P, page, H, D]
    packed, scale, offset = kq.quantize_int4_keys(pages)
    assert packed.shape == (2, 32, 3, 32) and scale.shape == (2, 3, 64)
    back = kq.dequantize_int4_keys(packed, scale[:, None], offset[:, None])
    step = (pages.amax(1) - pages.amin(1)) / 15  # per page, head and channel
    err = (back - pages).abs().amax(1)
    assert bool((err <= 0.5 * step + 2e-3 * pages.abs().amax(1)).all())
    # the outlier channel has its own range: the ordinary ones keep a fine step
    assert float(step[..., 0].mean()) < 0.2 * float(step[..., 3].mean())


def test_int4_values_per_token_in_groups():
    x = kv_like(40, 3, 64)
    packed, scale, offset = kq.quantize_int4_values(x, 32)
    assert packed.shape == (40, 3, 32) and scale.shape == (40, 3, 2)
    back = kq.dequantize_int4_values(packed, scale, offset, 32)
    g = x.unflatten(-1, (2, 32))
    step = (g.amax(-1) - g.amin(-1)) / 15
    err = (back - x).abs().unflatten(-1, (2, 32)).amax(-1)
    assert bool((err <= 0.5 * step + 2e-3 * g.abs().amax(-1)).all())


def test_int4_unpack_to_a_float_dtype_equals_unpack_then_cast():
    packed = torch.randint(0, 256, (6, 3, 32), dtype=torch.uint8)
    codes = torch.stack((packed & 15, packed >> 4), dim=-1).flatten(-2)
    assert torch.equal(kq.unpack_int4(packed), codes)
    for dtype in (torch.float32, torch.bfloat16):
        assert torch.equal(kq.unpack_int4(packed, dtype), codes.to(dtype))


def test_int4_keys_with_scales_once_per_page_equal_scales_per_token():
    """A page's scales broadcast over its tokens give the same bits as gathering them per
    token, in the model's dtypes: the page-wise read changes no value."""
    packed, scale, offset = kq.quantize_int4_keys(kv_like(3, 32, 3, 64, seed=1))
    for dtype in (torch.float32, torch.bfloat16):
        per_page = kq.dequantize_int4_keys(packed, scale[:, None], offset[:, None], dtype)
        per_token = kq.dequantize_int4_keys(
            packed.flatten(0, 1), scale.repeat_interleave(32, 0), offset.repeat_interleave(32, 0),
            dtype,
        )  # fmt: skip
        reference = kq.unpack_int4(packed).to(dtype) * scale[:, None].to(dtype) + offset[
            :, None
        ].to(dtype)
        assert torch.equal(per_page.flatten(0, 1), per_token)
        assert torch.equal(per_page, reference)


@pytest.mark.parametrize("name", ["fp8_e4m3", "fp8_e5m2"])
def test_fp8_relative_error_with_per_head_scales(name):
    dtype = kq.FP8_DTYPES[name]
    x = kv_like(60, 3, 64)
    x[:, 1] *= 100  # heads of very different size each get their own scale
    scale = kq.fp8_head_scale(x, dtype)
    assert scale.shape == (3,) and float(scale[1]) > 50 * float(scale[0])
    back = kq.dequantize_fp8(kq.quantize_fp8(x, scale, dtype), scale)
    mantissa_bits = 3 if name == "fp8_e4m3" else 2
    rel = 2.0 ** -(mantissa_bits + 1)  # half a unit in the last place
    # relative error on normal numbers, absolute near zero (subnormals)
    tiny = torch.finfo(dtype).smallest_normal * scale[None, :, None]
    assert bool(((back - x).abs() <= rel * x.abs() + tiny).all())


def test_fp8_saturates_past_the_prefill_range():
    dtype = kq.FP8_DTYPES["fp8_e4m3"]
    x = torch.ones(4, 1, 8)
    scale = kq.fp8_head_scale(x, dtype)
    big = kq.dequantize_fp8(kq.quantize_fp8(x * 10, scale, dtype), scale)
    assert torch.allclose(big, torch.full_like(big, kq.FP8_HEADROOM))
