"""Small random Llama-3 and Qwen2 checkpoints saved by transformers, loaded by our folder loader."""

from __future__ import annotations

import pytest
import torch

from runtime.layers.rotary import rope_inv_freq
from runtime.model_runner import ModelRunner
from runtime.server_args import ServerArgs
from tests.conftest import REFERENCE, prefill_logits

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}


def tiny_checkpoint(tmp_path, kind: str):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    common = dict(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    if kind == "llama3":
        cfg = LlamaConfig(
            **common, rope_theta=500000.0, rope_scaling=LLAMA3_ROPE, tie_word_embeddings=False
        )
        model = LlamaForCausalLM(cfg)
    else:
        cfg = Qwen2Config(**common, rope_theta=10000.0, tie_word_embeddings=True)
        model = Qwen2ForCausalLM(cfg)
        with torch.no_grad():  # random init leaves biases at zero; make them matter
            for layer in model.model.layers:
                layer.self_attn.q_proj.bias.normal_(0, 0.5)
                layer.self_attn.k_proj.bias.normal_(0, 0.5)
    model.eval().save_pretrained(tmp_path)
    return model


@pytest.mark.parametrize("kind", ["llama3", "qwen2"])
def test_folder_checkpoint_matches_transformers(tmp_path, kind):
    ref = tiny_checkpoint(tmp_path, kind)
    runner = ModelRunner(
        ServerArgs(
            model_path=str(tmp_path), max_total_tokens=1024, max_running_requests=2, **REFERENCE
        )
    )
    assert runner.config.architecture.lower().startswith(kind[:4])
    if kind == "qwen2":
        assert runner.config.attention_bias and runner.config.tie_word_embeddings
    ids = torch.randint(0, 300, (200,), generator=torch.Generator().manual_seed(1)).tolist()
    ours = prefill_logits(runner, ids)
    with torch.inference_mode():
        theirs = ref(torch.tensor([ids])).logits[0]
    assert (ours - theirs).abs().max().item() < 1e-4


def test_llama3_inv_freq_matches_transformers():
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cfg = LlamaConfig(
        hidden_size=512,
        num_attention_heads=4,
        rope_theta=500000.0,
        rope_scaling=LLAMA3_ROPE,
        max_position_embeddings=512,
    )
    theirs, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg, "cpu")
    ours, _ = rope_inv_freq(128, 500000.0, LLAMA3_ROPE)
    assert torch.allclose(ours, theirs.float(), rtol=1e-6)
    assert not torch.allclose(ours, rope_inv_freq(128, 500000.0, None)[0])


def test_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"]}')
    with pytest.raises(ValueError, match="not supported"):
        ModelRunner(ServerArgs(model_path=str(tmp_path), max_total_tokens=64))


def test_missing_model_path():
    with pytest.raises(FileNotFoundError, match="model_path"):
        ModelRunner(ServerArgs(model_path="/nonexistent/model.gguf", max_total_tokens=64))
