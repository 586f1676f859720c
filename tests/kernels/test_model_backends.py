"""Greedy outputs of the whole default model agree across attention backends.

Triton runs in its interpreter on the CPU (slow, so few tokens); on CUDA every backend runs at
its own speed, Triton with and without CUDA graphs. One batch shares a system prompt, so its
decode steps go through cascade attention over the shared radix prefix; the other shares
nothing (on CUDA it replays graphs).
"""

from __future__ import annotations

import pytest
import torch

from runtime.engine import Engine
from tests.conftest import RAW_PROMPTS

pytestmark = pytest.mark.slow

CUDA = torch.cuda.is_available()
CONFIGS = {
    "torch_native": {"attention_backend": "torch_native"},
    "triton": {"attention_backend": "triton"},
}
if CUDA:
    CONFIGS["triton-eager"] = {"attention_backend": "triton", "disable_cuda_graph": True}
    CONFIGS["flashinfer"] = {"attention_backend": "flashinfer"}
SYSTEM = (
    "You are a geography tutor. Answer every question in one short sentence, naming the place "
    "and one fact about it."
)
QUESTIONS = ["What is the capital of France?", "Where is Peru?", "Name a river in Egypt."]


def _generate(config: dict, dtype: str) -> tuple[list[list[int]], dict]:
    eng = Engine(
        **config,
        dtype=dtype,
        max_total_tokens=4096,
        log_level="error",
        debug_check_memory=True,
    )
    try:
        tok = eng.tokenizer
        prompts = [
            tok.apply_chat_template(
                [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}],
                add_generation_prompt=True,
                tokenize=False,
            )
            for q in QUESTIONS
        ]
        params = {"max_new_tokens": 24 if CUDA else 5, "temperature": 0}
        eng.generate(prompts[0], {**params, "max_new_tokens": 1})  # caches the system prompt
        out = eng.generate(prompts, params)
        out += eng.generate(RAW_PROMPTS if CUDA else RAW_PROMPTS[:2], params)
        return [o["output_ids"] for o in out], eng.get_server_info()
    finally:
        eng.shutdown()


def test_greedy_outputs_agree_across_backends():
    dtype = "bfloat16" if CUDA else "float32"
    results = {name: _generate(config, dtype) for name, config in CONFIGS.items()}
    ref_ids, _ = results["torch_native"]
    assert all(len(ids) > 0 for ids in ref_ids)
    for name, (ids, info) in results.items():
        assert ids == ref_ids, name
        assert info["cascade_decode_tokens"] > 0, name  # the shared prefix was read as a group
