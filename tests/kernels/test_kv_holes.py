"""Decode where a compressed request's layers read different slots (PyramidKV's per-layer
budgets): each layer leaves a range of the request's table columns out. Checked for the
torch-native and Triton backends (interpreter on the CPU) against plain attention over the
columns each layer reads, with and without a shared prefix group."""

from __future__ import annotations

import pytest
import torch

from kernels.attention.registry import create_backend
from kernels.forward_batch import ForwardBatch, ForwardMode
from runtime.layers.attention import PagedAttention
from runtime.memory_pool import KVPool, ReqToTokenPool
from tests.kernels.reference import attention

H, HKV, D, LAYERS = 4, 2, 16, 2
LENS = [9, 20, 17]  # table columns each row reads before this step's token
# rows 1 and 2: per layer the first column left out, and where reading resumes
HOLES = [(1, [14, 11], 15), (2, [12, 10], 12)]


@pytest.mark.parametrize("name", ["torch_native", "triton"])
@pytest.mark.parametrize("cascade", [False, True])
def test_decode_leaves_out_each_layers_hole(name, cascade):
    torch.manual_seed(0)
    pool = KVPool(128, LAYERS, HKV, D, torch.float32, "cpu")
    table = ReqToTokenPool(4, 64, "cpu")
    shared = pool.alloc(6)
    for row, n in enumerate(LENS):
        own = pool.alloc(n + 1)
        if cascade and row > 0:  # rows 1 and 2 start with the same 6 slots
            own = torch.cat([shared, own[6:]])
        table.req_to_token[row, : n + 1] = own
        for layer in range(LAYERS):
            k, v = pool.get_kv(layer)
            k[own[:n]] = torch.randn(n, HKV, D)
            v[own[:n]] = torch.randn(n, HKV, D)
    new_slots = table.req_to_token[torch.arange(3), torch.tensor(LENS)]
    batch = ForwardBatch(
        mode=ForwardMode.DECODE,
        input_ids=torch.zeros(3, dtype=torch.int64),
        positions=torch.tensor([n + 30 for n in LENS]),  # rotary positions past the columns
        out_cache_loc=new_slots,
        req_pool_indices=torch.arange(3),
        seq_lens=torch.tensor([n + 1 for n in LENS]),
        req_to_token=table.req_to_token,
        kv_cache=pool,
        seq_lens_cpu=[n + 1 for n in LENS],
        prefix_groups=[([1, 2], 6)] if cascade else [],
        kv_holes=HOLES,
    )
    backend = create_backend(name, num_heads=H, num_kv_heads=HKV, head_dim=D, device="cpu")
    backend.init_forward_metadata(batch)
    holes = {row: (starts, end) for row, starts, end in HOLES}
    for layer_id in range(LAYERS):
        layer = PagedAttention(layer_id, H, HKV, D)
        q, k_new, v_new = torch.randn(3, H, D), torch.randn(3, HKV, D), torch.randn(3, HKV, D)
        out = backend.forward_decode(q, k_new, v_new, layer, batch)
        k_buf, v_buf = pool.get_kv(layer_id)
        for row, n in enumerate(LENS):
            cols = list(range(n + 1))
            if row in holes:
                starts, end = holes[row]
                cols = [c for c in cols if not starts[layer_id] <= c < end]
            slots = table.req_to_token[row, cols]
            want, _ = attention(q[row : row + 1], k_buf[slots], v_buf[slots], layer.scaling)
            torch.testing.assert_close(out[row], want[0], atol=1e-5, rtol=1e-5)
