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
from runtime.kv_compression.methods import METHODS
from runtime.kv_compression.spec import server_spec
from runtime.parsers.reasoning_parser import REASONING_PARSERS
from runtime.parsers.tool_call_parser import TOOL_CALL_PARSERS
from runtime.scheduler.schedule_policy import POLICIES

API_KEY_ENV = "RADIXSERVE_API_KEY"
DTYPES = ("auto", "float32", "bfloat16", "float16")  # torch dtype names, and auto
QUANTIZATIONS = ("auto", "none", "int8", "int4")  # weight-only


@dataclass
class SchedulerArgs:
    """What the scheduler process (model runner, KV pools, radix cache, grammars) runs with."""

    model_path: str | None = None  # None: the embedded default model
    tokenizer_path: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    quantization: str = "auto"  # weight-only; auto keeps a GGUF file's quantized tensors packed
    enable_torch_compile: bool = False  # CPU: compile the decode step, bucketed by batch size
    torch_compile_max_bs: int = 32
    # The same tokens whatever the cache hits and the batch (see --enable-deterministic-inference)
    enable_deterministic_inference: bool = False
    enable_mixed_chunk: bool = False  # decoding requests ride in a prefill's forward
    context_length: int | None = None
    max_total_tokens: int | None = None
    mem_fraction_static: float | None = None
    gpu_memory_utilization: float | None = None  # vLLM's name; CUDA only, as in vLLM's CPU build
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
    grammar_compile_timeout: float = 10.0  # seconds; 0: compile in-process, without a deadline
    disable_jump_forward: bool = False
    random_seed: int = 0
    cache_dir: str | None = None
    log_level: str = "info"
    disable_packed_gemm: bool = False  # CPU: the plain GEMM (float32: no packed copies)
    max_json_string_length: int | None = None  # a cap for strings a JSON schema leaves open
    debug_check_memory: bool = False  # assert the KV accounting after every step
    max_pinned_tokens: int | None = None  # cap on pinned prefix tokens; None: half the pool
    kv_compression: str | None = None  # a method every prompt past the threshold compresses with
    kv_compression_budget: int = 512
    kv_compression_min_tokens: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def need(ok: bool, name: str, msg: str) -> None:
            if not ok:
                raise ValueError(f"{name}: {msg}")

        need(self.dtype in DTYPES, "dtype", f"must be one of {DTYPES}, got {self.dtype!r}")
        need(
            self.quantization in QUANTIZATIONS,
            "quantization",
            f"must be one of {QUANTIZATIONS}, got {self.quantization!r}",
        )
        need(self.torch_compile_max_bs >= 1, "torch_compile_max_bs", "must be >= 1")
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
        if self.gpu_memory_utilization is not None:
            need(
                0 < self.gpu_memory_utilization <= 1,
                "gpu_memory_utilization",
                "must be in (0, 1]",
            )
        if self.context_length is not None:
            need(self.context_length >= 16, "context_length", "must be >= 16")
        need(
            self.grammar_compile_timeout >= 0,
            "grammar_compile_timeout",
            "must be >= 0 (0: no deadline)",
        )
        if self.max_json_string_length is not None:
            need(self.max_json_string_length >= 1, "max_json_string_length", "must be >= 1")
        if self.max_pinned_tokens is not None:
            need(self.max_pinned_tokens >= 0, "max_pinned_tokens", "must be >= 0")
        need(self.kv_compression_min_tokens >= 0, "kv_compression_min_tokens", "must be >= 0")
        server_spec(self.kv_compression, self.kv_compression_budget)


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
    chat_template: str | None = None  # a Jinja file or the template itself, over the tokenizer's
    log_requests: bool = False  # one log line per finished request
    dp_size: int = 1  # replicas behind sglang-router (runtime.data_parallel)
    tool_call_parser: str | None = None  # None: the format the chat template shows
    reasoning_parser: str | None = None  # None: reasoning stays in the content

    def __post_init__(self) -> None:
        if self.api_key is None:
            self.api_key = os.environ.get(API_KEY_ENV) or None
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.port < 65536:
            raise ValueError(f"port: must be in [0, 65535], got {self.port}")
        for name in ("max_fanout", "max_queued_requests", "max_request_bytes", "dp_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.graceful_shutdown_timeout < 0:
            raise ValueError("graceful_shutdown_timeout: must be >= 0")
        t = self.chat_template
        if t is not None and not os.path.isfile(t) and "{" not in t:
            raise ValueError(
                f"chat_template: {t!r} is neither a file nor a Jinja template; "
                "give the path of a .jinja file or the template text"
            )
        for name, known in (
            ("tool_call_parser", TOOL_CALL_PARSERS),
            ("reasoning_parser", REASONING_PARSERS),
        ):
            value = getattr(self, name)
            if value is not None and value not in known:
                raise ValueError(f"{name}: must be one of {tuple(known)}, got {value!r}")

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
        """SGLang's flag names, then vLLM's for the same setting; defaults from the dataclass."""
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        for flags, kind, help_text in _CLI_FLAGS:
            flags = (flags,) if isinstance(flags, str) else flags
            name = flags[0][2:].replace("-", "_")
            extra = {"choices": _CHOICES[name]} if name in _CHOICES else {}
            if kind is bool:
                parser.add_argument(*flags, dest=name, action="store_true", help=help_text)
            else:
                parser.add_argument(
                    *flags, dest=name, type=kind, default=defaults[name], help=help_text, **extra
                )

    @classmethod
    def from_cli_args(cls, args: argparse.Namespace) -> ServerArgs:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in vars(args).items() if k in names})


