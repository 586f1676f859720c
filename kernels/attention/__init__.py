"""Attention backends share one interface; `create_backend` is the registry."""

from kernels.attention.backend import AttentionBackend, create_backend

__all__ = ["AttentionBackend", "create_backend"]
