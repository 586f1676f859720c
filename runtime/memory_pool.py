"""KV memory: request slots mapped to token slots, and the per-layer K/V pool with its free list."""

from __future__ import annotations

import torch

from kernels.attention.kv_indices import gather_rows
from kernels.triton_ops.kv_scales import KVScales


class ReqToTokenPool:
    """Maps (request slot, position) to a KV slot index: `[max_running_reqs, max_context_len]`."""

    def __init__(self, size: int, max_context_len: int, device: str | torch.device) -> None:
        self.size = size
        self.max_context_len = max_context_len
        self.req_to_token = torch.zeros(size, max_context_len, dtype=torch.int64, device=device)
        self.free_slots = list(range(size))

    def available_size(self) -> int:
        return len(self.free_slots)

    def alloc(self) -> int | None:
        return self.free_slots.pop() if self.free_slots else None

    def free(self, slot: int) -> None:
        assert slot not in self.free_slots, f"request slot {slot} freed twice"
        self.free_slots.append(slot)


class KVPool:
    """Per layer K and V tensors `[num_slots, num_kv_heads, head_dim]` plus a free list.

    Slot 0 is reserved as a scratch slot (padding writes land there), so it is never handed out.
    This pool stores K/V exactly in `dtype`; the quantized pools keep its free list and verbs
    and change only how a slot's K/V is stored (`set_kv`) and read back (`read_kv`).
    """

    quantized = False
    # What the kernels find in the buffers `get_kv` gives: None (exact values), "int8" or "fp8"
    # (codes that `kv_scales` says how to read), "int4" (no buffers a kernel can index).
    codes: str | None = None

    def __init__(
        self,
        size: int,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: str | torch.device,
    ) -> None:
        self.size = size
        self.device = device
        self.num_layers = num_layers
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.dtype = dtype
        self._free = torch.arange(1, size + 1, dtype=torch.int64)  # kept on the CPU
        self._num_free = size
        self._make_storage()

    def _make_storage(self) -> None:
        shape = (self.size + 1, self.num_kv_heads, self.head_dim)
        layers = range(self.num_layers)
        self.k_buffer = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in layers]
        self.v_buffer = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in layers]

    @staticmethod
    def bytes_per_token(
        num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype
    ) -> int:
        return (
            2 * num_layers * num_kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()
        )

    def token_bytes(self) -> float:
        """Bytes one cached token takes in this pool, scales included."""
        return self.bytes_per_token(self.num_layers, self.num_kv_heads, self.head_dim, self.dtype)

    def available_size(self) -> int:
        return self._num_free

    def alloc(self, n: int) -> torch.Tensor | None:
        """Takes `n` free slots (a CPU int64 tensor), or None when there are not enough."""
        if n > self._num_free:
            return None
        out = self._free[self._num_free - n : self._num_free].clone()
        self._num_free -= n
        return out

    def free(self, indices: torch.Tensor) -> None:
        n = indices.numel()
        if n == 0:
            return
        assert self._num_free + n <= self.size, "KV slots freed twice"
        indices = indices.to("cpu", torch.int64)
        self._release(indices)
        self._free[self._num_free : self._num_free + n] = indices
        self._num_free += n

    def _release(self, indices: torch.Tensor) -> None:
        """What a format keeps per slot besides its codes, dropped when the slot is freed."""

    def plan(self, batch) -> None:
        """Called once per forward batch before the model runs; formats that work on pages
        learn here which pages the batch fills."""

    def get_kv(self, layer_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k_buffer[layer_id], self.v_buffer[layer_id]

    # A query reads the keys of its own page with `read_own_page`, earlier ones with `read_kv`.
    # They differ only in a pool that quantizes whole pages (own_page_size > 0, int4): there a
    # query sees its own page exactly, as it did in the forward that computed it.
    own_page_size = 0

    def read_own_page(
        self, layer_id: int, slots: torch.Tensor, dtype: torch.dtype, paged: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`paged` (slots laid out in whole pages) only matters to a pool with own pages."""
        return self.read_kv(layer_id, slots, dtype)

    def read_exact(
        self, layer_id: int, slots: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`read_own_page` for slots from the page of a request's first new token on, which a
        paged format still holds exactly in this forward: it can skip dequantizing them."""
        return self.read_kv(layer_id, slots, dtype)

    def kv_scales(self, layer_id: int) -> KVScales | None:
        """How a kernel turns `get_kv`'s buffers into values; None when they are values."""
        return None

    def read_kv(
        self, layer_id: int, slots: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V of `slots` (any shape) as `[*slots.shape, num_kv_heads, head_dim]` in `dtype`."""
        return (
            gather_rows(self.k_buffer[layer_id], slots).to(dtype),
            gather_rows(self.v_buffer[layer_id], slots).to(dtype),
        )

    def set_kv(self, layer_id: int, loc: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        self.k_buffer[layer_id][loc] = k.to(self.k_buffer[layer_id].dtype)
        self.v_buffer[layer_id][loc] = v.to(self.v_buffer[layer_id].dtype)

    def free_slot_set(self) -> set[int]:
        """For accounting checks in tests and the debug mode, not the per-step path."""
        return set(self._free[: self._num_free].tolist())
