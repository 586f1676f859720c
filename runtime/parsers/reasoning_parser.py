"""Splits a reasoning model's thinking (`<think>...</think>`) from its answer, whole or streamed.

DeepSeek-R1's template opens the think block in the prompt, so its output starts in reasoning
even without `<think>`; Qwen3 reasons only when its output opens with `<think>`.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.parsers.partial_tags import held_suffix


@dataclass(frozen=True)
class ReasoningFormat:
    start: str
    end: str
    starts_in_reasoning: bool


REASONING_PARSERS = {
    "deepseek-r1": ReasoningFormat("<think>", "</think>", starts_in_reasoning=True),
    "qwen3": ReasoningFormat("<think>", "</think>", starts_in_reasoning=False),
}


def reasoning_format(name: str) -> ReasoningFormat:
    if name not in REASONING_PARSERS:
        raise ValueError(
            f"reasoning_parser: must be one of {tuple(REASONING_PARSERS)}, got {name!r}"
        )
    return REASONING_PARSERS[name]


class ReasoningSplitter:
    """Feed text as it comes; each call returns (reasoning, content) that is new and certain.
    A tag cut across two chunks is held back until the chunk that completes it."""

    def __init__(self, fmt: ReasoningFormat) -> None:
        self.fmt = fmt
        self.mode = "opening"  # then "reasoning" or "content"
        self.pending = ""

    def feed(self, text: str) -> tuple[str, str]:
        self.pending += text
        reasoning = content = ""
        if self.mode == "opening":
            head = self.pending.lstrip()
            if head.startswith(self.fmt.start):
                self.pending = head[len(self.fmt.start) :]
                self.mode = "reasoning"
            elif self.fmt.start.startswith(head):
                return "", ""  # still could be the opening tag (or only whitespace so far)
            else:
                self.mode = "reasoning" if self.fmt.starts_in_reasoning else "content"
        if self.mode == "reasoning":
            at = self.pending.find(self.fmt.end)
            if at < 0:
                keep = held_suffix(self.pending, self.fmt.end)
                cut = len(self.pending) - keep
                reasoning, self.pending = self.pending[:cut], self.pending[cut:]
                return reasoning, ""
            reasoning = self.pending[:at]
            self.pending = self.pending[at + len(self.fmt.end) :].lstrip()
            self.mode = "content"
        content, self.pending = self.pending, ""
        return reasoning, content

    def finish(self) -> tuple[str, str]:
        """What is still held at the end: an unclosed think block is reasoning, the rest content."""
        rest, self.pending = self.pending, ""
        if self.mode == "reasoning" or (self.mode == "opening" and self.fmt.starts_in_reasoning):
            return rest, ""
        return "", rest


def split_reasoning(fmt: ReasoningFormat, text: str) -> tuple[str | None, str]:
    """(reasoning or None when the model did not reason, content) of a whole output."""
    splitter = ReasoningSplitter(fmt)
    r1, c1 = splitter.feed(text)
    r2, c2 = splitter.finish()
    reasoning = (r1 + r2).strip()
    return (reasoning or None), (c1 + c2)
