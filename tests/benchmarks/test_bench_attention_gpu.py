"""The GPU attention benchmark's decode and cascade tables, run at tiny shapes on any machine:
Triton in its interpreter on the CPU, FlashInfer's wrappers stood in for by `fake_flashinfer`
there, so the script's own calls are checked before a GPU session depends on them."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

from tests.kernels import fake_flashinfer

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_attention_gpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_attention_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def flashinfer(monkeypatch):
    if CUDA:
        return pytest.importorskip("flashinfer")
    monkeypatch.setitem(sys.modules, "flashinfer", fake_flashinfer.module())
    return sys.modules["flashinfer"]


def _args(**kw) -> argparse.Namespace:
    base = dict(heads=4, kv_heads=2, head_dim=64, iters=1, max_gib=1.0)
    base["dtype"] = torch.bfloat16 if CUDA else torch.float32
    return argparse.Namespace(**{**base, **kw})


def _rows(text: str) -> list[list[str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("| ") and ln[2].isdigit()]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


def test_decode_table_has_every_column(bench, flashinfer, capsys):
    bench.bench_decode(_args(batch_sizes=[1, 3], contexts=[40, 70]), flashinfer)
    rows = _rows(capsys.readouterr().out)
    assert [(r[0], r[1]) for r in rows] == [("1", "40"), ("1", "70"), ("3", "40"), ("3", "70")]
    for row in rows:
        assert len(row) == 7 and all(c != "-" for c in row[:6]), row
        assert float(row[2]) > 0 and float(row[3]) > 0 and float(row[4]) > 0


def test_cascade_table_compares_plain_and_cascade(bench, flashinfer, capsys):
    bench.bench_cascade(_args(requests=[4], prefixes=[64], own_tokens=8), flashinfer)
    rows = _rows(capsys.readouterr().out)
    assert len(rows) == 1 and len(rows[0]) == 8
    assert rows[0][4].endswith("x") and rows[0][7].endswith("x"), rows[0]
