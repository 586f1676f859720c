"""The grammar backends by name: the one list the CLI and the scheduler read.

A backend's module (and its library) is imported only when it is picked.
"""

from __future__ import annotations

import importlib

from runtime.constrained.base import GrammarBackend

GRAMMAR_BACKENDS = {
    "xgrammar": "runtime.constrained.xgrammar_backend:XGrammarBackend",
    "outlines": "runtime.constrained.outlines_backend:OutlinesBackend",
    "none": None,  # constrained decoding off
}


def create_grammar_backend(name: str, tokenizer, vocab_size: int) -> GrammarBackend | None:
    if name not in GRAMMAR_BACKENDS:
        raise ValueError(f"grammar_backend: must be one of {tuple(GRAMMAR_BACKENDS)}, got {name!r}")
    if GRAMMAR_BACKENDS[name] is None:
        return None
    module, cls = GRAMMAR_BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)(tokenizer, vocab_size)
