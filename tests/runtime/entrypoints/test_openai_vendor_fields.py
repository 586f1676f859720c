"""Each vLLM / SGLang extra OpenAI field, sent through the official client, has its effect."""

from __future__ import annotations

import json
import re

import openai
import pytest

from tests.runtime.entrypoints.conftest import API_KEY
from tests.runtime.entrypoints.test_native_api import wait_idle

pytestmark = pytest.mark.slow
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def oai(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY)


def chat(oai, **kwargs):
    kwargs.setdefault("messages", QUESTION)
    return oai.chat.completions.create(model="m", temperature=0, **kwargs)


def complete(oai, **kwargs):
    return oai.completions.create(model="m", prompt=PROMPT, temperature=0, **kwargs)


@pytest.mark.parametrize(
    "body, check",
    [
        ({"guided_choice": ["Paris", "Lyon"]}, lambda t: t in ("Paris", "Lyon")),
        ({"structured_outputs": {"choice": ["yes", "no"]}}, lambda t: t in ("yes", "no")),
        ({"guided_regex": "[0-9]{3}"}, lambda t: re.fullmatch("[0-9]{3}", t)),
        ({"guided_grammar": 'root ::= "A" | "B"'}, lambda t: t in ("A", "B")),
        (
            {
                "guided_json": {
                    "type": "object",
                    "properties": {"n": {"type": "integer"}},
                    "required": ["n"],
                }
            },
            lambda t: isinstance(json.loads(t)["n"], int),
        ),
    ],
)
def test_guided_decoding_fields_constrain_the_answer(oai, body, check):
    r = chat(oai, max_tokens=24, extra_body=body)
    assert check(r.choices[0].message.content), r.choices[0].message.content


def test_chat_template_kwargs_reach_the_template(oai):
    template = "{{ lead }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    r = chat(
        oai,
        messages=[{"role": "user", "content": " the city of"}],
        max_tokens=8,
        extra_body={"chat_template": template, "chat_template_kwargs": {"lead": PROMPT}},
    )
    plain = oai.completions.create(
        model="m", prompt=PROMPT + " the city of", max_tokens=8, temperature=0
    )
    assert r.choices[0].message.content == plain.choices[0].text
    assert r.usage.prompt_tokens == plain.usage.prompt_tokens


def test_continue_final_message_and_add_generation_prompt(oai):
    turns = QUESTION + [{"role": "assistant", "content": "The capital of France is"}]
    closed = chat(oai, messages=turns, max_tokens=4)
    open_turn = chat(oai, messages=turns, max_tokens=4, extra_body={"continue_final_message": True})
    assert open_turn.usage.prompt_tokens < closed.usage.prompt_tokens
    assert "Paris" in open_turn.choices[0].message.content
    no_prompt = chat(oai, max_tokens=1, extra_body={"add_generation_prompt": False})
    with_prompt = chat(oai, max_tokens=1)
    assert no_prompt.usage.prompt_tokens < with_prompt.usage.prompt_tokens


@pytest.mark.parametrize("field", ["no_stop_trim", "include_stop_str_in_output"])
def test_stop_string_kept_on_request(oai, field):
    trimmed = complete(oai, max_tokens=8, stop=["Paris"])
    kept = complete(oai, max_tokens=8, stop=["Paris"], extra_body={field: True})
    assert "Paris" not in trimmed.choices[0].text
    assert kept.choices[0].text == trimmed.choices[0].text + "Paris"
    assert kept.choices[0].finish_reason == "stop"


def test_logit_bias_changes_the_greedy_choice(oai, client):
    first = client.post(
        "/generate",
        json={"text": PROMPT, "sampling_params": {"max_new_tokens": 1, "temperature": 0}},
    ).json()["output_ids"][0]
    plain = complete(oai, max_tokens=1)
    banned = complete(oai, max_tokens=1, logit_bias={str(first): -100})
    assert banned.choices[0].text != plain.choices[0].text
    forced = client.post(
        "/generate",
        json={
            "text": PROMPT,
            "sampling_params": {"max_new_tokens": 3, "temperature": 0, "logit_bias": {"42": 100}},
        },
    ).json()
    assert forced["output_ids"] == [42, 42, 42]


def test_unknown_fields_ignored_and_tool_and_reasoning_fields_accepted(oai):
    r = chat(
        oai,
        max_tokens=2,
        extra_body={
            "gateway_trace": "abc",
            "separate_reasoning": True,
            "tool_choice": "none",
            "return_hidden_states": False,
        },
    )
    assert r.choices[0].message.content


def test_fields_we_would_drop_are_refused_by_name(oai, client):
    for body, name in [
        ({"return_hidden_states": True}, "return_hidden_states"),
        ({"guided_regex": "a", "guided_choice": ["b"]}, "guided_choice"),
        ({"continue_final_message": True}, "continue_final_message"),
    ]:
        with pytest.raises(openai.BadRequestError) as e:
            chat(oai, max_tokens=2, extra_body=body)
        assert e.value.body["message"].startswith(name), e.value.body
    wait_idle(client)


def test_generate_takes_the_model_field_the_router_adds(client):
    r = client.post(
        "/generate",
        json={"model": "default", "text": PROMPT, "sampling_params": {"max_new_tokens": 2}},
    )
    assert r.status_code == 200 and r.json()["meta_info"]["completion_tokens"] == 2
