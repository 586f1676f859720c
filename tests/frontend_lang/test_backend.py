"""The backends against a real server on the default model: `Runtime` starts one."""

from __future__ import annotations

import json

import httpx
import pytest

from frontend_lang.backend import BackendError, OpenAI, Runtime, RuntimeEndpoint
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


def test_openai_backend_caches_a_prefix_the_way_vllm_accepts():
    """OpenAI-compatible servers refuse `max_tokens: 0` without echo (vLLM: 400)."""

    def server(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body.get("max_tokens", 16) < 1 and not body.get("echo"):
            return httpx.Response(400, json={"error": {"message": "max_tokens must be >= 1"}})
        usage = {"prompt_tokens": 7, "completion_tokens": 1}
        return httpx.Response(200, json={"choices": [{"text": "x"}], "usage": usage})

    oai = OpenAI("default", base_url="http://peer.invalid/v1")
    oai.http = httpx.Client(
        base_url="http://peer.invalid/v1", transport=httpx.MockTransport(server)
    )
    assert oai.cache_prefix("A shared preamble.") == 7


def test_gen_with_tools_reads_back_a_constrained_call(runtime):
    import frontend_lang as sgl

    weather = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
    }
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": weather}}]

    @sgl.function
    def agent(s):
        s += sgl.system("Call get_weather to learn the weather.")
        s += sgl.user("What is the weather in Oslo?")
        s += sgl.assistant(
            sgl.gen(
                "call",
                max_tokens=48,
                temperature=0,
                tools=tools,
                tool_choice={"type": "function", "function": {"name": "get_weather"}},
            )
        )

    state = agent.run(backend=runtime)
    (call,) = state.get_meta_info("call")["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert isinstance(json.loads(call["function"]["arguments"])["city"], str)
    with pytest.raises(ValueError, match="^tool_choice: needs tools"):
        sgl.gen("x", tool_choice="auto")


def test_pin_keeps_a_prefix_and_unpins(runtime):
    system = "You are a careful travel agent. " * 8
    pin = runtime.pin(messages=[{"role": "system", "content": system}], ttl_s=60)
    assert pin["tokens"] > 40 and pin["expires_at"] is not None
    info = runtime.get_server_info()
    assert info["pinned_tokens"] >= pin["tokens"] and info["num_pins"] >= 1
    assert runtime.flush_cache()  # pins outlive a flush
    assert runtime.get_server_info()["cache_tokens"] >= pin["tokens"]
    runtime.unpin(pin["pin_id"])
    with pytest.raises(BackendError) as e:
        runtime.unpin(pin["pin_id"])
    assert e.value.status == 404
    assert runtime.get_server_info()["num_pins"] == 0
