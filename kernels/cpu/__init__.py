"""C++ kernels for the CPU, built with the machine's C++ compiler on first use.

torch ships no decode attention that reads a paged pool in place on the CPU, no GEMM that
multiplies 4-bit blocks without widening them, and its flash kernel spends a decode batch in
per-row set-up. Two sets are built, each for the instructions it needs: the bfloat16 kernels
(AVX512-BF16 and VNNI) and, for CPUs without AVX-512, the block GEMM on float32 activations
(AVX2). The sources are compiled once per torch version and cached (`RADIXSERVE_CACHE_DIR`, else
`~/.cache/radixserve`); without a compiler or the instructions the callers keep their torch-op
paths. `RADIXSERVE_NO_CPU_KERNELS=1` turns them off."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sysconfig
import tempfile
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class KernelSet:
    """Sources compiled into one library, with the compiler's and the CPU's instruction flags."""

    name: str
    sources: tuple[str, ...]
    headers: tuple[str, ...]
    isa_flags: tuple[str, ...]
    cpu_flags: tuple[str, ...]


BF16_KERNELS = KernelSet(
    "radixserve_cpu",
    ("decode_attention.cpp", "norm_rotary.cpp", "block_gemm.cpp", "silu_mul.cpp"),
    ("bf16.h", "vec_math.h"),
    ("-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512bf16", "-mavx512vnni",
     "-mfma"),
    ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16", "avx512_vnni"),
)  # fmt: skip
AVX2_KERNELS = KernelSet(
    "radixserve_cpu_avx2",
    ("block_gemm_avx2.cpp",),
    (),
    ("-mavx2", "-mfma", "-mf16c"),
    ("avx2", "fma", "f16c"),
)


def _cpu_has(flags: tuple[str, ...]) -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(flags) <= set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return False


def _cache_dir() -> str:
    root = os.environ.get("RADIXSERVE_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "radixserve"
    )
    return os.path.join(root, "cpu_kernels")


def _compile_command(kernels: KernelSet, sources: list[str], out: str) -> list[str]:
    torch_dir = os.path.dirname(torch.__file__)
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    return [
        os.environ.get("CXX") or "c++", "-shared", "-fPIC", "-O3", "-std=c++17", "-fopenmp",
        *kernels.isa_flags,
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        "-isystem", os.path.join(torch_dir, "include"),
        "-isystem", os.path.join(torch_dir, "include", "torch", "csrc", "api", "include"),
        "-isystem", sysconfig.get_paths()["include"],
        *sources, "-o", out,
        "-L", os.path.join(torch_dir, "lib"), "-lc10", "-ltorch_cpu",
    ]  # fmt: skip


def _build(kernels: KernelSet = BF16_KERNELS) -> str:
    """The path of the set's shared library, compiled unless a build of this source is cached."""
    sources = [os.path.join(HERE, name) for name in kernels.sources]
    digest = hashlib.sha256(torch.__version__.encode())
    for path in sources + [os.path.join(HERE, name) for name in kernels.headers]:
        with open(path, "rb") as f:
            digest.update(f.read())
    digest.update(" ".join(_compile_command(kernels, [], "")).encode())
    target = os.path.join(_cache_dir(), f"{kernels.name}_{digest.hexdigest()[:16]}.so")
    if os.path.exists(target):
        return target
    os.makedirs(os.path.dirname(target), exist_ok=True)
    # Compile beside the target, then rename: processes that build at once never load half a file.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(target))
    os.close(fd)
    try:
        logger.info("compiling the CPU kernels (once per torch version): %s", target)
        subprocess.run(
            _compile_command(kernels, sources, tmp), check=True, capture_output=True, text=True
        )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _load(kernels: KernelSet) -> bool:
    """Builds and loads the set where this CPU runs it; False leaves torch's ops."""
    if os.environ.get("RADIXSERVE_NO_CPU_KERNELS", "") not in ("", "0"):
        return False
    if not _cpu_has(kernels.cpu_flags):
        return False
    if shutil.which(os.environ.get("CXX") or "c++") is None:
        logger.warning("no C++ compiler: the CPU kernels' steps run as torch ops")
        return False
    try:
        torch.ops.load_library(_build(kernels))
    except (OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        logger.warning("CPU kernels not built, torch's are used instead: %s", detail[-2000:])
        return False
    return True


@functools.cache
def cpu_kernels_loaded() -> bool:
    """Whether `torch.ops.radixserve_cpu` holds the bfloat16 kernels (built and loaded on first
    call)."""
    if not _load(BF16_KERNELS):
        return False

    # the output shape of the kernel torch.compile's graphs call (the quantized layers keep no
    # torch-op form to trace instead)
    @torch.library.register_fake("radixserve_cpu::block_gemm")
    def _(x: torch.Tensor, packed: torch.Tensor, n: int, bits: int) -> torch.Tensor:
        return x.new_empty(x.shape[0], n)

    return True


@functools.cache
def avx2_gemm_loaded() -> bool:
    """Whether `torch.ops.radixserve_cpu.block_gemm_f32` (float32 activations) is loaded."""
    if not _load(AVX2_KERNELS):
        return False

    @torch.library.register_fake("radixserve_cpu::block_gemm_f32")
    def _(
        x: torch.Tensor, packed: torch.Tensor, n: int, bits: int, fine: bool = False
    ) -> torch.Tensor:
        return x.new_empty(x.shape[0], n)

    @torch.library.register_fake("radixserve_cpu::block_dequantize_f32")
    def _(packed: torch.Tensor, n: int, k: int, bits: int) -> torch.Tensor:
        return packed.new_empty(n, k, dtype=torch.float32)

    return True


def kernels_apply(x: torch.Tensor) -> bool:
    """Whether a C++ kernel may take `x`: bfloat16 on the CPU, with the kernels built, outside
    torch.compile's graphs (which trace the torch ops instead)."""
    return (
        x.dtype == torch.bfloat16
        and x.device.type == "cpu"
        and not torch.compiler.is_compiling()
        and cpu_kernels_loaded()
    )
