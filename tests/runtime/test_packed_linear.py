from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from runtime.layers.packed_linear import (
    DenseLinear,
    OneDNNLinear,
    PackedLinear,
    dense_linear,
    onednn_bf16_available,
    pack_linears,
    pack_sizes,
    packed_gemm_available,
)

CPU = torch.device("cpu")
needs_mkl = pytest.mark.skipif(
    not packed_gemm_available(CPU, torch.float32), reason="needs MKL's packed GEMM"
)
needs_onednn = pytest.mark.skipif(
    not onednn_bf16_available(CPU, torch.bfloat16), reason="needs oneDNN's bfloat16 GEMM"
)


@needs_mkl
@pytest.mark.parametrize("rows", [1, 3, 8, 9, 20, 32, 33, 100])
def test_matches_plain_linear_for_every_row_count(rows):
    torch.manual_seed(rows)
    w, b = torch.randn(48, 40), torch.randn(48)
    layer = PackedLinear(w, b, (8, 32))
    x = torch.randn(rows, 40)
    out = layer(x)
    assert out.shape == (rows, 48)
    assert torch.allclose(out, F.linear(x, w, b), atol=1e-4)


@needs_mkl
def test_pack_linears_swaps_modules_and_sizes_follow_the_batch_limit():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Sequential(nn.Linear(6, 2, bias=False)))
    x = torch.randn(5, 4)
    ref = model(x)
    extra = pack_linears(model, (8,))
    assert isinstance(model[0], PackedLinear) and isinstance(model[2][0], PackedLinear)
    assert extra > 0 and torch.allclose(model(x), ref, atol=1e-5)
    assert pack_sizes(4) == (8,) and pack_sizes(8) == (8,) and pack_sizes(64) == (8, 32)


@needs_onednn
@pytest.mark.parametrize("rows", [0, 1, 3, 8, 33, 300])
def test_onednn_matches_the_plain_bfloat16_gemm(rows):
    torch.manual_seed(rows)
    w, b = torch.randn(96, 64).bfloat16(), torch.randn(96).bfloat16()
    layer = OneDNNLinear(w, b)
    x = torch.randn(rows, 64).bfloat16()
    out = layer(x)
    assert out.shape == (rows, 96) and out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), F.linear(x, w, b).float(), rtol=2e-2, atol=2e-2)
    # a sequence of tokens, as prefill passes them
    seq = torch.randn(2, 5, 64).bfloat16()
    torch.testing.assert_close(layer(seq), layer(seq.reshape(10, 64)).reshape(2, 5, 96))


@needs_onednn
def test_bfloat16_layers_keep_only_the_reordered_weight():
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16, bias=False)).bfloat16()
    x = torch.randn(4, 64).bfloat16()
    ref = model(x)
    assert pack_linears(model, (8,)) == 0  # replaces the weight: nothing extra
    assert isinstance(model[0], OneDNNLinear) and not hasattr(model[0], "weight")
    torch.testing.assert_close(model(x).float(), ref.float(), rtol=2e-2, atol=2e-2)


def test_dense_linear_falls_back_to_the_plain_gemm_in_float32():
    w = torch.randn(8, 4)
    layer = dense_linear(w, None)
    assert isinstance(layer, DenseLinear) and layer.weight is w
    x = torch.randn(3, 4)
    torch.testing.assert_close(layer(x), F.linear(x, w))
