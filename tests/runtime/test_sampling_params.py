from __future__ import annotations

import pytest

from runtime.sampling.sampling_params import SamplingParams


def test_defaults_and_normalisation():
    sp = SamplingParams.from_dict({"stop": "x", "stop_token_ids": 5, "sampling_seed": 3})
    assert sp.stop == ["x"] and sp.stop_token_ids == [5] and sp.seed == 3
    assert SamplingParams.from_dict(None).max_new_tokens == 128
    assert SamplingParams.from_dict({"temperature": 0}).is_greedy


@pytest.mark.parametrize(
    "params, field",
    [
        ({"min_new_tokens": 5, "max_new_tokens": 2}, "min_new_tokens"),
        ({"frequency_penalty": 3}, "frequency_penalty"),
        ({"presence_penalty": -3}, "presence_penalty"),
        ({"ignore_eos": "yes"}, "ignore_eos"),
        ({"seed": 1.5}, "seed"),
        ({"stop_token_ids": [-1]}, "stop_token_ids"),
        ({"max_new_tokens": 1.0}, "max_new_tokens"),
        ({"regex": 5}, "regex"),
        ({"regex": "a+", "json_schema": "{}"}, "json_schema"),
        ({"stop_regex": ["x"]}, "stop_regex"),
    ],
)
def test_errors_name_the_field(params, field):
    with pytest.raises(ValueError, match=rf"sampling_params\.{field}"):
        SamplingParams.from_dict(params)


def test_length_checks():
    sp = SamplingParams.from_dict({"max_new_tokens": 10, "stop_token_ids": [3]})
    sp.check_lengths(prompt_len=6, context_len=16, vocab_size=10)
    with pytest.raises(ValueError, match="max_new_tokens"):
        sp.check_lengths(prompt_len=7, context_len=16, vocab_size=10)
    with pytest.raises(ValueError, match="stop_token_ids"):
        sp.check_lengths(prompt_len=1, context_len=16, vocab_size=3)


def test_sglang_clients_empty_extras_are_accepted_and_set_ones_refused():
    sent = {"regex": None, "json_schema": None, "stop_regex": [], "temperature": 0}
    sp = SamplingParams.from_dict(sent)
    assert sp.is_greedy and sp.constraint is None
    assert SamplingParams.from_dict({"ebnf": 'root ::= "a"'}).constraint == ("ebnf", 'root ::= "a"')
    with pytest.raises(ValueError, match=r"^sampling_params\.stop_regex: not supported"):
        SamplingParams.from_dict({"stop_regex": "a+"})
    tag = SamplingParams.from_dict({"structural_tag": '{"type": "structural_tag"}'})
    assert tag.constraint == ("structural_tag", '{"type": "structural_tag"}')
    with pytest.raises(ValueError, match=r"^sampling_params\.structural_tag: give at most one"):
        SamplingParams.from_dict({"regex": "a", "structural_tag": "{}"})


def test_logit_bias_takes_openai_string_keys_and_names_bad_entries():
    sp = SamplingParams.from_dict({"logit_bias": {"5": 10, 7: -100.0}})
    assert sp.logit_bias == {5: 10.0, 7: -100.0} and sp.adjusts_logits
    with pytest.raises(ValueError, match=r"sampling_params\.logit_bias: 'x' is not a token id"):
        SamplingParams.from_dict({"logit_bias": {"x": 1}})
    with pytest.raises(ValueError, match=r"logit_bias: the bias of token 3 must be a number"):
        SamplingParams.from_dict({"logit_bias": {"3": 101}})
    with pytest.raises(ValueError, match="logit_bias: token ids must be < vocab size 6"):
        sp.check_lengths(prompt_len=1, context_len=256, vocab_size=6)
    assert not SamplingParams.from_dict({"logit_bias": None, "no_stop_trim": True}).adjusts_logits
