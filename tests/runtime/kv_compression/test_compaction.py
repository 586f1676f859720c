"""KV compression on the real scheduler over the stub model, whose next token hashes the keys it
reads through the request's table: a compacted table that points at a wrong or reused slot
changes the tokens. StreamingLLM needs no queries, so the stub (which has no attention) runs it."""

from __future__ import annotations

import pytest

from runtime.io_struct import TokenizedGenerateRequest
from runtime.sampling import SamplingParams
from runtime.scheduler.scheduler import Scheduler
from runtime.server_args import SchedulerArgs
from tests.runtime.scheduler.stub_runner import StubRunner, expected_output, next_token

PROMPT = list(range(1, 41))  # 40 distinct tokens
SPEC = {"method": "streamingllm", "budget": 12, "n_sink": 4}


def make_scheduler(max_total_tokens=128, chunk=64, page_size=1) -> Scheduler:
    args = SchedulerArgs(
        max_total_tokens=max_total_tokens,
        page_size=page_size,
        max_running_requests=4,
        max_prefill_tokens=chunk,
        chunked_prefill_size=chunk,
        grammar_backend="none",
    )
    return Scheduler(StubRunner(args), tokenizer=None, eos_ids=set())


def request(rid, prompt, max_new, spec=SPEC) -> TokenizedGenerateRequest:
    params = SamplingParams.from_dict(
        {"temperature": 0, "max_new_tokens": max_new, "ignore_eos": True, "kv_compression": spec}
    )
    return TokenizedGenerateRequest(rid, prompt, params)


def compressed_output(prompt, kept, max_new) -> list[int]:
    """The first token sees the whole prompt; later ones only the kept positions."""
    out = [next_token(prompt)]
    while len(out) < max_new:
        out.append(next_token(kept + out))
    return out


def run(sched, until=None) -> dict[str, list[int]]:
    got: dict[str, list[int]] = {}
    while sched.has_work() and not (until and until(got)):
        for out in sched.step():
            got.setdefault(out.rid, []).extend(out.new_token_ids)
        sched.check_memory()
    return got


def private_slots(sched, req) -> set[int]:
    row = sched.req_to_token_pool.req_to_token[req.req_pool_idx]
    return set(row[req.cache_owned_len : req.kv_len - req.kv_dropped].tolist())


def test_compacted_table_reads_sinks_and_recent_window():
    sched = make_scheduler(chunk=16)
    sched.add_request(request("c", PROMPT, 6))
    sched.add_request(request("plain", [50 + i for i in range(20)], 6, spec=None))
    got = run(sched)
    kept = PROMPT[:4] + PROMPT[-8:]
    assert got["c"] == compressed_output(PROMPT, kept, 6)
    assert got["plain"] == expected_output([50 + i for i in range(20)], 6)
    assert sched.load_stats()["kv_compression_saved_tokens"] == 40 - 12
    # the exact prompt stayed in the tree: the next request on it hits all of it
    assert len(sched.cache.match_prefix(PROMPT)[0]) == 40
    sched.add_request(request("again", PROMPT + [99], 2, spec=None))
    assert run(sched)["again"] == expected_output(PROMPT + [99], 2)
    assert sched.flush_cache() and sched.kv_pool.available_size() == 128


def test_kept_tokens_reported_and_cached_prefix_not_compressed():
    sched = make_scheduler()
    sched.add_request(request("warm", PROMPT[:20], 0, spec=None))  # caches 20 prompt tokens
    run(sched)
    sched.add_request(request("c", PROMPT, 4))
    outs = []
    while sched.has_work():
        outs += sched.step()
        sched.check_memory()
    last = outs[-1]
    assert last.kv_tokens_kept == 20 + 12  # the shared 20 kept whole, 12 of the other 20
    got = [t for o in outs for t in o.new_token_ids]
    assert got == compressed_output(PROMPT, PROMPT[:20] + PROMPT[20:24] + PROMPT[-8:], 4)


def test_short_prompt_is_left_exact():
    sched = make_scheduler(64)
    sched.add_request(request("c", PROMPT[:10], 3))
    outs = run(sched)
    assert outs["c"] == expected_output(PROMPT[:10], 3)
    assert sched.flush_cache() and sched.kv_pool.available_size() == 64


