"""The OpenAI request bodies, as pydantic models, and what their fields mean to our engine.

Unknown fields are refused (400 naming them); SGLang's extra sampling fields (top_k, min_p,
ignore_eos, ...) are declared and pass through to our sampling params.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from runtime.entrypoints.http_utils import APIError


class StreamOptions(BaseModel):
    include_usage: bool = False


class CommonRequest(BaseModel):
    """Fields both endpoints take: OpenAI's, then SGLang's extras for our sampling params."""

    model_config = ConfigDict(extra="forbid")
    model: str = "default"
    n: int = Field(1, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    user: str | None = None
    logit_bias: dict | None = None
    # SGLang's extras
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    min_tokens: int | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool | None = None
    skip_special_tokens: bool | None = None
    spaces_between_special_tokens: bool | None = None
    regex: str | None = None
    json_schema: str | dict | None = None
    ebnf: str | None = None
    rid: str | None = None
    timeout: float | None = Field(None, gt=0)  # seconds; then aborted with what it has
    response_format: dict | None = None

    def apply_response_format(self) -> None:
        """`response_format` becomes the JSON schema this request is constrained to."""
        schema = response_format_schema(self.response_format)
        if schema is None:
            return
        if self.regex or self.ebnf or self.json_schema:
            raise APIError(400, "response_format: give it or regex / json_schema / ebnf, not both")
        self.json_schema = schema

    def sampling_params(self, max_new_tokens: int) -> dict:
        if self.logit_bias:
            raise APIError(400, "logit_bias: not supported by this server", "logit_bias")
        renamed = {"min_tokens": "min_new_tokens"}
        params = {"max_new_tokens": max_new_tokens, "n": self.n}
        for name in (
            "temperature",
            "top_p",
            "stop",
            "seed",
            "presence_penalty",
            "frequency_penalty",
            "top_k",
            "min_p",
            "repetition_penalty",
            "min_tokens",
            "stop_token_ids",
            "ignore_eos",
            "skip_special_tokens",
            "spaces_between_special_tokens",
            "regex",
            "json_schema",
            "ebnf",
        ):
            value = getattr(self, name)
            if name == "json_schema" and isinstance(value, dict):
                value = json.dumps(value)
            if value is not None:
                params[renamed.get(name, name)] = value
        return params


class CompletionRequest(CommonRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=0)
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[dict] | None = None  # an assistant's calls, kept for the template
    tool_call_id: str | None = None  # which call a tool message answers

    @model_validator(mode="after")
    def _content_given(self) -> ChatMessage:
        # As OpenAI has it: only an assistant turn (one that calls tools) may come without it.
        if self.content is None and self.role != "assistant":
            raise ValueError(f"content: required in a {self.role} message")
        return self

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""

    def for_template(self) -> dict:
        """The message as the chat template takes it: content None only beside tool calls."""
        out = {"role": self.role, "content": self.text()}
        if self.tool_calls:
            out["tool_calls"] = self.tool_calls
            out["content"] = self.text() or None
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


class ChatRequest(CommonRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=0)
    max_completion_tokens: int | None = Field(None, ge=0)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list | None = None
    tool_choice: str | dict | None = None
    parallel_tool_calls: bool = True
    separate_reasoning: bool = True  # with --reasoning-parser: thinking in reasoning_content


def response_format_schema(fmt: dict | None) -> str | None:
    """OpenAI's `response_format` as the JSON schema to constrain to (None: free text)."""
    kind = (fmt or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return json.dumps({"type": "object"})
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise APIError(
                400,
                "response_format.json_schema.schema: give the JSON schema as an object",
                "response_format",
            )
        return json.dumps(spec["schema"])
    raise APIError(
        400,
        f"response_format.type: must be text, json_object or json_schema, got {kind!r}",
        "response_format",
    )
