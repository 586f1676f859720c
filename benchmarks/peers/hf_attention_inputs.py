"""The default model's per-layer post-rotary keys and queries, from transformers in our venv.

What `runtime.kv_compression.methods.select_positions` reads, computed independently of our
runtime, so its choices can be set beside kvpress's on the same model and prompt. Float32, eager
attention; greedy decoding over a cache pruned to given positions mirrors kvpress's pipeline.
"""

from __future__ import annotations

import torch


def load_model(folder: str):
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager"
    ).eval()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


@torch.no_grad()
def keys_and_queries(model, ids: list[int]):
    """Prefills `ids`. Returns (keys and values per layer [Hkv, n, D], queries per layer
    [H, n, D], the last position's logits)."""
    from transformers import DynamicCache

    layers = model.model.layers
    queries: list[torch.Tensor | None] = [None] * len(layers)

    def capture(i):
        def hook(module, args, kwargs):
            h = kwargs["hidden_states"]  # [1, n, hidden]
            cos, sin = kwargs["position_embeddings"]  # [1, n, D]
            q = module.q_proj(h).view(1, h.shape[1], -1, module.head_dim).transpose(1, 2)
            q = q * cos.unsqueeze(1) + _rotate_half(q) * sin.unsqueeze(1)
            queries[i] = q[0].clone()

        return hook

    hooks = [
        layer.self_attn.register_forward_pre_hook(capture(i), with_kwargs=True)
        for i, layer in enumerate(layers)
    ]
    try:
        cache = DynamicCache(config=model.config)
        out = model(input_ids=torch.tensor([ids]), cache=cache)
    finally:
        for h in hooks:
            h.remove()
    keys = [layer.keys[0].clone() for layer in cache.layers]
    values = [layer.values[0].clone() for layer in cache.layers]
    return keys, values, queries, out.logits[0, -1]


@torch.no_grad()
def greedy_pruned(model, keys, values, last_logits, positions, new_tokens: int) -> list[int]:
    """Greedy tokens over a cache of each layer's K/V at `positions[l]` ([Hkv, k_l], or None
    for every position); decoding goes on at the prompt's length, as in kvpress's pipeline."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    for layer, (k, v, pos) in enumerate(zip(keys, values, positions)):
        if pos is not None:
            idx = pos.unsqueeze(-1).expand(-1, -1, k.shape[-1])
            k, v = k.gather(1, idx), v.gather(1, idx)
        cache.update(k.unsqueeze(0).contiguous(), v.unsqueeze(0).contiguous(), layer)
    n = keys[0].shape[1]
    model.set_attn_implementation("sdpa")  # eager's mask does not fit layers of other lengths
    try:
        return _greedy(model, cache, last_logits, n, new_tokens)
    finally:
        model.set_attn_implementation("eager")


def _greedy(model, cache, last_logits, n: int, new_tokens: int) -> list[int]:
    token = int(last_logits.argmax())
    out = [token]
    for i in range(new_tokens - 1):
        logits = model(
            input_ids=torch.tensor([[token]]), cache=cache, position_ids=torch.tensor([[n + i]])
        ).logits
        token = int(logits[0, -1].argmax())
        out.append(token)
    return out
