"""Per-request sampling parameters with SGLang's names, validated with errors that name the field."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from runtime.kv_compression.spec import request_spec

# SGLang's sampling params that ask for something this runtime does not do; accepted when empty.
NOT_SUPPORTED = (
    "stop_regex",
    "custom_params",
)


CONSTRAINT_FIELDS = ("regex", "json_schema", "ebnf", "structural_tag")

# Stop strings are searched for after every token, so their number and length are bounded.
MAX_STOP_STRINGS, MAX_STOP_LENGTH = 32, 512


@dataclass
class SamplingParams:
    max_new_tokens: int = 128
    min_new_tokens: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    n: int = 1
    seed: int | None = None
    regex: str | None = None  # constraints: at most one of the four
    json_schema: str | None = None
    ebnf: str | None = None
    no_stop_trim: bool = False  # keep the matched stop string or token in the text
    logit_bias: dict[int, float] | None = None  # token id -> added to its logit, in [-100, 100]
    structural_tag: str | None = None  # xgrammar's structural tag, as JSON (tool calls use it)
    # keep only some prompt KV: {"method": "snapkv", "budget": 512, ...options}
    kv_compression: dict | None = None

    @classmethod
    def from_dict(cls, params: dict | None) -> SamplingParams:
        params = dict(params or {})
        if "sampling_seed" in params and "seed" not in params:
            params["seed"] = params.pop("sampling_seed")
        for name in NOT_SUPPORTED:
            if name in params:
                if params[name] not in (None, False, [], {}, ""):
                    raise ValueError(f"sampling_params.{name}: not supported by this server")
                del params[name]  # SGLang's clients send them empty with every request
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - names)
        if unknown:
            raise ValueError(
                f"sampling_params.{unknown[0]}: unknown sampling parameter "
                f"(known: {', '.join(sorted(names))})"
            )
        if isinstance(params.get("stop"), str):
            params["stop"] = [params["stop"]]
        if isinstance(params.get("stop_token_ids"), int):
            params["stop_token_ids"] = [params["stop_token_ids"]]
        for k in ("stop", "stop_token_ids", "logit_bias"):
            if params.get(k) is None:
                params.pop(k, None)
        if "logit_bias" in params:
            params["logit_bias"] = _token_bias(params["logit_bias"])
        if "kv_compression" in params:
            params["kv_compression"] = request_spec(params["kv_compression"])
        sp = cls(**params)
        sp.validate()
        return sp

    def validate(self) -> None:
        def bad(name: str, msg: str):
            raise ValueError(f"sampling_params.{name}: {msg}, got {getattr(self, name)!r}")

        def is_int(x) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)

        def is_num(x) -> bool:
            return isinstance(x, (int, float)) and not isinstance(x, bool)

        for name in ("max_new_tokens", "min_new_tokens", "top_k", "n"):
            if not is_int(getattr(self, name)):
                bad(name, "must be an integer")
        for name in (
            "temperature",
            "top_p",
            "min_p",
            "frequency_penalty",
            "presence_penalty",
            "repetition_penalty",
        ):
            if not is_num(getattr(self, name)):
                bad(name, "must be a number")
        for name in (
            "ignore_eos",
            "skip_special_tokens",
            "spaces_between_special_tokens",
            "no_stop_trim",
        ):
            if not isinstance(getattr(self, name), bool):
                bad(name, "must be true or false")
        if self.max_new_tokens < 0:
            bad("max_new_tokens", "must be >= 0")
        if self.min_new_tokens < 0 or self.min_new_tokens > self.max_new_tokens:
            bad("min_new_tokens", "must be between 0 and max_new_tokens")
        if self.temperature < 0:
            bad("temperature", "must be >= 0")
        if not 0 < self.top_p <= 1:
            bad("top_p", "must be in (0, 1]")
        if self.top_k == 0 or self.top_k < -1:
            bad("top_k", "must be -1 (off) or >= 1")
        if not 0 <= self.min_p <= 1:
            bad("min_p", "must be in [0, 1]")
        if not -2 <= self.frequency_penalty <= 2:
            bad("frequency_penalty", "must be in [-2, 2]")
        if not -2 <= self.presence_penalty <= 2:
            bad("presence_penalty", "must be in [-2, 2]")
        if not 0 < self.repetition_penalty <= 2:
            bad("repetition_penalty", "must be in (0, 2]")
        if self.n < 1:
            bad("n", "must be >= 1")
        if self.seed is not None and not is_int(self.seed):
            bad("seed", "must be an integer")
        if not isinstance(self.stop, list) or not all(isinstance(s, str) and s for s in self.stop):
            bad("stop", "must be a non-empty string or a list of them")
        if len(self.stop) > MAX_STOP_STRINGS:
            bad("stop", f"at most {MAX_STOP_STRINGS} stop strings")
        if any(len(x) > MAX_STOP_LENGTH for x in self.stop):
            bad("stop", f"a stop string may be at most {MAX_STOP_LENGTH} characters")
        given = [k for k in CONSTRAINT_FIELDS if getattr(self, k) is not None]
        for k in given:
            if not isinstance(getattr(self, k), str) or not getattr(self, k):
                bad(k, "must be a non-empty string")
        if len(given) > 1:
            bad(
                given[1],
                f"give at most one of {', '.join(CONSTRAINT_FIELDS)} (also got {given[0]})",
            )
        if not isinstance(self.stop_token_ids, list) or not all(
            is_int(t) and t >= 0 for t in self.stop_token_ids
        ):
            bad("stop_token_ids", "must be a list of token ids")

    def check_lengths(self, prompt_len: int, context_len: int, vocab_size: int) -> None:
        """Checks what depends on the prompt and the model."""
        if prompt_len + self.max_new_tokens > context_len:
            raise ValueError(
                f"sampling_params.max_new_tokens: prompt ({prompt_len} tokens) + max_new_tokens "
                f"({self.max_new_tokens}) exceeds the context length {context_len}"
            )
        if any(t >= vocab_size for t in self.stop_token_ids):
            raise ValueError(
                f"sampling_params.stop_token_ids: ids must be < vocab size {vocab_size}"
            )
        if self.logit_bias and max(self.logit_bias) >= vocab_size:
            raise ValueError(
                f"sampling_params.logit_bias: token ids must be < vocab size {vocab_size}, "
                f"got {max(self.logit_bias)}"
            )

    @property
    def constraint(self) -> tuple[str, str] | None:
        """(kind, spec) of the grammar this request must follow, if any."""
        for kind in CONSTRAINT_FIELDS:
            if getattr(self, kind) is not None:
                return kind, getattr(self, kind)
        return None

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1

    @property
    def adjusts_logits(self) -> bool:
        """Whether the sampler must change this request's logits before choosing."""
        return self.has_penalties or bool(self.logit_bias)

    @property
    def has_penalties(self) -> bool:
        return (
            self.frequency_penalty != 0
            or self.presence_penalty != 0
            or self.repetition_penalty != 1
        )


def _token_bias(bias) -> dict[int, float]:
    """OpenAI's `logit_bias` (token ids as JSON object keys) as {token id: bias}."""
    if not isinstance(bias, dict):
        raise ValueError(f"sampling_params.logit_bias: must map token ids to numbers, got {bias!r}")
    out = {}
    for key, value in bias.items():
        try:
            tid = int(key)
        except (TypeError, ValueError):
            tid = -1
        if tid < 0 or isinstance(key, bool):
            raise ValueError(f"sampling_params.logit_bias: {key!r} is not a token id")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or abs(value) > 100:
            raise ValueError(
                f"sampling_params.logit_bias: the bias of token {key} must be a number "
                f"in [-100, 100], got {value!r}"
            )
        out[tid] = float(value)
    return out
