"""The radix cache in the running engine: reuse, equality of outputs, policies, memory pressure."""

from __future__ import annotations

import pytest

from runtime import Engine
from tests.conftest import REFERENCE

SYSTEM = (
    "You are a careful assistant for a small bakery. You answer questions about opening hours, "
    "bread, cakes, prices and orders. Opening hours are 7am to 6pm on weekdays and 8am to 2pm on "
    "Saturdays; the bakery is closed on Sundays. Sourdough costs 5 dollars, a baguette 3 dollars, "
    "and a whole cake between 20 and 40 dollars. Orders for cakes need two days' notice. "
)
QUESTIONS = [
    "When do you open on Saturday?",
    "How much is a baguette?",
    "Can I order a cake for tomorrow?",
    "Are you open on Sunday?",
    "What does sourdough cost?",
    "Do you sell cakes?",
]
GREEDY = {"temperature": 0, "max_new_tokens": 12, "ignore_eos": True}


def chat(tok, system: str, question: str) -> list[int]:
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    enc = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    return list(enc["input_ids"] if hasattr(enc, "keys") else enc)


@pytest.fixture(scope="module")
def prompts(engine):
    return [chat(engine.tokenizer, SYSTEM, q) for q in QUESTIONS]


@pytest.fixture(scope="module")
def no_cache_outputs(prompts):
    with Engine(
        **REFERENCE,
        max_total_tokens=4096,
        disable_radix_cache=True,
        debug_check_memory=True,
        log_level="warning",
    ) as eng:
        out = [r["output_ids"] for r in eng.generate(input_ids=prompts, sampling_params=GREEDY)]
        assert all(
            r["meta_info"]["cached_tokens"] == 0
            for r in eng.generate(input_ids=prompts[:2], sampling_params=GREEDY)
        )
        return out


def test_shared_system_prompt_is_reused(engine, prompts, no_cache_outputs):
    assert engine.flush_cache()
    first = engine.generate(input_ids=prompts[0], sampling_params=GREEDY)
    assert first["meta_info"]["cached_tokens"] == 0
    rest = engine.generate(input_ids=prompts[1:], sampling_params=GREEDY)
    system_len = len(chat(engine.tokenizer, SYSTEM, ""))  # roughly the shared part
    for r in rest:
        assert r["meta_info"]["cached_tokens"] >= system_len - 10
    assert [first["output_ids"]] + [r["output_ids"] for r in rest] == no_cache_outputs
    again = engine.generate(input_ids=prompts[0], sampling_params=GREEDY)
    assert again["meta_info"]["cached_tokens"] == len(prompts[0]) - 1
    assert again["output_ids"] == first["output_ids"]
    info = engine.get_server_info()
    assert 0 < info["cache_hit_rate"] <= 1 and info["cache_tokens"] > 0


def test_next_chat_turn_reuses_the_answer(engine):
    tok = engine.tokenizer
    turn1 = [{"role": "user", "content": "Name a fruit."}]
    ids1 = chat(tok, "Be brief.", "Name a fruit.")
    r1 = engine.generate(input_ids=ids1, sampling_params={"temperature": 0, "max_new_tokens": 20})
    turn2 = [
        {"role": "system", "content": "Be brief."},
        *turn1,
        {"role": "assistant", "content": r1["text"]},
        {"role": "user", "content": "Another?"},
    ]
    enc = tok.apply_chat_template(turn2, add_generation_prompt=True, tokenize=True)
    ids2 = list(enc["input_ids"] if hasattr(enc, "keys") else enc)
    r2 = engine.generate(input_ids=ids2, sampling_params={"temperature": 0, "max_new_tokens": 5})
    assert r2["meta_info"]["cached_tokens"] > len(ids1)  # the prompt and the answer were cached


# KV formats the pressure and sharing tests also run with: (kv_cache_dtype, page_size);
# int4 quantizes keys over whole pages, so it needs pages.
QUANTIZED = [("int8", 1), ("int4", 8)]


@pytest.mark.parametrize("kv", [("auto", 1), *QUANTIZED], ids=lambda kv: kv[0])
def test_in_batch_sharing_computes_the_prefix_once(kv, prompts):
    fmt, page = kv
    with Engine(
        **REFERENCE,
        max_total_tokens=4096,
        kv_cache_dtype=fmt,
        page_size=page,
        debug_check_memory=True,
        log_level="warning",
    ) as eng:
        out = eng.generate(input_ids=prompts, sampling_params={**GREEDY, "max_new_tokens": 2})
        info = eng.get_server_info()
        # a hit on the cached (quantized) pages gives what computing them gave
        again = eng.generate(input_ids=prompts[0], sampling_params={**GREEDY, "max_new_tokens": 2})
    assert info["kv_cache_dtype"] == ("float32" if fmt == "auto" else fmt)
    shared = min(len(p) for p in prompts) - 12 - page  # the cache holds whole pages
    total = sum(len(p) for p in prompts)
    assert info["prefill_tokens"] < total - (len(prompts) - 1) * shared * 0.9
    assert sum(r["meta_info"]["cached_tokens"] > shared for r in out) == len(prompts) - 1
    assert again["meta_info"]["cached_tokens"] >= len(prompts[0]) - page
    assert again["output_ids"] == out[0]["output_ids"]


@pytest.mark.parametrize("policy", ["lpm", "dfs-weight", "fcfs", "random"])
def test_every_policy_gives_the_same_greedy_outputs(policy, prompts, no_cache_outputs):
    with Engine(
        **REFERENCE,
        max_total_tokens=4096,
        schedule_policy=policy,
        debug_check_memory=True,
        log_level="warning",
    ) as eng:
        mixed = [prompts[i] for i in (3, 0, 5, 1, 4, 2)]
        out = eng.generate(input_ids=mixed, sampling_params=GREEDY)
        assert [r["output_ids"] for r in out] == [no_cache_outputs[i] for i in (3, 0, 5, 1, 4, 2)]


