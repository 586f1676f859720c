"""Owns the model, the KV pools and the attention backend; runs one forward per batch."""

from __future__ import annotations

import ctypes
import logging
import os
import time

import psutil
import torch

from kernels.attention.compact_kv import CompactKVBackend
from kernels.attention.registry import create_backend
from kernels.cpu import cpu_kernels_loaded
from kernels.forward_batch import ForwardBatch
from runtime.kv_cache_dtype import (
    create_kv_pool,
    kv_bytes_per_token,
    kv_fixed_bytes,
    resolve_kv_cache_dtype,
)
from runtime.layers.packed_linear import (
    PackedLinear,
    pack_linears,
    pack_sizes,
    packed_gemm_available,
    packed_linear,
)
from runtime.memory_pool import ReqToTokenPool
from runtime.model_loader.loader import (
    gguf_source,
    load_config,
    load_weights,
    prepare_model_folder,
)
from runtime.model_loader.weight_quant import quantize_model, resolve_quantization
from runtime.models import LlamaForCausalLM
from runtime.server_args import SchedulerArgs

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bfloat16 matmuls run natively instead of being widened to float32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` is bfloat16 on CUDA and on CPUs that compute it natively, float32 otherwise."""
    if name == "auto":
        if device.type == "cuda" or cpu_has_native_bf16():
            return torch.bfloat16
        return torch.float32
    if device.type == "cpu" and name == "float16":
        raise ValueError("dtype: float16 is CUDA-only here; use bfloat16 or float32 on the CPU")
    return getattr(torch, name)


# On torch's weight-only kernels (no block kernel built), batches of at least this many rows use
# a dense copy of a quantized weight: past it the dense GEMM beat them here
# (benchmarks/bench_decode_step.py). The block kernel beats the dense GEMM at every size.
DENSE_FROM = {"gguf": 4, "int4": 4, "int8": 4}


def dense_from(quantization: str, args: SchedulerArgs) -> int | None:
    """None keeps every batch on the quantized kernel: one kernel whatever the batch size."""
    return None if args.enable_deterministic_inference else DENSE_FROM[quantization]


def return_freed_memory() -> None:
    """The weights that loading replaced (checkpoint copies, weights swapped for their packed or
    quantized forms) are freed into glibc's heap, which keeps them resident (about 180 MiB for
    the default model); trimming hands them back to the system."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def resolve_attention_backend(name: str, device: torch.device) -> str:
    """`auto` is Triton on CUDA and torch-native on the CPU. Triton runs on the CPU only in its
    interpreter (tests); FlashInfer only on CUDA."""
    if name == "auto":
        return "triton" if device.type == "cuda" else "torch_native"
    if device.type != "cuda":
        if name == "flashinfer":
            raise ValueError("attention_backend: flashinfer needs a CUDA device")
        if name == "triton" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError(
                "attention_backend: triton needs a CUDA device (or TRITON_INTERPRET=1 on the CPU)"
            )
    return name


class ModelRunner:
    def __init__(self, args: SchedulerArgs) -> None:
        t0 = time.perf_counter()
        self.args = args
        self.device = resolve_device(args.device)
        self.dtype = resolve_dtype(args.dtype, self.device)
        self.model_folder = prepare_model_folder(args.model_path, args.cache_dir)
        self.config = cfg = load_config(self.model_folder)
        self.context_len = args.context_length or cfg.max_position_embeddings
        with torch.device("meta"):
            model = LlamaForCausalLM(cfg, max_position=self.context_len)
        model.to_empty(device="cpu")
        model.to(self.dtype)  # filled in the model's dtype: no float32 copy of every weight
        load_weights(model, self.model_folder)
        self.model = model.to(self.device, self.dtype).eval()
        self.model.model.rotary.build(self.device)
        self.quantization = resolve_quantization(
            args.quantization, self.device, gguf_source(args.model_path)
        )
        if self.quantization != "none":
            quantize_model(
                self.model,
                self.quantization,
                gguf_source(args.model_path),
                self.model_folder,
                self.dtype,
                dense_from(self.quantization, args),
                reorder=not args.disable_packed_gemm,
            )
        elif not args.disable_packed_gemm and packed_gemm_available(self.device, self.dtype):
            sizes = pack_sizes(args.max_running_requests)
            extra = pack_linears(self.model.model, sizes)  # the layers; the head below
            head = self.model.lm_head_weight.data
            self.model.logits_proj = packed_linear(head, None, sizes)
            if isinstance(self.model.logits_proj, PackedLinear):
                extra += self.model.logits_proj.packed_bytes()
            else:  # the original stays for lookups (tied) or as lm_head
                extra += head.numel() * head.element_size()
            logger.info(
                "packed GEMM weights for decode batches up to %s: %.0f MiB", sizes, extra / 2**20
            )
        return_freed_memory()
        self.load_seconds = time.perf_counter() - t0

        self.kv_cache_dtype = resolve_kv_cache_dtype(args.kv_cache_dtype, self.dtype)
        self.max_total_tokens = self._kv_pool_tokens()
        self.req_to_token_pool = ReqToTokenPool(
            args.max_running_requests, self.context_len + 1, self.device
        )
        self.kv_pool = create_kv_pool(
            self.kv_cache_dtype,
            self.max_total_tokens,
            *self._kv_shape(),
            args.max_running_requests,
            self.dtype,
            self.device,
        )
        backend_name = resolve_attention_backend(args.attention_backend, self.device)
        self.backend = create_backend(
            backend_name,
            num_heads=cfg.num_heads,
            num_kv_heads=cfg.num_kv_heads,
            head_dim=cfg.head_dim,
            device=self.device,
        )
        if (
            backend_name == "torch_native"
            and self.device.type == "cpu"
            and self.dtype == torch.bfloat16
        ):
            cpu_kernels_loaded()  # compiled here on a first start rather than in a first decode
        if not self.backend.reads_pool(self.kv_pool):
            self.backend = CompactKVBackend(self.backend, self.dtype)
        for layer in self.model.attention_layers():
            layer.backend = self.backend
        self.graph_runner = self.compiled_decode = None
        if args.enable_torch_compile and self.device.type == "cpu":
            from runtime.compiled_decode import CompiledDecode

            self.compiled_decode = CompiledDecode(self.model, args.torch_compile_max_bs)
            if not self.kv_pool.quantized:  # a quantized pool plans its pages per real batch:
                # there the first decode steps compile
                self.compiled_decode.warm_up(
                    self.backend, self.req_to_token_pool.req_to_token, self.kv_pool
                )
        if self.device.type == "cuda" and not args.disable_cuda_graph:
            # A quantized pool decodes eagerly: fp8 takes its scales from the first real prefill,
            # which a graph captured beforehand would not see.
            if self.backend.supports_cuda_graph and not self.kv_pool.quantized:
                from runtime.cuda_graph_runner import CudaGraphRunner

                self.graph_runner = CudaGraphRunner(self)
            else:
                logger.info(
                    "the %s backend decodes without CUDA graphs here", args.attention_backend
                )
        logger.info(
            "model loaded in %.2fs from %s; KV pool %d tokens on %s (%s; KV %s, %.0f bytes/token)",
            self.load_seconds,
            self.model_folder,
            self.max_total_tokens,
            self.device,
            self.dtype,
            self.kv_cache_dtype,
            self.kv_pool.token_bytes(),
        )

    def _kv_shape(self) -> tuple[int, int, int, int]:
        cfg = self.config
        return cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, self.args.page_size

    def _kv_pool_tokens(self) -> int:
        per_token = kv_bytes_per_token(self.kv_cache_dtype, *self._kv_shape())
        fixed = kv_fixed_bytes(
            self.kv_cache_dtype, *self._kv_shape(), self.args.max_running_requests, self.dtype
        )
        if self.args.max_total_tokens is not None:
            return self.args.max_total_tokens
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            share = self.args.mem_fraction_static or self.args.gpu_memory_utilization or 0.85
            budget = free - total * (1 - share)
        else:
            # The CPU is shared with everything else on the machine: take a modest share.
            budget = psutil.virtual_memory().available * (self.args.mem_fraction_static or 0.05)
        tokens = int((budget - fixed) // per_token)
        if tokens < self.context_len:
            raise ValueError(
                f"mem_fraction_static: leaves room for only {tokens} KV tokens, less than the context "
                f"length {self.context_len}; raise it or set max_total_tokens"
            )
        return tokens

    @torch.inference_mode()
    def forward(self, batch: ForwardBatch, logit_rows: torch.Tensor | None = None) -> torch.Tensor:
        """Runs the model; float32 logits `[rows, vocab]` for the token rows `logit_rows`
        (every row when None, as in decode)."""
        if self.graph_runner is not None and self.graph_runner.can_run(batch):
            logits = self.graph_runner.replay(batch)
            return logits if logit_rows is None else logits[logit_rows]
        self.backend.init_forward_metadata(batch)
        if self.compiled_decode is not None and self.compiled_decode.can_run(batch):
            logits = self.compiled_decode(batch)
            return logits if logit_rows is None else logits[logit_rows]
        hidden = self.model(batch)
        return self.model.compute_logits(hidden if logit_rows is None else hidden[logit_rows])
