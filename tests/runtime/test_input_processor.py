"""Request limits checked before anything reaches the scheduler."""

from __future__ import annotations

import pytest

from runtime.input_processor import InputProcessor
from runtime.io_struct import GenerateRequest
from runtime.sampling.sampling_params import MAX_STOP_STRINGS


class CharTokenizer:
    def encode(self, text: str) -> list[int]:
        return [ord(c) % 100 for c in text]


def processor(max_fanout: int = 8) -> InputProcessor:
    return InputProcessor(CharTokenizer(), context_len=256, vocab_size=100, max_fanout=max_fanout)


def test_fanout_counts_prompts_times_n():
    batch, reqs = processor().process(GenerateRequest(["ab", "cd"], {"n": 4}))
    assert batch and len(reqs) == 8 and reqs[0].rid.endswith("-0")
    with pytest.raises(ValueError, match=r"^n: asks for 1000000 sequences.*at most 8"):
        processor().process(GenerateRequest("ab", {"n": 1000000}))
    with pytest.raises(ValueError, match=r"^prompt / n: asks for 9 sequences"):
        processor().process(GenerateRequest(["a"] * 9))


@pytest.mark.parametrize("timeout", [0, -1, "5", True])
def test_timeout_must_be_positive_seconds(timeout):
    with pytest.raises(ValueError, match="^timeout: "):
        processor().process(GenerateRequest("ab", timeout=timeout))


def test_stop_strings_are_bounded():
    with pytest.raises(ValueError, match="sampling_params.stop: at most"):
        processor().process(GenerateRequest("ab", {"stop": ["x"] * (MAX_STOP_STRINGS + 1)}))
    with pytest.raises(ValueError, match="sampling_params.stop: a stop string may be"):
        processor().process(GenerateRequest("ab", {"stop": "x" * 10000}))


def test_prompt_longer_than_the_context_is_refused():
    with pytest.raises(ValueError, match="exceeds the context length 256"):
        processor().process(GenerateRequest("a" * 250, {"max_new_tokens": 8}))


def test_generation_config_gives_the_defaults_a_request_does_not_set(tmp_path):
    from runtime.model_loader.loader import load_generation_defaults

    assert load_generation_defaults(str(tmp_path)) == {}
    (tmp_path / "generation_config.json").write_text(
        '{"temperature": 0.6, "top_p": 0.9, "top_k": 0, "max_length": 99, "bos_token_id": 1}'
    )
    defaults = load_generation_defaults(str(tmp_path))
    assert defaults == {"temperature": 0.6, "top_p": 0.9, "top_k": -1}
    p = InputProcessor(CharTokenizer(), 256, 100, 8, defaults)
    _, [plain] = p.process(GenerateRequest("ab", {"max_new_tokens": 4}))
    assert (plain.params.temperature, plain.params.top_p) == (0.6, 0.9)
    _, [given] = p.process(GenerateRequest("ab", {"temperature": 0, "top_p": None}))
    assert (given.params.temperature, given.params.top_p) == (0, 0.9)
