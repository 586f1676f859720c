"""Attention through the Triton kernels: the CUDA default, and testable on the CPU under
`TRITON_INTERPRET=1`. Decode is cascade attention over the batch's shared radix prefixes, in
CUDA graphs too: the shared pass is laid out in items of bounded size, padded to the batch size,
so one graph per batch size serves every grouping."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from kernels.attention.backend import AttentionBackend
from kernels.attention.kv_indices import (
    host_indptr,
    ragged_kv_indices,
    shared_prefix_lens,
    without_holes,
)
from kernels.triton_ops.decode_attention import (
    MAX_BLOCK_M,
    DecodeItems,
    cascade_decode_attention,
    choose_num_splits,
    query_blocks,
)
from kernels.triton_ops.extend_attention import extend_attention
from kernels.triton_ops.int4_rows import Int4KV


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
    shared: DecodeItems | None  # the shared pass: rows of a prefix group read its slots together
    layer_own: list[DecodeItems] | None = None  # per layer, when layers read different slots


@dataclass
class SharedItems:
    """The shared pass on the host: item i has `q_counts[i]` rows (taken in order from
    `q_rows`) and reads the first `kv_lens[i]` slots of batch row `head_rows[i]`."""

    q_counts: list[int] = field(default_factory=list)
    q_rows: list[int] = field(default_factory=list)
    head_rows: list[int] = field(default_factory=list)
    kv_lens: list[int] = field(default_factory=list)

    def add(self, rows: list[int], head_row: int, kv_len: int) -> None:
        self.q_counts.append(len(rows))
        self.q_rows += rows
        self.head_rows.append(head_row)
        self.kv_lens.append(kv_len)


def shared_prefix_items(
    prefix_groups: list[tuple[list[int], int]], batch_size: int, rows_per_item: int, pad: bool
) -> SharedItems:
    """Each group's rows in items of at most `rows_per_item`: a program holds that many rows'
    query heads and reads the prefix once for them, so a bigger group reads it once per item.

    With `pad`, each row outside every group gets an item with no keys (its partial result is
    empty) and items with no rows fill up to `batch_size`: the launch shape then depends on the
    batch size alone, as a CUDA graph needs. Groups never make more items than rows.
    """
    items = SharedItems()
    for rows, length in prefix_groups:
        for i in range(0, len(rows), rows_per_item):
            items.add(rows[i : i + rows_per_item], rows[0], length)
    if pad:
        grouped = set(items.q_rows)
        for r in range(batch_size):
            if r not in grouped:
                items.add([r], r, 0)
        for _ in range(batch_size - len(items.q_counts)):
            items.add([], 0, 0)
    return items


def target_programs(device: torch.device) -> int:
    """How many programs a launch wants to keep the device busy."""
    if device.type == "cuda":
        return 2 * torch.cuda.get_device_properties(device).multi_processor_count
    return 1  # the interpreter: one split (the kernel tests cover more)


class TritonBackend(AttentionBackend):
    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, device) -> None:
        super().__init__(num_heads, num_kv_heads, head_dim, device)
        self.target_programs = target_programs(self.device)
        self.rows_per_item = max(1, MAX_BLOCK_M // (num_heads // num_kv_heads))

    def reads_pool(self, pool) -> bool:
        # dequantized in registers (KVScales; int4: Int4KV, with a query's own page exact)
        return pool.codes in (None, "int8", "fp8", "int4")

    def _to_device(self, host: torch.Tensor) -> torch.Tensor:
        """Host metadata to the device without waiting for the work already queued there."""
        return host.to(self.device, non_blocking=True)

    def init_forward_metadata(self, batch) -> None:
        table = batch.req_to_token
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
        if batch.kv_holes:
            batch.attn_metadata.layer_own = self._layer_own(batch, batch.attn_metadata.own)

    def _layer_own(self, batch, own: DecodeItems) -> list[DecodeItems]:
        """Per layer, each request's own slots without the columns that layer does not read
        (a compressed request whose layers keep different numbers of prompt slots)."""
        shared = shared_prefix_lens(len(batch.seq_lens_cpu), batch.prefix_groups)
        indptr, indices = ragged_kv_indices(
            batch.req_to_token, batch.req_pool_indices, shared, batch.seq_lens_cpu
        )
        num_layers = len(batch.kv_holes[0][1])
        by_holes: dict[tuple, DecodeItems] = {}  # layers with the same budget share items
        per_layer = []
        for layer in range(num_layers):
            holes = tuple((r, s[layer] - shared[r], e - shared[r]) for r, s, e in batch.kv_holes)
            if holes not in by_holes:
                ptr, idx = without_holes(indptr, indices, list(holes))
                by_holes[holes] = DecodeItems(
                    own.q_indptr, own.q_rows, self._to_device(ptr), idx, 1, own.num_splits
                )
            per_layer.append(by_holes[holes])
        return per_layer

    def decode_metadata(self, table, req_pool_indices, seq_lens, prefix_groups) -> _DecodeMeta:
        b = len(seq_lens)
        shared_len = shared_prefix_lens(b, prefix_groups)
        kv_indptr, kv_indices = ragged_kv_indices(table, req_pool_indices, shared_len, seq_lens)
        rows = torch.arange(b + 1, dtype=torch.int32, device=self.device)
        own_splits = choose_num_splits(
            b * self.num_kv_heads, max(n - s for n, s in zip(seq_lens, shared_len)),
            b, self.num_heads, self.head_dim, self.target_programs,
        )  # fmt: skip
        own = DecodeItems(rows, rows[:b], self._to_device(kv_indptr), kv_indices, 1, own_splits)
        if not prefix_groups:
            return _DecodeMeta(own, None)
        items = shared_prefix_items(prefix_groups, b, self.rows_per_item, pad=False)
        max_q = max(items.q_counts)
        _, m_blocks = query_blocks(max_q, self.num_heads // self.num_kv_heads)
        splits = choose_num_splits(
            len(items.q_counts) * self.num_kv_heads * m_blocks, max(items.kv_lens),
            len(items.q_rows), self.num_heads, self.head_dim, self.target_programs,
        )  # fmt: skip
        q_indptr, q_rows, kv_indptr, kv_indices = self._shared_pass(table, req_pool_indices, items)
        shared = DecodeItems(
            self._to_device(q_indptr), self._to_device(q_rows), self._to_device(kv_indptr),
            kv_indices, max_q, splits,
        )  # fmt: skip
        return _DecodeMeta(own, shared)

    def _shared_pass(self, table, req_pool_indices, items: SharedItems) -> tuple[torch.Tensor, ...]:
        """(q_indptr, q_rows, kv_indptr on the host; kv_indices on the device) of the items."""
        heads = self._to_device(torch.tensor(items.head_rows, dtype=torch.int64))
        kv_indptr, kv_indices = ragged_kv_indices(
            table, req_pool_indices[heads], [0] * len(items.kv_lens), items.kv_lens
        )
        q_rows = torch.tensor(items.q_rows, dtype=torch.int64)
        return host_indptr(items.q_counts), q_rows, kv_indptr, kv_indices

    # ---- CUDA graphs ----

    supports_cuda_graph = True

    def init_cuda_graph_state(self, max_bs: int, max_kv_tokens: int) -> None:
        dev = self.device
        self.graph_kv_capacity = max_kv_tokens
        self.graph_rows = torch.arange(max_bs + 1, dtype=torch.int32, device=dev)
        self.graph_kv_indptr = torch.zeros(max_bs + 1, dtype=torch.int32, device=dev)
        self.graph_kv_indices = torch.zeros(max_kv_tokens, dtype=torch.int32, device=dev)
        self.graph_shared_q_indptr = torch.zeros(max_bs + 1, dtype=torch.int32, device=dev)
        self.graph_shared_q_rows = torch.zeros(max_bs, dtype=torch.int64, device=dev)
        self.graph_shared_kv_indptr = torch.zeros(max_bs + 1, dtype=torch.int32, device=dev)
        self.graph_shared_kv_indices = torch.zeros(max_kv_tokens, dtype=torch.int32, device=dev)

    def cuda_graph_metadata(self, bs: int, cascade: bool) -> _DecodeMeta:
        # Split counts are fixed at capture; each item divides its own keys by them. The shared
        # pass has few items with long prefixes, so it gets the splits to fill the device.
        kv_heads = self.num_kv_heads
        splits = max(1, min(16, -(-self.target_programs // (bs * kv_heads))))
        own = DecodeItems(
            self.graph_rows[: bs + 1], self.graph_rows[:bs],
            self.graph_kv_indptr[: bs + 1], self.graph_kv_indices, 1, splits,
        )  # fmt: skip
        if not cascade:
            return _DecodeMeta(own, None)
        shared = DecodeItems(
            self.graph_shared_q_indptr[: bs + 1], self.graph_shared_q_rows[:bs],
            self.graph_shared_kv_indptr[: bs + 1], self.graph_shared_kv_indices,
            self.rows_per_item, max(1, min(32, -(-self.target_programs // kv_heads))),
        )  # fmt: skip
        return _DecodeMeta(own, shared)

    def cuda_graph_fits(self, seq_lens: list[int], prefix_groups) -> bool:
        """Whether a step's slot lists fit the graph buffers (host arithmetic only). Requests that
        share a prefix too short to group each list its slots, so the lists can outgrow the pool."""
        own = sum(seq_lens) - sum(len(rows) * length for rows, length in prefix_groups)
        per_item = self.rows_per_item
        shared = sum(-(-len(rows) // per_item) * length for rows, length in prefix_groups)
        return max(own, shared) <= self.graph_kv_capacity

    def fill_cuda_graph_metadata(self, batch, cascade: bool) -> None:
        seq_lens = batch.seq_lens_cpu
        table = batch.req_to_token
        groups = batch.prefix_groups if cascade else []
        indptr, indices = ragged_kv_indices(
            table, batch.req_pool_indices, shared_prefix_lens(len(seq_lens), groups), seq_lens
        )
        self.graph_kv_indptr[: len(seq_lens) + 1].copy_(indptr, non_blocking=True)
        self.graph_kv_indices[: indices.numel()].copy_(indices)
        if not cascade:
            return
        bs = len(seq_lens)
        items = shared_prefix_items(groups, bs, self.rows_per_item, pad=True)
        q_indptr, q_rows, kv_indptr, kv_indices = self._shared_pass(
            table, batch.req_pool_indices, items
        )
        self.graph_shared_q_indptr[: bs + 1].copy_(q_indptr, non_blocking=True)
        self.graph_shared_q_rows[:bs].copy_(q_rows, non_blocking=True)
        self.graph_shared_kv_indptr[: bs + 1].copy_(kv_indptr, non_blocking=True)
        self.graph_shared_kv_indices[: kv_indices.numel()].copy_(kv_indices)

    def forward_decode(self, q, k, v, layer, batch) -> torch.Tensor:
        pool = batch.kv_cache
        pool.set_kv(layer.layer_id, batch.out_cache_loc, k, v)
        meta: _DecodeMeta = batch.attn_metadata
        own = meta.own if meta.layer_own is None else meta.layer_own[layer.layer_id]
        k_buf, v_buf, scales = _buffers(pool, layer.layer_id)
        out, _ = cascade_decode_attention(q, k_buf, v_buf, own, meta.shared, layer.scaling, scales)
        return out

    def forward_extend(self, q, k, v, layer, batch) -> torch.Tensor:
        pool = batch.kv_cache
        pool.set_kv(layer.layer_id, batch.out_cache_loc, k, v)
        meta: _ExtendMeta = batch.attn_metadata
        k_buf, v_buf, scales = _buffers(pool, layer.layer_id)
        return extend_attention(
            q,
            k_buf,
            v_buf,
            meta.qo_indptr,
            meta.kv_indptr,
            meta.kv_indices,
            meta.prefix_lens,
            meta.max_extend_len,
            layer.scaling,
            scales,
        )


def _buffers(pool, layer_id: int) -> tuple:
    """(K buffer, V buffer, how to read them): int4 has no buffers of values (`get_kv` refuses),
    its codes come with the rest of what the kernels read."""
    scales = pool.kv_scales(layer_id)
    if isinstance(scales, Int4KV):
        return scales.k_codes, scales.v_codes, scales
    return (*pool.get_kv(layer_id), scales)
