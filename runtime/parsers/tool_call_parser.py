"""Tool-call formats: how a model writes a call, how we read it back, how a grammar enforces it.

Each format says where calls start (`start`), writes the text before one call's arguments
(`call_prefix`) and after them (`call_suffix`), and reads calls back out of an output. The same
pieces make xgrammar's structural tag, so a constrained call is always one the parser reads.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass

_DECODER = json.JSONDecoder()


@dataclass
class ToolCall:
    name: str
    arguments: str  # a JSON object, as text

    def to_openai(self, index: int | None = None, call_id: str | None = None) -> dict:
        out = {
            "id": call_id or f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }
        if index is not None:
            out["index"] = index
        return out


@dataclass
class Parsed:
    content: str  # the text around the calls
    calls: list[ToolCall]
    open_from: int | None  # where a call that has not closed starts (streaming: wait for it)


class ToolCallParser:
    """Hermes / Qwen 2.5: `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`."""

    name = "hermes"
    start = "<tool_call>"
    end = "</tool_call>"
    arguments_key = "arguments"
    separator = ""  # between two calls the grammar writes (a newline invites one more)
    link = start  # what joins two calls the parser reads
    opens = "{"  # what a call's JSON starts with
    start_in_object = False  # the start marker is the JSON's own beginning

    def call_prefix(self, name: str) -> str:
        return f'{self.start}\n{{"name": {json.dumps(name)}, "{self.arguments_key}": '

    def call_suffix(self) -> str:
        return "}\n" + self.end

    def render(self, calls: list[ToolCall]) -> str:
        """Calls as the model would write them (history for templates that know no tool_calls)."""
        return self.separator.join(
            self.call_prefix(c.name) + c.arguments + self.call_suffix() for c in calls
        )

    def _objects(self, text: str, pos: int) -> tuple[list[dict], int, int | None]:
        """JSON objects of calls from `pos` on: (objects, where they end, where an unfinished
        call starts or None)."""
        objs: list[dict] = []
        while True:
            at = _skip_space(text, pos)
            if at >= len(text):
                return objs, pos, pos  # a call is due and has not begun
            if text[at] not in self.opens:
                return objs, pos, None
            try:
                value, end = _DECODER.raw_decode(text, at)
            except json.JSONDecodeError:
                return objs, pos, pos
            objs.extend(value if isinstance(value, list) else [value])
            pos = end
            after = _skip_space(text, pos)
            if self.end and text.startswith(self.end, after):
                pos = after + len(self.end)
            nxt = _skip_space(text, pos)
            if not text.startswith(self.link, nxt):
                return objs, pos, None
            pos = nxt + len(self.link)

    def parse(self, text: str) -> Parsed:
        at = text.find(self.start)
        if at < 0:
            return Parsed(text, [], None)
        objs, end, open_from = self._objects(
            text, at if self.start_in_object else at + len(self.start)
        )
        calls = [c for c in (self._call(o) for o in objs) if c is not None]
        if len(calls) < len(objs) or (not objs and open_from is None):
            return Parsed(text, [], None)  # not calls after all: leave the text as it is
        if not calls:
            open_from = at  # the first call itself is unfinished
        rest = "" if open_from is not None else text[end:]
        return Parsed((text[:at] + rest).strip(), calls, open_from)

    def _call(self, obj) -> ToolCall | None:
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            return None
        args = obj.get(self.arguments_key, obj.get("arguments", obj.get("parameters", {})))
        if isinstance(args, str):  # some models write the arguments as a JSON string
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                return None
        if not isinstance(args, dict):
            return None
        return ToolCall(obj["name"], json.dumps(args, ensure_ascii=False))

    def structural_tag(self, tools: list[dict], required: bool, parallel: bool) -> str:
        """xgrammar's structural tag: free text until a call starts, or (required) calls only;
        each call's arguments follow its tool's JSON schema."""
        tags = [
            {
                "type": "tag",
                "begin": self.call_prefix(t["name"]),
                # a space at most between JSON tokens: a small model pads with newlines otherwise
                "content": {
                    "type": "json_schema",
                    "json_schema": t["parameters"],
                    "max_whitespace_cnt": 1,
                },
                "end": self.call_suffix(),
            }
            for t in tools
        ]
        if required:
            fmt = {
                "type": "tags_with_separator",
                "tags": tags,
                "separator": self.separator,
                "at_least_one": True,
                "stop_after_first": not parallel,
            }
        else:
            fmt = {
                "type": "triggered_tags",
                "triggers": [self.trigger()],
                "tags": tags,
                "at_least_one": False,
                "stop_after_first": not parallel,
            }
        return json.dumps({"type": "structural_tag", "format": fmt})

    def trigger(self) -> str:
        """The text every call begins with: where free text hands over to the grammar."""
        return self.start

    def instructions(self) -> str:
        """How to call, for the default system block."""
        example = self.call_prefix("<function-name>") + "<arguments-object>" + self.call_suffix()
        return f"To call a function, write:\n{example}"


class Llama3Parser(ToolCallParser):
    """Llama 3.x JSON calls: `{"name": ..., "parameters": {...}}`, several joined by `; `."""

    name = "llama3"
    start = '{"name": '
    end = ""
    arguments_key = "parameters"
    separator = "; "
    link = ";"
    start_in_object = True
    _python_tag = "<|python_tag|>"

    def call_prefix(self, name: str) -> str:
        return f'{self.start}{json.dumps(name)}, "{self.arguments_key}": '

    def call_suffix(self) -> str:
        return "}"

    def parse(self, text: str) -> Parsed:
        return super().parse(text.replace(self._python_tag, ""))


class MistralParser(ToolCallParser):
    """Mistral: `[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]`."""

    name = "mistral"
    start = "[TOOL_CALLS]"
    end = ""
    separator = " "
    link = start
    opens = "[{"

    def call_prefix(self, name: str) -> str:
        return f'{self.start} [{{"name": {json.dumps(name)}, "arguments": '

    def call_suffix(self) -> str:
        return "}]"


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


TOOL_CALL_PARSERS: dict[str, type[ToolCallParser]] = {
    "hermes": ToolCallParser,
    "qwen": ToolCallParser,  # Qwen 2.5 and 3 write Hermes' format
    "qwen25": ToolCallParser,
    "llama3": Llama3Parser,
    "mistral": MistralParser,
}


def tool_call_parser(name: str | None, chat_template: str | None) -> ToolCallParser:
    """The parser named by `--tool-call-parser`, else the one the chat template writes
    (Hermes' format when it shows none: our default system block teaches that one)."""
    if name is not None:
        if name not in TOOL_CALL_PARSERS:
            raise ValueError(
                f"tool_call_parser: must be one of {tuple(TOOL_CALL_PARSERS)}, got {name!r}"
            )
        return TOOL_CALL_PARSERS[name]()
    template = chat_template or ""
    if "[TOOL_CALLS]" in template:
        return MistralParser()
    if "<|python_tag|>" in template or re.search(r"\bipython\b", template):
        return Llama3Parser()
    return ToolCallParser()
