"""Which layer each weight of the default model becomes under `--quantization auto`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kernels.cpu import avx2_gemm_loaded
from runtime.layers.quantized_linear import BlockLinear
from runtime.model_loader import weight_quant
from runtime.model_loader.loader import load_tokenizer
from runtime.model_runner import ModelRunner
from runtime.server_args import SchedulerArgs
from tests.conftest import REFERENCE, chat_ids, prefill_logits


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


@pytest.mark.skipif(not avx2_gemm_loaded(), reason="needs AVX2 and a C++ compiler")
def test_float32_blocks_keep_the_reference_logits():
    """In float32 the file's blocks (Q4_1, and Q8_0 for the tied head) run on the AVX2 kernel
    with two-part activations: the logits stay those of the dequantized reference, where one int8 part had turned "The capital
    of France is Paris." into another answer (its first token's lead is 0.08 nats)."""
    reference = ModelRunner(SchedulerArgs(max_total_tokens=256, log_level="warning", **REFERENCE))
    blocks = ModelRunner(SchedulerArgs(dtype="float32", quantization="auto", max_total_tokens=256))
    assert isinstance(blocks.model.model.layers[0].mlp.down_proj, BlockLinear)
    assert isinstance(blocks.model.logits_proj, BlockLinear) and blocks.model.logits_proj.bits == 8
    tok = load_tokenizer(blocks.model_folder)
    for question in ("What is the capital of France?", "List three prime numbers."):
        ids = chat_ids(tok, question)
        ref = prefill_logits(reference, ids).float().log_softmax(-1)
        got = prefill_logits(blocks, ids).float().log_softmax(-1)
        assert torch.equal(got.argmax(-1), ref.argmax(-1))
        top = ref.topk(5, dim=-1).indices
        assert (got.gather(-1, top) - ref.gather(-1, top)).abs().max() < 0.02
