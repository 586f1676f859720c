"""Settings in two layers: what the scheduler process needs, and the HTTP server's own on top.

`ServerArgs` is every setting, built from the CLI or from `Engine(**kwargs)`. Only its
`SchedulerArgs` part crosses to the scheduler process, over its pipe at start-up: the API key,
host and port never leave the HTTP process.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass

from kernels.attention.registry import ATTENTION_BACKENDS
from runtime.constrained.registry import GRAMMAR_BACKENDS
from runtime.kv_cache_dtype import KV_CACHE_DTYPES
from runtime.scheduler.schedule_policy import POLICIES

API_KEY_ENV = "RADIXSERVE_API_KEY"
DTYPES = ("auto", "float32", "bfloat16", "float16")  # torch dtype names, and auto


@dataclass
class SchedulerArgs:
    """What the scheduler process (model runner, KV pools, radix cache, grammars) runs with."""

    model_path: str | None = None  # None: the embedded default model
    tokenizer_path: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    context_length: int | None = None
    max_total_tokens: int | None = None
    mem_fraction_static: float | None = None
    max_running_requests: int = 64
    max_prefill_tokens: int = 8192
    chunked_prefill_size: int = 2048
    schedule_policy: str = "lpm"
    disable_radix_cache: bool = False
    page_size: int = 1
    kv_cache_dtype: str = "auto"  # how the KV pool stores K/V (auto: the model's dtype)
    attention_backend: str = "auto"  # Triton on CUDA, torch-native on the CPU
    disable_cuda_graph: bool = False
    cuda_graph_max_bs: int = 160
    grammar_backend: str = "xgrammar"
    disable_jump_forward: bool = False
    random_seed: int = 0
    cache_dir: str | None = None
    log_level: str = "info"
    disable_packed_gemm: bool = False  # CPU: skip the packed weight copies (saves memory)
    max_json_string_length: int | None = None  # a cap for strings a JSON schema leaves open
    debug_check_memory: bool = False  # assert the KV accounting after every step

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def need(ok: bool, name: str, msg: str) -> None:
            if not ok:
                raise ValueError(f"{name}: {msg}")

        need(self.dtype in DTYPES, "dtype", f"must be one of {DTYPES}, got {self.dtype!r}")
        need(
            self.attention_backend in ("auto", *ATTENTION_BACKENDS),
            "attention_backend",
            f"must be one of {('auto', *ATTENTION_BACKENDS)}, got {self.attention_backend!r}",
        )
        need(
            self.grammar_backend in GRAMMAR_BACKENDS,
            "grammar_backend",
            f"must be one of {tuple(GRAMMAR_BACKENDS)}, got {self.grammar_backend!r}",
        )
        need(
            self.schedule_policy in POLICIES,
            "schedule_policy",
            f"must be one of {POLICIES}, got {self.schedule_policy!r}",
        )
        need(self.max_running_requests >= 1, "max_running_requests", "must be >= 1")
        need(self.page_size >= 1, "page_size", "must be >= 1")
        need(
            self.kv_cache_dtype in KV_CACHE_DTYPES,
            "kv_cache_dtype",
            f"must be one of {KV_CACHE_DTYPES}, got {self.kv_cache_dtype!r}",
        )
        need(
            self.kv_cache_dtype != "int4" or self.page_size >= 8,
            "page_size",
            "the int4 KV cache quantizes keys over whole pages: use --page-size >= 8 (e.g. 32)",
        )
        need(self.cuda_graph_max_bs >= 1, "cuda_graph_max_bs", "must be >= 1")
        need(self.max_prefill_tokens >= 16, "max_prefill_tokens", "must be >= 16")
        need(
            self.chunked_prefill_size == -1 or self.chunked_prefill_size >= 16,
            "chunked_prefill_size",
            "must be >= 16, or -1 to disable chunking",
        )
        if self.max_total_tokens is not None:
            need(self.max_total_tokens >= 16, "max_total_tokens", "must be >= 16")
        if self.mem_fraction_static is not None:
            need(0 < self.mem_fraction_static < 1, "mem_fraction_static", "must be in (0, 1)")
        if self.context_length is not None:
            need(self.context_length >= 16, "context_length", "must be >= 16")
        if self.max_json_string_length is not None:
            need(self.max_json_string_length >= 1, "max_json_string_length", "must be >= 1")


@dataclass
class ServerArgs(SchedulerArgs):
    """Every setting: the scheduler's, and those that stay in the HTTP process."""

    served_model_name: str | None = None  # None: the model file's or folder's name
    host: str = "127.0.0.1"
    port: int = 30000
    api_key: str | None = None  # None: $RADIXSERVE_API_KEY, if set
    # Limits that keep one client from taking the server down.
    max_fanout: int = 64  # sequences one call may start: its prompts times n
    max_queued_requests: int = 1024  # sequences open at once; past it, 503 with Retry-After
    max_request_bytes: int = 16 << 20
    graceful_shutdown_timeout: float = 5.0  # seconds to drain before aborting what runs

    def __post_init__(self) -> None:
        if self.api_key is None:
            self.api_key = os.environ.get(API_KEY_ENV) or None
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.port < 65536:
            raise ValueError(f"port: must be in [0, 65535], got {self.port}")
        for name in ("max_fanout", "max_queued_requests", "max_request_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.graceful_shutdown_timeout < 0:
            raise ValueError("graceful_shutdown_timeout: must be >= 0")

    def scheduler_args(self, **changes) -> SchedulerArgs:
        """The part the scheduler process gets, with `changes` applied."""
        names = [f.name for f in dataclasses.fields(SchedulerArgs)]
        return SchedulerArgs(**{**{n: getattr(self, n) for n in names}, **changes})

    @classmethod
    def from_kwargs(cls, **kwargs) -> ServerArgs:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise TypeError(f"unknown server argument(s): {', '.join(unknown)}")
        return cls(**kwargs)

    @classmethod
    def add_cli_args(cls, parser: argparse.ArgumentParser) -> None:
        """SGLang's flag names; defaults come from the dataclass."""
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        for flag, kind, help_text in _CLI_FLAGS:
            name = flag[2:].replace("-", "_")
            extra = {"choices": _CHOICES[name]} if name in _CHOICES else {}
            if kind is bool:
                parser.add_argument(flag, action="store_true", help=help_text)
            else:
                parser.add_argument(
                    flag, type=kind, default=defaults[name], help=help_text, **extra
                )

    @classmethod
    def from_cli_args(cls, args: argparse.Namespace) -> ServerArgs:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in vars(args).items() if k in names})


