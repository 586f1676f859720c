"""The C++ decode-attention kernel against float32 attention over the gathered keys, alone and
through the torch-native backend (shared prefixes merged, batch invariance)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kernels.attention import torch_native
from kernels.attention.registry import create_backend
from kernels.cpu import cpu_kernels_loaded
from runtime.layers.attention import PagedAttention
from runtime.memory_pool import KVPool, ReqToTokenPool
from tests.kernels.test_attention_backends import _decode_rows

pytestmark = pytest.mark.skipif(
    not cpu_kernels_loaded(), reason="needs AVX512-BF16 and a C++ compiler"
)


def reference(q, k_pool, v_pool, slots, lens, scale):
    """q [B, Hkv, G, D] over each row's first lens[b] slots, in float32: (out, lse)."""
    outs, lses = [], []
    for b, n in enumerate(lens.tolist()):
        k = k_pool[slots[b, :n]].float().transpose(0, 1)  # [Hkv, n, D]
        v = v_pool[slots[b, :n]].float().transpose(0, 1)
        s = q[b].float() @ k.transpose(-1, -2) * scale  # [Hkv, G, n]
        outs.append(torch.softmax(s, -1) @ v)
        lses.append(torch.logsumexp(s, -1))
    return torch.stack(outs), torch.stack(lses)


@pytest.mark.parametrize("hkv,group,dim", [(3, 3, 64), (2, 1, 64), (2, 4, 128), (1, 8, 64)])
def test_kernel_matches_float32_attention(hkv, group, dim):
    torch.manual_seed(0)
    pool, lens = 6000, torch.tensor([1, 17, 300, 1000, 64])
    k_pool = (torch.randn(pool, hkv, dim) * 2).to(torch.bfloat16)
    v_pool = torch.randn(pool, hkv, dim).to(torch.bfloat16)
    width = int(lens.max()) + 5  # padded past the longest row, as the backend's table is
    slots = torch.randperm(pool)[: len(lens) * width].view(len(lens), width)
    q = (torch.randn(len(lens), hkv, group, dim) * 2).to(torch.bfloat16)
    out, lse = torch.ops.radixserve_cpu.decode_attention(q, k_pool, v_pool, slots, lens, 0.125)
    ref_out, ref_lse = reference(q, k_pool, v_pool, slots, lens, 0.125)
    assert out.dtype == torch.bfloat16 and out.shape == q.shape
    # bfloat16 output: within a rounding of the float32 result
    assert torch.allclose(out.float(), ref_out, atol=1e-2, rtol=1e-2)
    assert torch.allclose(lse, ref_lse, atol=1e-4, rtol=1e-5)


def test_kernel_refuses_lengths_past_the_slot_table():
    k = torch.zeros(10, 1, 64, dtype=torch.bfloat16)
    q = torch.zeros(1, 1, 1, 64, dtype=torch.bfloat16)
    slots = torch.zeros(1, 4, dtype=torch.int64)
    with pytest.raises(RuntimeError, match="outside 1..4"):
        torch.ops.radixserve_cpu.decode_attention(q, k, k, slots, torch.tensor([5]), 1.0)
    with pytest.raises(RuntimeError, match="slot outside the pool"):
        torch.ops.radixserve_cpu.decode_attention(q, k, k, slots + 10, torch.tensor([2]), 1.0)


H, HKV, D = 6, 2, 64


def _backend():
    backend = create_backend(
        "torch_native", num_heads=H, num_kv_heads=HKV, head_dim=D, device="cpu"
    )
    return backend, PagedAttention(0, H, HKV, D)


@pytest.fixture
def setup():
    torch.manual_seed(4)
    shared = 40
    lens = [shared + 9, shared + 1, 300, 7, shared + 120]
    r2t = ReqToTokenPool(len(lens), 512, "cpu")
    kv = KVPool(sum(lens) + 8, 1, HKV, D, torch.bfloat16, "cpu")
    kv.k_buffer[0].copy_(torch.randn_like(kv.k_buffer[0], dtype=torch.float32) * 2)
    kv.v_buffer[0].copy_(torch.randn_like(kv.v_buffer[0], dtype=torch.float32))
    prefix = kv.alloc(shared)
    for i, n in enumerate(lens):
        own = kv.alloc(n - shared) if i in (0, 1, 4) else kv.alloc(n)
        r2t.req_to_token[i, :n] = torch.cat([prefix, own]) if i in (0, 1, 4) else own
    q, k, v = (torch.randn(len(lens), n, D, dtype=torch.bfloat16) for n in (H, HKV, HKV))
    groups = [([0, 1, 4], shared)]
    return kv, r2t, lens, q, k, v, groups


