"""Tool definitions, tool_choice and the conversation the template sees (no model needed)."""

from __future__ import annotations

import json

import pytest

from runtime.entrypoints.chat_tools import check_tools, plan_chat, template_conversation
from runtime.parsers.tool_call_parser import ToolCallParser

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>{% endfor %}"
)
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"properties": {}}}}]
CALL = {"id": "call_9", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
HISTORY = [
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_9", "content": "42"},
]


def test_template_without_tools_gets_a_system_block_and_written_calls():
    msgs, tools = template_conversation(HISTORY, check_tools(TOOLS), ToolCallParser(), CHATML)
    assert tools is None
    assert msgs[0]["role"] == "system" and '"name": "f"' in msgs[0]["content"]
    assert "<tool_call>" in msgs[0]["content"]  # how to call, in the parser's format
    assert ToolCallParser().parse(msgs[2]["content"]).calls[0].arguments == '{"x": 1}'
    assert msgs[3] == {"role": "tool", "content": "42"}


def test_template_with_tools_gets_them_and_the_calls_as_they_are():
    template = CHATML + "{{ tools }}{{ m.tool_calls }}"
    system = {"role": "system", "content": "Be brief."}
    msgs, tools = template_conversation(
        [system, *HISTORY], check_tools(TOOLS), ToolCallParser(), template
    )
    assert tools == [
        {
            "type": "function",
            "function": {"name": "f", "parameters": {"type": "object", "properties": {}}},
        }
    ]
    assert msgs[0] == system
    assert msgs[2]["tool_calls"][0]["function"]["arguments"] == {"x": 1}
    assert msgs[2]["tool_calls"][0]["id"] == "call_9" and msgs[3]["tool_call_id"] == "call_9"


def test_choices_become_grammars():
    def plan(choice, parallel=True, backend="xgrammar"):
        return plan_chat(HISTORY, TOOLS, choice, parallel, ToolCallParser(), CHATML, backend, False)

    assert plan("none").structural_tag is None and plan("none").tool_parser is None
    auto = json.loads(plan("auto").structural_tag)["format"]
    assert auto["type"] == "triggered_tags" and not auto["stop_after_first"]
    assert json.loads(plan("auto", parallel=False).structural_tag)["format"]["stop_after_first"]
    named = json.loads(plan({"type": "function", "function": {"name": "f"}}).structural_tag)
    assert named["format"]["at_least_one"] and named["format"]["stop_after_first"]
    assert plan("auto", backend="outlines").structural_tag is None  # read back, not enforced
    with pytest.raises(ValueError, match="^tool_choice: required and named calls are enforced"):
        plan("required", backend="outlines")
    with pytest.raises(ValueError, match="^tool_choice: tools cannot be combined"):
        plan_chat(HISTORY, TOOLS, "auto", True, ToolCallParser(), CHATML, "xgrammar", True)


@pytest.mark.parametrize(
    "tools, field",
    [
        ("f", "tools"),
        ([{"type": "function", "function": {"name": "bad name"}}], "tools[0].function.name"),
        ([TOOLS[0], TOOLS[0]], "tools[1].function.name"),
        (
            [{"type": "function", "function": {"name": "f", "parameters": []}}],
            "tools[0].function.parameters",
        ),
        (
            [{"type": "function", "function": {"name": "f", "description": 3}}],
            "tools[0].function.description",
        ),
    ],
)
def test_bad_definitions_name_the_field(tools, field):
    with pytest.raises(ValueError, match=rf"^{field.replace('[', '.').replace(']', '.')}:"):
        check_tools(tools)
