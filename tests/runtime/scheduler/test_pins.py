"""Pinned prefixes on the real scheduler over a stub model: they survive memory pressure that
evicts everything else, keep the pool accounting whole, and obey the cap and their expiry."""

from __future__ import annotations

import time

import pytest

from tests.runtime.scheduler.stub_runner import expected_output
from tests.runtime.scheduler.test_scheduler_state_machine import make_scheduler, request

PREFIX = list(range(1, 13))  # 12 tokens: an agent's system prompt


class Words:
    """A tokenizer stand-in for the tree view: token 7 reads as "t7"."""

    def decode(self, ids):
        return " ".join(f"t{i}" for i in ids)


def run(sched) -> dict[str, list[int]]:
    got: dict[str, list[int]] = {}
    while sched.has_work():
        for out in sched.step():
            got.setdefault(out.rid, []).extend(out.new_token_ids)
        sched.check_memory()
    return got


def cache_prefix(sched, ids) -> None:
    sched.add_request(request("prefill-" + "-".join(map(str, ids[:3])), ids, 0))
    run(sched)


def cached_len(sched, ids) -> int:
    return len(sched.cache.match_prefix(ids)[0])


def test_pinned_prefix_survives_pressure_that_evicts_everything_else():
    sched = make_scheduler(max_pinned_tokens=16)
    other = [40] * 12
    cache_prefix(sched, PREFIX)
    cache_prefix(sched, other)
    pin = sched.pin_prefix(PREFIX)
    assert pin["tokens"] == 12 and sched.load_stats()["pinned_tokens"] == 12
    # four requests whose outputs cannot all fit in the 64-token pool
    prompts = {f"r{i}": [i + 50] * 4 for i in range(4)}
    for rid, prompt in prompts.items():
        sched.add_request(request(rid, prompt, 24))
    got = run(sched)
    assert sched.stats.retractions > 0  # the pressure was real
    assert all(got[rid] == expected_output(p, 24) for rid, p in prompts.items())
    assert cached_len(sched, other) == 0  # the unpinned prefix went
    assert cached_len(sched, PREFIX) == 12  # the pinned one stayed
    # a request on the pinned prefix finds it cached, and counts a hit
    sched.add_request(request("agent", PREFIX + [7], 2))
    run(sched)
    sched.tokenizer = Words()
    tree = sched.cache_tree()
    assert sched.stats.cached_prompt_tokens >= 12
    (node,) = [n for n in tree["root"]["children"] if n["pinned"]]
    assert node["tokens"] == 12 and node["hits"] >= 1 and node["locked"]
    assert node["text"].startswith("t1 t2")
    assert sched.unpin_prefix(pin["pin_id"]) and not sched.unpin_prefix(pin["pin_id"])
    assert sched.load_stats()["pinned_tokens"] == 0
    assert sched.cache.evictable_size() == sched.cache.total_size()  # nothing held any more
    sched.check_memory()


def test_cap_counts_shared_tokens_once():
    sched = make_scheduler(max_pinned_tokens=14)
    cache_prefix(sched, PREFIX + [30, 31])
    first = sched.pin_prefix(PREFIX)
    second = sched.pin_prefix(PREFIX + [30, 31])  # two more tokens on the same path
    assert second["pinned_tokens"] == 14 and first["pin_id"] != second["pin_id"]
    cache_prefix(sched, [44] * 5)
    with pytest.raises(ValueError, match="^max_pinned_tokens: pinning 5 more tokens"):
        sched.pin_prefix([44] * 5)
    sched.unpin_prefix(first["pin_id"])
    assert sched.load_stats()["pinned_tokens"] == 14  # the second pin still holds the path
    assert sched.pin_prefix([99, 98])["tokens"] == 0  # nothing cached: nothing pinned
    sched.check_memory()


def test_pins_expire_and_survive_a_flush():
    sched = make_scheduler()
    cache_prefix(sched, PREFIX)
    cache_prefix(sched, [33] * 6)
    keep = sched.pin_prefix(PREFIX)
    short = sched.pin_prefix([33] * 6, ttl_s=0.01)
    assert short["expires_at"] is not None
    assert sched.flush_cache()
    assert cached_len(sched, PREFIX) == 12 and cached_len(sched, [33] * 6) == 6
    time.sleep(0.02)
    sched.expire_pins()
    assert sched.load_stats()["num_pins"] == 1
    assert sched.flush_cache() and cached_len(sched, [33] * 6) == 0
    assert cached_len(sched, PREFIX) == 12
    sched.unpin_prefix(keep["pin_id"])
    sched.check_memory()


def test_tree_view_arguments_are_checked():
    sched = make_scheduler()
    sched.tokenizer = Words()
    with pytest.raises(ValueError, match="^depth:"):
        sched.cache_tree(depth=-1)
    cache_prefix(sched, PREFIX)
    assert sched.cache_tree(depth=0)["root"]["children"] == []
    assert sched.cache_tree(min_tokens=13)["root"]["children"] == []
    assert sched.cache_tree()["total_tokens"] == 12


def test_no_pins_without_the_radix_cache():
    sched = make_scheduler(disable_radix_cache=True)
    with pytest.raises(ValueError, match="^pin_prefix: the radix cache is off"):
        sched.pin_prefix(PREFIX)


def test_a_request_that_cannot_fit_beside_the_pins_is_refused():
    sched = make_scheduler(max_pinned_tokens=40)
    long_prefix = list(range(1, 41))
    cache_prefix(sched, long_prefix)
    sched.pin_prefix(long_prefix)
    with pytest.raises(ValueError, match="pinned tokens"):
        sched.add_request(request("big", [50] * 20, 10))  # 30 > 64 - 40, shares nothing
    sched.add_request(request("shares", long_prefix + [50] * 4, 10))  # the pin is its prefix
    assert run(sched)["shares"] == expected_output(long_prefix + [50] * 4, 10)
    sched.check_memory()
