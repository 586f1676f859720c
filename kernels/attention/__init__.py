"""Attention backends share one interface; `registry` names them."""

from kernels.attention.backend import AttentionBackend
from kernels.attention.registry import ATTENTION_BACKENDS, create_backend

__all__ = ["ATTENTION_BACKENDS", "AttentionBackend", "create_backend"]
