"""Attention through the Triton kernels: the CUDA default, and testable on the CPU under
`TRITON_INTERPRET=1`. Decode is cascade attention over the batch's shared radix prefixes."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kernels.attention.backend import AttentionBackend
from kernels.attention.kv_indices import host_indptr, ragged_kv_indices
from kernels.triton_ops.decode_attention import (
    DecodeItems,
    cascade_decode_attention,
    choose_num_splits,
    query_blocks,
)
from kernels.triton_ops.extend_attention import extend_attention


@dataclass
class _ExtendMeta:
    qo_indptr: torch.Tensor
    kv_indptr: torch.Tensor
    kv_indices: torch.Tensor
    prefix_lens: torch.Tensor
    max_extend_len: int


@dataclass
class _DecodeMeta:
    own: DecodeItems  # one item per request: its slots past its shared prefix
    shared: DecodeItems | None  # one item per prefix group: the shared slots


def target_programs(device: torch.device) -> int:
    """How many programs a launch wants to keep the device busy."""
    if device.type == "cuda":
        return 2 * torch.cuda.get_device_properties(device).multi_processor_count
    return 1  # the interpreter: one split (the kernel tests cover more)


class TritonBackend(AttentionBackend):
    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, device) -> None:
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.device = torch.device(device)
        self.target_programs = target_programs(self.device)

    def init_forward_metadata(self, batch) -> None:
        table = batch.req_to_token_pool.req_to_token
        seq_lens = batch.seq_lens_cpu
        if not batch.is_decode:
            kv_indptr, kv_indices = ragged_kv_indices(
                table, batch.req_pool_indices, [0] * len(seq_lens), seq_lens
            )
            ext = batch.extend_lens_cpu
            prefix = torch.tensor(batch.prefix_lens_cpu, dtype=torch.int32)
            batch.attn_metadata = _ExtendMeta(
                self._to_device(host_indptr(ext)),
                self._to_device(kv_indptr),
                kv_indices,
                self._to_device(prefix),
                max(ext),
            )
            return
        batch.attn_metadata = self.decode_metadata(
            table, batch.req_pool_indices, seq_lens, batch.prefix_groups
        )

    def _to_device(self, host: torch.Tensor) -> torch.Tensor:
        """Host metadata to the device without waiting for the work already queued there."""
        return host.to(self.device, non_blocking=True)

    def decode_metadata(self, table, req_pool_indices, seq_lens, prefix_groups) -> _DecodeMeta:
        dev = table.device
        b = len(seq_lens)
        shared_len = [0] * b
        for rows, length in prefix_groups:
            for r in rows:
                shared_len[r] = length
        kv_indptr, kv_indices = ragged_kv_indices(table, req_pool_indices, shared_len, seq_lens)
        rows_t = torch.arange(b, dtype=torch.int32, device=dev)
        own_splits = choose_num_splits(
            b * self.num_kv_heads, max(n - s for n, s in zip(seq_lens, shared_len)),
            b, self.num_heads, self.head_dim, self.target_programs,
        )  # fmt: skip
        own = DecodeItems(
            torch.arange(b + 1, dtype=torch.int32, device=dev), rows_t,
            self._to_device(kv_indptr), kv_indices, 1, own_splits,
        )  # fmt: skip
        if not prefix_groups:
            return _DecodeMeta(own, None)
        first_rows = self._to_device(torch.tensor([rows[0] for rows, _ in prefix_groups]))
        lengths = [length for _, length in prefix_groups]
        p_indptr, p_indices = ragged_kv_indices(
            table, req_pool_indices[first_rows], [0] * len(lengths), lengths
        )
        q_rows = [r for rows, _ in prefix_groups for r in rows]
        largest = max(len(rows) for rows, _ in prefix_groups)
        _, m_blocks = query_blocks(largest, self.num_heads // self.num_kv_heads)
        shared_splits = choose_num_splits(
            len(prefix_groups) * self.num_kv_heads * m_blocks, max(lengths),
            len(q_rows), self.num_heads, self.head_dim, self.target_programs,
        )  # fmt: skip
        shared = DecodeItems(
            self._to_device(host_indptr([len(rows) for rows, _ in prefix_groups])),
            self._to_device(torch.tensor(q_rows, dtype=torch.int64)),
            self._to_device(p_indptr), p_indices, largest, shared_splits,
        )  # fmt: skip
        return _DecodeMeta(own, shared)

    # ---- CUDA graphs (decode without cascade groups) ----

    supports_cuda_graph = True

    def init_cuda_graph_state(self, max_bs: int, max_kv_tokens: int) -> None:
        dev = self.device
        self.graph_rows = torch.arange(max_bs + 1, dtype=torch.int32, device=dev)
        self.graph_kv_indptr = torch.zeros(max_bs + 1, dtype=torch.int32, device=dev)
        self.graph_kv_indices = torch.zeros(max_kv_tokens, dtype=torch.int32, device=dev)

    def cuda_graph_metadata(self, bs: int) -> _DecodeMeta:
        # The split count is fixed at capture; each item divides its own length by it.
        splits = max(1, min(16, -(-self.target_programs // (bs * self.num_kv_heads))))
        own = DecodeItems(
            self.graph_rows[: bs + 1],
            self.graph_rows[:bs],
            self.graph_kv_indptr[: bs + 1],
            self.graph_kv_indices,
            1,
            splits,
        )
        return _DecodeMeta(own, None)

    def fill_cuda_graph_metadata(self, batch) -> None:
        seq_lens = batch.seq_lens_cpu
        indptr, indices = ragged_kv_indices(
            batch.req_to_token_pool.req_to_token,
            batch.req_pool_indices,
            [0] * len(seq_lens),
            seq_lens,
        )
        self.graph_kv_indptr[: len(seq_lens) + 1].copy_(indptr, non_blocking=True)
        self.graph_kv_indices[: indices.numel()].copy_(indices)

    def forward_decode(self, q, k, v, layer, batch) -> torch.Tensor:
        pool = batch.kv_pool
        pool.set_kv(layer.layer_id, batch.out_cache_loc, k, v)
        meta: _DecodeMeta = batch.attn_metadata
        out, _ = cascade_decode_attention(
            q,
            pool.k_buffer[layer.layer_id],
            pool.v_buffer[layer.layer_id],
            meta.own,
            meta.shared,
            layer.scaling,
        )
        return out

    def forward_extend(self, q, k, v, layer, batch) -> torch.Tensor:
        pool = batch.kv_pool
        pool.set_kv(layer.layer_id, batch.out_cache_loc, k, v)
        meta: _ExtendMeta = batch.attn_metadata
        return extend_attention(
            q,
            pool.k_buffer[layer.layer_id],
            pool.v_buffer[layer.layer_id],
            meta.qo_indptr,
            meta.kv_indptr,
            meta.kv_indices,
            meta.prefix_lens,
            meta.max_extend_len,
            layer.scaling,
        )
