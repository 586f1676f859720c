"""A chat answer read as the client sees it: reasoning, content and tool calls, whole or streamed.

Reasoning comes first (when a reasoning parser is on), then content; once a tool call starts,
the rest is held and read as calls, each sent in one delta as soon as it closes. Text that only
looked like a call start is given back as content at the end.
"""

from __future__ import annotations

from runtime.parsers.partial_tags import held_suffix
from runtime.parsers.reasoning_parser import ReasoningFormat, ReasoningSplitter
from runtime.parsers.tool_call_parser import ToolCall, ToolCallParser


class ChatOutputReader:
    """One choice's output. `feed` and `finish` return OpenAI delta fields (empty when none)."""

    def __init__(
        self, tool_parser: ToolCallParser | None, reasoning: ReasoningFormat | None
    ) -> None:
        self.tools = tool_parser
        self.reasoning = ReasoningSplitter(reasoning) if reasoning else None
        self.content_held = ""  # content that may be the start of a call
        self.call_text: str | None = None  # from the first call start on
        self.calls: list[dict] = []

    def feed(self, text: str) -> dict:
        reasoning, content = self.reasoning.feed(text) if self.reasoning else ("", text)
        return self._delta(reasoning, self._content(content))

    def finish(self) -> dict:
        reasoning, content = self.reasoning.finish() if self.reasoning else ("", "")
        out = self._content(content)
        delta = self._delta(reasoning, out)
        rest = self.content_held
        self.content_held = ""
        if self.call_text is not None:
            parsed = self.tools.parse(self.call_text)
            new = self._new_calls(parsed.calls)
            if new:
                delta.setdefault("tool_calls", []).extend(new)
            # what was not a call goes back to the client as content
            if parsed.open_from is not None:
                rest += self.call_text[parsed.open_from :] if self.calls else self.call_text
            elif not parsed.calls:
                rest += self.call_text
            else:
                rest += parsed.content
        if rest:
            delta["content"] = delta.get("content", "") + rest
        return delta

    def _content(self, text: str) -> list[dict] | str:
        """Content certain to be content; calls that closed go to `self._pending_calls`."""
        self._pending: list[dict] = []
        if self.tools is None:
            return text
        if self.call_text is not None:
            self.call_text += text
            self._pending = self._new_calls(self.tools.parse(self.call_text).calls)
            return ""
        buf = self.content_held + text
        at = buf.find(self.tools.start)
        if at >= 0:
            self.content_held = ""
            self.call_text = buf[at:]
            self._pending = self._new_calls(self.tools.parse(self.call_text).calls)
            return buf[:at]
        keep = held_suffix(buf, self.tools.start)
        self.content_held = buf[len(buf) - keep :]
        return buf[: len(buf) - keep]

    def _new_calls(self, calls: list[ToolCall]) -> list[dict]:
        new = [
            c.to_openai(index=len(self.calls) + i) for i, c in enumerate(calls[len(self.calls) :])
        ]
        self.calls.extend(new)
        return new

    def _delta(self, reasoning: str, content: str) -> dict:
        delta: dict = {}
        if reasoning:
            delta["reasoning_content"] = reasoning
        if content:
            delta["content"] = content
        if self._pending:
            delta["tool_calls"] = self._pending
            self._pending = []
        return delta


def read_chat_output(
    text: str, tool_parser: ToolCallParser | None, reasoning: ReasoningFormat | None
) -> dict:
    """A whole answer as an OpenAI message: content (None when only calls), tool_calls,
    reasoning_content when a reasoning parser is on."""
    reader = ChatOutputReader(tool_parser, reasoning)
    first, last = reader.feed(text), reader.finish()
    message: dict = {"role": "assistant"}
    content = first.get("content", "") + last.get("content", "")
    if reasoning is not None:
        message["reasoning_content"] = (
            first.get("reasoning_content", "") + last.get("reasoning_content", "")
        ).strip() or None
    if reader.calls:
        message["content"] = content.strip() or None
        message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in reader.calls]
    else:
        message["content"] = content
    return message
