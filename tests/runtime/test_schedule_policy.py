"""Queue order under each policy, on a real radix tree."""

from __future__ import annotations

import pytest
import torch

from runtime.memory_pool import KVPool, ReqToTokenPool
from runtime.scheduler.prefix_cache import NoPrefixCache, RadixPrefixCache
from runtime.scheduler.schedule_policy import SchedulePolicy


class FakeReq:
    def __init__(self, name: str, ids: list[int]) -> None:
        self.name, self.ids = name, ids

    def match_ids(self) -> list[int]:
        return self.ids


def make_cache(radix: bool = True):
    pools = (ReqToTokenPool(4, 64, "cpu"), KVPool(256, 1, 1, 2, torch.float32, "cpu"))
    cache = RadixPrefixCache(*pools) if radix else NoPrefixCache(*pools)
    if radix:
        for seq in ([1, 2, 3, 4, 5, 6], [7, 8, 9]):
            cache.tree.insert(seq, pools[1].alloc(len(seq)))
    return cache


def names(reqs) -> list[str]:
    return [r.name for r in reqs]


QUEUE = [
    FakeReq("a", [9, 9, 9]),  # nothing cached
    FakeReq("b", [1, 2, 0]),  # 2 cached
    FakeReq("c", [7, 8, 9, 1]),  # 3 cached, other branch
    FakeReq("d", [1, 2, 3, 4, 5, 0]),  # 5 cached
    FakeReq("e", [1, 2, 3, 0]),  # 3 cached
]


def test_lpm_longest_match_first_ties_by_arrival():
    assert names(SchedulePolicy("lpm", make_cache()).order(QUEUE)) == ["d", "c", "e", "b", "a"]


def test_fcfs_and_random():
    cache = make_cache()
    assert names(SchedulePolicy("fcfs", cache).order(QUEUE)) == list("abcde")
    shuffled = [names(SchedulePolicy("random", cache, seed=s).order(QUEUE)) for s in range(5)]
    assert (
        all(sorted(o) == list("abcde") for o in shuffled) and len({tuple(o) for o in shuffled}) > 1
    )


def test_dfs_weight_keeps_a_subtree_together_heaviest_first():
    order = names(SchedulePolicy("dfs-weight", make_cache()).order(QUEUE))
    # the [1, 2, ...] subtree holds three waiting requests, [7, 8, 9] one, the root one
    assert order[0] == "a"
    assert set(order[1:4]) == {"b", "d", "e"} and order[4] == "c"


def test_without_a_tree_every_policy_keeps_arrival_order():
    cache = make_cache(radix=False)
    for policy in ("lpm", "dfs-weight"):
        assert names(SchedulePolicy(policy, cache).order(QUEUE)) == list("abcde")


def test_unknown_policy():
    with pytest.raises(ValueError, match="schedule_policy"):
        SchedulePolicy("sjf", make_cache())
