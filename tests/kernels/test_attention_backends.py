"""Every attention backend against dense causal attention over the whole sequence, through the
forward batch the scheduler builds. On the CPU, Triton runs in its interpreter and FlashInfer's
wrappers are stood in for by `fake_flashinfer`, so the FlashInfer backend's planning is checked
here too; on CUDA the real FlashInfer runs (skipped where it is not installed)."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

from kernels.attention import torch_native
from kernels.attention.registry import create_backend
from kernels.forward_batch import ForwardBatch, ForwardMode
from runtime.layers.attention import PagedAttention
from runtime.memory_pool import KVPool, ReqToTokenPool
from tests.kernels import fake_flashinfer

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
# FlashInfer takes half precision and head dims from 64 up; the interpreter is fastest small.
DTYPE = torch.float16 if CUDA else torch.float32
H, HKV, D = 4, 2, (64 if CUDA else 16)
TOLS = {torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 2e-2}
TOL = TOLS[DTYPE]
BACKENDS = ["torch_native", "triton", "flashinfer"]


@pytest.fixture
def make_backend(monkeypatch):
    def make(name):
        if name == "flashinfer":
            if CUDA:
                pytest.importorskip("flashinfer")
            else:
                monkeypatch.setitem(sys.modules, "flashinfer", fake_flashinfer.module())
        return create_backend(name, num_heads=H, num_kv_heads=HKV, head_dim=D, device=DEVICE)

    return make


def dense(q, k, v):
    """q: [T, H, D], k/v: [T, Hkv, D], causal; in float32."""
    q = q.float()
    k = k.float().repeat_interleave(H // HKV, dim=1)
    v = v.float().repeat_interleave(H // HKV, dim=1)
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), is_causal=True
    )
    return out.transpose(0, 1)


def make_batch(mode, pools, reqs, chunks, slot_of):
    """chunks: per request (start, length) of the new tokens."""
    r2t, kv = pools
    locs, pos, seq = [], [], []
    for r, (s, n) in zip(reqs, chunks):
        loc = kv.alloc(n)
        r2t.req_to_token[slot_of[r], s : s + n] = loc.to(DEVICE)
        locs.append(loc)
        pos.extend(range(s, s + n))
        seq.append(s + n)
    return ForwardBatch(
        mode=mode,
        input_ids=torch.zeros(len(pos), dtype=torch.int64, device=DEVICE),
        positions=torch.tensor(pos, device=DEVICE),
        out_cache_loc=torch.cat(locs).to(DEVICE),
        req_pool_indices=torch.tensor([slot_of[r] for r in reqs], device=DEVICE),
        seq_lens=torch.tensor(seq, device=DEVICE),
        req_to_token=r2t.req_to_token,
        kv_cache=kv,
        seq_lens_cpu=seq,
        prefix_lens_cpu=[s for s, _ in chunks],
        extend_lens_cpu=[n for _, n in chunks],
    )


@pytest.mark.parametrize("split_min", [None, 3], ids=["masked", "split"])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_extend_with_prefix_then_decode_matches_dense(
    backend_name, split_min, make_backend, monkeypatch
):
    """`split`: torch-native attends to a long extend's cached prefix and its new tokens in
    two calls, merged; lowered here so that two of the three requests take that way."""
    split = []
    if split_min is not None:
        if backend_name != "torch_native":
            pytest.skip("the split is torch-native's")
        monkeypatch.setattr(torch_native, "SPLIT_MIN", split_min)
        whole = torch_native._extend_split
        monkeypatch.setattr(
            torch_native, "_extend_split", lambda *a: split.append(a[3]) or whole(*a)
        )
    torch.manual_seed(0)
    lens = [7, 12, 3]
    qs = [torch.randn(n + 1, H, D, device=DEVICE, dtype=DTYPE) for n in lens]  # +1: a decode step
    ks = [torch.randn(n + 1, HKV, D, device=DEVICE, dtype=DTYPE) for n in lens]
    vs = [torch.randn(n + 1, HKV, D, device=DEVICE, dtype=DTYPE) for n in lens]
    pools = (ReqToTokenPool(3, 32, DEVICE), KVPool(64, 1, HKV, D, DTYPE, DEVICE))
    slot_of = {i: pools[0].alloc() for i in range(3)}
    backend, layer = make_backend(backend_name), PagedAttention(0, H, HKV, D)

    def run(mode, chunks):
        fb = make_batch(mode, pools, [0, 1, 2], chunks, slot_of)
        backend.init_forward_metadata(fb)
        q = torch.cat([qs[i][s : s + n] for i, (s, n) in enumerate(chunks)])
        k = torch.cat([ks[i][s : s + n] for i, (s, n) in enumerate(chunks)])
        v = torch.cat([vs[i][s : s + n] for i, (s, n) in enumerate(chunks)])
        return backend.forward(q, k, v, layer, fb)

    # the first part of each prompt, then the rest on top of the cached prefix, then decode
    first = run(ForwardMode.EXTEND, [(0, n // 2) for n in lens])
    rest = run(ForwardMode.EXTEND, [(n // 2, n - n // 2) for n in lens])
    dec = run(ForwardMode.DECODE, [(n, 1) for n in lens])
    refs = [dense(qs[i], ks[i], vs[i]) for i in range(3)]
    a = b = 0
    for i, n in enumerate(lens):
        h = n // 2
        assert torch.allclose(first[a : a + h].float(), refs[i][:h], atol=TOL)
        assert torch.allclose(rest[b : b + n - h].float(), refs[i][h:n], atol=TOL)
        assert torch.allclose(dec[i].float(), refs[i][n], atol=TOL)
        a, b = a + h, b + n - h
    assert split == ([3, 6] if split_min else [])  # the cached prefixes of the split requests


# Per row: which prefix its KV starts with ("deep": root + branch, "root", None: its own); and
# the scheduler's groups. The second layout interleaves groups with lone rows, so backends that
# lay queries out group by group must reorder them and back.
LAYOUTS = {
    "groups-in-order": (
        ["deep", "deep", "deep", "root", "root", "root"],
        [([0, 1, 2], 25), ([3, 4, 5], 20)],
    ),
    "interleaved-with-lone-rows": (
        ["root", "deep", None, "root", "deep", None],
        [([1, 4], 25), ([0, 3], 20)],
    ),
}


@pytest.mark.parametrize("dtype", [DTYPE, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_decode_with_shared_prefixes_matches_dense(backend_name, layout, dtype, make_backend):
    """Rows under a shared prefix (the scheduler's prefix groups) attend to it together, also in
    bfloat16, the model's dtype on CUDA."""
    if dtype == torch.bfloat16 and backend_name == "triton" and not CUDA:
        pytest.skip("Triton's interpreter multiplies bfloat16 bit patterns in tl.dot (#11584)")
    torch.manual_seed(1)
    kinds, groups = LAYOUTS[layout]
    r2t, kv = ReqToTokenPool(6, 64, DEVICE), KVPool(256, 1, HKV, D, dtype, DEVICE)
    backend, layer = make_backend(backend_name), PagedAttention(0, H, HKV, D)
    root = kv.alloc(20)
    prefixes = {"root": root, "deep": torch.cat([root, kv.alloc(5)])}
    own_lens = [3, 5, 1, 7, 2, 4]
    rows = []
    for kind, n in zip(kinds, own_lens):
        prefix = prefixes[kind] if kind else kv.alloc(9)
        rows.append(torch.cat([prefix, kv.alloc(n)]))
    for i, slots in enumerate(rows):
        r2t.req_to_token[i, : len(slots)] = slots.to(DEVICE)
    kv.k_buffer[0][1:] = torch.randn(256, HKV, D, device=DEVICE, dtype=dtype)
    kv.v_buffer[0][1:] = torch.randn(256, HKV, D, device=DEVICE, dtype=dtype)
    seq = [len(s) for s in rows]
    # the current token's K/V is written by the call; its slot is the last of each row
    q, k, v = (torch.randn(6, n, D, device=DEVICE, dtype=dtype) for n in (H, HKV, HKV))
    fb = ForwardBatch(
        mode=ForwardMode.DECODE,
        input_ids=torch.zeros(6, dtype=torch.int64, device=DEVICE),
        positions=torch.tensor(seq, device=DEVICE) - 1,
        out_cache_loc=torch.stack([s[-1] for s in rows]).to(DEVICE),
        req_pool_indices=torch.arange(6, device=DEVICE),
        seq_lens=torch.tensor(seq, device=DEVICE),
        req_to_token=r2t.req_to_token,
        kv_cache=kv,
        seq_lens_cpu=seq,
        prefix_groups=groups,
    )
    backend.init_forward_metadata(fb)
    out = backend.forward(q, k, v, layer, fb)
    for i, slots in enumerate(rows):
        keys = kv.k_buffer[0][slots].float().repeat_interleave(H // HKV, dim=1)  # [L, H, D]
        vals = kv.v_buffer[0][slots].float().repeat_interleave(H // HKV, dim=1)
        ref = F.scaled_dot_product_attention(
            q[i].float()[:, None], keys.transpose(0, 1), vals.transpose(0, 1), scale=layer.scaling
        )
        assert torch.allclose(out[i].float(), ref[:, 0], atol=TOLS[dtype]), i


def _decode_rows(backend, kv, r2t, lens, rows, q, k, v, layer, invariant=False, groups=()):
    """One decode step over the given rows of the table (their last slot is the new token);
    `groups`: the rows under a shared prefix, as the scheduler's prefix groups."""
    seq = [lens[r] for r in rows]
    fb = ForwardBatch(
        mode=ForwardMode.DECODE,
        input_ids=torch.zeros(len(rows), dtype=torch.int64),
        positions=torch.tensor(seq) - 1,
        out_cache_loc=torch.stack([r2t.req_to_token[r, n - 1] for r, n in zip(rows, seq)]),
        req_pool_indices=torch.tensor(rows),
        seq_lens=torch.tensor(seq),
        req_to_token=r2t.req_to_token,
        kv_cache=kv,
        seq_lens_cpu=seq,
        batch_invariant=invariant,
        prefix_groups=list(groups),
    )
    backend.init_forward_metadata(fb)
    return backend.forward(q[rows], k[rows], v[rows], layer, fb)


def test_batch_invariant_decode_gives_each_row_the_bits_it_gets_alone(make_backend):
    """Deterministic inference: in bfloat16 a row's output must not depend on its batch mates,
    whose lengths would otherwise pad its keys."""
    torch.manual_seed(2)
    lens = [700, 3, 130, 41, 515, 9]
    r2t = ReqToTokenPool(len(lens), 1024, "cpu")
    kv = KVPool(sum(lens) + 8, 1, HKV, D, torch.bfloat16, "cpu")
    kv.k_buffer[0].copy_(torch.randn_like(kv.k_buffer[0], dtype=torch.float32) * 3)
    kv.v_buffer[0].copy_(torch.randn_like(kv.v_buffer[0], dtype=torch.float32))
    for i, n in enumerate(lens):
        r2t.req_to_token[i, :n] = kv.alloc(n)
    backend, layer = make_backend("torch_native"), PagedAttention(0, H, HKV, D)
    q, k, v = (torch.randn(len(lens), n, D, dtype=torch.bfloat16) for n in (H, HKV, HKV))
    rows = list(range(len(lens)))
    together = _decode_rows(backend, kv, r2t, lens, rows, q, k, v, layer, invariant=True)
    for r in rows:
        alone = _decode_rows(backend, kv, r2t, lens, [r], q, k, v, layer, invariant=True)
        assert torch.equal(together[r], alone[0]), r


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_extend_whose_decoding_rows_ride_along_matches_dense(backend_name, make_backend):
    """A mixed chunk: one-token rows (decoding requests) beside a prompt's next chunk."""
    torch.manual_seed(3)
    total = [8, 13, 10]  # rows 0 and 1 decode their last token; row 2 prefills 4 + 6
    qs = [torch.randn(n, H, D, device=DEVICE, dtype=DTYPE) for n in total]
    ks = [torch.randn(n, HKV, D, device=DEVICE, dtype=DTYPE) for n in total]
    vs = [torch.randn(n, HKV, D, device=DEVICE, dtype=DTYPE) for n in total]
    pools = (ReqToTokenPool(3, 32, DEVICE), KVPool(64, 1, HKV, D, DTYPE, DEVICE))
    slot_of = {i: pools[0].alloc() for i in range(3)}
    backend, layer = make_backend(backend_name), PagedAttention(0, H, HKV, D)

    def run(chunks):
        fb = make_batch(ForwardMode.EXTEND, pools, [0, 1, 2], chunks, slot_of)
        backend.init_forward_metadata(fb)
        q, k, v = (
            torch.cat([x[i][s : s + n] for i, (s, n) in enumerate(chunks)]) for x in (qs, ks, vs)
        )
        return backend.forward(q, k, v, layer, fb)

    run([(0, 7), (0, 12), (0, 4)])
    out = run([(7, 1), (12, 1), (4, 6)])
    refs = [dense(qs[i], ks[i], vs[i]) for i in range(3)]
    assert torch.allclose(out[0].float(), refs[0][7], atol=TOL)
    assert torch.allclose(out[1].float(), refs[1][12], atol=TOL)
    assert torch.allclose(out[2:].float(), refs[2][4:], atol=TOL)
