"""vLLM's and SGLang's extra OpenAI fields, mapped or refused without a server."""

from __future__ import annotations

import json
import re

import pytest

from runtime.entrypoints.http_utils import APIError
from runtime.entrypoints.openai_protocol import ChatRequest, CompletionRequest
from runtime.entrypoints.vendor_fields import choice_regex

MSG = [{"role": "user", "content": "hi"}]


def constrained(**fields) -> tuple:
    req = CompletionRequest(prompt="x", **fields)
    req.apply_response_format()
    params = req.sampling_params(4)
    return tuple((k, params[k]) for k in ("regex", "json_schema", "ebnf") if k in params)


def test_guided_fields_become_our_constraints():
    schema = {"type": "object"}
    assert constrained(guided_json=schema) == (("json_schema", json.dumps(schema)),)
    assert constrained(guided_regex="[0-9]+") == (("regex", "[0-9]+"),)
    assert constrained(guided_grammar='root ::= "a"') == (("ebnf", 'root ::= "a"'),)
    assert constrained(structured_outputs={"json_object": True}) == (
        ("json_schema", json.dumps(schema)),
    )
    assert constrained(structured_outputs={"choice": ["a", "b"]}) == (("regex", "(a|b)"),)
    assert constrained(regex="x+") == (("regex", "x+"),)


def test_choice_regex_matches_exactly_its_choices():
    choices = ["1+1", "a.b", "(yes)", "no"]
    pattern = re.compile(choice_regex(choices))
    assert all(pattern.fullmatch(c) for c in choices)
    assert not pattern.fullmatch("11") and not pattern.fullmatch("axb")


@pytest.mark.parametrize(
    "fields, name",
    [
        ({"guided_regex": "a", "regex": "b"}, "guided_regex"),
        ({"guided_json": {}, "response_format": {"type": "json_object"}}, "response_format"),
        ({"structured_outputs": {"structural_tag": "x"}}, "structured_outputs.structural_tag"),
        ({"guided_choice": []}, "guided_choice"),
        ({"return_hidden_states": True}, "return_hidden_states"),
        ({"use_beam_search": True}, "use_beam_search"),
        ({"lora_path": "adapter"}, "lora_path"),
    ],
)
def test_conflicts_and_fields_we_cannot_honour_are_refused_by_name(fields, name):
    with pytest.raises(APIError) as e:
        constrained(**fields)
    assert e.value.status == 400 and e.value.message.startswith(f"{name}:")


def test_unknown_fields_are_logged_once_and_off_values_accepted(caplog):
    for _ in range(2):
        constrained(gateway_trace_id="t1", return_hidden_states=False, separate_reasoning=True)
    logged = [r for r in caplog.records if "gateway_trace_id" in r.getMessage()]
    assert len(logged) == 1
    assert not any("separate_reasoning" in r.getMessage() for r in caplog.records)


def test_stop_trim_switch_and_logit_bias_reach_the_sampling_params():
    req = CompletionRequest(prompt="x", include_stop_str_in_output=True, logit_bias={"3": 5})
    assert req.sampling_params(4)["no_stop_trim"] is True
    assert req.sampling_params(4)["logit_bias"] == {"3": 5}
    assert "no_stop_trim" not in CompletionRequest(prompt="x").sampling_params(4)


def test_chat_template_arguments():
    req = ChatRequest(messages=MSG, chat_template_kwargs={"enable_thinking": False})
    assert req.template_kwargs("user") == {
        "enable_thinking": False,
        "add_generation_prompt": True,
        "continue_final_message": False,
    }
    assert not ChatRequest(messages=MSG).template_kwargs("assistant")["add_generation_prompt"]
    cont = ChatRequest(messages=MSG, continue_final_message=True, chat_template="{{ x }}")
    assert cont.template_kwargs("assistant") == {
        "add_generation_prompt": False,
        "continue_final_message": True,
        "chat_template": "{{ x }}",
    }
    for req, role, name in [
        (cont, "user", "continue_final_message"),
        (
            ChatRequest(messages=MSG, continue_final_message=True, add_generation_prompt=True),
            "assistant",
            "continue_final_message",
        ),
        (
            ChatRequest(messages=MSG, chat_template_kwargs={"tokenize": False}),
            "user",
            "chat_template_kwargs.tokenize",
        ),
    ]:
        with pytest.raises(APIError) as e:
            req.template_kwargs(role)
        assert e.value.message.startswith(f"{name}:")


def test_native_bodies_take_what_sglang_router_adds_and_refuse_what_we_would_drop():
    from runtime.entrypoints.http_server import generate_request

    sent = {"text": "hi", "model": None, "sampling_params": {"max_new_tokens": 2}}
    sent |= {"log_metrics": True, "return_hidden_states": False, "background": False}
    sent |= {"no_logs": False, "return_bytes": False, "return_entropy": False}
    req = generate_request(sent)
    assert req.prompt == "hi" and req.sampling_params == {"max_new_tokens": 2}
    for name, value in [("background", True), ("image_data", ["x.png"]), ("lora_path", "a")]:
        with pytest.raises(APIError) as e:
            generate_request({"text": "hi", name: value})
        assert e.value.message.startswith(f"{name}: not supported by this server")
