"""KV compression with the default model on the torch-native backend: SnapKV and PyramidKV
requests decode beside an exact one whose greedy output stays as it is alone, and the pool
accounting holds after every step."""

from __future__ import annotations

import pytest

from runtime.io_struct import TokenizedGenerateRequest
from runtime.kv_compression import h2o
from runtime.model_loader.loader import load_tokenizer
from runtime.model_runner import ModelRunner
from runtime.sampling import SamplingParams
from runtime.scheduler.scheduler import Scheduler
from runtime.server_args import ServerArgs
from tests.conftest import REFERENCE

POOL = 2048


@pytest.fixture(scope="module")
def parts():
    runner = ModelRunner(ServerArgs(max_total_tokens=POOL, max_running_requests=4, **REFERENCE))
    return runner, load_tokenizer(runner.model_folder)


def document(tok, seed: int) -> list[int]:
    lines = [f"Shelf {i}: box {seed * i % 97} holds {i + seed} keys." for i in range(14)]
    return tok.encode(" ".join(lines) + " Which shelf holds the most keys?")


def run(sched, reqs) -> tuple[dict, dict, list]:
    for rid, ids, spec in reqs:
        params = {"temperature": 0, "max_new_tokens": 6, "ignore_eos": True}
        if spec:
            params["kv_compression"] = spec
        sched.add_request(TokenizedGenerateRequest(rid, ids, SamplingParams.from_dict(params)))
    got, kept, holes = {}, {}, []
    while sched.has_work():
        holes += [r.rid for r in sched.running if r.kv_state and r.kv_state.holes]
        for out in sched.step():
            got.setdefault(out.rid, []).extend(out.new_token_ids)
            kept[out.rid] = out.kv_tokens_kept
        sched.check_memory()
    return got, kept, holes


def test_compressed_requests_beside_an_exact_one(parts):
    runner, tok = parts
    plain, snap, pyramid = (document(tok, s) for s in (3, 5, 7))
    assert min(len(plain), len(snap), len(pyramid)) > 100
    first = Scheduler(runner, tok, {tok.eos_token_id})
    alone, _, _ = run(first, [("plain", plain, None)])
    assert first.flush_cache()  # the next scheduler starts from an empty pool
    sched = Scheduler(runner, tok, {tok.eos_token_id})
    got, kept, holes = run(
        sched,
        [
            ("plain", plain, None),
            ("snap", snap, {"method": "snapkv", "budget": 32, "window_size": 8}),
            ("pyr", pyramid, {"method": "pyramidkv", "budget": 32, "window_size": 8, "beta": 2}),
        ],
    )
    assert got["plain"] == alone["plain"]
    assert len(got["snap"]) == len(got["pyr"]) == 6
    assert kept["plain"] is None and kept["snap"] == 32
    assert abs(kept["pyr"] - 32) <= 1  # per-layer budgets average the budget
    assert "pyr" in holes  # its upper layers read fewer slots than its lower ones
    # the exact prompts stayed cached for the next request on them
    assert len(sched.cache.match_prefix(snap)[0]) == len(snap)
    assert sched.flush_cache() and runner.kv_pool.available_size() == POOL


def test_h2o_scores_the_prompt_then_evicts_while_decoding(parts, monkeypatch):
    monkeypatch.setattr(h2o, "EVICT_EVERY", 4)  # an eviction within a few steps
    runner, tok = parts
    sched = Scheduler(runner, tok, {tok.eos_token_id})
    ids = document(tok, 11)
    params = {"temperature": 0, "max_new_tokens": 8, "ignore_eos": True}
    params["kv_compression"] = {"method": "h2o", "budget": 16}
    sched.add_request(TokenizedGenerateRequest("h", ids, SamplingParams.from_dict(params)))
    outs, dropped = [], 0
    while sched.has_work():
        dropped = max([dropped] + [r.kv_dropped for r in sched.running])
        outs += sched.step()
        sched.check_memory()
    assert sum(len(o.new_token_ids) for o in outs) == 8
    assert outs[-1].kv_tokens_kept == 16
    assert dropped == (len(ids) - 16) + 4  # the prompt, then one eviction of 4 columns
    assert sched.flush_cache() and runner.kv_pool.available_size() == POOL
