from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.memory_pool import KVPool, ReqToTokenPool


def test_kv_pool_alloc_free_and_scratch_slot():
    pool = KVPool(8, num_layers=2, num_kv_heads=1, head_dim=4, dtype=torch.float32, device="cpu")
    a = pool.alloc(5)
    assert a is not None and 0 not in a.tolist() and pool.available_size() == 3
    assert pool.alloc(4) is None  # not enough; nothing taken
    assert pool.available_size() == 3
    pool.set_kv(1, a[:2], torch.ones(2, 1, 4), torch.full((2, 1, 4), 2.0))
    assert pool.k_buffer[1][a[:2]].eq(1).all() and pool.v_buffer[1][a[:2]].eq(2).all()
    pool.free(a)
    assert pool.available_size() == 8 and pool.free_slot_set() == set(range(1, 9))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 6)), max_size=40))
def test_kv_pool_never_hands_out_a_slot_twice(ops):
    pool = KVPool(16, 1, 1, 2, torch.float32, "cpu")
    held: list[torch.Tensor] = []
    for take, n in ops:
        if take:
            got = pool.alloc(n)
            if got is None:
                assert n > pool.available_size()
                continue
            held.append(got)
        elif held:
            pool.free(held.pop(0))
        owned = [i for t in held for i in t.tolist()]
        assert len(owned) == len(set(owned))
        assert set(owned).isdisjoint(pool.free_slot_set())
        assert len(owned) + pool.available_size() == 16


def test_req_to_token_pool():
    pool = ReqToTokenPool(2, 32, "cpu")
    a, b = pool.alloc(), pool.alloc()
    assert {a, b} == {0, 1} and pool.alloc() is None
    pool.free(a)
    assert pool.available_size() == 1 and pool.req_to_token.shape == (2, 32)
