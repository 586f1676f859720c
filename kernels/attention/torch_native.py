"""Attention in plain torch: the CPU default and the reference the other backends are tested against."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kernels.attention.backend import AttentionBackend
from kernels.cpu import kernels_apply


@dataclass
class _DecodeMeta:
    suffix_idx: torch.Tensor  # [batch, max_suffix] each request's KV slots past its shared prefix
    suffix_mask: torch.Tensor  # [batch, 1, 1, max_suffix] 0 where the key is real, -inf past it
    groups: list[tuple[torch.Tensor, torch.Tensor]]  # (batch rows, shared prefix slots [P])
    # rows whose layers read fewer compacted prompt slots: (rows [R], per layer the first
    # unread suffix column [num_layers, R], the column where reading resumes [R])
    holes: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    # batch-invariant decode: each row's key count, to attend row by row without padding
    row_lens: list[int] | None = None
    # every row's suffix starts a page of a pool that quantizes whole pages: read page-wise
    paged: bool = False
    suffix_lens: torch.Tensor | None = None  # [B] int64, each row's keys in suffix_idx


@dataclass
class _ExtendMeta:
    singles: set[int]  # extend rows of one token, attended to as a decode batch
    token_rows: torch.Tensor  # [S] their tokens' rows in q
    decode: _DecodeMeta


def _layer_mask(meta: _DecodeMeta, layer_id: int) -> torch.Tensor:
    """The decode mask with the columns this layer does not read hidden (PyramidKV)."""
    rows, starts, ends = meta.holes
    offs = torch.arange(meta.suffix_mask.shape[-1], device=rows.device)
    hide = (offs[None, :] >= starts[layer_id][:, None]) & (offs[None, :] < ends[:, None])
    mask = meta.suffix_mask.clone()
    mask[rows, 0, 0] = mask[rows, 0, 0].masked_fill(hide, float("-inf"))
    return mask


def _attend(q, keys, values, scale: float, mask=None, causal: bool = False):
    """q: [n, Hkv, Lq, D], keys/values: [n, Hkv, L, D], mask: additive [n, 1, 1, L] or None;
    `causal`: query i sees keys up to i (same lengths). Returns (out [n, Hkv, Lq, D],
    log-sum-exp [n, Hkv, Lq]) so partial results can be merged."""
    if q.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, keys, values, is_causal=causal, attn_mask=mask, scale=scale
        )
        return out, lse
    scores = torch.matmul(q.float(), keys.float().transpose(-1, -2)) * scale  # softmax in fp32
    if mask is not None:
        scores = scores + mask
    if causal:
        above = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).triu_(1)
        scores = scores.masked_fill(above, float("-inf"))
    out = torch.matmul(torch.softmax(scores, dim=-1), values.float())
    return out.to(q.dtype), torch.logsumexp(scores, dim=-1)


def _merge(out_a, lse_a, out_b, lse_b) -> torch.Tensor:
    """Two attention results over disjoint key sets as one softmax over both: out [..., D] in
    out_a's dtype, weighted by each part's log-sum-exp [...] in float32."""
    lse_a, lse_b = lse_a.float(), lse_b.float()
    top = torch.maximum(lse_a, lse_b)
    w_a, w_b = torch.exp(lse_a - top), torch.exp(lse_b - top)
    merged = (out_a.float() * w_a[..., None] + out_b.float() * w_b[..., None]) / (w_a + w_b)[
        ..., None
    ]
    return merged.to(out_a.dtype)


SPLIT_MIN = 256  # new tokens and cached ones from which extend attends to them apart


def _extend_split(qi, ki, vi, prefix: int, scale: float) -> torch.Tensor:
    """A long extend over a long cached prefix, as two kernel calls merged: every query sees
    the whole prefix (no mask, so the kernel reads it once for a KV head's query heads), and
    the new tokens causally (the kernel skips the blocks above the diagonal, which a
    bottom-right mask over all keys makes it compute). qi: [1, H, ext, D], ki/vi:
    [1, Hkv, prefix + ext, D] -> [1, H, ext, D]."""
    _, h, ext, d = qi.shape
    hkv = ki.shape[1]
    group = h // hkv
    old, old_lse = _attend(
        qi.reshape(1, hkv, group * ext, d), ki[:, :, :prefix], vi[:, :, :prefix], scale
    )
    kn, vn = ki[:, :, prefix:], vi[:, :, prefix:]
    if group > 1:
        kn, vn = kn.repeat_interleave(group, 1), vn.repeat_interleave(group, 1)
    new, new_lse = _attend(qi, kn, vn, scale, causal=True)
    return _merge(old.reshape(1, h, ext, d), old_lse.reshape(1, h, ext), new, new_lse)


QUERY_BLOCK = 64  # queries per attention call on a pool that reads own pages apart


def _extend_own_pages(pool, layer, qi, slots, prefix, gqa):
    """Extend on a pool that reads a query's own page apart (`own_page_size`): each block of
    whole pages of queries attends to the earlier pages as stored and to its own pages exactly,
    with one softmax over both, so it reads about the keys causal attention reads, not all of
    them twice. qi: [1, H, new tokens, D] -> the same shape."""
    ps, seq_len, dev = pool.own_page_size, slots.numel(), qi.device
    first = prefix - prefix % ps
    last = (seq_len - 1) - (seq_len - 1) % ps  # where the last query's page begins
    k_st, v_st = pool.read_kv(layer.layer_id, slots[:last], qi.dtype, paged=True)
    k_ex, v_ex = pool.read_exact(layer.layer_id, slots[first:], qi.dtype)
    block = max(ps, QUERY_BLOCK - QUERY_BLOCK % ps)
    # One buffer per K and V: the stored keys, each block's exact keys written right after the
    # stored keys it sees. Blocks run last to first, so a block overwrites only stored keys
    # that no block still to run reads, and no block copies the stored keys again.
    pad = k_st.new_empty(block, *k_st.shape[1:])
    k_buf, v_buf = torch.cat([k_st, pad]), torch.cat([v_st, pad])
    out = torch.empty_like(qi)
    for start in reversed(range(first, seq_len, block)):
        end = min(start + block, seq_len)
        seen = (end - 1) - (end - 1) % ps  # stored keys before the block's last page
        n = seen + end - start
        k_buf[seen:n], v_buf[seen:n] = (
            k_ex[start - first : end - first],
            v_ex[start - first : end - first],
        )
        k_pos = torch.cat([torch.arange(seen, device=dev), torch.arange(start, end, device=dev)])
        exact = torch.arange(n, device=dev) >= seen
        q_pos = torch.arange(max(prefix, start), end, device=dev)
        same_page = k_pos[None, :] // ps == q_pos[:, None] // ps
        mask = (k_pos[None, :] <= q_pos[:, None]) & (same_page == exact[None, :])
        rows = slice(q_pos[0] - prefix, end - prefix)
        out[:, :, rows] = F.scaled_dot_product_attention(
            qi[:, :, rows],
            k_buf[:n].transpose(0, 1)[None],
            v_buf[:n].transpose(0, 1)[None],
            attn_mask=mask,
            scale=layer.scaling,
            enable_gqa=gqa,
        )
    return out


def _decode_meta(
    table, pool_rows, seq_lens, prefix_groups=(), kv_holes=(), invariant=False, page_size=0
):
    """Each row's KV slots past its shared prefix, padded to the longest, with the mask.
    `page_size`: a pool's own page size; when every suffix starts a page, the width is padded
    to whole pages so that the pool can read them page-wise."""
    kv = table[pool_rows, : max(seq_lens)]  # [B, L]
    shared, groups = [0] * len(seq_lens), []
    for rows, length in prefix_groups:
        groups.append((torch.tensor(rows, device=kv.device), kv[rows[0], :length]))
        for r in rows:
            shared[r] = length
    suffix_lens = [n - p for n, p in zip(seq_lens, shared)]
    width = max(suffix_lens)
    paged = bool(page_size) and not kv_holes and all(p % page_size == 0 for p in shared)
    if paged:
        width += -width % page_size
    offs = torch.arange(width, device=kv.device)
    pos = (torch.tensor(shared, device=kv.device)[:, None] + offs[None, :]).clamp(
        max=kv.shape[1] - 1
    )
    real = offs[None, :] < torch.tensor(suffix_lens, device=kv.device)[:, None]
    mask = torch.zeros(real.shape, device=kv.device).masked_fill(~real, float("-inf"))
    meta = _DecodeMeta(kv.gather(1, pos), mask[:, None, None, :], groups, paged=paged)
    meta.suffix_lens = torch.tensor(suffix_lens, dtype=torch.int64)
    if invariant:
        meta.row_lens = suffix_lens
    if kv_holes:  # columns counted past each row's shared prefix
        rows = [r for r, _, _ in kv_holes]
        starts = [[s - shared[r] for s in ss] for r, ss, _ in kv_holes]
        meta.holes = (
            torch.tensor(rows, device=kv.device),
            torch.tensor(starts, device=kv.device).T,
            torch.tensor([e - shared[r] for r, _, e in kv_holes], device=kv.device),
        )
    return meta


KERNEL_GROUPS, KERNEL_HEAD_DIMS = (1, 2, 3, 4, 6, 8), (64, 128)


def _kernel_pool(qg, layer, pool):
    """The layer's K and V buffers when the C++ kernel can read them in place, else None
    (another dtype or device, a quantized pool, a head layout it was not built for)."""
    if (
        pool.own_page_size
        or qg.shape[2] not in KERNEL_GROUPS
        or qg.shape[3] not in KERNEL_HEAD_DIMS
        or pool.kv_scales(layer.layer_id) is not None
        or not kernels_apply(qg)
    ):
        return None
    k, v = pool.get_kv(layer.layer_id)
    if k.dtype != qg.dtype or not (k.is_contiguous() and v.is_contiguous()):
        return None
    return k, v


def _suffix_by_kernel(qg, layer, pool, meta: _DecodeMeta):
    """Each row over its own keys by the C++ kernel, reading the pool in place: (out, lse), or
    None where the kernel does not apply (see `_kernel_pool`; PyramidKV's hidden columns)."""
    kv = None if meta.holes is not None else _kernel_pool(qg, layer, pool)
    if kv is None:
        return None
    return torch.ops.radixserve_cpu.decode_attention(
        qg.contiguous(), *kv, meta.suffix_idx, meta.suffix_lens, layer.scaling
    )


# An extend runs as decode rows on the C++ kernel when it has at most this many new tokens or
# this few cached ones: there it beat the flash kernel 1.2-2.5x (one layer, one thread: 30 new
# over 730 cached 1.09 -> 0.69 ms, 200 new 1.59 -> 0.65 ms); each row reads its keys again, so
# long extends over long prefixes stay on flash (512 over 6,000: 0.9x).
ROWS_MAX_NEW, ROWS_MAX_PREFIX = 256, 1024


def _rows_pay(prefix: int, ext: int) -> bool:
    return ext <= ROWS_MAX_NEW or prefix < ROWS_MAX_PREFIX


def _extend_rows_by_kernel(qi, layer, pool, slots, prefix: int):
    """Each new token (qi [ext, H, D]) as a decode row over its own keys. Under deterministic
    inference always: its numbers then depend on neither the chunk nor the batch it was computed
    in, and a prefix cached by one request holds the bits another would compute. None where the
    kernel does not apply."""
    ext, h, d = qi.shape
    qg = qi.reshape(ext, layer.num_kv_heads, h // layer.num_kv_heads, d)
    kv = _kernel_pool(qg, layer, pool)
    if kv is None:
        return None
    lens = torch.arange(prefix + 1, prefix + ext + 1, dtype=torch.int64)
    rows = slots[None].expand(ext, -1)  # one slot row for every token, not copied
    out, _ = torch.ops.radixserve_cpu.decode_attention(
        qg.contiguous(), *kv, rows, lens, layer.scaling
    )
    return out.view(ext, h, d)


def _decode_attention(q, layer, pool, meta: _DecodeMeta) -> torch.Tensor:
    """One query token per row over its KV (and its group's shared prefix, merged)."""
    b, h, d = q.shape
    hkv = layer.num_kv_heads
    # Grouped-query attention without copying K/V per head: a KV head's query heads are
    # laid along the query axis. qg: [B, Hkv, group, D]
    qg = q.view(b, hkv, h // hkv, d)
    own = _suffix_by_kernel(qg, layer, pool, meta)
    if own is not None:  # row by row at its own length: batch-invariant as it is
        return _merge_shared_prefixes(qg, layer, pool, meta, *own).reshape(b, h, d)
    # Read (and dequantize) only the slots this batch needs, never the whole pool. A decode
    # row's own page is in its own slots, past any shared prefix.
    keys, values = pool.read_own_page(layer.layer_id, meta.suffix_idx, q.dtype, meta.paged)
    keys, values = keys.transpose(1, 2), values.transpose(1, 2)  # [B, Hkv, L, D]
    mask = meta.suffix_mask if meta.holes is None else _layer_mask(meta, layer.layer_id)
    mask = mask.to(q.dtype)
    if meta.row_lens is not None:
        # Row by row at its own length: padding changes the kernel's blocks and sums.
        return torch.cat(
            [
                _attend(qg[r : r + 1], keys[r : r + 1, :, :n], values[r : r + 1, :, :n],
                        layer.scaling, mask[r : r + 1, ..., :n])[0]
                for r, n in enumerate(meta.row_lens)
            ]
        ).reshape(b, h, d)  # fmt: skip
    out, lse = _attend(qg, keys, values, layer.scaling, mask)
    return _merge_shared_prefixes(qg, layer, pool, meta, out, lse).reshape(b, h, d)


def _merge_shared_prefixes(qg, layer, pool, meta: _DecodeMeta, out, lse) -> torch.Tensor:
    """Each group's shared prefix attended once for all its rows' queries, merged into their
    own-key results (out [B, Hkv, G, D], lse [B, Hkv, G])."""
    hkv, d = layer.num_kv_heads, qg.shape[-1]
    for rows, slots in meta.groups:
        n = len(rows)
        qq = qg[rows].transpose(0, 1).reshape(1, hkv, -1, d)  # every row's queries at once
        kp, vp = pool.read_kv(layer.layer_id, slots, qg.dtype)
        kp, vp = kp.transpose(0, 1)[None], vp.transpose(0, 1)[None]  # [1, Hkv, P, D]
        part, part_lse = _attend(qq, kp, vp, layer.scaling)
        part = part.view(hkv, n, -1, d).transpose(0, 1)
        part_lse = part_lse.view(hkv, n, -1).transpose(0, 1)
        out[rows] = _merge(out[rows], lse[rows], part, part_lse)
    return out


class TorchNativeBackend(AttentionBackend):
    """Decode: each request's own KV in one padded batch, plus one pass per shared prefix,
    merged by log-sum-exp (cascade attention). Extend loops over requests, except one-token
    rows, which attend together as a decode batch."""

    def reads_pool(self, pool) -> bool:
        return True  # through read_kv, which dequantizes only the slots asked for

    def init_forward_metadata(self, batch) -> None:
        table, seq_lens = batch.req_to_token, batch.seq_lens_cpu
        if batch.is_decode:
            batch.attn_metadata = _decode_meta(
                table, batch.req_pool_indices, seq_lens, batch.prefix_groups, batch.kv_holes,
                batch.batch_invariant, batch.kv_cache.own_page_size,
            )  # fmt: skip
            return
        # One-token rows of an extend (decoding requests riding in a prefill's forward) attend
        # together, as a decode batch does, rather than one call each.
        batch.attn_metadata = None
        singles = [i for i, n in enumerate(batch.extend_lens_cpu) if n == 1]
        if len(singles) > 1 and not batch.kv_cache.own_page_size:  # int4: the loop's own-page rule
            starts = [0, *itertools.accumulate(batch.extend_lens_cpu)]
            rows = torch.tensor(singles, device=table.device)
            at = {row: j for j, row in enumerate(singles)}  # batch row -> row among singles
            groups = [
                ([at[r] for r in members], length)
                for members, length in batch.prefix_groups
                if all(r in at for r in members)
            ]
            batch.attn_metadata = _ExtendMeta(
                set(singles),
                torch.tensor([starts[i] for i in singles], device=table.device),
                _decode_meta(
                    table, batch.req_pool_indices[rows], [seq_lens[i] for i in singles], groups
                ),
            )

    def forward_decode(self, q, k, v, layer, batch) -> torch.Tensor:
        pool = batch.kv_cache
        pool.set_kv(layer.layer_id, batch.out_cache_loc, k, v)
        return _decode_attention(q, layer, pool, batch.attn_metadata)

    def forward_extend(self, q, k, v, layer, batch) -> torch.Tensor:
        pool = batch.kv_cache
        pool.set_kv(layer.layer_id, batch.out_cache_loc, k, v)
        table = batch.req_to_token
        out = torch.empty_like(q)
        meta: _ExtendMeta | None = batch.attn_metadata
        if meta is not None:
            rows = meta.token_rows
            out[rows] = _decode_attention(q[rows], layer, pool, meta.decode)
        start = 0
        gqa = layer.num_heads != layer.num_kv_heads
        for i, (prefix, ext) in enumerate(zip(batch.prefix_lens_cpu, batch.extend_lens_cpu)):
            if meta is not None and i in meta.singles:
                start += ext
                continue
            seq_len = prefix + ext
            slots = table[batch.req_pool_indices[i], :seq_len]
            if batch.batch_invariant or _rows_pay(prefix, ext):
                oi = _extend_rows_by_kernel(q[start : start + ext], layer, pool, slots, prefix)
                if oi is not None:
                    out[start : start + ext] = oi
                    start += ext
                    continue
            # 4-D inputs: with 3-D ones torch takes its slow math path on the CPU.
            qi = q[start : start + ext].transpose(0, 1)[None]  # [1, H, ext, D]
            if pool.own_page_size:
                oi = _extend_own_pages(pool, layer, qi, slots, prefix, gqa)
            else:
                ki, vi = pool.read_kv(layer.layer_id, slots, q.dtype)
                ki, vi = ki.transpose(0, 1)[None], vi.transpose(0, 1)[None]  # [1, Hkv, keys, D]
                if min(prefix, ext) >= SPLIT_MIN:
                    oi = _extend_split(qi, ki, vi, prefix, layer.scaling)
                else:
                    mask = None  # none: plain causal
                    if prefix:
                        # Query j sits at position prefix + j and sees keys up to it.
                        qpos = torch.arange(prefix, seq_len, device=q.device)
                        mask = torch.arange(seq_len, device=q.device)[None, :] <= qpos[:, None]
                    oi = F.scaled_dot_product_attention(
                        qi, ki, vi, attn_mask=mask, is_causal=mask is None,
                        scale=layer.scaling, enable_gqa=gqa,
                    )  # fmt: skip
            out[start : start + ext] = oi[0].transpose(0, 1)
            start += ext
        return out
