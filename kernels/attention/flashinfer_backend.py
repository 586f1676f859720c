"""Attention through FlashInfer's paged wrappers (CUDA only; imported when picked).

The pool is FlashInfer's NHD paged layout with one token per page, so a request's page list is
its KV slot list. Decode batches with shared radix prefixes use the two-level cascade wrapper:
level 0 attends each group's rows to their shared prefix at once, level 1 each row to the rest.
"""

from __future__ import annotations

import torch

from kernels.attention.backend import AttentionBackend
from kernels.attention.kv_indices import ragged_kv_indices

WORKSPACE_BYTES = 256 << 20


def _indptr(sizes: list[int], device) -> torch.Tensor:
    out = [0]
    for n in sizes:
        out.append(out[-1] + n)
    return torch.tensor(out, dtype=torch.int32, device=device)


class FlashInferBackend(AttentionBackend):
    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, device) -> None:
        import flashinfer  # needs CUDA; never imported on the CPU path

        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise ValueError("attention_backend: flashinfer needs a CUDA device")
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.scale = head_dim**-0.5
        self.workspace = torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device=self.device)
        self.prefill = flashinfer.BatchPrefillWithPagedKVCacheWrapper(self.workspace, "NHD")
        self.decode = flashinfer.BatchDecodeWithPagedKVCacheWrapper(
            self.workspace, "NHD", use_tensor_cores=num_heads // num_kv_heads >= 4
        )
        self.cascade = flashinfer.MultiLevelCascadeAttentionWrapper(2, self.workspace, "NHD")

    def _shape(self) -> tuple[int, int, int, int]:
        return self.num_heads, self.num_kv_heads, self.head_dim, 1  # page size 1

    def init_forward_metadata(self, batch) -> None:
        table = batch.req_to_token_pool.req_to_token
        dtype = batch.kv_pool.k_buffer[0].dtype
        seq_lens = batch.seq_lens_cpu
        dev = table.device
        ones = torch.ones(len(seq_lens), dtype=torch.int32, device=dev)
        types = {"q_data_type": dtype, "kv_data_type": dtype, "sm_scale": self.scale}
        if not batch.is_decode:
            kv_indptr, kv_indices = ragged_kv_indices(
                table, batch.req_pool_indices, [0] * len(seq_lens), seq_lens
            )
            qo_indptr = _indptr(batch.extend_lens_cpu, dev)
            self.prefill.plan(
                qo_indptr, kv_indptr, kv_indices, ones, *self._shape(), causal=True, **types
            )
            batch.attn_metadata = ("prefill", None)
            return
        if not batch.prefix_groups:
            kv_indptr, kv_indices = ragged_kv_indices(
                table, batch.req_pool_indices, [0] * len(seq_lens), seq_lens
            )
            self.decode.plan(kv_indptr, kv_indices, ones, *self._shape(), **types)
            batch.attn_metadata = ("decode", None)
            return
        # Cascade: level 0's items must be contiguous query rows, so rows are laid out group by
        # group. A row outside every group takes its first token at level 0 (a decode row has
        # at least two: a prompt token and the current one) and the rest at level 1.
        grouped = {r for rows, _ in batch.prefix_groups for r in rows}
        order = [r for rows, _ in batch.prefix_groups for r in rows]
        order += [r for r in range(len(seq_lens)) if r not in grouped]
        level0_sizes = [len(rows) for rows, _ in batch.prefix_groups]
        level0_sizes += [1] * (len(order) - len(grouped))
        split = [1] * len(seq_lens)
        for rows, length in batch.prefix_groups:
            for r in rows:
                split[r] = length
        order_t = torch.tensor(order, dtype=torch.int64, device=dev)
        pool_rows = batch.req_pool_indices[order_t]
        heads = [rows[0] for rows, _ in batch.prefix_groups] + order[len(grouped) :]
        l0_indptr, l0_indices = ragged_kv_indices(
            table,
            batch.req_pool_indices[torch.tensor(heads, dtype=torch.int64, device=dev)],
            [0] * len(heads),
            [length for _, length in batch.prefix_groups] + [1] * (len(order) - len(grouped)),
        )
        l1_indptr, l1_indices = ragged_kv_indices(
            table, pool_rows, [split[r] for r in order], [seq_lens[r] for r in order]
        )
        self.cascade.plan(
            [_indptr(level0_sizes, dev), _indptr([1] * len(order), dev)],
            [l0_indptr, l1_indptr],
            [l0_indices, l1_indices],
            [torch.ones(len(heads), dtype=torch.int32, device=dev), ones],
            *self._shape(),
            causal=False,
            **types,
        )
        identity = order == list(range(len(order)))
        inverse = None if identity else torch.argsort(order_t)
        batch.attn_metadata = ("cascade", (None if identity else order_t, inverse))

    def _kv(self, batch, layer) -> tuple[torch.Tensor, torch.Tensor]:
        pool = batch.kv_pool
        k = pool.k_buffer[layer.layer_id]
        v = pool.v_buffer[layer.layer_id]
        return k.view(k.shape[0], 1, *k.shape[1:]), v.view(v.shape[0], 1, *v.shape[1:])

    def forward_extend(self, q, k, v, layer, batch) -> torch.Tensor:
        batch.kv_pool.set_kv(layer.layer_id, batch.out_cache_loc, k, v)
        return self.prefill.run(q.contiguous(), self._kv(batch, layer))

    def forward_decode(self, q, k, v, layer, batch) -> torch.Tensor:
        batch.kv_pool.set_kv(layer.layer_id, batch.out_cache_loc, k, v)
        kind, perm = batch.attn_metadata
        if kind == "decode":
            return self.decode.run(q.contiguous(), self._kv(batch, layer))
        order, inverse = perm
        qq = q if order is None else q[order]
        out = self.cascade.run(qq.contiguous(), self._kv(batch, layer))
        return out if inverse is None else out[inverse]
