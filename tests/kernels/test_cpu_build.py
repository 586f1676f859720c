"""Building the C++ CPU kernels: a cached build is reused, a failed one leaves torch's ops."""

from __future__ import annotations

import logging
import subprocess

import pytest

import kernels.cpu as cpu


def test_a_cached_build_is_loaded_without_compiling(monkeypatch):
    if not cpu.cpu_kernels_loaded():
        pytest.skip("needs AVX512-BF16 and a C++ compiler")
    path = cpu._build()  # cached by the load above

    def no_compile(*args, **kwargs):
        raise AssertionError("compiled again")

    monkeypatch.setattr(subprocess, "run", no_compile)
    assert cpu._build() == path


def test_a_compiler_that_fails_leaves_the_torch_ops(monkeypatch, tmp_path, caplog):
    if not cpu._cpu_has(cpu.CPU_FLAGS):
        pytest.skip("kernels are not tried without AVX512-BF16")
    monkeypatch.setenv("RADIXSERVE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", "false")  # found on PATH, exits 1
    with caplog.at_level(logging.WARNING, logger="kernels.cpu"):
        assert cpu.cpu_kernels_loaded.__wrapped__() is False
    assert "CPU kernels not built" in caplog.text
    assert not list(tmp_path.rglob("*.so"))  # no half-written library left behind


def test_the_switch_turns_them_off(monkeypatch):
    monkeypatch.setenv("RADIXSERVE_NO_CPU_KERNELS", "1")
    assert cpu.cpu_kernels_loaded.__wrapped__() is False
