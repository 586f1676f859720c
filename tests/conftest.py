"""Shared fixtures: the default model loaded once per session, and a raw prefill helper."""

from __future__ import annotations

import pytest
import torch

from kernels.forward_batch import ForwardBatch, ForwardMode

CHAT_PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers.",
    "How do I reverse a list in Python?",
]
RAW_PROMPTS = [
    "The quick brown fox",
    "def fibonacci(n):\n",
    "Once upon a time, in a small village,",
    "1, 2, 3, 4, 5,",
]
# The float32 reference: exact comparisons (with transformers, batched against alone, cache on
# against off) run in it. bfloat16 and quantized weights are measured, not asserted, there
# (benchmarks/bench_quality.py), except under --enable-deterministic-inference. It runs without
# the packed float32 GEMM copies: slower, and gigabytes lighter.
REFERENCE = {"dtype": "float32", "quantization": "none", "disable_packed_gemm": True}


def chat_ids(tokenizer, text: str) -> list[int]:
    enc = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
    )
    return list(enc["input_ids"] if hasattr(enc, "keys") else enc)


@pytest.fixture(scope="session")
def engine():
    from runtime import Engine

    eng = Engine(max_total_tokens=8192, debug_check_memory=True, log_level="warning", **REFERENCE)
    yield eng
    eng.shutdown()


@pytest.fixture(scope="session")
def prompt_ids(engine) -> list[list[int]]:
    """Eight varied prompts: four chat-templated, four raw."""
    tok = engine.tokenizer
    return [chat_ids(tok, p) for p in CHAT_PROMPTS] + [tok.encode(p) for p in RAW_PROMPTS]


def prefill_logits(runner, ids: list[int]) -> torch.Tensor:
    """Runs one prompt through a ModelRunner (not shared with a live scheduler); logits per token."""
    slot = runner.req_to_token_pool.alloc()
    kv = runner.kv_pool.alloc(len(ids))
    try:
        runner.req_to_token_pool.req_to_token[slot, : len(ids)] = kv
        fb = ForwardBatch(
            mode=ForwardMode.EXTEND,
            input_ids=torch.tensor(ids),
            positions=torch.arange(len(ids)),
            out_cache_loc=kv,
            req_pool_indices=torch.tensor([slot]),
            seq_lens=torch.tensor([len(ids)]),
            req_to_token=runner.req_to_token_pool.req_to_token,
            kv_cache=runner.kv_pool,
            seq_lens_cpu=[len(ids)],
            prefix_lens_cpu=[0],
            extend_lens_cpu=[len(ids)],
        )
        return runner.forward(fb, torch.arange(len(ids)))
    finally:
        runner.kv_pool.free(kv)
        runner.req_to_token_pool.free(slot)
