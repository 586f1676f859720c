"""The quantized KV pools: page layout (full pages quantized, the partial page exact), pages
filling during decode, shared pages keeping their bytes, and slot / record / staging accounting."""

from __future__ import annotations

import pytest
import torch

from kernels.forward_batch import ForwardBatch, ForwardMode
from runtime.kv_cache_dtype import (
    KV_CACHE_DTYPES,
    create_kv_pool,
    kv_bytes_per_token,
    resolve_kv_cache_dtype,
)
from runtime.memory_pool import ReqToTokenPool

L, H, D, PAGE = 2, 2, 16, 8


def make(name, size=200, requests=4):
    return create_kv_pool(name, size, L, H, D, PAGE, requests, torch.float32, "cpu"), (
        ReqToTokenPool(requests, 128, "cpu")
    )


def forward(pool, r2t, chunks, kv, decode=False):
    """chunks: (request slot, start, n); kv[slot] = (K, V) [positions, H, D]. Allocates the
    new slots, plans and writes every layer, as one model forward would."""
    locs, k, v = [], [], []
    for r, s, n in chunks:
        loc = pool.alloc(n)
        r2t.req_to_token[r, s : s + n] = loc
        locs.append(loc)
        k.append(kv[r][0][s : s + n])
        v.append(kv[r][1][s : s + n])
    loc = torch.cat(locs)
    batch = ForwardBatch(
        mode=ForwardMode.DECODE if decode else ForwardMode.EXTEND,
        input_ids=torch.zeros(len(loc), dtype=torch.int64),
        positions=torch.zeros(len(loc), dtype=torch.int64),
        out_cache_loc=loc,
        req_pool_indices=torch.tensor([r for r, _, _ in chunks]),
        seq_lens=torch.tensor([s + n for _, s, n in chunks]),
        req_to_token=r2t.req_to_token,
        kv_cache=pool,
        seq_lens_cpu=[s + n for _, s, n in chunks],
        prefix_lens_cpu=[s for _, s, _ in chunks],
        extend_lens_cpu=[n for _, _, n in chunks],
    )
    pool.plan(batch)
    for layer in range(L):
        pool.set_kv(layer, loc, torch.cat(k) * (layer + 1), torch.cat(v) * (layer + 1))


def data(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, H, D, generator=g), torch.randn(n, H, D, generator=g)


def read(pool, r2t, r, n, layer=0):
    return pool.read_kv(layer, r2t.req_to_token[r, :n], torch.float32)


def test_int4_full_pages_are_quantized_and_the_partial_page_is_exact():
    pool, r2t = make("int4")
    kv = {0: data(40, 0)}
    forward(pool, r2t, [(0, 0, 13)], kv)  # pages 0..7 full, 8..12 partial
    forward(pool, r2t, [(0, 13, 7)], kv)  # fills page 8..15, starts 16..19
    k, v = read(pool, r2t, 0, 20)
    K, V = kv[0][0][:20], kv[0][1][:20]
    slots = r2t.req_to_token[0, :20]
    assert bool((pool.page_of_slot[slots[:16]] >= 0).all())
    assert bool((pool.row_of_slot[slots[16:]] >= 0).all())
    assert torch.equal(k[16:], K[16:]) and torch.equal(v[16:], V[16:])
    assert not torch.equal(k[:16], K[:16])
    assert float((k[:16] - K[:16]).abs().max()) < 0.5 and float((v[:16] - V[:16]).abs().max()) < 0.5
    # layers are kept apart
    k1, _ = read(pool, r2t, 0, 20, layer=1)
    assert torch.equal(k1[16:], 2 * K[16:])


def test_int4_page_fills_during_decode_and_staging_is_given_back():
    pool, r2t = make("int4")
    kv = {0: data(40, 1)}
    forward(pool, r2t, [(0, 0, 5)], kv)
    rows_free = len(pool._free_rows)
    for pos in range(5, 8):
        forward(pool, r2t, [(0, pos, 1)], kv, decode=True)
    slots = r2t.req_to_token[0, :8]
    assert bool((pool.page_of_slot[slots] >= 0).all()) and bool((pool.row_of_slot[slots] < 0).all())
    assert len(pool._free_rows) == rows_free + 5  # the page's staged tokens were freed
    k, _ = read(pool, r2t, 0, 8)
    assert float((k - kv[0][0][:8]).abs().max()) < 0.5


def test_int4_paged_read_equals_the_read_token_by_token():
    """Whole pages of two requests (quantized, staged, and filled by the current forward) read
    page-wise give exactly what the token-by-token read gives."""
    pool, r2t = make("int4")
    kv = {0: data(40, 3), 1: data(40, 4)}
    forward(pool, r2t, [(0, 0, 19)], kv)  # pages 0..7, 8..15 quantized, 16..18 staged
    forward(pool, r2t, [(0, 19, 5), (1, 0, 12)], kv)  # fills 16..23 (exact in this forward)
    slots = r2t.req_to_token[:2, :24]  # three pages per row; row 1's last is partly unused
    for layer in range(L):
        for read in (pool.read_kv, pool.read_own_page):
            k, v = read(layer, slots, torch.float32)
            kp, vp = read(layer, slots, torch.float32, paged=True)
            assert torch.equal(k, kp) and torch.equal(v, vp)
    with pytest.raises(AssertionError, match="whole pages"):
        pool.read_kv(0, slots[:, :20], torch.float32, paged=True)


