"""The attention backends by name: the one list the CLI and the model runner read.

Modules are imported only when their backend is picked: FlashInfer needs CUDA to import.
"""

from __future__ import annotations

import importlib

import torch

from kernels.attention.backend import AttentionBackend

ATTENTION_BACKENDS = {
    "torch_native": "kernels.attention.torch_native:TorchNativeBackend",
    "triton": "kernels.attention.triton_backend:TritonBackend",
    "flashinfer": "kernels.attention.flashinfer_backend:FlashInferBackend",
}


def create_backend(
    name: str, *, num_heads: int, num_kv_heads: int, head_dim: int, device: torch.device
) -> AttentionBackend:
    if name not in ATTENTION_BACKENDS:
        raise ValueError(
            f"attention_backend: must be one of {tuple(ATTENTION_BACKENDS)}, got {name!r}"
        )
    module, cls = ATTENTION_BACKENDS[name].split(":")
    backend = getattr(importlib.import_module(module), cls)
    return backend(num_heads, num_kv_heads, head_dim, device)