@pytest.mark.parametrize("page_size", [1, 16])
def test_finish_frees_exactly_the_private_slots(page_size):
    # with pages of 16, the prompt's last 8 tokens are no whole page: the tree keeps 32, and
    # the request's own 8 exact slots go back to the pool when it compacts
    sched = make_scheduler(page_size=page_size)
    sched.add_request(request("c", PROMPT, 5))
    run(sched, until=lambda got: len(got.get("c", [])) == 3)
    (req,) = sched.running
    assert req.kv_dropped == 40 - 12
    mine = private_slots(sched, req)
    assert len(mine) == 12 + 2  # compacted prompt and the decoded tokens so far
    assert sched.cache.total_size() == 40 - 40 % page_size
    free_before = sched.kv_pool.free_slot_set()
    cached_before = sched.cache.total_size()
    run(sched)
    assert sched.kv_pool.free_slot_set() - free_before == mine
    assert sched.cache.total_size() == cached_before  # nothing private entered the tree
    assert sched.flush_cache() and sched.kv_pool.available_size() == 128


def test_abort_frees_exactly_the_private_slots():
    sched = make_scheduler()
    sched.add_request(request("c", PROMPT, 50))
    run(sched, until=lambda got: len(got.get("c", [])) == 4)
    (req,) = sched.running
    mine = private_slots(sched, req)
    free_before = sched.kv_pool.free_slot_set()
    (out,) = sched.abort_request("c")
    assert out.finish_reason.type == "abort"
    assert sched.kv_pool.free_slot_set() - free_before == mine
    sched.check_memory()
    assert sched.flush_cache() and sched.kv_pool.available_size() == 128


def test_retracted_compressed_request_frees_its_slots_and_resumes():
    # six compressed requests whose outputs outgrow the pool: some are retracted, re-prefilled
    # from the exact prompt still cached (or recomputed), and finish
    sched = make_scheduler(96, chunk=32)
    prompts = {f"r{i}": [100 + 10 * i + j for j in range(30)] for i in range(6)}
    for rid, p in prompts.items():
        sched.add_request(request(rid, p, 40))
    got = run(sched)
    assert sched.stats.retractions > 0
    assert all(len(got[rid]) == 40 for rid in prompts)
    assert sched.flush_cache() and sched.kv_pool.available_size() == 96


def test_h2o_evicts_while_decoding_and_frees_exactly():
    # a prompt within the budget stays exact (and cached); the decoded tokens past budget + 32
    # are evicted down to the budget in place
    sched = make_scheduler()
    spec = {"method": "h2o", "budget": 8}
    sched.add_request(request("c", PROMPT[:6], 60, spec))
    sched.add_request(request("plain", [70 + i for i in range(8)], 60, spec=None))
    got = run(sched, until=lambda got: len(got.get("c", [])) == 45)
    req = next(r for r in sched.running if r.rid == "c")
    assert req.kv_dropped == 32 and req.kv_len - req.kv_dropped - req.cache_owned_len == 8 + 4
    mine = private_slots(sched, req)
    free_before = sched.kv_pool.free_slot_set()
    (out,) = sched.abort_request("c")
    assert sched.kv_pool.free_slot_set() - free_before == mine
    got = run(sched)
    assert got["plain"][-1] == expected_output([70 + i for i in range(8)], 60)[-1]
    assert sched.flush_cache() and sched.kv_pool.available_size() == 128


def test_admission_keeps_room_for_the_compacted_copies():
    # two 40-token prompts would fill 80 of the 90 slots, each locked until it compacts: were
    # both admitted together, neither would find 12 slots for its copies
    sched = make_scheduler(90, chunk=128)
    for i in range(2):
        sched.add_request(request(f"r{i}", [i * 50 + j for j in range(1, 41)], 4))
    kept = {}
    while sched.has_work():
        for out in sched.step():
            kept[out.rid] = out.kv_tokens_kept
        sched.check_memory()
    assert kept == {"r0": 12, "r1": 12}
    assert sched.flush_cache() and sched.kv_pool.available_size() == 90
