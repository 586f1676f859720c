"""What one model forward needs to know about its batch, passed explicitly to every layer."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch

from runtime.memory_pool import KVPool, ReqToTokenPool


class ForwardMode(enum.Enum):
    EXTEND = "extend"  # prefill of new tokens after an (optional) cached prefix
    DECODE = "decode"  # one new token per request


@dataclass
class ForwardBatch:
    mode: ForwardMode
    input_ids: torch.Tensor  # [num_tokens]
    positions: torch.Tensor  # [num_tokens]
    out_cache_loc: torch.Tensor  # [num_tokens] KV slots the new tokens write to
    req_pool_indices: torch.Tensor  # [batch]
    seq_lens: torch.Tensor  # [batch] KV length after this forward
    req_to_token_pool: ReqToTokenPool
    kv_pool: KVPool
    # Host copies for loops and shapes, so backends never sync on device tensors.
    seq_lens_cpu: list[int] = field(default_factory=list)
    prefix_lens_cpu: list[int] = field(default_factory=list)  # extend only
    extend_lens_cpu: list[int] = field(default_factory=list)  # extend only
    # Decode only: (batch rows, shared length) for requests whose first KV slots are one radix
    # prefix, which backends attend to once for the whole group (cascade attention).
    prefix_groups: list[tuple[list[int], int]] = field(default_factory=list)
    attn_metadata: object = None  # filled by the attention backend

    @property
    def is_decode(self) -> bool:
        return self.mode is ForwardMode.DECODE
