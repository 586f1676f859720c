"""Tools in a chat request: definitions checked, `tool_choice` turned into a grammar, and the
conversation (tool calls and results included) put the way the chat template can render it.

A template that takes `tools` gets them; for one that does not (SmolLM2's, say), a default system
block lists them as JSON and says how to call, in the tool-call parser's own format.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from runtime.parsers.tool_call_parser import ToolCall, ToolCallParser

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_EMPTY_PARAMETERS = {"type": "object", "properties": {}}

DEFAULT_TOOL_PROMPT = (
    "You can call functions to answer. Each is described by a JSON object below.\n"
    "<tools>\n{tools}\n</tools>\n{instructions}\n"
    "A function's answer comes back in a tool message; use it to answer the user."
)


@dataclass
class ToolChoice:
    mode: str  # "none" | "auto" | "required"
    tools: list[dict]  # the ones a call may use: all, or the one named
    named: bool = False


def check_tools(tools: list) -> list[dict]:
    """OpenAI's tool definitions as {name, description, parameters}; ValueError naming the
    field of the first bad one."""
    if not isinstance(tools, list):
        raise ValueError("tools: must be a list of {type: function, function: {...}}")
    out, names = [], set()
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise ValueError(f"{where}: must be an object")
        if tool.get("type", "function") != "function":
            raise ValueError(f"{where}.type: must be 'function', got {tool.get('type')!r}")
        fn = tool.get("function")
        if not isinstance(fn, dict):
            raise ValueError(f"{where}.function: must be an object with a name")
        name = fn.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(
                f"{where}.function.name: must be 1-64 letters, digits, '_' or '-', got {name!r}"
            )
        if name in names:
            raise ValueError(f"{where}.function.name: {name!r} is defined twice")
        names.add(name)
        desc = fn.get("description")
        if desc is not None and not isinstance(desc, str):
            raise ValueError(f"{where}.function.description: must be a string")
        params = fn.get("parameters", _EMPTY_PARAMETERS)
        if not isinstance(params, dict):
            raise ValueError(f"{where}.function.parameters: must be a JSON schema object")
        if params.get("type", "object") != "object":
            raise ValueError(
                f"{where}.function.parameters.type: must be 'object' (arguments are an object), "
                f"got {params.get('type')!r}"
            )
        if "properties" in params and not isinstance(params["properties"], dict):
            raise ValueError(f"{where}.function.parameters.properties: must be an object")
        out.append({"name": name, "description": desc, "parameters": {"type": "object", **params}})
    return out


def resolve_tool_choice(choice, tools: list[dict]) -> ToolChoice:
    """`tool_choice` (default auto with tools, none without) as a mode and the tools it allows."""
    if choice is None:
        choice = "auto" if tools else "none"
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise ValueError(
                f"tool_choice: must be none, auto, required or a function, got {choice!r}"
            )
        if choice != "none" and not tools:
            raise ValueError(f"tool_choice: {choice!r} needs tools")
        return ToolChoice(choice, tools)
    fn = choice.get("function") if isinstance(choice, dict) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(name, str):
        raise ValueError("tool_choice.function.name: give the name of the function to call")
    chosen = [t for t in tools if t["name"] == name]
    if not chosen:
        raise ValueError(f"tool_choice.function.name: no tool named {name!r} in tools")
    return ToolChoice("required", chosen, named=True)


def tool_grammar(parser: ToolCallParser, choice: ToolChoice, parallel: bool) -> str | None:
    """The structural tag a tool choice constrains decoding to (None: free text)."""
    if choice.mode == "none":
        return None
    # a named function is called once: a second call of it is never what was asked
    once = not parallel or choice.named
    return parser.structural_tag(
        choice.tools, required=choice.mode == "required", parallel=not once
    )


def _openai_tool(t: dict) -> dict:
    fn = {"name": t["name"], "parameters": t["parameters"]}
    if t["description"]:
        fn["description"] = t["description"]
    return {"type": "function", "function": fn}


def default_tool_block(tools: list[dict], parser: ToolCallParser) -> str:
    listed = "\n".join(json.dumps(_openai_tool(t)["function"], ensure_ascii=False) for t in tools)
    return DEFAULT_TOOL_PROMPT.format(tools=listed, instructions=parser.instructions())


def _calls(raw: list[dict], where: str) -> list[ToolCall]:
    calls = []
    for j, c in enumerate(raw):
        fn = c.get("function") if isinstance(c, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise ValueError(f"{where}.tool_calls[{j}].function.name: required")
        args = fn.get("arguments", "{}")
        if not isinstance(args, str):
            args = json.dumps(args, ensure_ascii=False)
        calls.append(ToolCall(fn["name"], args))
    return calls


def _arguments_object(arguments: str):
    """Templates iterate over arguments as a mapping; a string that is not JSON stays a string."""
    try:
        return json.loads(arguments)
    except json.JSONDecodeError:
        return arguments


def template_conversation(
    messages: list[dict], tools: list[dict] | None, parser: ToolCallParser, template: str
) -> tuple[list[dict], list[dict] | None]:
    """(messages, tools) for `apply_chat_template`: as they are for a template that knows tool
    calls; otherwise calls written out in the parser's format and the tools in a system block
    (results keep the `tool` role, which a template that writes any role renders as it is)."""
    takes_tools = "tools" in template
    knows_calls = "tool_calls" in template
    out = []
    for i, m in enumerate(messages):
        m = dict(m)
        calls = _calls(m.pop("tool_calls", None) or [], f"messages[{i}]")
        call_id = m.pop("tool_call_id", None)
        if knows_calls:
            if calls:
                m["tool_calls"] = [
                    {
                        "id": c_id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": _arguments_object(c.arguments)},
                    }
                    for c, c_id in zip(calls, _call_ids(messages[i]))
                ]
            if call_id is not None:
                m["tool_call_id"] = call_id
        elif calls:
            text = m.get("content") or ""
            m["content"] = (text + "\n" if text else "") + parser.render(calls)
        if m.get("content") is None and not knows_calls:
            m["content"] = ""
        out.append(m)
    if not tools or takes_tools:
        return out, [_openai_tool(t) for t in tools] if tools else None
    block = default_tool_block(tools, parser)
    if out and out[0]["role"] in ("system", "developer"):
        out[0] = {**out[0], "role": "system", "content": block + "\n\n" + (out[0]["content"] or "")}
    else:
        out.insert(0, {"role": "system", "content": block})
    return out, None


def _call_ids(message: dict) -> list[str]:
    return [c.get("id") or f"call_{k}" for k, c in enumerate(message.get("tool_calls") or [])]


@dataclass
class ChatPlan:
    """What tools mean for one chat request: what the template renders, the grammar, and
    whether calls are read back out of the answer."""

    messages: list[dict]
    template_tools: list[dict] | None
    structural_tag: str | None
    tool_parser: ToolCallParser | None


def plan_chat(
    messages: list[dict],
    tools: list | None,
    tool_choice,
    parallel: bool,
    parser: ToolCallParser,
    template: str,
    grammar_backend: str,
    other_constraint: bool,
) -> ChatPlan:
    """ValueError naming the field for bad tools, a choice that names no tool, or a choice
    this server cannot enforce."""
    defined = check_tools(tools) if tools is not None else []
    choice = resolve_tool_choice(tool_choice, defined)
    if choice.mode == "none":
        msgs, _ = template_conversation(messages, None, parser, template)
        return ChatPlan(msgs, None, None, None)
    if other_constraint:
        raise ValueError(
            "tool_choice: tools cannot be combined with response_format / regex / json_schema / "
            "ebnf; send tool_choice: none or drop the constraint"
        )
    msgs, template_tools = template_conversation(messages, defined, parser, template)
    tag = None
    if grammar_backend == "xgrammar":
        tag = tool_grammar(parser, choice, parallel)
    elif choice.mode == "required":
        raise ValueError(
            "tool_choice: required and named calls are enforced by the xgrammar grammar "
            f"backend; this server runs {grammar_backend!r} (see --grammar-backend)"
        )
    return ChatPlan(msgs, template_tools, tag, parser)


def generate_tools(body: dict, parser: ToolCallParser, grammar_backend: str) -> bool:
    """/generate's `tools` and `tool_choice`: the prompt is the caller's (tools are not written
    into it); decoding is constrained as in chat, and the result gets `tool_calls`. Pops both
    fields from `body`; True when calls are to be read back."""
    tools, choice = body.pop("tools", None), body.pop("tool_choice", None)
    if tools is None:
        if choice is not None:
            raise ValueError("tool_choice: needs tools")
        return False
    plan = plan_chat([], tools, choice, True, parser, "", grammar_backend, False)
    if plan.structural_tag is not None:
        params = body.get("sampling_params") or {}
        for p in params if isinstance(params, list) else [params]:
            if any(p.get(k) for k in ("regex", "json_schema", "ebnf", "structural_tag")):
                raise ValueError("tools: cannot be combined with another constraint")
            p["structural_tag"] = plan.structural_tag
        body["sampling_params"] = params
    return plan.tool_parser is not None


def with_tool_calls(result: dict, parser: ToolCallParser) -> dict:
    """A /generate result (or chunk) with the calls in its text, once it has finished."""
    if result["meta_info"].get("finish_reason") is not None:
        parsed = parser.parse(result["text"])
        result["tool_calls"] = [c.to_openai() for c in parsed.calls]
    return result