def test_memory_pressure_retracts_and_outputs_stay_the_same(prompts, no_cache_outputs):
    # A request ends holding ~190 slots (~100 of them the shared prefix); 300 cannot hold six.
    params = {**GREEDY, "max_new_tokens": 80}
    with Engine(
        **REFERENCE, max_total_tokens=300, disable_radix_cache=True, log_level="warning"
    ) as eng:
        ref = [r["output_ids"] for r in eng.generate(input_ids=prompts[:1], sampling_params=params)]
    for disable in (False, True):
        with Engine(
            **REFERENCE,
            max_total_tokens=300,
            disable_radix_cache=disable,
            debug_check_memory=True,
            log_level="warning",
        ) as eng:
            out = eng.generate(input_ids=prompts, sampling_params=params)
            info = eng.get_server_info()
        assert info["retractions"] > 0, "the pool was large enough; the test proves nothing"
        assert out[0]["output_ids"] == ref[0]
        assert [r["output_ids"][:12] for r in out] == no_cache_outputs
        assert info["kv_free_tokens"] + info["cache_tokens"] == 300


@pytest.mark.parametrize("kv", QUANTIZED, ids=lambda kv: kv[0])
def test_quantized_cache_under_memory_pressure_gives_its_own_outputs(kv, prompts):
    """Retraction and eviction with a quantized pool: every request runs to its end and starts
    as it does in the same format with room to spare, and the slots add up afterwards.

    The model runs in float32: in bfloat16 the batch a token is computed in changes its K/V in
    the last bits (the pressured run batches requests differently), and an int4 code that rounds
    the other way tips a near tie within a few tokens. (Later tokens may still differ: a token
    recomputed after a retraction is summed in another order, with the same effect.)"""
    fmt, page = kv
    params = {**GREEDY, "max_new_tokens": 60}
    common = {"kv_cache_dtype": fmt, "page_size": page, "log_level": "warning", **REFERENCE}
    with Engine(max_total_tokens=4096, disable_radix_cache=True, **common) as eng:
        ref = [r["output_ids"] for r in eng.generate(input_ids=prompts, sampling_params=params)]
    with Engine(max_total_tokens=260, debug_check_memory=True, **common) as eng:
        out = eng.generate(input_ids=prompts, sampling_params=params)
        info = eng.get_server_info()
        assert eng.flush_cache()
        assert eng.get_server_info()["kv_free_tokens"] == 260
    assert info["retractions"] > 0, "the pool was large enough; the test proves nothing"
    assert [r["output_ids"][:12] for r in out] == [r[:12] for r in ref]
    assert all(len(r["output_ids"]) == params["max_new_tokens"] for r in out)
    assert info["kv_free_tokens"] + info["cache_tokens"] == 260


def test_flush_is_refused_while_running(engine):
    import threading

    done = threading.Event()

    def long_request() -> None:
        engine.generate("Tell me a story.", {"max_new_tokens": 200, "ignore_eos": True})
        done.set()

    t = threading.Thread(target=long_request)
    t.start()
    for _ in range(200):
        if engine.get_server_info()["num_running_reqs"]:
            break
    assert engine.flush_cache() is False
    t.join()
    assert engine.flush_cache() is True
    assert engine.get_server_info()["cache_tokens"] == 0


def test_page_size_keeps_whole_pages(prompts, no_cache_outputs):
    with Engine(
        **REFERENCE,
        max_total_tokens=4096,
        page_size=4,
        debug_check_memory=True,
        log_level="warning",
    ) as eng:
        out = eng.generate(input_ids=prompts, sampling_params=GREEDY)
        info = eng.get_server_info()
    assert [r["output_ids"] for r in out] == no_cache_outputs
    cached = [r["meta_info"]["cached_tokens"] for r in out]
    assert all(c % 4 == 0 for c in cached) and sum(c > 0 for c in cached) == len(prompts) - 1
    assert info["cache_tokens"] % 4 == 0


def test_random_load_with_aborts_keeps_the_pool_whole(prompts):
    """Mixed lengths, sampling, chunking, a tight pool and aborts: every request ends, the
    accounting (checked after every step) holds, and the pool is whole afterwards."""
    import random
    import threading

    rng = random.Random(7)
    with Engine(
        **REFERENCE,
        max_total_tokens=600,
        chunked_prefill_size=64,
        max_running_requests=6,
        debug_check_memory=True,
        log_level="warning",
    ) as eng:
        results: dict[str, dict] = {}

        def run(i: int) -> None:
            ids = prompts[i % len(prompts)][: rng.randint(20, 120)]
            params = {
                "max_new_tokens": rng.randint(1, 60),
                "temperature": rng.choice([0, 0.8]),
                "seed": i,
                "ignore_eos": rng.random() < 0.5,
            }
            results[f"r{i}"] = eng.generate(input_ids=ids, sampling_params=params, rid=f"r{i}")

        threads = [threading.Thread(target=run, args=(i,)) for i in range(14)]
        for t in threads:
            t.start()
        for i in (1, 5, 9):
            eng.abort_request(f"r{i}")
        for t in threads:
            t.join(timeout=240)
        info = eng.get_server_info()
    assert len(results) == 14
    kinds = {r["meta_info"]["finish_reason"]["type"] for r in results.values()}
    assert kinds <= {"stop", "length", "abort"}
    assert info["num_running_reqs"] == info["num_waiting_reqs"] == 0
    assert info["kv_free_tokens"] + info["cache_tokens"] == 600
