"""Greedy outputs do not depend on how requests are batched or chunked."""

from __future__ import annotations

import threading

import pytest

from runtime import Engine
from tests.conftest import REFERENCE

GREEDY = {"temperature": 0, "max_new_tokens": 24, "ignore_eos": True}


@pytest.fixture(scope="module")
def reference(engine, prompt_ids):
    """Each prompt alone."""
    return [
        engine.generate(input_ids=ids, sampling_params=GREEDY)["output_ids"] for ids in prompt_ids
    ]


def test_all_at_once_equals_one_at_a_time(engine, prompt_ids, reference):
    together = engine.generate(input_ids=prompt_ids, sampling_params=GREEDY)
    assert [r["output_ids"] for r in together] == reference


def test_mixed_lengths_and_late_joiners(engine, prompt_ids, reference):
    """Requests arrive while others decode, with different output lengths."""
    results: dict[int, list[int]] = {}

    def run(i: int) -> None:
        params = {**GREEDY, "max_new_tokens": 8 + 2 * i}
        results[i] = engine.generate(input_ids=prompt_ids[i], sampling_params=params)["output_ids"]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompt_ids))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, ref in enumerate(reference):
        assert results[i] == ref[: 8 + 2 * i]


def test_small_chunked_prefill_and_small_budget(prompt_ids, reference):
    with Engine(
        **REFERENCE,
        max_total_tokens=2048,
        chunked_prefill_size=16,
        max_prefill_tokens=24,
        max_running_requests=3,
        debug_check_memory=True,
        log_level="warning",
    ) as eng:
        out = eng.generate(input_ids=prompt_ids, sampling_params=GREEDY)
        assert [r["output_ids"] for r in out] == reference
        info = eng.get_server_info()
        assert info["steps"] > len(prompt_ids)
        assert info["kv_free_tokens"] + info["cache_tokens"] == 2048
        assert eng.flush_cache() and eng.get_server_info()["kv_free_tokens"] == 2048


def test_long_prompt_is_chunked(engine):
    ids = engine.tokenizer.encode("The history of the city is long and storied. " * 40)
    assert len(ids) > 300
    ref = engine.generate(input_ids=ids, sampling_params=GREEDY)["output_ids"]
    with Engine(
        **REFERENCE,
        max_total_tokens=1024,
        chunked_prefill_size=64,
        log_level="warning",
        debug_check_memory=True,
    ) as eng:
        before = eng.get_server_info()
        assert eng.generate(input_ids=ids, sampling_params=GREEDY)["output_ids"] == ref
        after = eng.get_server_info()
        assert after["prefill_tokens"] - before["prefill_tokens"] == len(ids)
        assert after["steps"] - before["steps"] >= len(ids) // 64 + GREEDY["max_new_tokens"] - 1
