"""The torch-native backend against dense causal attention over the whole sequence."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.attention.torch_native import TorchNativeBackend
from runtime.forward_batch import ForwardBatch, ForwardMode
from runtime.layers.attention import PagedAttention
from runtime.memory_pool import KVPool, ReqToTokenPool

H, HKV, D = 4, 2, 8


def dense(q, k, v):
    """q: [T, H, D], k/v: [T, Hkv, D], causal."""
    k = k.repeat_interleave(H // HKV, dim=1)
    v = v.repeat_interleave(H // HKV, dim=1)
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
        r2t.req_to_token[slot_of[r], s : s + n] = loc
        locs.append(loc)
        pos.extend(range(s, s + n))
        seq.append(s + n)
    return ForwardBatch(
        mode=mode,
        input_ids=torch.zeros(len(pos), dtype=torch.int64),
        positions=torch.tensor(pos),
        out_cache_loc=torch.cat(locs),
        req_pool_indices=torch.tensor([slot_of[r] for r in reqs]),
        seq_lens=torch.tensor(seq),
        req_to_token_pool=r2t,
        kv_pool=kv,
        seq_lens_cpu=seq,
        prefix_lens_cpu=[s for s, _ in chunks],
        extend_lens_cpu=[n for _, n in chunks],
    )


def test_extend_with_prefix_then_decode_matches_dense():
    torch.manual_seed(0)
    lens = [7, 12, 3]
    qs = [torch.randn(n + 1, H, D) for n in lens]  # +1: one decode step each
    ks = [torch.randn(n + 1, HKV, D) for n in lens]
    vs = [torch.randn(n + 1, HKV, D) for n in lens]
    pools = (ReqToTokenPool(3, 32, "cpu"), KVPool(64, 1, HKV, D, torch.float32, "cpu"))
    slot_of = {i: pools[0].alloc() for i in range(3)}
    backend, layer = TorchNativeBackend(), PagedAttention(0, H, HKV, D)
    layer.scaling = D**-0.5

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
        assert torch.allclose(first[a : a + h], refs[i][:h], atol=1e-5)
        assert torch.allclose(rest[b : b + n - h], refs[i][h:n], atol=1e-5)
        assert torch.allclose(dec[i], refs[i][n], atol=1e-5)
        a, b = a + h, b + n - h


def test_decode_with_shared_prefixes_matches_dense():
    """Rows whose KV rows begin with the same slots attend to that prefix together (cascade)."""
    from kernels.attention.torch_native import MIN_SHARED_PREFIX, _shared_prefix_groups

    torch.manual_seed(1)
    p1, p2 = MIN_SHARED_PREFIX + 4, MIN_SHARED_PREFIX + 9  # a shared root, then a deeper branch
    r2t, kv = ReqToTokenPool(6, 64, "cpu"), KVPool(256, 1, HKV, D, torch.float32, "cpu")
    backend, layer = TorchNativeBackend(), PagedAttention(0, H, HKV, D)
    root = kv.alloc(p1)
    branch = kv.alloc(p2 - p1)
    own_lens = [3, 5, 1, 7, 2, 4]
    rows = []
    for i, n in enumerate(own_lens):
        prefix = torch.cat([root, branch]) if i < 3 else root  # rows 0-2 share p2, 3-5 share p1
        rows.append(torch.cat([prefix, kv.alloc(n)]))
    for i, slots in enumerate(rows):
        r2t.req_to_token[i, : len(slots)] = slots
    kv.k_buffer[0][1:] = torch.randn(256, HKV, D)
    kv.v_buffer[0][1:] = torch.randn(256, HKV, D)
    seq = [len(s) for s in rows]
    groups, shared = _shared_prefix_groups(r2t.req_to_token[:6, : max(seq)], seq)
    assert shared == [p2] * 3 + [p1] * 3 and len(groups) == 2
    # the current token's K/V is written by the call; its slot is the last of each row
    q, k, v = torch.randn(6, H, D), torch.randn(6, HKV, D), torch.randn(6, HKV, D)
    fb = ForwardBatch(
        mode=ForwardMode.DECODE,
        input_ids=torch.zeros(6, dtype=torch.int64),
        positions=torch.tensor(seq) - 1,
        out_cache_loc=torch.stack([s[-1] for s in rows]),
        req_pool_indices=torch.arange(6),
        seq_lens=torch.tensor(seq),
        req_to_token_pool=r2t,
        kv_pool=kv,
        seq_lens_cpu=seq,
    )
    backend.init_forward_metadata(fb)
    out = backend.forward(q, k, v, layer, fb)
    for i, slots in enumerate(rows):
        keys = kv.k_buffer[0][slots].repeat_interleave(H // HKV, dim=1)  # [L, H, D]
        vals = kv.v_buffer[0][slots].repeat_interleave(H // HKV, dim=1)
        ref = F.scaled_dot_product_attention(
            q[i][:, None], keys.transpose(0, 1), vals.transpose(0, 1), scale=layer.scaling
        )
        assert torch.allclose(out[i], ref[:, 0], atol=1e-5)
