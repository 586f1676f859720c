"""The runtime's protocol: every message between its processes, and the public request types.

Three processes, joined by ZMQ PUSH/PULL sockets carrying pickled dataclasses, dispatched with
`isinstance`:

    Engine ──▶ scheduler ──▶ detokenizer ──▶ Engine

- Engine to scheduler: `SchedulerInit` first (the settings, never on a command line), then
  `TokenizedGenerateRequest`, `AbortRequest`, `CallRequest`, and `ShutdownRequest` last.
- Scheduler to detokenizer: `SchedulerReady` or `StartupFailed` once; then the accepted
  `TokenizedGenerateRequest` itself (so the detokenizer meets a request before its first output,
  on the same socket), `BatchTokenOutput` per step, `RequestError`, `CallReply`, and
  `ShutdownRequest` when it stops.
- Detokenizer to Engine: the same, with `BatchTextOutput` in place of `BatchTokenOutput`; it
  keeps requests and shutdowns to itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime.sampling.sampling_params import SamplingParams
    from runtime.server_args import SchedulerArgs


# ---- public request and result types ----


@dataclass
class GenerateRequest:
    """One call of `Engine.generate` or one `/generate` body (`text` there is `prompt`)."""

    prompt: str | list[str] | None = None
    sampling_params: dict | list[dict] | None = None
    input_ids: list[int] | list[list[int]] | None = None
    return_logprob: bool = False
    logprob_start_len: int | None = None
    top_logprobs_num: int | None = None
    stream: bool = False
    rid: str | list[str] | None = None
    return_text_in_logprobs: bool = False
    timeout: float | None = None  # seconds; then the request is aborted with what it has


@dataclass
class FinishReason:
    type: str  # "stop" | "length" | "abort"
    matched: int | str | None = None
    length: int | None = None
    message: str | None = None

    def to_dict(self) -> dict:
        d: dict = {"type": self.type}
        if self.type == "stop":
            d["matched"] = self.matched
        elif self.type == "length":
            d["length"] = self.length
        elif self.message:
            d["message"] = self.message
        return d


# ---- Engine to scheduler ----


@dataclass
class SchedulerInit:
    args: SchedulerArgs


@dataclass
class TokenizedGenerateRequest:
    """One sequence to generate: tokens already made, parameters already validated."""

    rid: str
    input_ids: list[int]
    params: SamplingParams
    return_logprob: bool = False
    logprob_start_len: int = -1  # -1: no input logprobs
    top_logprobs_num: int = 0
    return_text_in_logprobs: bool = False  # read by the detokenizer


@dataclass
class AbortRequest:
    rid: str
    message: str | None = None  # why, for the finish reason (a timeout, say)


@dataclass
class CallRequest:
    """Runs a scheduler query (`server_info`, `flush_cache`, `pin_prefix`...) between two steps."""

    ticket: tuple
    name: str
    args: dict = field(default_factory=dict)


@dataclass
class ShutdownRequest:
    pass


# ---- scheduler to detokenizer to Engine ----


@dataclass
class SchedulerReady:
    info: dict


@dataclass
class StartupFailed:
    why: str


@dataclass
class TokenOutput:
    """One step's news about one request, in tokens."""

    rid: str
    new_token_ids: list[int]
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    finish_reason: FinishReason | None = None
    input_token_logprobs: list | None = None  # [(logprob | None, token_id)], sent once
    input_top_logprobs: list | None = None
    output_token_logprobs: list | None = None  # for new_token_ids
    output_top_logprobs: list | None = None
    queue_time: float | None = None  # seconds in the waiting queue before its first prefill
    kv_tokens_kept: int | None = None  # KV compression: prompt KV tokens kept (layer mean)


@dataclass
class BatchTokenOutput:
    outputs: list[TokenOutput]


@dataclass
class ResultDelta:
    """One step's change to one request's result. `text` becomes text[:offset] + delta."""

    rid: str
    text_offset: int
    text_delta: str
    output_ids: list[int]
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    finish_reason: dict | None = None
    input_token_logprobs: list | None = None  # sent once, whole
    input_top_logprobs: list | None = None
    output_token_logprobs: list = field(default_factory=list)  # for output_ids
    output_top_logprobs: list = field(default_factory=list)
    queue_time: float | None = None
    kv_tokens_kept: int | None = None


@dataclass
class BatchTextOutput:
    deltas: list[ResultDelta]


@dataclass
class RequestError:
    """A request refused or failed before it produced output (its caller gets the error)."""

    rid: str
    error: Exception


@dataclass
class CallReply:
    ticket: tuple
    value: object
