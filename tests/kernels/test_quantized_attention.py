"""Every attention backend over the quantized pools, against plain attention over what the pool
dequantizes to: prefill in two chunks, then decode steps that fill a page, and cascade decode
over a shared prefix of quantized pages. Triton runs in its interpreter and reads every format's
codes itself; FlashInfer, through its stand-in, takes fp8 pages as they are and int8 and int4
through the compact view."""

from __future__ import annotations

import sys

import pytest
import torch

from kernels.attention import torch_native
from kernels.attention.compact_kv import CompactKVBackend
from kernels.attention.registry import create_backend
from kernels.forward_batch import ForwardBatch, ForwardMode
from runtime.kv_cache_dtype import create_kv_pool
from runtime.layers.attention import PagedAttention
from runtime.memory_pool import ReqToTokenPool
from tests.kernels import fake_flashinfer
from tests.kernels.reference import attention

H, HKV, D, PAGE = 4, 2, 16, 8
FORMATS = ["int8", "fp8_e4m3", "int4"]
CASES = [(b, f) for b in ("torch_native", "triton", "flashinfer") for f in FORMATS]
# Which backends read which formats as stored (the rest go through the compact view).
READS = {"torch_native": set(FORMATS), "triton": set(FORMATS), "flashinfer": {"fp8_e4m3"}}


@pytest.fixture
def make_backend(monkeypatch):
    def make(name, pool):
        if name == "flashinfer":
            monkeypatch.setitem(sys.modules, "flashinfer", fake_flashinfer.module())
        backend = create_backend(name, num_heads=H, num_kv_heads=HKV, head_dim=D, device="cpu")
        fmt = "fp8_e4m3" if pool.codes == "fp8" else pool.codes
        assert backend.reads_pool(pool) == (fmt in READS[name])
        return backend if backend.reads_pool(pool) else CompactKVBackend(backend, torch.float32)

    return make


def batch_of(mode, pool, r2t, rows, starts, lens, locs):
    return ForwardBatch(
        mode=mode,
        input_ids=torch.zeros(sum(lens), dtype=torch.int64),
        positions=torch.cat([torch.arange(s, s + n) for s, n in zip(starts, lens)]),
        out_cache_loc=torch.cat(locs),
        req_pool_indices=torch.tensor(rows),
        seq_lens=torch.tensor([s + n for s, n in zip(starts, lens)]),
        req_to_token=r2t.req_to_token,
        kv_cache=pool,
        seq_lens_cpu=[s + n for s, n in zip(starts, lens)],
        prefix_lens_cpu=list(starts),
        extend_lens_cpu=list(lens),
    )


class Exact:
    """The K/V each slot was given, to build what a query must see of its own page."""

    def __init__(self, size):
        self.k, self.v = torch.zeros(size + 1, HKV, D), torch.zeros(size + 1, HKV, D)

    def forward(self, backend, layer, fb, locs):
        t = sum(loc.numel() for loc in locs)
        q, k, v = torch.randn(t, H, D), torch.randn(t, HKV, D), torch.randn(t, HKV, D)
        self.k[torch.cat(locs)], self.v[torch.cat(locs)] = k, v
        return q, backend.forward(q, k, v, layer, fb)


def check_rows(out, q, pool, exact, r2t, rows, starts, lens, layer):
    """Each query against attention over the pool's dequantized K/V; with int4 the query's own
    page is exact (what it holds before the page fills, and what a query in it sees after)."""
    ps = pool.own_page_size
    a = 0
    for r, s, n in zip(rows, starts, lens):
        slots = r2t.req_to_token[r, : s + n]
        for t in range(s, s + n):
            own = t - t % ps if ps else t + 1
            keys, vals = pool.read_kv(0, slots[:own], torch.float32)
            keys = torch.cat([keys, exact.k[slots[own : t + 1]]])
            vals = torch.cat([vals, exact.v[slots[own : t + 1]]])
            ref, _ = attention(q[a : a + 1], keys, vals, layer.scaling)
            assert torch.allclose(out[a : a + 1], ref, atol=1e-4), (r, s, n, t)
            a += 1


