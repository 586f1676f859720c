"""The scheduler driven directly, in this process: retraction is logged and the outputs hold."""

from __future__ import annotations

import logging

import pytest

from runtime.io_struct import TokenizedGenerateRequest
from runtime.model_loader.loader import load_tokenizer
from runtime.model_runner import ModelRunner
from runtime.sampling import SamplingParams
from runtime.scheduler.scheduler import Scheduler
from runtime.server_args import ServerArgs
from tests.conftest import REFERENCE


def run_all(sched: Scheduler, prompts: list[list[int]], new_tokens: int) -> dict[str, list[int]]:
    for i, ids in enumerate(prompts):
        sched.add_request(
            TokenizedGenerateRequest(
                f"r{i}",
                ids,
                SamplingParams(temperature=0, max_new_tokens=new_tokens, ignore_eos=True),
            )
        )
    out: dict[str, list[int]] = {}
    while sched.has_work():
        for o in sched.step():
            out.setdefault(o.rid, []).extend(o.new_token_ids)
        sched.check_memory()
    return out


@pytest.fixture(scope="module")
def parts():
    # float32: exact outputs whatever the batch (bfloat16 rows change with the batch's size)
    runner = ModelRunner(ServerArgs(**REFERENCE, max_total_tokens=160, max_running_requests=8))
    return runner, load_tokenizer(runner.model_folder)


def test_retraction_is_logged_and_changes_nothing(parts, caplog):
    runner, tok = parts
    prompts = [tok.encode(f"Story {i}: the old lighthouse keeper climbed") for i in range(5)]
    alone = {}
    for i, ids in enumerate(prompts):
        sched = Scheduler(runner, tok, {tok.eos_token_id})
        alone[f"r{i}"] = run_all(sched, [ids], 40)["r0"]
        assert sched.flush_cache()  # the next scheduler starts from an empty pool
    sched = Scheduler(runner, tok, {tok.eos_token_id})
    with caplog.at_level(logging.INFO, logger="runtime.scheduler.memory"):
        together = run_all(sched, prompts, 40)
    assert sched.stats.retractions > 0
    assert any("retracted request" in r.getMessage() for r in caplog.records)
    assert together == alone
    assert sched.flush_cache() and runner.kv_pool.available_size() == 160


def test_new_prompts_cannot_starve_decoding_requests(parts):
    """A prompt arriving after every step (as a steady stream of new requests does) still
    leaves a decode step between two prefills."""
    runner, tok = parts
    sched = Scheduler(runner, tok, {tok.eos_token_id})
    params = SamplingParams(temperature=0, max_new_tokens=6, ignore_eos=True)
    sched.add_request(TokenizedGenerateRequest("first", tok.encode("Once upon a time"), params))
    tokens = 0
    for i in range(6):
        outs = sched.step()
        tokens += sum(len(o.new_token_ids) for o in outs if o.rid == "first")
        sched.add_request(TokenizedGenerateRequest(f"new{i}", tok.encode(f"Tale {i}:"), params))
    assert tokens >= 4  # its prefill token, then one per decode step in between
    while sched.has_work():
        sched.step()
    assert sched.flush_cache() and runner.kv_pool.available_size() == 160


def test_mixed_chunk_decodes_inside_each_prefill_and_changes_no_token(parts):
    """With --enable-mixed-chunk a decoding request takes a token in every step, prefills
    included, and greedy outputs stay those of separate prefill and decode steps."""
    runner, tok = parts
    params = SamplingParams(temperature=0, max_new_tokens=8, ignore_eos=True)

    def run(mixed: bool) -> tuple[dict[str, list[int]], int]:
        runner.args.enable_mixed_chunk = mixed
        try:
            sched = Scheduler(runner, tok, {tok.eos_token_id})
            first = TokenizedGenerateRequest("first", tok.encode("Once upon a time"), params)
            sched.add_request(first)
            out: dict[str, list[int]] = {}
            early = 0  # the first request's tokens over the 6 steps that each admit a prompt
            for i in range(6):
                for o in sched.step():
                    out.setdefault(o.rid, []).extend(o.new_token_ids)
                    early += len(o.new_token_ids) if o.rid == "first" else 0
                prompt = tok.encode(f"Tale {i}: the fox")
                sched.add_request(TokenizedGenerateRequest(f"new{i}", prompt, params))
                sched.check_memory()
            while sched.has_work():
                for o in sched.step():
                    out.setdefault(o.rid, []).extend(o.new_token_ids)
                sched.check_memory()
            assert sched.flush_cache() and runner.kv_pool.available_size() == 160
            return out, early
        finally:
            runner.args.enable_mixed_chunk = False

    separate, early_separate = run(False)
    mixed, early_mixed = run(True)
    assert early_mixed == 6 and early_separate < 6
    assert mixed == separate
