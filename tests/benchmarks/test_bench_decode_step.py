"""bench_decode_step's mode names: every part maps to the scheduler field it sets, and the
fields make valid scheduler arguments (the script builds its model runners from them)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_decode_step  # noqa: E402

from runtime.server_args import SchedulerArgs  # noqa: E402


def test_mode_parts_set_dtype_weights_flags_kv_format_and_page():
    fields = bench_decode_step.parse_mode("bfloat16+auto+det+kv=int4+page=32")
    assert fields == {
        "dtype": "bfloat16",
        "quantization": "auto",
        "enable_deterministic_inference": True,
        "kv_cache_dtype": "int4",
        "page_size": 32,
    }
    SchedulerArgs(max_total_tokens=4096, **fields)  # a combination the server takes
    assert bench_decode_step.parse_mode("float32") == {"dtype": "float32", "quantization": "none"}


def test_an_int4_cache_without_whole_pages_is_refused_by_the_arguments():
    with pytest.raises(ValueError, match="page_size"):
        SchedulerArgs(max_total_tokens=4096, **bench_decode_step.parse_mode("bfloat16+kv=int4"))
