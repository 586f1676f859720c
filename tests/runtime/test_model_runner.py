"""Which attention backend a device gets, and the clear refusals."""

from __future__ import annotations

import pytest
import torch

from runtime.model_runner import resolve_attention_backend

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_is_triton_on_cuda_and_torch_native_on_cpu():
    assert resolve_attention_backend("auto", CUDA) == "triton"
    assert resolve_attention_backend("auto", CPU) == "torch_native"
    assert resolve_attention_backend("flashinfer", CUDA) == "flashinfer"


def test_gpu_backends_on_the_cpu(monkeypatch):
    with pytest.raises(ValueError, match="attention_backend: flashinfer needs a CUDA device"):
        resolve_attention_backend("flashinfer", CPU)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        resolve_attention_backend("triton", CPU)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_attention_backend("triton", CPU) == "triton"
