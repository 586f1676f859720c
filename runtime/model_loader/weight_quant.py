"""Swaps a loaded model's linear layers for quantized ones (`--quantization`).

`auto` keeps what a GGUF file quantized in the file's own numbers: its 4-bit tensors become
4-bit layers with the file's scales and minimums, group for group. `int4` / `int8` quantize
dense weights at load, whatever the checkpoint.

On a CPU with our kernels built (bfloat16 on AVX512-VNNI, float32 on AVX2), every decoder
layer runs on a block kernel (`BlockLinear`) and no dense weight is kept; otherwise on torch's
weight-only kernels, with the dense weight for batches past `dense_from` rows. The output
projection (the tied embedding, Q8_0 in the default model) is the largest single matmul of a
small model: int8 with one scale per row on torch's kernels; the file's blocks on the float32
block kernel; and a bfloat16 GEMM beside the bfloat16 block kernel, whose one int8 part per
activation is too coarse for the logits.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict

import torch
from torch import nn

from kernels.cpu import avx2_gemm_loaded, cpu_kernels_loaded
from runtime.layers.packed_linear import dense_linear
from runtime.layers.quantized_linear import DEQUANTIZE_FROM, BlockLinear, Int4Linear, Int8Linear
from runtime.model_loader.gguf_quant import (
    GROUP,
    GroupQuantized,
    quantize_int4,
    quantize_int8_blocks,
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


# not a checkpoint shard; v2 stores 4-bit minimums (w = q*scale + min) as the file does
QUANTIZED_FILE = os.path.join("gguf-blocks", "blocks-v2.safetensors")


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
        if q.mins is not None:
            flat[f"{name}.mins"] = q.mins
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
                bits, codes, flat[f"{name}.scales"], flat.get(f"{name}.mins")
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
        torch.cat([q.mins for q in parts]),
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


def block_kernel_applies(dtype: torch.dtype) -> bool:
    """Whether the quantized layers run on our block kernels: bfloat16 on AVX512-VNNI, float32
    on AVX2 (where torch's weight-only kernels ran 3-66x slower than the dense GEMM)."""
    if dtype == torch.bfloat16:
        return cpu_kernels_loaded()
    return dtype == torch.float32 and avx2_gemm_loaded()


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
    On torch's kernels, batches of `dense_from` rows or more use the dense weights (reordered for
    oneDNN unless `reorder` is False); None drops them."""
    blocks = block_kernel_applies(dtype)

    def layer(q: GroupQuantized | None, w: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
        """The layer for weight `w`, from its quantized form `q` when there is one."""
        if blocks and w.shape[1] % GROUP == 0:
            dequantize = None if dense_from is None or dtype != torch.float32 else DEQUANTIZE_FROM
            return BlockLinear(q if q is not None else quantize_int8_blocks(w), bias, dequantize)
        dense = {} if dense_from is None else {
            "dense": dense_linear(w, bias, reorder), "dense_from": dense_from
        }  # fmt: skip
        if q is not None and q.bits == 4:
            return Int4Linear(q, bias, dtype, **dense)
        return Int8Linear(w, bias, dtype, **dense)

    held = 0
    linears = _linears(model)
    file_blocks = gguf_quantized_weights(gguf_path, cache_folder) if mode == "gguf" else {}
    if mode == "gguf":
        parts: dict[str, list] = defaultdict(list)
        coverage: dict[str, int] = defaultdict(int)
        for name, q in file_blocks.items():
            target = model.checkpoint_target(name)
            if target is None or target[0] not in linears or q.bits != 4:
                continue
            pname, rows = target
            parts[pname].append((0 if rows is None else rows.start, q))
            coverage[pname] += q.codes.shape[0]
        chosen = {p: _stack(parts[p]) for p, (_, _, lin) in linears.items()
                  if coverage.get(p) == lin.out_features}  # fmt: skip
        # a layer with some rows not 4-bit in the file stays dense
    else:
        chosen = {
            p: quantize_int4(lin.weight.data) if mode == "int4" else None
            for p, (_, _, lin) in linears.items()
            if mode == "int8" or lin.in_features % GROUP == 0
        }  # int4: inputs that do not split into groups of 32 stay dense
    for pname, q in chosen.items():
        parent, attr, linear = linears[pname]
        new = layer(q, linear.weight.data, _bias(linear))
        setattr(parent, attr, new)
        held += new.weight_bytes()
    head = model.lm_head_weight.data
    if blocks and dtype == torch.bfloat16:
        # A greedy token is decided by the gaps between logits, and the bfloat16 kernel's one
        # int8 part per activation closed enough of them to change the default model's answers;
        # the head stays a bfloat16 GEMM on oneDNN.
        model.logits_proj = dense_linear(head, None, reorder)
        held += head.numel() * head.element_size()
    else:  # float32 blocks (two-part activations) take the file's own (Q8_0 here)
        head_name = "model.embed_tokens.weight" if model.tied else "lm_head.weight"
        model.logits_proj = layer(file_blocks.get(head_name) if blocks else None, head, None)
        held += model.logits_proj.weight_bytes()
    logger.info(
        "weights quantized (%s, %s kernel): quantized layers hold %.0f MiB",
        mode, "block" if blocks else "torch", held / 2**20,
    )  # fmt: skip
    return held
