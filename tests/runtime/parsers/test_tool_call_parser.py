import json

import pytest

from runtime.parsers.chat_output import ChatOutputReader, read_chat_output
from runtime.parsers.reasoning_parser import REASONING_PARSERS
from runtime.parsers.tool_call_parser import (
    Llama3Parser,
    MistralParser,
    ToolCall,
    ToolCallParser,
    tool_call_parser,
)

HERMES = (
    'Let me look. <tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>'
    '<tool_call>\n{"name": "g", "arguments": {}}\n</tool_call>'
)
CALLS = [ToolCall("f", '{"a": 1}'), ToolCall("g", "{}")]


@pytest.mark.parametrize(
    "parser, text",
    [
        (ToolCallParser(), HERMES),
        (
            Llama3Parser(),
            'Let me look. <|python_tag|>{"name": "f", "parameters": {"a": 1}}; '
            '{"name": "g", "parameters": {}}',
        ),
        (
            MistralParser(),
            'Let me look. [TOOL_CALLS] [{"name": "f", "arguments": {"a": 1}}, '
            '{"name": "g", "arguments": {}}]',
        ),
    ],
)
def test_formats_read_their_calls(parser, text):
    parsed = parser.parse(text)
    assert parsed.calls == CALLS and parsed.content == "Let me look." and parsed.open_from is None


@pytest.mark.parametrize("parser", [ToolCallParser(), Llama3Parser(), MistralParser()])
def test_rendered_calls_read_back(parser):
    assert parser.parse(parser.render(CALLS)).calls == CALLS


def test_text_that_only_looks_like_a_call_stays_text():
    p = ToolCallParser()
    assert p.parse("use <tool_call> tags").calls == []
    assert p.parse("use <tool_call> tags").content == "use <tool_call> tags"
    assert p.parse('<tool_call>\n{"name": 3}</tool_call>').calls == []
    cut = p.parse('<tool_call>\n{"name": "f", "argu')
    assert cut.calls == [] and cut.open_from == 0


def test_template_picks_the_format():
    assert tool_call_parser(None, "{{ '<tool_call>' }}").name == "hermes"
    assert tool_call_parser(None, "[TOOL_CALLS] {{ x }}").name == "mistral"
    assert tool_call_parser(None, "<|python_tag|>").name == "llama3"
    assert tool_call_parser(None, "{{ messages }}").name == "hermes"  # our default block
    assert tool_call_parser("llama3", "<tool_call>").name == "llama3"
    with pytest.raises(ValueError, match="^tool_call_parser: must be one of"):
        tool_call_parser("nope", None)


def test_structural_tag_pieces_are_what_the_parser_reads():
    p = ToolCallParser()
    tag = json.loads(
        p.structural_tag([{"name": "f", "parameters": {"type": "object"}}], True, False)
    )
    fmt = tag["format"]
    assert fmt["type"] == "tags_with_separator" and fmt["at_least_one"] and fmt["stop_after_first"]
    (t,) = fmt["tags"]
    assert p.parse(t["begin"] + '{"a": 1}' + t["end"]).calls == [ToolCall("f", '{"a": 1}')]
    auto = json.loads(p.structural_tag([{"name": "f", "parameters": {}}], False, True))["format"]
    assert auto["type"] == "triggered_tags" and t["begin"].startswith(auto["triggers"][0])


@pytest.mark.parametrize("size", [1, 4, 9, 1000])
def test_streamed_calls_match_the_whole_answer(size):
    text = "<think>plan</think>" + HERMES
    reader = ChatOutputReader(ToolCallParser(), REASONING_PARSERS["qwen3"])
    deltas = [reader.feed(text[i : i + size]) for i in range(0, len(text), size)]
    deltas.append(reader.finish())
    calls = [c for d in deltas for c in d.get("tool_calls", [])]
    assert [(c["index"], c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        (0, "f", '{"a": 1}'),
        (1, "g", "{}"),
    ]
    assert len({c["id"] for c in calls}) == 2
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "plan"
    assert "".join(d.get("content", "") for d in deltas).strip() == "Let me look."
    whole = read_chat_output(text, ToolCallParser(), REASONING_PARSERS["qwen3"])
    assert whole["content"] == "Let me look." and whole["reasoning_content"] == "plan"
    assert [c["function"]["name"] for c in whole["tool_calls"]] == ["f", "g"]


def test_stream_gives_back_a_false_start_as_content():
    reader = ChatOutputReader(ToolCallParser(), None)
    out = reader.feed("a <tool_")
    assert out == {"content": "a "}
    assert reader.feed("x> b") == {"content": "<tool_x> b"}
    reader = ChatOutputReader(ToolCallParser(), None)
    reader.feed("see <tool_call> here")
    assert reader.finish() == {"content": "<tool_call> here"}
    assert read_chat_output("plain", ToolCallParser(), None) == {
        "role": "assistant",
        "content": "plain",
    }
