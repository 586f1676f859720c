"""Swaps a loaded model's linear layers for weight-only quantized ones (`--quantization`).

`auto` keeps what a GGUF file quantized in the file's own numbers: its 4-bit tensors become
int4 layers with the file's scales and minimums, group for group. The token embedding (Q8_0 in
the default model) stays a dense table for lookups; its use as the tied output projection is the
largest single matmul of a small model, so it becomes an int8 layer with one scale per row.
`int4` / `int8` quantize dense weights at load, whatever the checkpoint.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict

import torch
from torch import nn

from runtime.layers.packed_linear import dense_linear
from runtime.layers.quantized_linear import Int4Linear, Int8Linear
from runtime.model_loader.gguf_quant import (
    GROUP,
    GroupQuantized,
    quantize_int4,
    read_group_quantized,
)

logger = logging.getLogger(__name__)

KEPT_TYPES = ("Q4_0", "Q4_1", "Q8_0")


def resolve_quantization(name: str, device: torch.device, gguf_path: str | None) -> str:
    """`auto` is `gguf` (the file's own blocks) for a GGUF source on the CPU, else `none`."""
    if name in ("int4", "int8") and device.type != "cpu":
        raise ValueError(f"quantization: {name} runs on the CPU kernels only; use none on CUDA")
    if name == "auto":
        return "gguf" if gguf_path is not None and device.type == "cpu" else "none"
    return name


QUANTIZED_FILE = os.path.join("gguf-blocks", "blocks.safetensors")  # not a checkpoint shard


def gguf_quantized_weights(path: str, cache_folder: str) -> dict[str, GroupQuantized]:
    """The file's Q4_0 / Q4_1 / Q8_0 tensors under their Hugging Face names, rows in our order.

    Parsing a GGUF file's metadata takes seconds, so the blocks are kept beside the converted
    folder after the first read."""
    cached = os.path.join(cache_folder, QUANTIZED_FILE)
    if os.path.exists(cached):
        return _load_blocks(cached)
    out = _read_blocks(path)
    from safetensors.torch import save_file

    flat = {}
    for name, q in out.items():
        flat[f"{name}.codes"], flat[f"{name}.scales"] = q.codes, q.scales
        if q.zeros is not None:
            flat[f"{name}.zeros"] = q.zeros
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    save_file(flat, cached + ".tmp")
    os.replace(cached + ".tmp", cached)
    return out


def _load_blocks(cached: str) -> dict[str, GroupQuantized]:
    from safetensors.torch import load_file

    flat = load_file(cached)
    out = {}
    for key in flat:
        if key.endswith(".codes"):
            name = key[: -len(".codes")]
            codes = flat[key]
            bits = 8 if codes.dtype == torch.int8 else 4
            out[name] = GroupQuantized(
                bits, codes, flat[f"{name}.scales"], flat.get(f"{name}.zeros")
            )
    return out


def _read_blocks(path: str) -> dict[str, GroupQuantized]:
    import gguf

    from runtime.model_loader.gguf_loader import (
        gguf_hf_config,
        hf_name,
        rope_heads,
        unpermute_index,
    )

    reader = gguf.GGUFReader(path)
    cfg = gguf_hf_config(reader)
    out = {}
    for t in reader.tensors:
        if t.tensor_type.name not in KEPT_TYPES:
            continue
        name = hf_name(t.name)
        rows, cols = int(t.shape[1]), int(t.shape[0])  # GGUF lists the fastest dimension first
        q = read_group_quantized(t.tensor_type.name, t.data, (rows, cols))
        heads = rope_heads(name, cfg)
        out[name] = q.take_rows(unpermute_index(rows, heads)) if heads else q
    return out


def _stack(parts: list[tuple[int, GroupQuantized]]) -> GroupQuantized:
    parts = [q for _, q in sorted(parts, key=lambda p: p[0])]
    return GroupQuantized(
        4,
        torch.cat([q.codes for q in parts]),
        torch.cat([q.scales for q in parts]),
        torch.cat([q.zeros for q in parts]),
        parts[0].group,
    )


def _linears(model: nn.Module) -> dict[str, tuple[nn.Module, str, nn.Linear]]:
    """Every decoder nn.Linear by its weight's parameter name: (parent, attribute, module)."""
    found = {}
    for parent_name, parent in model.named_modules():
        for attr, child in parent.named_children():
            if isinstance(child, nn.Linear) and attr != "lm_head":
                found[f"{parent_name}.{attr}.weight"] = (parent, attr, child)
    return found


def _bias(linear: nn.Linear) -> torch.Tensor | None:
    return None if linear.bias is None else linear.bias.data


def quantize_model(
    model: nn.Module,
    mode: str,
    gguf_path: str | None,
    cache_folder: str,
    dtype: torch.dtype,
    dense_from: int | None,
    reorder: bool = True,
) -> int:
    """Applies `mode` (gguf, int4, int8) in place; returns the bytes the quantized layers hold.
    Batches of `dense_from` rows or more use the dense weights (reordered for oneDNN unless
    `reorder` is False); None drops them."""

    def dense(w: torch.Tensor, bias: torch.Tensor | None) -> dict:
        if dense_from is None:
            return {}
        return {"dense": dense_linear(w, bias, reorder), "dense_from": dense_from}

    held = 0
    linears = _linears(model)
    if mode == "gguf":
        parts: dict[str, list] = defaultdict(list)
        coverage: dict[str, int] = defaultdict(int)
        for name, q in gguf_quantized_weights(gguf_path, cache_folder).items():
            target = model.checkpoint_target(name)
            if target is None or target[0] not in linears or q.bits != 4:
                continue
            pname, rows = target
            parts[pname].append((0 if rows is None else rows.start, q))
            coverage[pname] += q.codes.shape[0]
        for pname, (parent, attr, linear) in linears.items():
            if coverage.get(pname) != linear.out_features:
                continue  # some rows are not 4-bit in the file: the layer stays dense
            layer = Int4Linear(
                _stack(parts[pname]),
                _bias(linear),
                dtype,
                **dense(linear.weight.data, _bias(linear)),
            )
            setattr(parent, attr, layer)
            held += layer.weight_bytes()
    else:
        for parent, attr, linear in linears.values():
            w, bias = linear.weight.data, _bias(linear)
            if mode == "int4" and w.shape[1] % GROUP:
                continue  # inputs that do not split into groups of 32 stay dense
            if mode == "int4":
                layer = Int4Linear(quantize_int4(w), bias, dtype, **dense(w, bias))
            else:
                layer = Int8Linear(w, bias, dtype, **dense(w, bias))
            setattr(parent, attr, layer)
            held += layer.weight_bytes()
    head = model.lm_head_weight.data
    model.logits_proj = Int8Linear(head, None, dtype, **dense(head, None))
    held += model.logits_proj.weight_bytes()
    logger.info("weights quantized (%s): quantized layers hold %.0f MiB", mode, held / 2**20)
    return held
