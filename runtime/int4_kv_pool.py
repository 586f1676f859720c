"""The int4 KV pool: KIVI's layout fitted to the radix cache's pages.

A page is `page_size` consecutive positions of one request. Once all its tokens are written,
its keys are quantized per channel over the page (one scale and offset per channel, kept in a
page record) and its values per token in groups of `group` channels; from then on its bytes
never change, so the radix cache (which holds only whole pages) shares them as they are. A
request's last, partial page is kept exact in a staging area until the forward that fills it.

A query sees the tokens of its own page exactly and earlier pages quantized (`read_own_page`
and `read_kv`), in every forward: a page's tokens computed one decode step at a time and the
same tokens computed in one prefill (a recomputation after retraction or eviction, a prompt
cut into chunks elsewhere) then see the same values, so the page is quantized from the same
K/V whichever way it was computed. Within the forward that fills a page, its exact values stay
at hand (`_own`) for the queries in it.

Slots are not laid out in pages: each slot points at its page record (`page_of_slot`) or at its
staging row (`row_of_slot`). `plan(batch)` runs before each forward and decides, for every new
token, whether it is staged or completes a page; `set_kv` then writes each layer accordingly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kernels.attention.kv_indices import gather_rows
from kernels.kv_quant import (
    SCALE_DTYPE,
    dequantize_int4_keys,
    dequantize_int4_values,
    quantize_int4_keys,
    quantize_int4_values,
)
from kernels.triton_ops.int4_rows import Int4KV
from runtime.memory_pool import KVPool

_SCALE_BYTES = torch.empty((), dtype=SCALE_DTYPE).element_size()
VALUE_GROUP = 32


@dataclass
class _Plan:
    stage_src: torch.Tensor  # [Ns] rows of the new k/v that go to staging
    stage_rows: torch.Tensor  # [Ns] their staging rows
    page_slots: torch.Tensor  # [P, page] slots of the pages this forward fills
    page_records: torch.Tensor  # [P]
    page_is_new: torch.Tensor  # [P, page] token written by this forward (else staged before)
    page_new_idx: torch.Tensor  # [P, page] its row in the new k/v (0 where not new)
    page_old_row: torch.Tensor  # [P, page] its staging row (0 where new)
    done_rows: torch.Tensor  # CPU: staging rows to free once the last layer has been written


class Int4KVPool(KVPool):
    quantized = True
    codes = "int4"

    @property
    def own_page_size(self) -> int:
        return self.page_size

    def __init__(
        self,
        size: int,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        page_size: int,
        max_requests: int,
        stage_dtype: torch.dtype,
        device,
    ) -> None:
        check_int4_shape(head_dim, page_size)
        self.page_size = page_size
        self.group = min(VALUE_GROUP, head_dim)
        self.stage_dtype = stage_dtype
        # A page record lives while any of its slots does; pages are freed whole, and each
        # request may leave one page part-freed, so this many records always suffice.
        self.num_records = size // page_size + max_requests + 1
        self.num_rows = stage_rows(page_size, max_requests)
        super().__init__(size, num_layers, num_kv_heads, head_dim, torch.uint8, device)

    def _make_storage(self) -> None:
        n, h, d, dev = self.size + 1, self.num_kv_heads, self.head_dim, self.device
        layers = range(self.num_layers)

        def zeros(*shape, dtype=SCALE_DTYPE):
            return [torch.zeros(*shape, dtype=dtype, device=dev) for _ in layers]

        self.k_codes, self.v_codes = (
            zeros(n, h, d // 2, dtype=torch.uint8),
            zeros(n, h, d // 2, dtype=torch.uint8),
        )
        self.k_scale, self.k_offset = zeros(self.num_records, h, d), zeros(self.num_records, h, d)
        groups = d // self.group
        self.v_scale, self.v_offset = zeros(n, h, groups), zeros(n, h, groups)
        self.k_stage = zeros(self.num_rows, h, d, dtype=self.stage_dtype)
        self.v_stage = zeros(self.num_rows, h, d, dtype=self.stage_dtype)
        # Bookkeeping on the host, mirrored to the device for reads.
        self._page_of_slot = torch.full((n,), -1, dtype=torch.int64)
        self._row_of_slot = torch.full((n,), -1, dtype=torch.int64)
        self.page_of_slot = self._page_of_slot.to(dev)
        self.row_of_slot = self._row_of_slot.to(dev)
        self._record_refs = torch.zeros(self.num_records, dtype=torch.int64)
        self._free_records = list(range(self.num_records))
        self._free_rows = list(range(self.num_rows))
        self._plan: _Plan | None = None
        # The pages the current forward fills: each slot's row in `_own`'s exact K/V, else -1.
        self.own_row_of_slot = torch.full((n,), -1, dtype=torch.int64, device=dev)
        self._own_slots = torch.empty(0, dtype=torch.int64, device=dev)
        self._own: tuple[int, torch.Tensor, torch.Tensor] | None = None  # (layer, K, V)

    @staticmethod
    def bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, page_size: int):
        group = min(VALUE_GROUP, head_dim)
        codes = num_kv_heads * head_dim  # K and V at half a byte per channel
        key_scales = 2 * _SCALE_BYTES * num_kv_heads * head_dim / page_size
        value_scales = 2 * _SCALE_BYTES * num_kv_heads * head_dim / group
        return num_layers * (codes + key_scales + value_scales)

    def token_bytes(self) -> float:
        return self.bytes_per_token(
            self.num_layers, self.num_kv_heads, self.head_dim, self.page_size
        )

    def get_kv(self, layer_id: int):
        raise TypeError("the int4 KV pool has no exact buffers; read it with read_kv")

    def kv_scales(self, layer_id: int) -> Int4KV:
        """Everything a kernel needs to read layer `layer_id` in registers (int4_rows)."""
        i = layer_id
        own = self._own if self._own is not None and self._own[0] == i else None
        return Int4KV(
            self.k_codes[i], self.v_codes[i], self.k_scale[i], self.k_offset[i],
            self.v_scale[i], self.v_offset[i],
            self.page_of_slot, self.row_of_slot, self.own_row_of_slot,
            self.k_stage[i], self.v_stage[i],
            self.k_stage[i] if own is None else own[1], self.v_stage[i] if own is None else own[2],
            self.page_size, self.group,
        )  # fmt: skip

    # ---- slots coming and going ----

    def _sync(self, slots: torch.Tensor) -> None:
        dev_slots = slots.to(self.page_of_slot.device)
        self.page_of_slot[dev_slots] = self._page_of_slot[slots].to(self.page_of_slot.device)
        self.row_of_slot[dev_slots] = self._row_of_slot[slots].to(self.row_of_slot.device)

    def _release(self, indices: torch.Tensor) -> None:
        rows = self._row_of_slot[indices]
        self._free_rows.extend(rows[rows >= 0].tolist())
        recs = self._page_of_slot[indices]
        recs = recs[recs >= 0]
        if recs.numel():
            self._record_refs -= torch.bincount(recs, minlength=self.num_records)
            gone = recs.unique()
            self._free_records.extend(gone[self._record_refs[gone] == 0].tolist())
        self._row_of_slot[indices] = -1
        self._page_of_slot[indices] = -1
        self._sync(indices)

    def plan(self, batch) -> None:
        if self._plan is not None:  # the last forward stopped before its last layer
            self._free_rows.extend(self._plan.done_rows.tolist())
        ps = self.page_size
        ends = batch.seq_lens_cpu
        starts = [n - 1 for n in ends] if batch.is_decode else list(batch.prefix_lens_cpu)
        req_rows = batch.req_pool_indices.tolist()
        stage_src, stage_slots, page_rows, page_new = [], [], [], []
        offset = 0
        for r, start, end in zip(req_rows, starts, ends):
            first = start - start % ps  # the page the first new token falls in
            full_end = end - end % ps  # positions before this sit in whole pages
            slots = batch.req_to_token[r, first:end].cpu()
            local = torch.arange(first - start, end - start)  # < 0: written before
            new_idx = torch.where(local >= 0, local + offset, -1)
            if full_end > first:
                page_rows.append(slots[: full_end - first].view(-1, ps))
                page_new.append(new_idx[: full_end - first].view(-1, ps))
            tail = max(start, full_end)
            stage_slots.append(slots[tail - first :])
            stage_src.append(new_idx[tail - first :])
            offset += end - start
        stage_slots_t = torch.cat(stage_slots) if stage_slots else torch.empty(0, dtype=torch.int64)
        n_stage = stage_slots_t.numel()
        if n_stage > len(self._free_rows):
            raise RuntimeError(
                f"int4 KV staging full: {n_stage} partial-page tokens, {len(self._free_rows)} "
                "rows free; lower max_running_requests or the page size"
            )
        rows = torch.tensor(self._free_rows[len(self._free_rows) - n_stage :], dtype=torch.int64)
        del self._free_rows[len(self._free_rows) - n_stage :]
        self._row_of_slot[stage_slots_t] = rows

        if page_rows:
            page_slots = torch.cat(page_rows)
            new_idx = torch.cat(page_new)
        else:
            page_slots = torch.empty(0, ps, dtype=torch.int64)
            new_idx = torch.empty(0, ps, dtype=torch.int64)
        is_new = new_idx >= 0
        old_rows = torch.where(is_new, -1, self._row_of_slot[page_slots])
        assert bool((old_rows[~is_new] >= 0).all()), "a page's earlier tokens were not staged"
        n_pages = page_slots.shape[0]
        assert n_pages <= len(self._free_records), "int4 KV page records exhausted"
        records = torch.tensor(
            self._free_records[len(self._free_records) - n_pages :], dtype=torch.int64
        )
        del self._free_records[len(self._free_records) - n_pages :]
        self._record_refs[records] = ps
        flat = page_slots.reshape(-1)
        self._page_of_slot[flat] = records.repeat_interleave(ps)
        self._row_of_slot[flat] = -1
        self._sync(torch.cat([stage_slots_t, flat]))
        dev = self.device
        self.own_row_of_slot[self._own_slots] = -1
        self._own_slots = flat.to(dev)
        self.own_row_of_slot[self._own_slots] = torch.arange(flat.numel(), device=dev)
        self._own = None
        self._plan = _Plan(
            stage_src=torch.cat(stage_src).to(dev) if stage_src else rows.to(dev),
            stage_rows=rows.to(dev),
            page_slots=page_slots.to(dev),
            page_records=records.to(dev),
            page_is_new=is_new.to(dev),
            page_new_idx=new_idx.clamp(min=0).to(dev),
            page_old_row=old_rows.clamp(min=0).to(dev),
            done_rows=old_rows[old_rows >= 0],
        )

    # ---- writing and reading one layer ----

    def set_kv(self, layer_id, loc, k, v) -> None:
        plan = self._plan
        if plan is None:
            raise RuntimeError("Int4KVPool.plan(batch) must run before the forward writes KV")
        i = layer_id
        self.k_stage[i][plan.stage_rows] = k[plan.stage_src].to(self.stage_dtype)
        self.v_stage[i][plan.stage_rows] = v[plan.stage_src].to(self.stage_dtype)
        if plan.page_slots.numel():
            new = plan.page_is_new[..., None, None]
            kp = torch.where(new, k[plan.page_new_idx], self.k_stage[i][plan.page_old_row])
            vp = torch.where(new, v[plan.page_new_idx], self.v_stage[i][plan.page_old_row])
            self._own = (i, kp.flatten(0, 1), vp.flatten(0, 1))
            codes, scale, offset = quantize_int4_keys(kp)  # [P, page, H, D/2], [P, H, D]
            self.k_codes[i][plan.page_slots] = codes
            self.k_scale[i][plan.page_records] = scale
            self.k_offset[i][plan.page_records] = offset
            codes, scale, offset = quantize_int4_values(vp, self.group)
            self.v_codes[i][plan.page_slots] = codes
            self.v_scale[i][plan.page_slots] = scale
            self.v_offset[i][plan.page_slots] = offset
        if layer_id == self.num_layers - 1:
            self._free_rows.extend(plan.done_rows.tolist())
            self._plan = None

    def read_kv(self, layer_id, slots, dtype, paged: bool = False):
        """`paged`: the caller vouches that each run of `page_size` slots along the last axis
        (whose length is a multiple of it) holds the positions of one page, first to last; a
        page's key scales are then gathered once, not once per token."""
        k, v = self._read(layer_id, slots, dtype, paged)
        shape = (*slots.shape, self.num_kv_heads, self.head_dim)
        return k.view(shape), v.view(shape)

    def read_own_page(self, layer_id, slots, dtype, paged: bool = False):
        """Like read_kv, but the pages this forward fills read exact (for the queries in them)."""
        flat = slots.reshape(-1)
        k, v = self._with_filled_pages(layer_id, flat, *self._read(layer_id, slots, dtype, paged))
        shape = (*slots.shape, self.num_kv_heads, self.head_dim)
        return k.view(shape), v.view(shape)

    def read_exact(self, layer_id, slots, dtype):
        """K and V of slots this pool holds exactly: a request's slots from the page of its first
        new token on, which this forward stages or fills. Nothing is dequantized."""
        flat = slots.reshape(-1)
        row = self.row_of_slot[flat].clamp(min=0)
        k = self.k_stage[layer_id][row].to(dtype)
        v = self.v_stage[layer_id][row].to(dtype)
        k, v = self._with_filled_pages(layer_id, flat, k, v)
        shape = (*slots.shape, self.num_kv_heads, self.head_dim)
        return k.view(shape), v.view(shape)

    def _with_filled_pages(self, layer_id, flat, k, v):
        """k, v (rows of the slots `flat`) with the slots of pages this forward fills replaced
        by their exact values, which the quantized pages no longer hold."""
        if self._own is None or self._own[0] != layer_id:
            return k, v
        row = self.own_row_of_slot[flat]
        own = (row >= 0).nonzero().squeeze(1)
        k[own] = self._own[1][row[own]].to(k.dtype)
        v[own] = self._own[2][row[own]].to(v.dtype)
        return k, v

    def _read(self, layer_id, slots, dtype, paged=False):
        """K and V `[slots.numel(), H, D]` as stored: full pages quantized, partial pages exact."""
        i, flat = layer_id, slots.reshape(-1)
        if paged:
            assert slots.shape[-1] % self.page_size == 0, "a paged read takes whole pages of slots"
            pages = flat.view(-1, self.page_size)  # [P, page]
            rec = self.page_of_slot[pages[:, 0]].clamp(min=0)[:, None]  # [P, 1]
            codes = gather_rows(self.k_codes[i], pages)  # [P, page, H, D/2]
        else:
            rec, codes = self.page_of_slot[flat].clamp(min=0), self.k_codes[i][flat]
        k = dequantize_int4_keys(codes, self.k_scale[i][rec], self.k_offset[i][rec], dtype)
        k = k.view(-1, self.num_kv_heads, self.head_dim)
        v = dequantize_int4_values(
            self.v_codes[i][flat], self.v_scale[i][flat], self.v_offset[i][flat], self.group, dtype
        )
        row = self.row_of_slot[flat]
        staged = (row >= 0).nonzero().squeeze(1)
        if staged.numel():
            k[staged] = self.k_stage[i][row[staged]].to(dtype)
            v[staged] = self.v_stage[i][row[staged]].to(dtype)
        return k, v


def check_int4_shape(head_dim: int, page_size: int) -> None:
    if page_size < 8:
        raise ValueError(
            f"page_size: the int4 KV cache quantizes keys over whole pages; use --page-size >= 8 "
            f"(e.g. 32), got {page_size}"
        )
    if head_dim % 2 or head_dim % min(VALUE_GROUP, head_dim):
        raise ValueError(f"kv_cache_dtype: int4 needs an even head_dim, got {head_dim}")


def stage_rows(page_size: int, max_requests: int) -> int:
    """Staging rows: each request's partial page, plus the earlier tokens of the pages one
    forward fills (freed once the forward has written its last layer)."""
    return 2 * page_size * max_requests
