"""FlashInfer's three paged wrappers as plain torch, following their documented semantics, so
the FlashInfer backend's planning runs on a machine without CUDA.

Beyond computing attention, every `plan` checks what the backend promises FlashInfer: int32
indices, page size 1, one token in every last page, at least one page per item (FlashInfer does
not document what an empty item gives), and indptrs on the host (a device indptr would be copied
back by the real planner: a sync per step). Like FlashInfer, `run` refuses q and K/V whose dtypes
are not the planned `q_data_type` and `kv_data_type` (fp8 K/V with float queries included), and
takes optional scalar `k_scale` (folded into the softmax scale) and `v_scale` (on the output).
"""

from __future__ import annotations

import types

import torch

from tests.kernels.reference import attention


def _check_plan(qo_indptr, kv_indptr, kv_indices, last_page_len, page_size):
    assert page_size == 1
    for t in (qo_indptr, kv_indptr, last_page_len):
        assert t.device.type == "cpu" and t.dtype == torch.int32, (t.device, t.dtype)
    assert kv_indices.dtype == torch.int32
    assert qo_indptr.numel() == kv_indptr.numel() == last_page_len.numel() + 1
    assert int(kv_indptr[-1]) == kv_indices.numel() and bool((last_page_len == 1).all())
    assert bool((kv_indptr.diff() > 0).all()), "an item with no pages"


class _Paged:
    """Item i's queries `qo_indptr[i]:qo_indptr[i+1]` attend to its pages; with `causal`,
    the queries sit at the end of the item's keys."""

    def __init__(self, workspace=None, kv_layout="NHD", **kwargs) -> None:
        assert kv_layout == "NHD"
        self.plan_calls = 0

    def _plan(self, qo_indptr, kv_indptr, kv_indices, last_page_len, heads, kv_heads, dim,
              page_size, causal=False, sm_scale=None, q_data_type=None, kv_data_type=None):  # fmt: skip
        _check_plan(qo_indptr, kv_indptr, kv_indices, last_page_len, page_size)
        self.qo, self.kv = qo_indptr.tolist(), kv_indptr.tolist()
        self.indices, self.causal = kv_indices.long(), causal
        self.heads, self.kv_heads, self.scale = heads, kv_heads, sm_scale or dim**-0.5
        assert q_data_type is not None, "plan without q_data_type assumes float16"
        self.q_dtype, self.kv_dtype = q_data_type, kv_data_type or q_data_type
        self.plan_calls += 1

    def run_with_lse(self, q, paged_kv, k_scale=None, v_scale=None):
        k_cache, v_cache = (c[:, 0] for c in paged_kv)  # page size 1: [pages, Hkv, D]
        assert q.shape[1] == self.heads and k_cache.shape[1] == self.kv_heads
        if (
            q.dtype != self.q_dtype
            or k_cache.dtype != self.kv_dtype
            or v_cache.dtype != self.kv_dtype
        ):
            raise ValueError(
                f"run: q {q.dtype} / kv {k_cache.dtype}, planned {self.q_dtype} / {self.kv_dtype}"
            )
        scale = self.scale * (1.0 if k_scale is None else k_scale)
        out = torch.empty(q.shape, dtype=torch.float32, device=q.device)
        lse = torch.empty(q.shape[:2], dtype=torch.float32, device=q.device)
        for i in range(len(self.qo) - 1):
            q_i = q[self.qo[i] : self.qo[i + 1]]
            pages = self.indices[self.kv[i] : self.kv[i + 1]]
            q_pos = None
            if self.causal:
                q_pos = torch.arange(len(q_i), device=q.device) + len(pages) - len(q_i)
            o, s = attention(q_i, k_cache[pages], v_cache[pages], scale, q_pos)
            out[self.qo[i] : self.qo[i + 1]], lse[self.qo[i] : self.qo[i + 1]] = o, s
        return out * (1.0 if v_scale is None else v_scale), lse

    def run(self, q, paged_kv, k_scale=None, v_scale=None):
        return self.run_with_lse(q, paged_kv, k_scale, v_scale)[0].to(q.dtype)


class BatchPrefillWithPagedKVCacheWrapper(_Paged):
    plan = _Paged._plan


class BatchDecodeWithPagedKVCacheWrapper(_Paged):
    def plan(self, indptr, indices, last_page_len, heads, kv_heads, dim, page_size, **kwargs):
        qo = torch.arange(indptr.numel(), dtype=torch.int32)
        self._plan(qo, indptr, indices, last_page_len, heads, kv_heads, dim, page_size, **kwargs)


class MultiLevelCascadeAttentionWrapper:
    """Each level attends its items; the levels' results merge by their log-sum-exp."""

    def __init__(self, num_levels, workspace=None, kv_layout="NHD") -> None:
        self.levels = [_Paged(workspace, kv_layout) for _ in range(num_levels)]

    def plan(self, qo_indptr_arr, kv_indptr_arr, kv_indices_arr, last_page_len_arr, *shape,
             causal=False, **kwargs):  # fmt: skip
        for i, level in enumerate(self.levels):
            last = i == len(self.levels) - 1
            level._plan(qo_indptr_arr[i], kv_indptr_arr[i], kv_indices_arr[i],
                        last_page_len_arr[i], *shape, causal=causal and last, **kwargs)  # fmt: skip
            assert level.qo[-1] == self.levels[0].qo[-1], "every level covers every query"

    def run(self, q, paged_kv):
        parts = [level.run_with_lse(q, paged_kv) for level in self.levels]
        lse = torch.logsumexp(torch.stack([s for _, s in parts]), 0)
        out = sum(o * torch.exp(s - lse)[..., None] for o, s in parts)
        return out.to(q.dtype)


def module() -> types.ModuleType:
    """A stand-in `flashinfer` module for sys.modules."""
    mod = types.ModuleType("flashinfer")
    for cls in (
        BatchPrefillWithPagedKVCacheWrapper,
        BatchDecodeWithPagedKVCacheWrapper,
        MultiLevelCascadeAttentionWrapper,
    ):
        setattr(mod, cls.__name__, cls)
    return mod
