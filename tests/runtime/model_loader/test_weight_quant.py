"""Which layer each weight of the default model becomes under `--quantization auto`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from runtime.layers.quantized_linear import BlockLinear
from runtime.model_loader import weight_quant
from runtime.model_runner import ModelRunner
from runtime.server_args import SchedulerArgs


def test_beside_the_block_kernel_the_head_keeps_bfloat16_activations(monkeypatch):
    """The decoder's Q4_1 blocks go to the block kernel; the output projection stays a bfloat16
    GEMM, since the kernel's int8 activations changed the default model's greedy answers."""
    monkeypatch.setattr(weight_quant, "block_kernel_applies", lambda dtype: True)
    runner = ModelRunner(SchedulerArgs(dtype="bfloat16", max_total_tokens=256, log_level="warning"))
    blocks = [m for m in runner.model.model.modules() if isinstance(m, BlockLinear)]
    assert len(blocks) == 4 * runner.config.num_layers and all(b.bits == 4 for b in blocks)
    head = runner.model.logits_proj
    assert not isinstance(head, BlockLinear)
    weight = runner.model.lm_head_weight
    assert weight.dtype == torch.bfloat16 and weight.shape[0] == runner.config.vocab_size
    x = torch.randn(3, runner.config.hidden_size).bfloat16()
    ref = F.linear(x.float(), weight.float())
    out = head(x).float()
    assert ((out - ref).abs() <= ref.abs() * 2**-7 + 1e-2 * ref.abs().max()).all()
