"""Attention in plain torch: the CPU default and the reference the other backends are tested against."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kernels.attention.backend import AttentionBackend


@dataclass
class _DecodeMeta:
    kv_indices: torch.Tensor  # [batch, max_len] KV slots, padded
    mask: torch.Tensor  # [batch, 1, 1, max_len] True where the key is real


class TorchNativeBackend(AttentionBackend):
    """Decode gathers every request's KV into one padded batch; extend loops over requests."""

    def init_forward_metadata(self, batch) -> None:
        if not batch.is_decode:
            batch.attn_metadata = None
            return
        max_len = max(batch.seq_lens_cpu)
        table = batch.req_to_token_pool.req_to_token
        kv_indices = table[batch.req_pool_indices, :max_len]
        pos = torch.arange(max_len, device=kv_indices.device)
        mask = (pos[None, :] < batch.seq_lens[:, None])[:, None, None, :]
        batch.attn_metadata = _DecodeMeta(kv_indices, mask)

    def forward_decode(self, q, k, v, layer, batch) -> torch.Tensor:
        pool = batch.kv_pool
        pool.set_kv(layer.layer_id, batch.out_cache_loc, k, v)
        meta: _DecodeMeta = batch.attn_metadata
        keys = pool.k_buffer[layer.layer_id][meta.kv_indices].transpose(1, 2)  # [B, Hkv, L, D]
        values = pool.v_buffer[layer.layer_id][meta.kv_indices].transpose(1, 2)
        out = F.scaled_dot_product_attention(
            q.unsqueeze(2),  # [B, H, 1, D]
            keys.to(q.dtype),
            values.to(q.dtype),
            attn_mask=meta.mask,
            scale=layer.scaling,
            enable_gqa=layer.num_heads != layer.num_kv_heads,
        )
        return out.squeeze(2)  # [B, H, D]

    def forward_extend(self, q, k, v, layer, batch) -> torch.Tensor:
        pool = batch.kv_pool
        pool.set_kv(layer.layer_id, batch.out_cache_loc, k, v)
        table = batch.req_to_token_pool.req_to_token
        k_buf, v_buf = pool.k_buffer[layer.layer_id], pool.v_buffer[layer.layer_id]
        out = torch.empty_like(q)
        start = 0
        gqa = layer.num_heads != layer.num_kv_heads
        for i, (prefix, ext) in enumerate(zip(batch.prefix_lens_cpu, batch.extend_lens_cpu)):
            seq_len = prefix + ext
            slots = table[batch.req_pool_indices[i], :seq_len]
            qi = q[start : start + ext].transpose(0, 1)  # [H, ext, D]
            ki = k_buf[slots].transpose(0, 1).to(q.dtype)  # [Hkv, seq_len, D]
            vi = v_buf[slots].transpose(0, 1).to(q.dtype)
            if prefix == 0:
                oi = F.scaled_dot_product_attention(
                    qi, ki, vi, is_causal=True, scale=layer.scaling, enable_gqa=gqa
                )
            else:
                # Query j sits at position prefix + j and sees keys up to it (bottom-right causal).
                qpos = torch.arange(prefix, seq_len, device=q.device)
                kpos = torch.arange(seq_len, device=q.device)
                mask = kpos[None, :] <= qpos[:, None]
                oi = F.scaled_dot_product_attention(
                    qi, ki, vi, attn_mask=mask, scale=layer.scaling, enable_gqa=gqa
                )
            out[start : start + ext] = oi.transpose(0, 1)
            start += ext
        return out
