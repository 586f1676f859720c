"""C++ kernels for the CPU, built with the machine's C++ compiler on first use.

torch ships no decode attention that reads a paged pool in place on the CPU, no GEMM that
multiplies 4-bit blocks without widening them, and its flash kernel spends a decode batch in
per-row set-up. The sources are compiled once per torch version and cached
(`RADIXSERVE_CACHE_DIR`, else `~/.cache/radixserve`); without a compiler or without AVX512-BF16
and VNNI the callers keep their torch-op paths. `RADIXSERVE_NO_CPU_KERNELS=1` turns them off."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sysconfig
import tempfile

import torch

logger = logging.getLogger(__name__)

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = ("decode_attention.cpp", "norm_rotary.cpp", "block_gemm.cpp", "silu_mul.cpp")
HEADERS = ("bf16.h", "vec_math.h")
ISA_FLAGS = (
    "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512bf16", "-mavx512vnni", "-mfma",
)  # fmt: skip
CPU_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16", "avx512_vnni")


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


def _compile_command(sources: list[str], out: str) -> list[str]:
    torch_dir = os.path.dirname(torch.__file__)
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    return [
        os.environ.get("CXX") or "c++", "-shared", "-fPIC", "-O3", "-std=c++17", "-fopenmp",
        *ISA_FLAGS,
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        "-isystem", os.path.join(torch_dir, "include"),
        "-isystem", os.path.join(torch_dir, "include", "torch", "csrc", "api", "include"),
        "-isystem", sysconfig.get_paths()["include"],
        *sources, "-o", out,
        "-L", os.path.join(torch_dir, "lib"), "-lc10", "-ltorch_cpu",
    ]  # fmt: skip


def _build() -> str:
    """The path of the shared library, compiled unless a build of this source is cached."""
    sources = [os.path.join(HERE, name) for name in SOURCES]
    digest = hashlib.sha256(torch.__version__.encode())
    for path in sources + [os.path.join(HERE, name) for name in HEADERS]:
        with open(path, "rb") as f:
            digest.update(f.read())
    digest.update(" ".join(_compile_command([], "")).encode())
    target = os.path.join(_cache_dir(), f"radixserve_cpu_{digest.hexdigest()[:16]}.so")
    if os.path.exists(target):
        return target
    os.makedirs(os.path.dirname(target), exist_ok=True)
    # Compile beside the target, then rename: processes that build at once never load half a file.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(target))
    os.close(fd)
    try:
        logger.info("compiling the CPU kernels (once per torch version): %s", target)
        subprocess.run(_compile_command(sources, tmp), check=True, capture_output=True, text=True)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


@functools.cache
def cpu_kernels_loaded() -> bool:
    """Whether `torch.ops.radixserve_cpu` holds the kernels (built and loaded on first call)."""
    if os.environ.get("RADIXSERVE_NO_CPU_KERNELS", "") not in ("", "0"):
        return False
    if not _cpu_has(CPU_FLAGS):
        return False
    if shutil.which(os.environ.get("CXX") or "c++") is None:
        logger.warning("no C++ compiler: the CPU kernels' steps run as torch ops")
        return False
    try:
        torch.ops.load_library(_build())
    except (OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        logger.warning("CPU kernels not built, torch's are used instead: %s", detail[-2000:])
        return False
    _register_shapes()
    return True


def _register_shapes() -> None:
    """The output shape of the one kernel torch.compile's graphs call (the quantized layers keep
    no torch-op form to trace instead)."""

    @torch.library.register_fake("radixserve_cpu::block_gemm")
    def _(x: torch.Tensor, packed: torch.Tensor, n: int, bits: int) -> torch.Tensor:
        return x.new_empty(x.shape[0], n)


def kernels_apply(x: torch.Tensor) -> bool:
    """Whether a C++ kernel may take `x`: bfloat16 on the CPU, with the kernels built, outside
    torch.compile's graphs (which trace the torch ops instead)."""
    return (
        x.dtype == torch.bfloat16
        and x.device.type == "cpu"
        and not torch.compiler.is_compiling()
        and cpu_kernels_loaded()
    )