@pytest.mark.parametrize("backend_name,fmt", CASES)
def test_extend_then_decode_over_a_quantized_pool(backend_name, fmt, make_backend):
    torch.manual_seed(0)
    pool = create_kv_pool(fmt, 128, 1, HKV, D, PAGE, 3, torch.float32, "cpu")
    r2t = ReqToTokenPool(3, 64, "cpu")
    backend, layer = make_backend(backend_name, pool), PagedAttention(0, H, HKV, D)
    exact = Exact(128)
    rows = [r2t.alloc() for _ in range(3)]
    lens = [13, 20, 6]

    def run(mode, starts, ns):
        locs = []
        for r, s, n in zip(rows, starts, ns):
            locs.append(pool.alloc(n))
            r2t.req_to_token[r, s : s + n] = locs[-1]
        fb = batch_of(mode, pool, r2t, rows, starts, ns, locs)
        pool.plan(fb)
        backend.init_forward_metadata(fb)
        q, out = exact.forward(backend, layer, fb, locs)
        assert out.dtype == q.dtype
        check_rows(out, q, pool, exact, r2t, rows, starts, ns, layer)

    run(ForwardMode.EXTEND, [0, 0, 0], [n // 2 for n in lens])
    run(ForwardMode.EXTEND, [n // 2 for n in lens], [n - n // 2 for n in lens])
    for step in range(4):  # 13 -> 17 and 20 -> 24 cross page ends
        run(ForwardMode.DECODE, [n + step for n in lens], [1, 1, 1])


@pytest.mark.parametrize("backend_name,fmt", CASES)
def test_cascade_decode_over_shared_quantized_pages(backend_name, fmt, make_backend):
    """Four requests share a 16-token prefix (two whole pages, as the radix cache holds them)
    and decode in one group; two more decode alone."""
    torch.manual_seed(1)
    pool = create_kv_pool(fmt, 256, 1, HKV, D, PAGE, 6, torch.float32, "cpu")
    r2t = ReqToTokenPool(6, 64, "cpu")
    backend, layer = make_backend(backend_name, pool), PagedAttention(0, H, HKV, D)
    exact = Exact(256)
    rows = [r2t.alloc() for _ in range(6)]

    def prefill(rs, starts, ns):
        locs = []
        for r, s, n in zip(rs, starts, ns):
            locs.append(pool.alloc(n))
            r2t.req_to_token[r, s : s + n] = locs[-1]
        fb = batch_of(ForwardMode.EXTEND, pool, r2t, rs, starts, ns, locs)
        pool.plan(fb)
        backend.init_forward_metadata(fb)
        exact.forward(backend, layer, fb, locs)

    prefill([rows[0]], [0], [16])
    for r in rows[1:4]:
        r2t.req_to_token[r, :16] = r2t.req_to_token[rows[0], :16]  # a radix hit
    own = [3, 9, 5, 11, 7, 2]
    prefill(rows, [16, 16, 16, 16, 0, 0], [own[0], own[1], own[2], own[3], own[4], own[5]])
    starts = [16 + n for n in own[:4]] + own[4:]
    locs = [pool.alloc(1) for _ in rows]
    for r, s, loc in zip(rows, starts, locs):
        r2t.req_to_token[r, s] = loc
    fb = batch_of(ForwardMode.DECODE, pool, r2t, rows, starts, [1] * 6, locs)
    fb.prefix_groups = [([0, 1, 2, 3], 16)]
    pool.plan(fb)
    backend.init_forward_metadata(fb)
    q, out = exact.forward(backend, layer, fb, locs)
    check_rows(out, q, pool, exact, r2t, rows, starts, [1] * 6, layer)


def test_int4_extend_attends_in_blocks_of_pages(monkeypatch, make_backend):
    """torch_native runs an int4 extend's queries in blocks of whole pages; blocks of one page
    (several per extend here) must see what a query sees in one block."""
    monkeypatch.setattr(torch_native, "QUERY_BLOCK", PAGE)
    test_extend_then_decode_over_a_quantized_pool("torch_native", "int4", make_backend)


@pytest.mark.parametrize("chunks", [[5] + [1] * 16, [11, 10], [3, 9] + [1] * 9])
def test_int4_outputs_do_not_depend_on_how_the_tokens_were_split(chunks):
    """The same tokens in one prefill, or in chunks and decode steps (as after a retraction
    or under a chunked prefill), give the same attention outputs: a query sees its own page
    exactly whichever forward fills it, so each page is also quantized from the same values."""
    torch.manual_seed(2)
    n = sum(chunks)
    q, k, v = torch.randn(n, H, D), torch.randn(n, HKV, D), torch.randn(n, HKV, D)
    layer = PagedAttention(0, H, HKV, D)

    def outputs(split):
        pool = create_kv_pool("int4", 64, 1, HKV, D, PAGE, 1, torch.float32, "cpu")
        r2t = ReqToTokenPool(1, 64, "cpu")
        row, backend = (
            r2t.alloc(),
            create_backend("torch_native", num_heads=H, num_kv_heads=HKV, head_dim=D, device="cpu"),
        )
        outs, start = [], 0
        for m in split:
            loc = pool.alloc(m)
            r2t.req_to_token[row, start : start + m] = loc
            mode = ForwardMode.DECODE if m == 1 and start else ForwardMode.EXTEND
            fb = batch_of(mode, pool, r2t, [row], [start], [m], [loc])
            pool.plan(fb)
            backend.init_forward_metadata(fb)
            part = slice(start, start + m)
            outs.append(backend.forward(q[part], k[part], v[part], layer, fb))
            start += m
        return torch.cat(outs)

    assert torch.allclose(outputs(chunks), outputs([n]), atol=1e-5)
