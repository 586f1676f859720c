"""Other servers' extra OpenAI body fields (vLLM's and SGLang's), and what each one means here.

SDKs and gateways add such fields to every request, so an unknown field is logged once and
ignored. A field that asks for something this server does not do is refused (400 naming it)
when it is set, since ignoring it would silently change the answer.
"""

from __future__ import annotations

import json
import logging
import re

from pydantic import BaseModel

from runtime.entrypoints.http_utils import APIError

logger = logging.getLogger(__name__)

# Set to anything but an empty / off value, these would be silently dropped: refused.
REFUSED_WHEN_SET = {
    "return_hidden_states": "hidden states are not returned",
    "use_beam_search": "no beam search",
    "prompt_logprobs": "give logprobs with echo on /v1/completions instead",
    "lora_path": "no LoRA adapters",
    "lora_request": "no LoRA adapters",
    "image_data": "text models only",
    "audio": "text models only",
    "video_data": "text models only",
    "mm_processor_kwargs": "text models only",
    "documents": "no retrieval documents in the chat template",
    "bad_words": "not implemented; use logit_bias",
    "allowed_token_ids": "not implemented; use logit_bias",
    "logits_processors": "no custom logits processors",
    "custom_logit_processor": "no custom logits processors",
    "truncate_prompt_tokens": "prompts are never truncated",
    "guided_whitespace_pattern": "JSON whitespace follows the grammar backend",
    "return_tokens_as_token_ids": "tokens are returned as text",
    "prediction": "no predicted outputs",
    "echo": "echo is a /v1/completions field",
}
# The same for SGLang's native /generate body (its router sends several, empty or off).
NATIVE_REFUSED_WHEN_SET = {
    "prompt": "the prompt of /generate is `text`",
    "image_data": "text models only",
    "video_data": "text models only",
    "audio_data": "text models only",
    "input_embeds": "give text or input_ids",
    "modalities": "text models only",
    "lora_path": "no LoRA adapters",
    "lora_id": "no LoRA adapters",
    "session_params": "no sessions; the radix cache reuses a shared prefix by itself",
    "return_hidden_states": "hidden states are not returned",
    "background": "requests are answered in the foreground",
    "return_bytes": "no byte-level output",
    "return_entropy": "no entropy output",
    "custom_logit_processor": "no custom logits processors",
    "token_ids_logprob": "give top_logprobs_num instead",
    "bootstrap_host": "no prefill-decode disaggregation",
    "bootstrap_room": "no prefill-decode disaggregation",
    "data_parallel_rank": "one rank per server; see --dp-size",
}
# Known fields that change nothing here: not worth a log line.
NO_EFFECT = {
    "guided_decoding_backend",  # the server's --grammar-backend decides
    "separate_reasoning",  # meaningful with a reasoning parser only
    "stream_reasoning",
    "length_penalty",  # beam search only
    "priority",
    "modalities",
    "service_tier",
    "store",
    "metadata",
    "reasoning_effort",
    "model",  # SGLang's router adds it to /generate bodies
    "log_metrics",
    "no_logs",
}
EMPTY = (None, False, [], {}, "")
_logged: set[str] = set()
_REGEX_SPECIAL = re.compile(r"([\\.^$|?*+()\[\]{}])")
_STRUCTURED_KEYS = {"json": "json_schema", "regex": "regex", "choice": "regex", "grammar": "ebnf"}


class VendorFields(BaseModel):
    """vLLM's guided decoding fields and SGLang's trimming switch, next to OpenAI's."""

    guided_json: str | dict | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None
    structured_outputs: dict | None = None
    include_stop_str_in_output: bool | None = None
    no_stop_trim: bool | None = None


def check_extra_fields(extra: dict | None, refused: dict[str, str] = REFUSED_WHEN_SET) -> None:
    """Refuses the set fields we cannot honour; logs each other unknown field name once."""
    for name, value in (extra or {}).items():
        if name in refused:
            if value not in EMPTY:
                why = refused[name]
                raise APIError(400, f"{name}: not supported by this server ({why})", name)
        elif name not in NO_EFFECT and name not in _logged:
            _logged.add(name)
            logger.warning("ignoring the unknown request field %r (logged once)", name)


def choice_regex(choices: list[str]) -> str:
    """A regex matching exactly one of `choices`."""
    if not choices:
        raise APIError(400, "guided_choice: give at least one choice", "guided_choice")
    return "(" + "|".join(_REGEX_SPECIAL.sub(r"\\\1", c) for c in choices) + ")"


def _as_schema(value: str | dict | bool) -> str:
    return json.dumps(value) if isinstance(value, dict) else value


def vendor_constraints(req: VendorFields) -> list[tuple[str, str, str]]:
    """The grammar constraints the vendor fields ask for, as (field, kind, spec)."""
    found = []
    if req.guided_json is not None:
        found.append(("guided_json", "json_schema", _as_schema(req.guided_json)))
    if req.guided_regex is not None:
        found.append(("guided_regex", "regex", req.guided_regex))
    if req.guided_choice is not None:
        found.append(("guided_choice", "regex", choice_regex(req.guided_choice)))
    if req.guided_grammar is not None:
        found.append(("guided_grammar", "ebnf", req.guided_grammar))
    for key, value in (req.structured_outputs or {}).items():
        field = f"structured_outputs.{key}"
        if value in EMPTY:
            continue
        if key == "json_object":
            found.append((field, "json_schema", json.dumps({"type": "object"})))
        elif key == "choice":
            if not isinstance(value, list):
                raise APIError(400, f"{field}: give a list of strings", "structured_outputs")
            found.append((field, "regex", choice_regex(value)))
        elif key in _STRUCTURED_KEYS:
            found.append((field, _STRUCTURED_KEYS[key], _as_schema(value)))
        else:
            raise APIError(400, f"{field}: not supported by this server", "structured_outputs")
    return found


def stop_trim_off(req: VendorFields) -> bool | None:
    """SGLang's `no_stop_trim` and vLLM's `include_stop_str_in_output` are one switch."""
    given = [v for v in (req.no_stop_trim, req.include_stop_str_in_output) if v is not None]
    return any(given) if given else None
