"""Converts a GGUF file into a Hugging Face folder (config, safetensors, tokenizer).

Converting once and caching the folder makes every later start a plain folder load.
"""

from __future__ import annotations

import json
import logging
import os
import re

import numpy as np
import torch

logger = logging.getLogger(__name__)

_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def _field(reader, key: str, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def gguf_hf_config(reader) -> dict:
    """Maps GGUF metadata onto the keys of a Hugging Face config.json."""
    arch = _field(reader, "general.architecture")
    if arch not in _ARCHITECTURES:
        raise ValueError(
            f"GGUF architecture {arch!r} is not supported; supported: {sorted(_ARCHITECTURES)}"
        )
    p = f"{arch}."
    heads = int(_field(reader, p + "attention.head_count"))
    hidden = int(_field(reader, p + "embedding_length"))
    names = {t.name for t in reader.tensors}
    if "rope_freqs.weight" in names:
        raise ValueError(
            "GGUF files with rope_freqs (Llama 3.1 rope scaling) are not supported; "
            "load the model from its safetensors folder instead"
        )
    vocab = _field(reader, p + "vocab_size") or len(_field(reader, "tokenizer.ggml.tokens"))
    cfg = {
        "architectures": [_ARCHITECTURES[arch]],
        "model_type": arch,
        "vocab_size": int(vocab),
        "hidden_size": hidden,
        "intermediate_size": int(_field(reader, p + "feed_forward_length")),
        "num_hidden_layers": int(_field(reader, p + "block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(_field(reader, p + "attention.head_count_kv", heads)),
        "head_dim": int(_field(reader, p + "rope.dimension_count", hidden // heads)),
        "rms_norm_eps": float(_field(reader, p + "attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": float(_field(reader, p + "rope.freq_base", 10000.0)),
        "max_position_embeddings": int(_field(reader, p + "context_length", 4096)),
        "tie_word_embeddings": "output.weight" not in names,
        "attention_bias": "blk.0.attn_q.bias" in names,
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _field(reader, "tokenizer.ggml.eos_token_id"),
    }
    scaling = _field(reader, p + "rope.scaling.type")
    if scaling and scaling != "none":
        cfg["rope_scaling"] = {
            "rope_type": scaling,
            "factor": float(_field(reader, p + "rope.scaling.factor", 1.0)),
        }
    return cfg


def _unpermute_rope(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp interleaves the rotary halves of Q and K rows; undo it for rotate-half rope."""
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_state_dict(reader, cfg: dict) -> dict[str, torch.Tensor]:
    from gguf.quants import dequantize
    from tqdm import tqdm

    out: dict[str, torch.Tensor] = {}
    for t in tqdm(reader.tensors, desc="converting GGUF", unit="tensor", disable=None):
        name = hf_name(t.name)
        w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        heads = rope_heads(name, cfg)
        if heads:
            w = _unpermute_rope(w, heads)
        out[name] = torch.from_numpy(np.array(w, copy=True))
    return out


def hf_name(gguf_name: str) -> str:
    """The Hugging Face checkpoint name of a GGUF tensor."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", gguf_name)
    if not m or m.group(2) not in _LAYER_NAMES:
        raise ValueError(f"unexpected GGUF tensor {gguf_name!r}")
    return f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}.{m.group(3)}"


def rope_heads(name: str, cfg: dict) -> int:
    """How many heads' rows llama.cpp interleaved in this tensor (0: none)."""
    if cfg["model_type"] != "llama":
        return 0
    if name.endswith(("q_proj.weight", "q_proj.bias")):
        return cfg["num_attention_heads"]
    if name.endswith(("k_proj.weight", "k_proj.bias")):
        return cfg["num_key_value_heads"]
    return 0


def unpermute_index(rows: int, heads: int) -> np.ndarray:
    """The row order `_unpermute_rope` produces, to reorder a quantized tensor's rows alike."""
    return _unpermute_rope(np.arange(rows)[:, None], heads)[:, 0]


def convert_gguf(path: str, out_dir: str) -> None:
    """Writes config.json, model.safetensors and the tokenizer files of `path` into `out_dir`."""
    import gguf
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    reader = gguf.GGUFReader(path)
    cfg = gguf_hf_config(reader)
    state = gguf_state_dict(reader, cfg)
    tmp = out_dir + ".tmp"
    os.makedirs(tmp, exist_ok=True)
    save_file(state, os.path.join(tmp, "model.safetensors"))
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    tok = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    tok.save_pretrained(tmp)
    os.replace(tmp, out_dir)
    logger.info("converted %s into %s", path, out_dir)
