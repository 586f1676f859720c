"""KV pools that store each token on its own: int8 with a scale per token and head, fp8 with a
scale per head. A token's bytes never change after it is written, so the radix cache shares
them as they are."""

from __future__ import annotations

import torch

from kernels.attention.kv_indices import gather_rows
from kernels.kv_quant import (
    SCALE_DTYPE,
    dequantize_fp8,
    dequantize_int8,
    fp8_head_scale,
    quantize_fp8,
    quantize_int8,
)
from kernels.triton_ops.kv_scales import KVScales
from runtime.memory_pool import KVPool

_SCALE_BYTES = torch.empty((), dtype=SCALE_DTYPE).element_size()


class Int8KVPool(KVPool):
    """Codes `[slots, H, D]` uint8 with (scale, offset) `[slots, H]` per layer for K and V."""

    quantized = True
    codes = "int8"

    def __init__(self, size, num_layers, num_kv_heads, head_dim, device) -> None:
        super().__init__(size, num_layers, num_kv_heads, head_dim, torch.uint8, device)

    def _make_storage(self) -> None:
        n, h, d = self.size + 1, self.num_kv_heads, self.head_dim

        def codes():
            return [torch.zeros(n, h, d, dtype=torch.uint8, device=self.device) for _ in layers]

        def scales():
            return [torch.zeros(n, h, dtype=SCALE_DTYPE, device=self.device) for _ in layers]

        layers = range(self.num_layers)
        self.k_codes, self.v_codes = codes(), codes()
        self.k_scale, self.v_scale, self.k_offset, self.v_offset = (
            scales(),
            scales(),
            scales(),
            scales(),
        )

    @staticmethod
    def bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int) -> int:
        return 2 * num_layers * num_kv_heads * (head_dim + 2 * _SCALE_BYTES)

    def token_bytes(self) -> float:
        return self.bytes_per_token(self.num_layers, self.num_kv_heads, self.head_dim)

    def get_kv(self, layer_id: int):
        """The raw codes; `kv_scales` says how to read them."""
        return self.k_codes[layer_id], self.v_codes[layer_id]

    def kv_scales(self, layer_id: int) -> KVScales:
        i = layer_id
        return KVScales(self.k_scale[i], self.v_scale[i], self.k_offset[i], self.v_offset[i])

    def set_kv(self, layer_id, loc, k, v) -> None:
        for x, codes, scale, offset in (
            (k, self.k_codes, self.k_scale, self.k_offset),
            (v, self.v_codes, self.v_scale, self.v_offset),
        ):
            c, s, o = quantize_int8(x)
            codes[layer_id][loc], scale[layer_id][loc], offset[layer_id][loc] = c, s, o

    def read_kv(self, layer_id, slots, dtype):
        i = layer_id
        k = dequantize_int8(
            gather_rows(self.k_codes[i], slots),
            gather_rows(self.k_scale[i], slots),
            gather_rows(self.k_offset[i], slots),
            dtype,
        )
        v = dequantize_int8(
            gather_rows(self.v_codes[i], slots),
            gather_rows(self.v_scale[i], slots),
            gather_rows(self.v_offset[i], slots),
            dtype,
        )
        return k, v


class Fp8KVPool(KVPool):
    """fp8 codes `[slots, H, D]` with one float32 scale per layer, head and K/V, taken from the
    first prefill that writes the layer (with headroom; later outliers saturate). `model_dtype`
    is what the model computes in: a kernel reading the codes pairs them with queries of it."""

    quantized = True
    codes = "fp8"

    def __init__(
        self, size, num_layers, num_kv_heads, head_dim, fp8_dtype, model_dtype, device
    ) -> None:
        super().__init__(size, num_layers, num_kv_heads, head_dim, fp8_dtype, device)
        self.model_dtype = model_dtype
        self.k_head_scale: list[torch.Tensor | None] = [None] * num_layers
        self.v_head_scale: list[torch.Tensor | None] = [None] * num_layers

    def get_kv(self, layer_id: int):
        """The raw fp8 buffers; `head_scales` says what to multiply them by."""
        return self.k_buffer[layer_id], self.v_buffer[layer_id]

    def kv_scales(self, layer_id: int) -> KVScales:
        return KVScales(*self.head_scales(layer_id), per_slot=False)

    def head_scales(self, layer_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """([H], [H]) float32 scales of K and V (ones before the first write)."""
        ones = torch.ones(self.num_kv_heads, device=self.device)
        k, v = self.k_head_scale[layer_id], self.v_head_scale[layer_id]
        return (ones if k is None else k), (ones if v is None else v)

    def set_kv(self, layer_id, loc, k, v) -> None:
        if self.k_head_scale[layer_id] is None:
            self.k_head_scale[layer_id] = fp8_head_scale(k, self.dtype)
            self.v_head_scale[layer_id] = fp8_head_scale(v, self.dtype)
        ks, vs = self.k_head_scale[layer_id], self.v_head_scale[layer_id]
        self.k_buffer[layer_id][loc] = quantize_fp8(k, ks, self.dtype)
        self.v_buffer[layer_id][loc] = quantize_fp8(v, vs, self.dtype)

    def read_kv(self, layer_id, slots, dtype):
        ks, vs = self.head_scales(layer_id)
        return (
            dequantize_fp8(gather_rows(self.k_buffer[layer_id], slots), ks, dtype),
            dequantize_fp8(gather_rows(self.v_buffer[layer_id], slots), vs, dtype),
        )