def test_a_shared_page_keeps_its_bytes():
    """A second request whose table starts with the first one's pages (a radix hit) reads
    the same bytes, and its own writes leave them alone."""
    pool, r2t = make("int4")
    kv = {0: data(40, 2), 1: data(40, 3)}
    forward(pool, r2t, [(0, 0, 19)], kv)
    shared = r2t.req_to_token[0, :16].clone()
    before = [t.clone() for t in (pool.k_codes[0], pool.k_scale[0], pool.v_codes[0])]
    kv[1] = (torch.cat([kv[0][0][:16], kv[1][0][16:]]), torch.cat([kv[0][1][:16], kv[1][1][16:]]))
    r2t.req_to_token[1, :16] = shared
    forward(pool, r2t, [(1, 16, 12), (0, 19, 1)], kv)
    a, _ = read(pool, r2t, 0, 16)
    b, _ = read(pool, r2t, 1, 16)
    assert torch.equal(a, b)
    assert torch.equal(pool.k_codes[0][shared], before[0][shared])
    recs = pool.page_of_slot[shared]
    assert torch.equal(pool.k_scale[0][recs], before[1][recs])


def test_freeing_returns_slots_records_and_staging_rows():
    pool, r2t = make("int4")
    kv = {0: data(40, 4), 1: data(40, 5)}
    forward(pool, r2t, [(0, 0, 21), (1, 0, 8)], kv)
    forward(pool, r2t, [(0, 21, 1), (1, 8, 1)], kv, decode=True)
    pool.free(r2t.req_to_token[0, :22])
    pool.free(r2t.req_to_token[1, :9])
    assert pool.available_size() == pool.size
    assert len(pool._free_rows) == pool.num_rows
    assert len(pool._free_records) == pool.num_records
    assert int(pool._record_refs.sum()) == 0


def test_a_forward_that_stops_early_gives_its_staging_back_at_the_next_plan():
    pool, r2t = make("int4")
    kv = {0: data(40, 6)}
    forward(pool, r2t, [(0, 0, 6)], kv)
    loc = pool.alloc(2)
    r2t.req_to_token[0, 6:8] = loc
    batch = ForwardBatch(
        mode=ForwardMode.EXTEND,
        input_ids=loc,
        positions=loc,
        out_cache_loc=loc,
        req_pool_indices=torch.tensor([0]),
        seq_lens=torch.tensor([8]),
        req_to_token=r2t.req_to_token,
        kv_cache=pool,
        seq_lens_cpu=[8],
        prefix_lens_cpu=[6],
        extend_lens_cpu=[2],
    )
    pool.plan(batch)
    pool.set_kv(0, loc, kv[0][0][6:8], kv[0][1][6:8])  # fails before layer 1
    pool.free(r2t.req_to_token[0, :8])
    forward(pool, r2t, [(1, 0, 3)], {1: data(8, 7)})
    pool.free(r2t.req_to_token[1, :3])
    assert len(pool._free_rows) == pool.num_rows


@pytest.mark.parametrize("name", ["int8", "fp8_e4m3", "fp8_e5m2"])
def test_per_token_formats_read_back_within_their_error(name):
    pool, r2t = make(name)
    kv = {0: data(30, 8)}
    forward(pool, r2t, [(0, 0, 20)], kv)
    forward(pool, r2t, [(0, 20, 1)], kv, decode=True)
    k, v = read(pool, r2t, 0, 21)
    bound = 0.05 if name == "int8" else 0.5
    assert float((k - kv[0][0][:21]).abs().max()) < bound
    assert float((v - kv[0][1][:21]).abs().max()) < bound


def test_bytes_per_token_of_each_format():
    shape = (30, 3, 64, 32)  # SmolLM2-135M: layers, KV heads, head dim; page 32
    bf16 = kv_bytes_per_token("bfloat16", *shape)
    assert kv_bytes_per_token("float32", *shape) == 2 * bf16
    assert kv_bytes_per_token("fp8_e4m3", *shape) == bf16 / 2
    assert bf16 / kv_bytes_per_token("int8", *shape) > 1.75
    assert bf16 / kv_bytes_per_token("int4", *shape) >= 3.0
    pool, _ = make("int4")
    assert pool.token_bytes() == kv_bytes_per_token("int4", L, H, D, PAGE)


def test_names_resolve_and_build():
    assert resolve_kv_cache_dtype("auto", torch.bfloat16) == "bfloat16"
    assert resolve_kv_cache_dtype("auto", torch.float32) == "float32"
    with pytest.raises(ValueError, match="kv_cache_dtype"):
        resolve_kv_cache_dtype("int2", torch.float32)
    for name in KV_CACHE_DTYPES[1:]:
        pool, _ = make(name, size=32)
        assert pool.quantized == (name not in ("float32", "bfloat16"))
    with pytest.raises(ValueError, match="page_size"):
        create_kv_pool("int4", 32, L, H, D, 1, 4, torch.float32, "cpu")
