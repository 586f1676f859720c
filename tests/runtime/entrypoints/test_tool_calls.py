"""Tool calling through the official `openai` client, on the default model."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from tests.runtime.entrypoints.conftest import API_KEY
from tests.runtime.entrypoints.test_native_api import wait_idle

pytestmark = pytest.mark.slow

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
}
ADD = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": WEATHER,
        },
    },
    {
        "type": "function",
        "function": {"name": "add", "description": "Adds integers", "parameters": ADD},
    },
]
SCHEMAS = {"get_weather": WEATHER, "add": ADD}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def oai(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY)


def _valid(call, name: str | None = None) -> dict:
    assert call.type == "function" and call.id
    assert name is None or call.function.name == name
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, SCHEMAS[call.function.name])
    return args


def test_required_and_named_calls_validate(oai):
    r = oai.chat.completions.create(
        model="m", messages=ASK, tools=TOOLS, tool_choice="required", temperature=0, max_tokens=60
    )
    c = r.choices[0]
    assert c.finish_reason == "tool_calls" and c.message.content is None
    assert len(c.message.tool_calls) == 1
    _valid(c.message.tool_calls[0])
    r = oai.chat.completions.create(
        model="m",
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "add"}},
        temperature=0,
        max_tokens=60,
    )
    (call,) = r.choices[0].message.tool_calls
    _valid(call, "add")
    assert r.choices[0].finish_reason == "tool_calls"


def test_streamed_calls_arrive_as_deltas(oai, client):
    stream = oai.chat.completions.create(
        model="m",
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=60,
        stream=True,
    )
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        choice = chunk.choices[0]
        for d in choice.delta.tool_calls or []:
            entry = calls.setdefault(d.index, {"id": d.id, "name": "", "arguments": ""})
            entry["name"] += d.function.name or ""
            entry["arguments"] += d.function.arguments or ""
        finish = choice.finish_reason or finish
    assert finish == "tool_calls" and list(calls) == [0]
    assert calls[0]["id"] and calls[0]["name"] == "get_weather"
    jsonschema.validate(json.loads(calls[0]["arguments"]), WEATHER)
    wait_idle(client)


def test_auto_calls_then_answers_from_the_history(oai, client):
    """An agent loop: a call and its result in the history, a new question the model answers by
    calling the tool (auto), then the tool's result and the final answer."""
    tools = TOOLS[:1]
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": '{"city": "Paris", "unit": "celsius"}',
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
        {"role": "assistant", "content": "It is 18 C and sunny in Paris."},
        {"role": "user", "content": "What is the weather in Rome?"},
    ]
    r = oai.chat.completions.create(
        model="m", messages=history, tools=tools, temperature=0, max_tokens=60
    )
    c = r.choices[0]
    assert c.finish_reason == "tool_calls", c.message
    (call,) = c.message.tool_calls
    assert _valid(call, "get_weather")["city"] == "Rome"
    history += [
        c.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "25 C, clear"},
    ]
    r = oai.chat.completions.create(
        model="m", messages=history, tools=tools, tool_choice="none", temperature=0, max_tokens=24
    )
    final = r.choices[0]
    assert final.message.tool_calls is None and final.message.content
    assert r.usage.prompt_tokens_details.cached_tokens > 0  # the history was computed before
    wait_idle(client)


@pytest.mark.parametrize(
    "tools, choice, field",
    [
        ([{"type": "function", "function": {"description": "x"}}], None, "tools[0].function.name"),
        ([{"type": "retrieval"}], None, "tools[0].type"),
        (
            [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}],
            None,
            "tools[0].function.parameters.type",
        ),
        (TOOLS, {"type": "function", "function": {"name": "nope"}}, "tool_choice.function.name"),
        (TOOLS, "sometimes", "tool_choice"),
    ],
)
def test_bad_tool_definitions_are_named(oai, client, tools, choice, field):
    kwargs = {"tool_choice": choice} if choice is not None else {}
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model="m", messages=ASK, tools=tools, **kwargs)
    assert e.value.body["message"].startswith(field + ":"), e.value.body
    wait_idle(client)


def test_native_generate_takes_tools(client):
    r = client.post(
        "/generate",
        json={
            "text": "Call a tool for the weather in Paris.\n",
            "sampling_params": {"max_new_tokens": 60, "temperature": 0},
            "tools": TOOLS,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        },
    )
    assert r.status_code == 200, r.text
    (call,) = r.json()["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER)
    bad = client.post("/generate", json={"text": "x", "tools": [{"type": "function"}]})
    assert bad.status_code == 400 and bad.json()["error"]["message"].startswith(
        "tools[0].function:"
    )
    wait_idle(client)
