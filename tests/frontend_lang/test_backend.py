"""The backends against a real server on the default model: `Runtime` starts one."""

from __future__ import annotations

import pytest

from frontend_lang.backend import BackendError, Runtime, RuntimeEndpoint
from tests.frontend_lang.conftest import FEWSHOT as SHOTS

pytestmark = pytest.mark.slow
FEWSHOT = SHOTS + "The capital of France is"


def test_generate_stream_and_cached_prefix(runtime):
    out = runtime.generate(FEWSHOT, {"max_new_tokens": 3, "temperature": 0})
    assert out["text"].startswith(" Paris")
    chunks = list(runtime.generate_stream(FEWSHOT, {"max_new_tokens": 3, "temperature": 0}))
    assert chunks[-1]["text"] == out["text"] and len(chunks) >= 2
    n = runtime.cache_prefix("A long shared preamble about geography. " * 10)
    again = runtime.generate(
        "A long shared preamble about geography. " * 10 + "Next:", {"max_new_tokens": 1}
    )
    assert again["meta_info"]["cached_tokens"] >= n - 1


@pytest.mark.parametrize(
    "method",
    ["token_length_normalized", "greedy_token_selection", "unconditional_likelihood_normalized"],
)
def test_select_picks_the_right_capital(runtime, method):
    choice, meta = runtime.select(FEWSHOT, [" London", " Paris", " Berlin"], method)
    assert choice == 1
    assert len(meta["normalized_prompt_logprobs"]) == 3
    assert all(isinstance(e[2], str) for es in meta["input_token_logprobs"] for e in es)


def test_errors_name_the_call(runtime):
    with pytest.raises(BackendError, match=r"generate failed \(400\): sampling_params\.top_p"):
        runtime.generate("hi", {"top_p": 0})
    with pytest.raises(BackendError, match=r"generate failed \(400\)"):
        list(runtime.generate_stream("hi", {"regex": "("}))
    with pytest.raises(ValueError, match="choices_method"):
        runtime.select("x", ["a"], "best")
    with pytest.raises(BackendError, match=r"get_model_info failed \(0\)"):
        RuntimeEndpoint("http://127.0.0.1:9")  # nothing listens there
    assert runtime.flush_cache() is True


def test_bad_server_args_fail_before_starting():
    with pytest.raises(ValueError, match="schedule_policy"):
        Runtime(schedule_policy="oldest-first")
