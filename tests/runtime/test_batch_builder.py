"""The batch builder: one upload gives every tensor, and the table learns the new slots."""

from __future__ import annotations

import torch

from kernels.forward_batch import ForwardMode
from runtime.batch_builder import BatchBuilder
from runtime.memory_pool import KVPool, ReqToTokenPool


def pools():
    r2t = ReqToTokenPool(4, 32, "cpu")
    return r2t, KVPool(64, 1, 1, 2, torch.float32, "cpu")


def test_extend_batch_tensors_and_table():
    r2t, kv = pools()
    b = BatchBuilder(r2t, kv, torch.device("cpu"))
    r2t.req_to_token[2, :3] = torch.tensor([7, 8, 9])  # request slot 2 has a cached prefix
    slots = torch.tensor([11, 12, 13, 21, 22])
    fb = b.build(
        ForwardMode.EXTEND,
        input_ids=[5, 6, 7, 1, 2],
        positions=[3, 4, 5, 0, 1],
        out_cache_loc=slots,
        req_pool_indices=[2, 0],
        seq_lens=[6, 2],
        prefix_lens=[3, 0],
        extend_lens=[3, 2],
    )
    assert fb.input_ids.tolist() == [5, 6, 7, 1, 2]
    assert fb.positions.tolist() == [3, 4, 5, 0, 1]
    assert fb.out_cache_loc.tolist() == slots.tolist()
    assert fb.req_pool_indices.tolist() == [2, 0] and fb.seq_lens.tolist() == [6, 2]
    assert (fb.prefix_lens_cpu, fb.extend_lens_cpu, fb.seq_lens_cpu) == ([3, 0], [3, 2], [6, 2])
    assert r2t.req_to_token[2, :6].tolist() == [7, 8, 9, 11, 12, 13]
    assert r2t.req_to_token[0, :2].tolist() == [21, 22]
    assert fb.kv_cache is kv and fb.req_to_token is r2t.req_to_token


def test_decode_batch_writes_one_slot_per_request():
    r2t, kv = pools()
    b = BatchBuilder(r2t, kv, torch.device("cpu"))
    fb = b.build(
        ForwardMode.DECODE,
        input_ids=[3, 4],
        positions=[5, 9],
        out_cache_loc=torch.tensor([40, 41]),
        req_pool_indices=[1, 3],
        seq_lens=[6, 10],
    )
    assert fb.is_decode and fb.positions.tolist() == [5, 9]
    assert (int(r2t.req_to_token[1, 5]), int(r2t.req_to_token[3, 9])) == (40, 41)
    assert fb.extend_lens_cpu == [] and fb.seq_lens_cpu == [6, 10]
