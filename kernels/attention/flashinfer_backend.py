"""Attention through FlashInfer's paged wrappers (CUDA only; imported when picked).

The pool is FlashInfer's NHD paged layout with one token per page, so a request's page list is
its KV slot list. Decode batches with shared radix prefixes use the two-level cascade wrapper:
level 0 attends each group's rows to their shared prefix at once, level 1 each row to the rest.

Every indptr handed to a planner lives on the host: the planners read them there to split the
work, so a device indptr would cost a device-to-host copy (a sync) per plan.

An fp8 pool goes to the wrappers as it is (`kv_data_type` fp8). Their own `k_scale`/`v_scale`
are one number per call and the decode and cascade wrappers take none per head, so the pool's
per-head scales are applied around the kernel instead, which is exact: K's scale multiplies
each head's queries (a score is q . (s k) = (s q) . k) and V's scale the head's output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kernels.attention.backend import AttentionBackend
from kernels.attention.kv_indices import host_indptr, ragged_kv_indices, shared_prefix_lens

WORKSPACE_BYTES = 256 << 20


@dataclass
class PagedLevel:
    """One planner's input: item i's query rows are `qo_indptr[i]:qo_indptr[i+1]`, its pages
    (one slot each) `kv_indices[kv_indptr[i]:kv_indptr[i+1]]`."""

    qo_indptr: torch.Tensor  # [items + 1] int32, host
    kv_indptr: torch.Tensor  # [items + 1] int32, host
    kv_indices: torch.Tensor  # [pages] int32, on the pool's device

    @property
    def last_page_len(self) -> torch.Tensor:
        """Every page holds its one token."""
        return torch.ones(self.kv_indptr.numel() - 1, dtype=torch.int32)


def cascade_levels(
    table: torch.Tensor,
    req_pool_indices: torch.Tensor,
    seq_lens: list[int],
    prefix_groups: list[tuple[list[int], int]],
) -> tuple[list[int], list[PagedLevel]]:
    """(order, [level 0, level 1]) for a decode batch whose `prefix_groups` share prefixes.

    Level 0's items must be contiguous query rows, so the queries are laid out group by group:
    query j is batch row `order[j]`. A row outside every group takes its first token at level 0
    (a decode row has at least two: a prompt token and the current one) and the rest at level 1.
    """
    grouped = [r for rows, _ in prefix_groups for r in rows]
    in_group = set(grouped)
    lone = [r for r in range(len(seq_lens)) if r not in in_group]
    order = grouped + lone
    split = [n or 1 for n in shared_prefix_lens(len(seq_lens), prefix_groups)]
    heads = [rows[0] for rows, _ in prefix_groups] + lone
    dev = req_pool_indices.device
    head_rows = req_pool_indices[torch.tensor(heads, dtype=torch.int64).to(dev, non_blocking=True)]
    l0_indptr, l0_indices = ragged_kv_indices(
        table, head_rows, [0] * len(heads), [split[r] for r in heads]
    )
    order_rows = req_pool_indices[torch.tensor(order, dtype=torch.int64).to(dev, non_blocking=True)]
    l1_indptr, l1_indices = ragged_kv_indices(
        table, order_rows, [split[r] for r in order], [seq_lens[r] for r in order]
    )
    level0 = PagedLevel(
        host_indptr([len(rows) for rows, _ in prefix_groups] + [1] * len(lone)),
        l0_indptr,
        l0_indices,
    )
    level1 = PagedLevel(host_indptr([1] * len(order)), l1_indptr, l1_indices)
    return order, [level0, level1]


class FlashInferBackend(AttentionBackend):
    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, device) -> None:
        import flashinfer  # needs CUDA; never imported on the CPU path

        super().__init__(num_heads, num_kv_heads, head_dim, device)
        self.scale = head_dim**-0.5
        self.workspace = torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device=self.device)
        self.prefill = flashinfer.BatchPrefillWithPagedKVCacheWrapper(self.workspace, "NHD")
        self.decode = flashinfer.BatchDecodeWithPagedKVCacheWrapper(
            self.workspace, "NHD", use_tensor_cores=num_heads // num_kv_heads >= 4
        )
        self.cascade = flashinfer.MultiLevelCascadeAttentionWrapper(2, self.workspace, "NHD")

    def reads_pool(self, pool) -> bool:
        return pool.codes in (None, "fp8")

    def _plan_args(self, batch) -> tuple[tuple[int, int, int, int], dict]:
        pool = batch.kv_cache
        q_dtype = pool.model_dtype if pool.codes == "fp8" else pool.dtype
        shape = (self.num_heads, self.num_kv_heads, self.head_dim, 1)  # page size 1
        return shape, {"q_data_type": q_dtype, "kv_data_type": pool.dtype, "sm_scale": self.scale}

    def init_forward_metadata(self, batch) -> None:
        table = batch.req_to_token
        seq_lens = batch.seq_lens_cpu
        shape, types = self._plan_args(batch)
        if not batch.is_decode or not batch.prefix_groups:
            kv_indptr, kv_indices = ragged_kv_indices(
                table, batch.req_pool_indices, [0] * len(seq_lens), seq_lens
            )
            ones = torch.ones(len(seq_lens), dtype=torch.int32)
            if batch.is_decode:
                self.decode.plan(kv_indptr, kv_indices, ones, *shape, **types)
                batch.attn_metadata = ("decode", None)
            else:
                qo_indptr = host_indptr(batch.extend_lens_cpu)
                self.prefill.plan(
                    qo_indptr, kv_indptr, kv_indices, ones, *shape, causal=True, **types
                )
                batch.attn_metadata = ("prefill", None)
            return
        order, levels = cascade_levels(table, batch.req_pool_indices, seq_lens, batch.prefix_groups)
        self.cascade.plan(
            [lv.qo_indptr for lv in levels],
            [lv.kv_indptr for lv in levels],
            [lv.kv_indices for lv in levels],
            [lv.last_page_len for lv in levels],
            *shape,
            causal=False,
            **types,
        )
        perm = None
        if order != list(range(len(order))):
            order_t = torch.tensor(order, dtype=torch.int64).to(self.device, non_blocking=True)
            perm = (order_t, torch.argsort(order_t))
        batch.attn_metadata = ("cascade", perm)

    def _run(self, wrapper, q, batch, layer) -> torch.Tensor:
        """`wrapper` over the layer's pages, with an fp8 pool's per-head scales around it."""
        pool = batch.kv_cache
        k, v = pool.get_kv(layer.layer_id)
        paged = (k.view(k.shape[0], 1, *k.shape[1:]), v.view(v.shape[0], 1, *v.shape[1:]))
        scales = pool.kv_scales(layer.layer_id)
        if scales is None:
            return wrapper.run(q.contiguous(), paged)
        group = self.num_heads // self.num_kv_heads
        k_scale = scales.k_scale.repeat_interleave(group)[:, None]  # [H, 1]: a query head's KV head
        v_scale = scales.v_scale.repeat_interleave(group)[:, None]
        out = wrapper.run((q * k_scale).to(q.dtype).contiguous(), paged)
        return (out * v_scale).to(out.dtype)

    def forward_extend(self, q, k, v, layer, batch) -> torch.Tensor:
        batch.kv_cache.set_kv(layer.layer_id, batch.out_cache_loc, k, v)
        return self._run(self.prefill, q, batch, layer)

    def forward_decode(self, q, k, v, layer, batch) -> torch.Tensor:
        batch.kv_cache.set_kv(layer.layer_id, batch.out_cache_loc, k, v)
        kind, perm = batch.attn_metadata
        if kind == "decode":
            return self._run(self.decode, q, batch, layer)
        if perm is None:
            return self._run(self.cascade, q, batch, layer)
        order, inverse = perm
        return self._run(self.cascade, q[order], batch, layer)[inverse]