def test_backend_decode_on_the_kernel_matches_dense_and_the_torch_path(setup, monkeypatch):
    kv, r2t, lens, q, k, v, groups = setup
    backend, layer = _backend()
    rows = list(range(len(lens)))
    calls = []
    real = torch_native._suffix_by_kernel
    monkeypatch.setattr(torch_native, "_suffix_by_kernel", lambda *a: calls.append(1) or real(*a))
    out = _decode_rows(backend, kv, r2t, lens, rows, q, k, v, layer, groups=groups)
    assert calls and real(*_kernel_args(backend, kv, r2t, lens, q, layer)) is not None
    for i, n in enumerate(lens):
        slots = r2t.req_to_token[i, :n]
        keys = kv.k_buffer[0][slots].float().repeat_interleave(H // HKV, dim=1)
        vals = kv.v_buffer[0][slots].float().repeat_interleave(H // HKV, dim=1)
        ref = F.scaled_dot_product_attention(
            q[i].float()[:, None], keys.transpose(0, 1), vals.transpose(0, 1), scale=layer.scaling
        )
        assert torch.allclose(out[i].float(), ref[:, 0], atol=2e-2), i
    monkeypatch.setattr(torch_native, "_suffix_by_kernel", lambda *a: None)
    torch_path = _decode_rows(backend, kv, r2t, lens, rows, q, k, v, layer, groups=groups)
    assert torch.allclose(out.float(), torch_path.float(), atol=2e-2)


def _kernel_args(backend, kv, r2t, lens, q, layer):
    meta = torch_native._decode_meta(r2t.req_to_token, torch.arange(len(lens)), lens)
    return q.view(len(lens), HKV, H // HKV, D), layer, kv, meta


def test_backend_decode_on_the_kernel_is_batch_invariant(setup):
    """Each row reads only its own keys, so its bits do not depend on its batch mates."""
    kv, r2t, lens, q, k, v, _ = setup
    backend, layer = _backend()
    rows = list(range(len(lens)))
    together = _decode_rows(backend, kv, r2t, lens, rows, q, k, v, layer)
    for r in rows:
        alone = _decode_rows(backend, kv, r2t, lens, [r], q, k, v, layer)
        assert torch.equal(together[r], alone[0]), r


def test_extend_rows_under_deterministic_inference_do_not_depend_on_the_chunk():
    """A token's attention is the same bits whether its prompt was extended whole or in chunks
    over a cached prefix, and causal: it sees keys up to its own position."""
    torch.manual_seed(5)
    n = 30
    kv = KVPool(n + 8, 1, HKV, D, torch.bfloat16, "cpu")
    kv.k_buffer[0].copy_(torch.randn_like(kv.k_buffer[0], dtype=torch.float32) * 2)
    kv.v_buffer[0].copy_(torch.randn_like(kv.v_buffer[0], dtype=torch.float32))
    slots = kv.alloc(n)
    layer = PagedAttention(0, H, HKV, D)
    q = torch.randn(n, H, D).to(torch.bfloat16)
    whole = torch_native._extend_rows_by_kernel(q, layer, kv, slots, 0)
    tail = torch_native._extend_rows_by_kernel(q[20:], layer, kv, slots, 20)
    assert torch.equal(whole[20:], tail)
    for i in (0, 7, 29):
        keys = kv.k_buffer[0][slots[: i + 1]].float().repeat_interleave(H // HKV, dim=1)
        vals = kv.v_buffer[0][slots[: i + 1]].float().repeat_interleave(H // HKV, dim=1)
        ref = F.scaled_dot_product_attention(
            q[i].float()[:, None], keys.transpose(0, 1), vals.transpose(0, 1), scale=layer.scaling
        )
        assert torch.allclose(whole[i].float(), ref[:, 0], atol=2e-2), i
