"""Our model against transformers on the same GGUF file: greedy tokens and prefill logits."""

from __future__ import annotations

import os

import pytest
import torch

from runtime.model_loader import default_model_path
from runtime.model_runner import ModelRunner
from runtime.server_args import ServerArgs
from tests.conftest import REFERENCE, prefill_logits

NEW_TOKENS = 32


@pytest.fixture(scope="module")
def hf_model():
    from transformers import AutoModelForCausalLM

    path = default_model_path()
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32
    )
    return model.eval()


def test_greedy_matches_transformers(engine, hf_model, prompt_ids):
    ours = engine.generate(
        input_ids=prompt_ids,
        sampling_params={"temperature": 0, "max_new_tokens": NEW_TOKENS},
    )
    eos = engine.tokenizer.eos_token_id
    for ids, res in zip(prompt_ids, ours):
        with torch.inference_mode():
            out = hf_model.generate(
                torch.tensor([ids]),
                do_sample=False,
                max_new_tokens=NEW_TOKENS,
                eos_token_id=eos,
                pad_token_id=eos,
            )
        theirs = out[0, len(ids) :].tolist()
        assert res["output_ids"] == theirs, engine.tokenizer.decode(ids)
    # The chat prompts end on the end-of-turn token, as a chat model should.
    assert any(r["meta_info"]["finish_reason"]["type"] == "stop" for r in ours)


def test_prefill_logits_match_transformers(engine, hf_model, prompt_ids):
    runner = ModelRunner(ServerArgs(max_total_tokens=1024, max_running_requests=2, **REFERENCE))
    for ids in prompt_ids:
        ours = prefill_logits(runner, ids)
        with torch.inference_mode():
            theirs = hf_model(torch.tensor([ids])).logits[0].float()
        assert (ours - theirs).abs().max().item() < 1e-3
