"""KV memory: request slots mapped to token slots, and the per-layer K/V pool with its free list."""

from __future__ import annotations

import torch


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
    """

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
        shape = (size + 1, num_kv_heads, head_dim)
        self.k_buffer = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.v_buffer = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.dtype = dtype
        self._free = torch.arange(1, size + 1, dtype=torch.int64)  # kept on the CPU
        self._num_free = size

    @staticmethod
    def bytes_per_token(
        num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype
    ) -> int:
        return (
            2 * num_layers * num_kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()
        )

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
        self._free[self._num_free : self._num_free + n] = indices.to("cpu", torch.int64)
        self._num_free += n

    def get_kv(self, layer_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k_buffer[layer_id], self.v_buffer[layer_id]

    def set_kv(self, layer_id: int, loc: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        self.k_buffer[layer_id][loc] = k.to(self.k_buffer[layer_id].dtype)
        self.v_buffer[layer_id][loc] = v.to(self.v_buffer[layer_id].dtype)

    def free_slot_set(self) -> set[int]:
        """For accounting checks in tests and the debug mode, not the per-step path."""
        return set(self._free[: self._num_free].tolist())