_CHOICES = {
    "dtype": DTYPES,
    "schedule_policy": POLICIES,
    "attention_backend": ("auto", *ATTENTION_BACKENDS),
    "grammar_backend": tuple(GRAMMAR_BACKENDS),
    "kv_cache_dtype": KV_CACHE_DTYPES,
}
_CLI_FLAGS = [
    (
        "--model-path",
        str,
        "GGUF file or Hugging Face folder (default: SmolLM2-135M-Instruct, embedded)",
    ),
    ("--tokenizer-path", str, "tokenizer folder, when it is not beside the model"),
    ("--served-model-name", str, "the model's name in the OpenAI API (default: from its path)"),
    ("--host", str, "address the HTTP server listens on"),
    ("--port", int, "port the HTTP server listens on"),
    (
        "--api-key",
        str,
        "require `Authorization: Bearer <key>` on every route but /health (or $RADIXSERVE_API_KEY)",
    ),
    ("--device", str, "cpu, cuda, or auto"),
    ("--dtype", str, "weights and activations (auto: float32 on the CPU, bfloat16 on CUDA)"),
    ("--context-length", int, "longest prompt + output (default: the model's)"),
    ("--max-total-tokens", int, "KV pool size in tokens (overrides --mem-fraction-static)"),
    ("--mem-fraction-static", float, "share of device memory for weights and the KV pool"),
    ("--max-running-requests", int, "requests decoding at once"),
    ("--max-prefill-tokens", int, "token budget of one prefill batch"),
    ("--chunked-prefill-size", int, "longest prefill chunk of one request (-1: no chunking)"),
    (
        "--schedule-policy",
        str,
        "waiting-queue order: longest cached prefix, heaviest radix subtree, arrival, random",
    ),
    ("--disable-radix-cache", bool, "no prefix sharing between requests"),
    ("--page-size", int, "tokens per radix-cache page (keys and evictions move in whole pages)"),
    (
        "--kv-cache-dtype",
        str,
        "KV pool storage (auto: the model's dtype; int4 quantizes keys per page: --page-size >= 8)",
    ),
    (
        "--attention-backend",
        str,
        "attention kernels (auto: triton on CUDA, torch_native on the CPU; flashinfer: CUDA only)",
    ),
    ("--disable-cuda-graph", bool, "CUDA: run decode steps eagerly instead of replaying graphs"),
    ("--cuda-graph-max-bs", int, "CUDA: largest decode batch captured as a graph"),
    (
        "--grammar-backend",
        str,
        "compiles regex / json_schema / ebnf constraints (outlines: regex and JSON schema only)",
    ),
    (
        "--disable-jump-forward",
        bool,
        "decode text a grammar forces token by token instead of appending it in one step",
    ),
    ("--random-seed", int, "seed for requests that give none"),
    ("--cache-dir", str, "where converted weights and tokenizers are cached"),
    ("--log-level", str, "logging level"),
    (
        "--disable-packed-gemm",
        bool,
        "CPU: no packed weight copies for small decode batches (less memory, slower decode)",
    ),
    ("--debug-check-memory", bool, "check the KV pool accounting after every step"),
    ("--max-fanout", int, "most sequences one request may start (its prompts times n)"),
    (
        "--max-queued-requests",
        int,
        "most sequences queued or running at once; past it, 503 with Retry-After",
    ),
    ("--max-request-bytes", int, "largest request body accepted (413 beyond)"),
    (
        "--graceful-shutdown-timeout",
        float,
        "seconds SIGTERM waits for running requests before aborting them",
    ),
    (
        "--max-json-string-length",
        int,
        "longest JSON string a json_schema may generate where it sets no maxLength (default: no cap)",
    ),
]
