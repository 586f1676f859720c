"""The backend programs use when `run()` is given none."""

from __future__ import annotations

_default_backend = None


def set_default_backend(backend) -> None:
    global _default_backend
    _default_backend = backend


def get_default_backend():
    return _default_backend
