"""The radix tree against a naive model that stores every cached prefix on its own."""

from __future__ import annotations

import pytest
import torch
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from radix import RadixCache

seqs = st.lists(st.integers(0, 3), min_size=1, max_size=10)


def test_basic_sharing_split_and_eviction():
    t = RadixCache()
    assert t.insert([1, 2, 3, 4], torch.tensor([10, 11, 12, 13])) == 0
    assert t.insert([1, 2, 5], torch.tensor([20, 21, 22])) == 2  # 20, 21 are duplicates
    kv, node = t.match_prefix([1, 2, 3, 9])
    assert kv.tolist() == [10, 11, 12]
    t.inc_lock_ref(node)
    assert (t.protected_size(), t.evictable_size(), t.total_size()) == (3, 2, 5)
    assert sorted(t.evict(100).tolist()) == [13, 22]  # the locked path stays
    assert t.match_prefix([1, 2, 3, 4])[0].tolist() == [10, 11, 12]
    t.dec_lock_ref(node)
    assert t.evict(1).tolist() == [12]  # one node: the leaf [3]
    assert sorted(t.evict(5).tolist()) == [10, 11]
    assert t.total_size() == 0 and "root" in t.pretty_print()


def test_least_recently_used_leaf_goes_first():
    t = RadixCache()
    t.insert([1, 1], torch.tensor([1, 2]))
    t.insert([2, 2], torch.tensor([3, 4]))
    t.insert([3, 3], torch.tensor([5, 6]))
    t.match_prefix([1, 1])  # now [2, 2] is the oldest
    assert t.evict(2).tolist() == [3, 4]
    assert t.evict(2).tolist() == [5, 6]


def test_pages_move_whole():
    t = RadixCache(page_size=2)
    assert t.insert([1, 2, 3, 4, 5], torch.arange(5)) == 0
    assert t.total_size() == 4  # the partial page is left to the caller
    assert t.match_prefix([1, 2, 3, 9])[0].tolist() == [0, 1]
    assert t.insert([1, 2, 3, 7], torch.tensor([9, 9, 9, 9])) == 2
    assert t.total_size() == 6
    with pytest.raises(ValueError, match="page_size"):
        RadixCache(page_size=0)


class RadixMachine(RuleBasedStateMachine):
    """Random insert / match / lock / unlock / evict; a pool of slots that must add up.

    The naive model keys every cached prefix by its pages (a page is `page_size` tokens).
    """

    page_size = 1
    pool_size = 64

    def __init__(self) -> None:
        super().__init__()
        self.tree = RadixCache(self.page_size)
        self.free = list(range(self.pool_size))
        self.ref: dict[tuple, list[int]] = {}  # cached page prefix -> slots of its last page
        self.access: dict[tuple, int] = {}
        self.locks: list[tuple[object, tuple]] = []
        self.clock = 0

    def pages(self, seq: list[int]) -> list[tuple[int, ...]]:
        ps = self.page_size
        return [tuple(seq[i : i + ps]) for i in range(0, len(seq) - len(seq) % ps, ps)]

    def ref_match(self, seq: list[int]) -> int:
        """Matched pages."""
        pages, n = self.pages(seq), 0
        while n < len(pages) and tuple(pages[: n + 1]) in self.ref:
            n += 1
        return n

    def touch(self, seq: list[int], n_pages: int) -> None:
        self.clock += 1
        pages = self.pages(seq)
        for i in range(1, n_pages + 1):
            self.access[tuple(pages[:i])] = self.clock

    def locked(self) -> set:
        return {p[:i] for _, p in self.locks for i in range(1, len(p) + 1)}

    @rule(seq=seqs)
    def insert(self, seq):
        if len(seq) > len(self.free):
            return
        ps = self.page_size
        slots = torch.tensor([self.free.pop() for _ in seq])
        expected = self.ref_match(seq)
        cached = self.tree.insert(seq, slots)
        assert cached == expected * ps
        pages = self.pages(seq)
        keep = len(pages) * ps
        self.free.extend(
            slots[:cached].tolist() + slots[keep:].tolist()
        )  # duplicates, partial page
        for i in range(expected, len(pages)):
            self.ref[tuple(pages[: i + 1])] = slots[i * ps : (i + 1) * ps].tolist()
        self.touch(seq, len(pages))

    @rule(seq=seqs)
    def match(self, seq):
        kv, _ = self.tree.match_prefix(seq)
        n = self.ref_match(seq)
        pages = self.pages(seq)
        assert kv.tolist() == [s for i in range(n) for s in self.ref[tuple(pages[: i + 1])]]
        self.touch(seq, n)

    @rule(seq=seqs)
    def lock(self, seq):
        kv, node = self.tree.match_prefix(seq)
        n = len(kv) // self.page_size
        self.touch(seq, n)
        self.tree.inc_lock_ref(node)
        self.locks.append((node, tuple(self.pages(seq)[:n])))

    @precondition(lambda self: self.locks)
    @rule(i=st.integers(0, 100))
    def unlock(self, i):
        node, _ = self.locks.pop(i % len(self.locks))
        self.tree.dec_lock_ref(node)

    @rule(n=st.integers(1, 20))
    def evict(self, n):
        locked = self.locked()
        evictable_before = self.tree.evictable_size()
        freed = self.tree.evict(n).tolist()
        assert len(freed) >= min(n, evictable_before)
        assert len(freed) % self.page_size == 0
        by_slot = {s: k for k, v in self.ref.items() for s in v}
        gone = {by_slot[s] for s in freed}
        assert sum(len(self.ref[p]) for p in gone) == len(freed), "a page was split by eviction"
        for p in gone:
            assert p not in locked, "a locked prefix was evicted"
            del self.ref[p]
        for p in self.ref:
            assert len(p) == 1 or p[:-1] in self.ref, "an inner prefix went before its leaf"
        # LRU: nothing evicted was used more recently than an unlocked leaf that stays
        parents = {q[:-1] for q in self.ref}
        leaves = [p for p in self.ref if p not in locked and p not in parents]
        if gone and leaves:
            assert max(self.access[p] for p in gone) <= min(self.access[p] for p in leaves)
        self.free.extend(freed)

    @invariant()
    def sizes_add_up(self):
        ps = self.page_size
        assert len(self.ref) * ps == self.tree.total_size()
        assert len(self.free) + self.tree.total_size() == self.pool_size
        assert len(set(self.free)) == len(self.free)
        assert self.tree.protected_size() == len(self.locked()) * ps
        assert self.tree.evictable_size() == self.tree.total_size() - self.tree.protected_size()


class PagedRadixMachine(RadixMachine):
    page_size = 2


TestRadix = RadixMachine.TestCase
TestRadix.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestPagedRadix = PagedRadixMachine.TestCase
TestPagedRadix.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
