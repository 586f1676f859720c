"""What one model forward tells the layers and attention kernels about its batch.

This sits at the bottom of the import graph: the runtime builds a `ForwardBatch`, the kernels
read it, and neither reaches into the other's objects. The KV memory is seen through `KVCache`,
the few verbs attention needs, and the request-to-token table as a plain tensor.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

import torch


class ForwardMode(enum.Enum):
    EXTEND = "extend"  # prefill of new tokens after an (optional) cached prefix
    DECODE = "decode"  # one new token per request


class KVCache(Protocol):
    """The paged KV memory as attention sees it: one K and one V per layer,
    `[num_slots, num_kv_heads, head_dim]`, addressed by slot index.

    A `quantized` cache stores codes and scales: `read_kv` dequantizes just the slots asked
    for. `get_kv` gives the buffers the kernels index: exact values when `codes` is None,
    codes to read with `kv_scales` when it is "int8" or "fp8", none at all for "int4".
    """

    dtype: torch.dtype
    quantized: bool
    codes: str | None

    def get_kv(self, layer_id: int) -> tuple[torch.Tensor, torch.Tensor]: ...

    def read_kv(
        self, layer_id: int, slots: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V of `slots` (any shape), `[*slots.shape, num_kv_heads, head_dim]` in `dtype`."""
        ...

    own_page_size: int

    def read_own_page(
        self, layer_id: int, slots: torch.Tensor, dtype: torch.dtype, paged: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Like read_kv, for the keys of a query's own page; differs from it only when
        `own_page_size` > 0 (int4: a query sees its own page exactly). `paged`: each run of
        `own_page_size` slots on the last axis is one page, first to last; such a pool's
        read_kv takes it too."""
        ...

    def read_exact(
        self, layer_id: int, slots: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """read_own_page for slots from the page of a request's first new token on (all held
        exactly in this forward), without dequantizing anything."""
        ...

    def plan(self, batch: ForwardBatch) -> None:
        """Runs once per batch before the forward (a paged format decides which pages fill)."""
        ...

    def set_kv(self, layer_id: int, loc: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Stores the new tokens' K and V at slots `loc`."""
        ...


@dataclass
class ForwardBatch:
    mode: ForwardMode
    input_ids: torch.Tensor  # [num_tokens]
    positions: torch.Tensor  # [num_tokens]
    out_cache_loc: torch.Tensor  # [num_tokens] KV slots the new tokens write to
    req_pool_indices: torch.Tensor  # [batch]
    seq_lens: torch.Tensor  # [batch] KV length after this forward
    req_to_token: torch.Tensor  # [max_requests, max_context] (request slot, position) -> KV slot
    kv_cache: KVCache
    # Host copies for loops and shapes, so backends never sync on device tensors.
    seq_lens_cpu: list[int] = field(default_factory=list)
    prefix_lens_cpu: list[int] = field(default_factory=list)  # extend only
    extend_lens_cpu: list[int] = field(default_factory=list)  # extend only
    # Decode (and the one-token rows of a mixed extend): (batch rows, shared length) for
    # requests whose first KV slots are one radix prefix, which backends may attend to once
    # for the whole group (cascade attention).
    prefix_groups: list[tuple[list[int], int]] = field(default_factory=list)
    # Decode only: rows of compressed requests whose layers keep different numbers of prompt
    # slots (PyramidKV): (batch row, per layer the first table column it does not read, the
    # column where reading resumes). Empty for every other batch.
    kv_holes: list[tuple[int, list[int], int]] = field(default_factory=list)
    # each row's attention must not depend on the other rows, nor an extend's on its chunk
    # (deterministic inference)
    batch_invariant: bool = False
    # Set when KV compression needs the queries: `record(layer_id, q, batch)` runs after each
    # layer's attention (prefill: the prompt's last queries; decode: H2O's attention scores).
    query_capture: object = None
    attn_metadata: object = None  # filled by the attention backend

    @property
    def is_decode(self) -> bool:
        return self.mode is ForwardMode.DECODE
