"""The Triton kernels reading the int4 pool in registers, with a query's own page exact and
earlier pages quantized, against the torch-native backend (the rule's reference) on the same
forwards: long enough that extend blocks start past whole pages of keys read in one view only,
prompts resumed mid-page, decode steps that fill pages, cascade decode over shared int4 pages
and split key ranges. Small shapes: on the CPU the kernels run in Triton's interpreter."""

from __future__ import annotations

import pytest
import torch

from kernels.attention import triton_backend
from kernels.attention.registry import create_backend
from kernels.forward_batch import ForwardBatch, ForwardMode
from runtime.kv_cache_dtype import create_kv_pool
from runtime.layers.attention import PagedAttention
from runtime.memory_pool import ReqToTokenPool

H, HKV, D, PAGE = 4, 2, 16, 8


def forwards(backend_name: str, steps, inputs) -> list[torch.Tensor]:
    """Runs `steps` [(mode, rows, starts, lens, prefix_groups)] on a fresh int4 pool; rows 2 and
    3 share row 0's first 64 slots (a radix hit). Returns each step's attention output."""
    pool = create_kv_pool("int4", 512, 1, HKV, D, PAGE, 4, torch.float32, "cpu")
    r2t = ReqToTokenPool(4, 256, "cpu")
    rows = [r2t.alloc() for _ in range(4)]
    backend = create_backend(backend_name, num_heads=H, num_kv_heads=HKV, head_dim=D, device="cpu")
    layer = PagedAttention(0, H, HKV, D)
    outs = []
    for (mode, which, starts, lens, groups), (q, k, v) in zip(steps, inputs):
        if which == [2, 3]:
            for r in (2, 3):
                r2t.req_to_token[rows[r], :64] = r2t.req_to_token[rows[0], :64]
        locs = []
        for r, s, n in zip(which, starts, lens):
            locs.append(pool.alloc(n))
            r2t.req_to_token[rows[r], s : s + n] = locs[-1]
        fb = ForwardBatch(
            mode=mode,
            input_ids=torch.zeros(sum(lens), dtype=torch.int64),
            positions=torch.cat([torch.arange(s, s + n) for s, n in zip(starts, lens)]),
            out_cache_loc=torch.cat(locs),
            req_pool_indices=torch.tensor([rows[r] for r in which]),
            seq_lens=torch.tensor([s + n for s, n in zip(starts, lens)]),
            req_to_token=r2t.req_to_token,
            kv_cache=pool,
            seq_lens_cpu=[s + n for s, n in zip(starts, lens)],
            prefix_lens_cpu=list(starts),
            extend_lens_cpu=list(lens),
        )
        fb.prefix_groups = groups
        pool.plan(fb)
        backend.init_forward_metadata(fb)
        outs.append(backend.forward(q, k, v, layer, fb))
    return outs


EXTEND, DECODE = ForwardMode.EXTEND, ForwardMode.DECODE
STEPS = [
    (EXTEND, [0, 1], [0, 0], [90, 13], []),  # two query blocks; the second starts past 64 keys
    (EXTEND, [0, 1], [90, 13], [20, 70], []),  # resumed mid-page (staged tokens fill pages)
    (DECODE, [0, 1], [110, 83], [1, 1], []),
    (DECODE, [0, 1], [111, 84], [1, 1], []),  # 111 fills its page
    (EXTEND, [2, 3], [64, 64], [5, 12], []),  # radix hits on row 0's first 64 slots
    (DECODE, [0, 1, 2, 3], [112, 85, 69, 76], [1] * 4, [([0, 2, 3], 64)]),
    (DECODE, [0, 1, 2, 3], [113, 86, 70, 77], [1] * 4, [([0, 2, 3], 64)]),
]


@pytest.mark.parametrize("splits", [None, 3])
def test_triton_reads_int4_like_the_torch_native_reference(splits, monkeypatch):
    if splits:  # each decode item's keys in several ranges, reduced after
        monkeypatch.setattr(triton_backend, "choose_num_splits", lambda *a, **k: splits)
    g = torch.Generator().manual_seed(0)
    inputs = []
    for _, _, _, lens, _ in STEPS:
        t = sum(lens)
        inputs.append(
            tuple(torch.randn(t, h, D, generator=g) for h in (H, HKV, HKV))
        )  # fmt: skip
    ref = forwards("torch_native", STEPS, inputs)
    got = forwards("triton", STEPS, inputs)
    for i, (a, b) in enumerate(zip(got, ref)):
        assert torch.allclose(a, b, atol=1e-4), (i, (a - b).abs().max())