_CHOICES = {
    "dtype": DTYPES,
    "quantization": QUANTIZATIONS,
    "schedule_policy": POLICIES,
    "attention_backend": ("auto", *ATTENTION_BACKENDS),
    "grammar_backend": tuple(GRAMMAR_BACKENDS),
    "tool_call_parser": tuple(TOOL_CALL_PARSERS),
    "reasoning_parser": tuple(REASONING_PARSERS),
    "kv_cache_dtype": KV_CACHE_DTYPES,
    "kv_compression": METHODS,
}
_CLI_FLAGS = [
    (
        ("--model-path", "--model"),
        str,
        "GGUF file, Hugging Face folder, or a model id in the local Hugging Face cache "
        "(None: SmolLM2-135M-Instruct, embedded)",
    ),
    (("--tokenizer-path", "--tokenizer"), str, "tokenizer folder, when it is not beside the model"),
    ("--served-model-name", str, "the model's name in the OpenAI API (None: from its path)"),
    ("--host", str, "address the HTTP server listens on"),
    ("--port", int, "port the HTTP server listens on"),
    (
        "--api-key",
        str,
        "require `Authorization: Bearer <key>` on every route but /health (or $RADIXSERVE_API_KEY)",
    ),
    ("--device", str, "cpu, cuda, or auto"),
    (
        "--dtype",
        str,
        "activations and dense weights (auto: bfloat16 on CUDA and on CPUs with AVX512-BF16 or "
        "AMX, else float32)",
    ),
    (
        "--quantization",
        str,
        "weight-only quantization (auto: keep a GGUF file's Q4_0/Q4_1/Q8_0 tensors packed; "
        "int8/int4: quantize dense weights at load; none: dequantize everything)",
    ),
    ("--enable-torch-compile", bool, "compile the decode step with torch.compile"),
    ("--torch-compile-max-bs", int, "largest decode batch that runs compiled"),
    (
        "--enable-deterministic-inference",
        bool,
        "greedy outputs independent of prefix-cache hits and of batching: one kernel per weight "
        "at every batch size, decode attention row by row, no cascade decode (slower)",
    ),
    (
        "--enable-mixed-chunk",
        bool,
        "decoding requests take their next token in the same forward as a prefill (chunk)",
    ),
    (("--context-length", "--max-model-len"), int, "longest prompt + output (None: the model's)"),
    ("--max-total-tokens", int, "KV pool size in tokens (overrides --mem-fraction-static)"),
    ("--mem-fraction-static", float, "share of device memory for weights and the KV pool"),
    (
        "--gpu-memory-utilization",
        float,
        "CUDA: share of GPU memory for weights and the KV pool (vLLM's name; "
        "--mem-fraction-static wins; ignored on the CPU, as vLLM's CPU build does)",
    ),
    (("--max-running-requests", "--max-num-seqs"), int, "requests decoding at once"),
    (
        ("--max-prefill-tokens", "--max-num-batched-tokens"),
        int,
        "token budget of one prefill batch",
    ),
    ("--chunked-prefill-size", int, "longest prefill chunk of one request (-1: no chunking)"),
    (
        "--schedule-policy",
        str,
        "waiting-queue order: longest cached prefix, heaviest radix subtree, arrival, random",
    ),
    (
        ("--disable-radix-cache", "--no-enable-prefix-caching"),
        bool,
        "no prefix sharing between requests",
    ),
    (
        ("--page-size", "--block-size"),
        int,
        "tokens per radix-cache page (keys and evictions move in whole pages)",
    ),
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
    (
        ("--disable-cuda-graph", "--enforce-eager"),
        bool,
        "CUDA: run decode steps eagerly instead of replaying graphs",
    ),
    ("--cuda-graph-max-bs", int, "CUDA: largest decode batch captured as a graph"),
    (
        "--grammar-backend",
        str,
        "compiles regex / json_schema / ebnf constraints (outlines: regex and JSON schema only)",
    ),
    (
        "--grammar-compile-timeout",
        float,
        "seconds a grammar may take to compile before its request is refused (0: no deadline, "
        "compiled in the scheduler process)",
    ),
    (
        "--disable-jump-forward",
        bool,
        "decode text a grammar forces token by token instead of appending it in one step",
    ),
    (("--random-seed", "--seed"), int, "seed for requests that give none"),
    (("--cache-dir", "--download-dir"), str, "where converted weights and tokenizers are cached"),
    (("--log-level", "--uvicorn-log-level"), str, "logging level"),
    (
        "--disable-packed-gemm",
        bool,
        "CPU: the plain GEMM, no weights reordered ahead of time (float32: no packed copies, "
        "less memory; slower decode)",
    ),
    ("--debug-check-memory", bool, "check the KV pool accounting after every step"),
    (
        "--max-pinned-tokens",
        int,
        "most prefix tokens /pin_prefix may hold out of eviction (default: half the KV pool)",
    ),
    ("--kv-compression", str, "compress prompts past --kv-compression-min-tokens with this"),
    ("--kv-compression-budget", int, "prompt KV tokens a compressed request keeps (per layer)"),
    ("--kv-compression-min-tokens", int, "prompts longer than this compress (--kv-compression)"),
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
        "--tool-call-parser",
        str,
        "how the model writes tool calls (default: the format its chat template shows, else hermes)",
    ),
    (
        "--reasoning-parser",
        str,
        "split the model's <think> block into reasoning_content (deepseek-r1, qwen3)",
    ),
    (
        "--max-json-string-length",
        int,
        "longest JSON string a json_schema may generate where it sets no maxLength (no cap: None)",
    ),
    ("--chat-template", str, "a Jinja chat template file (or its text) over the tokenizer's own"),
    (
        ("--dp-size", "--data-parallel-size", "-dp"),
        int,
        "data parallelism: this many full servers on internal ports behind sglang-router "
        "(pip install 'radixserve[dp]') with cache-aware routing",
    ),
    (
        ("--log-requests", "--enable-log-requests"),
        bool,
        "log one line per finished request: id, prompt / cached / output tokens, TTFT, latency",
    ),
]
