"""The OpenAI request bodies, as pydantic models, and what their fields mean to our engine.

SGLang's extra sampling fields (top_k, min_p, ignore_eos, ...) are declared and pass through to
our sampling params; vLLM's and SGLang's other extras are mapped in `vendor_fields`, which also
decides what becomes of an unknown field.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from runtime.entrypoints.http_utils import APIError
from runtime.entrypoints.vendor_fields import (
    VendorFields,
    check_extra_fields,
    stop_trim_off,
    vendor_constraints,
)


class StreamOptions(BaseModel):
    include_usage: bool = False


class CommonRequest(VendorFields):
    """Fields both endpoints take: OpenAI's, then SGLang's extras for our sampling params."""

    model_config = ConfigDict(extra="allow")
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
    kv_compression: dict | None = None  # {"method": "snapkv", "budget": 512, ...options}

    def apply_response_format(self) -> None:
        """`response_format` or a vendor's guided decoding field becomes this request's
        regex / JSON schema / EBNF constraint; the unknown extra fields are checked here too."""
        check_extra_fields(self.model_extra)
        found = [(k, k, getattr(self, k)) for k in ("regex", "json_schema", "ebnf")]
        found = [x for x in found if x[2] is not None] + vendor_constraints(self)
        schema = response_format_schema(self.response_format)
        if schema is not None:
            found.append(("response_format", "json_schema", schema))
        if len(found) > 1:
            names = " and ".join(x[0] for x in found[:2])
            raise APIError(400, f"{found[1][0]}: give one constraint, not {names}", found[1][0])
        if found and found[0][1] != found[0][0]:  # a vendor's name for one of ours
            self.regex = self.json_schema = self.ebnf = None
            setattr(self, found[0][1], found[0][2])

    def sampling_params(self, max_new_tokens: int) -> dict:
        renamed = {"min_tokens": "min_new_tokens"}
        params = {"max_new_tokens": max_new_tokens, "n": self.n}
        if stop_trim_off(self) is not None:
            params["no_stop_trim"] = stop_trim_off(self)
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
            "logit_bias",
            "kv_compression",
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
    # How the conversation is rendered (vLLM's and SGLang's fields)
    chat_template: str | None = None
    chat_template_kwargs: dict | None = None
    add_generation_prompt: bool | None = None  # default: unless the last turn is the assistant's
    continue_final_message: bool = False  # leave the last (assistant) turn open to continue it

    def template_kwargs(self, last_role: str) -> dict:
        """apply_chat_template's arguments beyond the messages, checked."""
        extra = dict(self.chat_template_kwargs or {})
        reserved = sorted(set(extra) & RESERVED_TEMPLATE_KWARGS)
        if reserved:
            raise APIError(
                400, f"chat_template_kwargs.{reserved[0]}: not a template variable", reserved[0]
            )
        add = self.add_generation_prompt
        if self.continue_final_message:
            if add:
                raise APIError(
                    400,
                    "continue_final_message: give it or add_generation_prompt, not both",
                    "continue_final_message",
                )
            if last_role != "assistant":
                raise APIError(
                    400,
                    "continue_final_message: the last message must be the assistant's",
                    "continue_final_message",
                )
            add = False
        elif add is None:
            add = last_role != "assistant"
        kwargs = {
            **extra,
            "add_generation_prompt": add,
            "continue_final_message": self.continue_final_message,
        }
        if self.chat_template is not None:
            kwargs["chat_template"] = self.chat_template
        return kwargs


# apply_chat_template's own parameters: a template variable of these names would clash.
RESERVED_TEMPLATE_KWARGS = {
    "conversation",
    "tools",
    "documents",
    "chat_template",
    "tokenize",
    "padding",
    "truncation",
    "max_length",
    "return_tensors",
    "return_dict",
    "return_assistant_tokens_mask",
    "tokenizer_kwargs",
}


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
