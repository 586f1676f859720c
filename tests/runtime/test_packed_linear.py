from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from runtime.layers.packed_linear import (
    PackedLinear,
    pack_linears,
    pack_sizes,
    packed_gemm_available,
)

pytestmark = pytest.mark.skipif(
    not packed_gemm_available(torch.device("cpu"), torch.float32), reason="needs MKL's packed GEMM"
)


@pytest.mark.parametrize("rows", [1, 3, 8, 9, 20, 32, 33, 100])
def test_matches_plain_linear_for_every_row_count(rows):
    torch.manual_seed(rows)
    w, b = torch.randn(48, 40), torch.randn(48)
    layer = PackedLinear(w, b, (8, 32))
    x = torch.randn(rows, 40)
    out = layer(x)
    assert out.shape == (rows, 48)
    assert torch.allclose(out, F.linear(x, w, b), atol=1e-4)


def test_pack_linears_swaps_modules_and_sizes_follow_the_batch_limit():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Sequential(nn.Linear(6, 2, bias=False)))
    x = torch.randn(5, 4)
    ref = model(x)
    extra = pack_linears(model, (8,))
    assert isinstance(model[0], PackedLinear) and isinstance(model[2][0], PackedLinear)
    assert extra > 0 and torch.allclose(model(x), ref, atol=1e-5)
    assert pack_sizes(4) == (8,) and pack_sizes(8) == (8,) and pack_sizes(64) == (8, 32)
