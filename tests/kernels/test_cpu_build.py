"""Building the C++ CPU kernels: a cached build is reused, a failed one leaves torch's ops."""

from __future__ import annotations

import logging
import subprocess

import pytest

import kernels.cpu as cpu

# each kernel set with the function that builds and loads it
SETS = [(cpu.BF16_KERNELS, cpu.cpu_kernels_loaded), (cpu.AVX2_KERNELS, cpu.avx2_gemm_loaded)]
IDS = ["bf16", "avx2"]


@pytest.mark.parametrize("kernels,loaded", SETS, ids=IDS)
def test_a_cached_build_is_loaded_without_compiling(monkeypatch, kernels, loaded):
    if not loaded():
        pytest.skip(f"needs {', '.join(kernels.cpu_flags)} and a C++ compiler")
    path = cpu._build(kernels)  # cached by the load above

    def no_compile(*args, **kwargs):
        raise AssertionError("compiled again")

    monkeypatch.setattr(subprocess, "run", no_compile)
    assert cpu._build(kernels) == path


@pytest.mark.parametrize("kernels,loaded", SETS, ids=IDS)
def test_a_compiler_that_fails_leaves_the_torch_ops(monkeypatch, tmp_path, caplog, kernels, loaded):
    if not cpu._cpu_has(kernels.cpu_flags):
        pytest.skip(f"kernels are not tried without {', '.join(kernels.cpu_flags)}")
    monkeypatch.setenv("RADIXSERVE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", "false")  # found on PATH, exits 1
    with caplog.at_level(logging.WARNING, logger="kernels.cpu"):
        assert loaded.__wrapped__() is False
    assert "CPU kernels not built" in caplog.text
    assert not list(tmp_path.rglob("*.so"))  # no half-written library left behind


@pytest.mark.parametrize("loaded", [cpu.cpu_kernels_loaded, cpu.avx2_gemm_loaded], ids=IDS)
def test_the_switch_turns_them_off(monkeypatch, loaded):
    monkeypatch.setenv("RADIXSERVE_NO_CPU_KERNELS", "1")
    assert loaded.__wrapped__() is False


def test_each_set_is_built_apart():
    """The two sets compile with their own instruction flags into their own libraries."""
    bf16 = cpu._compile_command(cpu.BF16_KERNELS, [], "")
    avx2 = cpu._compile_command(cpu.AVX2_KERNELS, [], "")
    assert "-mavx512vnni" in bf16 and "-mavx512vnni" not in avx2 and "-mavx2" in avx2
