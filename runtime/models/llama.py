"""The Llama family (Llama 2/3, SmolLM2, Mistral, and Qwen2 with its qkv bias).

Q, K and V share one projection, as do the MLP's gate and up: one matmul each instead of three
and two. Checkpoint tensors keep their Hugging Face names and are stacked on load.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kernels.forward_batch import ForwardBatch
from runtime.layers.activation import silu_and_mul
from runtime.layers.attention import PagedAttention
from runtime.layers.rmsnorm import RMSNorm
from runtime.layers.rotary import RotaryEmbedding
from runtime.model_loader.config import ModelConfig

# checkpoint name part -> (our parameter name part, shard index)
STACKED = {
    "q_proj": ("qkv_proj", 0),
    "k_proj": ("qkv_proj", 1),
    "v_proj": ("qkv_proj", 2),
    "gate_proj": ("gate_up_proj", 0),
    "up_proj": ("gate_up_proj", 1),
}


class LlamaAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_id: int) -> None:
        super().__init__()
        h, d = cfg.hidden_size, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, d
        self.shard_sizes = [cfg.num_heads * d, cfg.num_kv_heads * d, cfg.num_kv_heads * d]
        self.qkv_proj = nn.Linear(h, sum(self.shard_sizes), bias=cfg.attention_bias)
        self.o_proj = nn.Linear(cfg.num_heads * d, h, bias=False)
        self.attn = PagedAttention(layer_id, cfg.num_heads, cfg.num_kv_heads, d)

    def forward(self, cos_sin, x: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        t = x.shape[0]
        q, k, v = self.qkv_proj(x).split(self.shard_sizes, dim=-1)
        q = q.view(t, self.num_heads, self.head_dim)
        k = k.view(t, self.num_kv_heads, self.head_dim)
        v = v.view(t, self.num_kv_heads, self.head_dim)
        q, k = RotaryEmbedding.apply(cos_sin, q, k)
        return self.o_proj(self.attn(q, k, v, batch))


class LlamaMLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.shard_sizes = [cfg.intermediate_size, cfg.intermediate_size]
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(silu_and_mul(self.gate_up_proj(x)))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_id: int) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(cfg, layer_id)
        self.mlp = LlamaMLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, cos_sin, x, batch, residual=None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: the previous layer's MLP output, added to `residual` here (or the embeddings, for
        the first layer, with no residual). Returns (this layer's MLP output, residual): the
        add waits for the next norm so that the two run as one."""
        if residual is None:
            residual, h = x, self.input_layernorm(x)
        else:
            residual, h = self.input_layernorm.add_forward(x, residual)
        residual, h = self.post_attention_layernorm.add_forward(
            self.self_attn(cos_sin, h, batch), residual
        )
        return self.mlp(h), residual


class LlamaModel(nn.Module):
    def __init__(self, cfg: ModelConfig, max_position: int) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.rotary = RotaryEmbedding(cfg.head_dim, max_position, cfg.rope_theta, cfg.rope_scaling)
        self.layers = nn.ModuleList(LlamaDecoderLayer(cfg, i) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg: ModelConfig, max_position: int | None = None) -> None:
        super().__init__()
        self.config = cfg
        self.model = LlamaModel(cfg, max_position or cfg.max_position_embeddings)
        self.tied = cfg.tie_word_embeddings
        if not self.tied:
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.logits_proj: nn.Module | None = None  # a faster projection onto the vocabulary, if set

    def attention_layers(self) -> list[PagedAttention]:
        return [layer.self_attn.attn for layer in self.model.layers]

    @property
    def lm_head_weight(self) -> torch.Tensor:
        return self.model.embed_tokens.weight if self.tied else self.lm_head.weight

    def forward(self, batch: ForwardBatch) -> torch.Tensor:
        """Returns the final hidden states `[num_tokens, hidden]`; logits are taken by the caller."""
        x = self.model.embed_tokens(batch.input_ids)
        cos_sin = self.model.rotary.cos_sin(batch.positions, x.dtype)
        residual = None
        for layer in self.model.layers:
            x, residual = layer(cos_sin, x, batch, residual)
        return self.model.norm.add_forward(x, residual)[1]

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.logits_proj is not None:
            return self.logits_proj(hidden).float()
        return F.linear(hidden, self.lm_head_weight).float()

    def checkpoint_target(self, name: str) -> tuple[str, slice | None] | None:
        """Where a checkpoint tensor goes: (parameter name, rows of it), or None to skip it."""
        if name.endswith("rotary_emb.inv_freq") or (name == "lm_head.weight" and self.tied):
            return None
        for part, (stacked, shard) in STACKED.items():
            if f".{part}." in name:
                sizes = self.get_submodule(
                    name.rsplit(".", 2)[0]
                ).shard_sizes  # the attn / mlp module
                start = sum(sizes[:shard])
                return name.replace(part, stacked), slice(start, start + sizes[shard])
        return name, None
