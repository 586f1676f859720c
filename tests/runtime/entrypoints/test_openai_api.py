"""The OpenAI protocol through the official `openai` client, unchanged."""

from __future__ import annotations

import json

import openai
import pytest

from tests.runtime.entrypoints.conftest import API_KEY
from tests.runtime.entrypoints.test_native_api import wait_idle

pytestmark = pytest.mark.slow
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def oai(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY)


def test_models(oai):
    models = oai.models.list().data
    assert len(models) == 1 and models[0].id == "SmolLM2-135M-Instruct.Q4_1"


def test_chat_uses_the_template_and_reports_cached_tokens(oai, client):
    r = oai.chat.completions.create(model="any", messages=QUESTION, max_tokens=12, temperature=0)
    c = r.choices[0]
    assert c.message.role == "assistant" and "Paris" in c.message.content
    assert c.finish_reason in ("stop", "length")
    # the same conversation through the native API with the template applied by hand
    tok_ids = client.post(
        "/generate",
        json={
            "text": "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
            "Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
            "<|im_start|>assistant\n",
            "sampling_params": {"max_new_tokens": 12, "temperature": 0},
        },
    ).json()
    assert tok_ids["text"] == c.message.content
    again = oai.chat.completions.create(
        model="any", messages=QUESTION, max_tokens=12, temperature=0
    )
    u = again.usage
    assert u.prompt_tokens == r.usage.prompt_tokens
    assert u.prompt_tokens_details.cached_tokens >= u.prompt_tokens - 1
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens


def test_chat_n_stop_seed_logprobs(oai):
    r = oai.chat.completions.create(
        model="m",
        messages=QUESTION,
        max_completion_tokens=10,
        temperature=0.8,
        seed=7,
        n=3,
        logprobs=True,
        top_logprobs=3,
    )
    assert [c.index for c in r.choices] == [0, 1, 2]
    same = oai.chat.completions.create(
        model="m",
        messages=QUESTION,
        max_completion_tokens=10,
        temperature=0.8,
        seed=7,
        n=3,
    )
    assert [c.message.content for c in same.choices] == [c.message.content for c in r.choices]
    lp = r.choices[0].logprobs.content
    assert len(lp) == r.usage.completion_tokens // 3 or len(lp) >= 1
    assert all(len(t.top_logprobs) == 3 and t.logprob <= 0 for t in lp)
    assert "".join(t.token for t in lp).startswith(r.choices[0].message.content[:5])
    stopped = oai.chat.completions.create(
        model="m", messages=QUESTION, max_tokens=20, temperature=0, stop=["Paris"]
    )
    assert "Paris" not in stopped.choices[0].message.content
    assert stopped.choices[0].finish_reason == "stop"


def test_chat_stream_with_usage(oai):
    full = oai.chat.completions.create(model="m", messages=QUESTION, max_tokens=12, temperature=0)
    stream = oai.chat.completions.create(
        model="m",
        messages=QUESTION,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == [full.choices[0].finish_reason]
    assert (
        chunks[-1].choices == []
        and chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    )


def test_completions_batch_logprobs_echo_and_extras(oai):
    r = oai.completions.create(
        model="m", prompt=["1, 2, 3,", "a, b, c,"], max_tokens=5, temperature=0, logprobs=2
    )
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].text.startswith(" 4")
    lp = r.choices[0].logprobs
    assert "".join(lp.tokens) == r.choices[0].text
    assert len(lp.token_logprobs) == 5 and all(len(t) <= 2 for t in lp.top_logprobs)
    assert lp.text_offset[0] == 0
    echo = oai.completions.create(
        model="m", prompt="1, 2, 3,", max_tokens=3, temperature=0, echo=True
    )
    assert echo.choices[0].text.startswith("1, 2, 3, 4")
    ids = oai.completions.create(
        model="m", prompt=[[16, 28, 216, 34, 28]], max_tokens=3, temperature=0
    )
    assert ids.usage.prompt_tokens == 5
    extra = oai.completions.create(
        model="m",
        prompt="Hello",
        max_tokens=6,
        temperature=0.7,
        extra_body={"top_k": 1, "min_p": 0.1, "ignore_eos": True},
    )
    assert extra.usage.completion_tokens == 6
    stream = oai.completions.create(
        model="m", prompt="1, 2, 3,", max_tokens=5, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in stream) == r.choices[0].text


def test_completions_take_response_format(oai):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    r = oai.completions.create(
        model="m",
        prompt="A number as JSON:",
        max_tokens=24,
        temperature=0,
        extra_body={"response_format": {"type": "json_schema", "json_schema": {"schema": schema}}},
    )
    assert isinstance(json.loads(r.choices[0].text)["n"], int)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"messages": QUESTION, "max_tokens": -1}, "max_tokens"),
        ({"messages": QUESTION, "temperature": -1}, "sampling_params.temperature"),
        ({"messages": QUESTION, "extra_body": {"use_beam_search": True}}, "use_beam_search"),
        ({"messages": QUESTION, "max_tokens": 100000}, "sampling_params.max_new_tokens"),
        ({"messages": [{"role": "user", "content": "hi " * 9000}]}, "prompt"),
    ],
)
def test_chat_bad_input(oai, client, kwargs, field):
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model="m", **kwargs)
    assert e.value.status_code == 400
    assert e.value.body["message"].startswith(field), e.value.body
    wait_idle(client)
