"""Flat KV slot lists for kernels that read the paged pool through `indptr` + `indices`."""

from __future__ import annotations

import itertools

import torch


def ragged_kv_indices(
    table: torch.Tensor, table_rows: torch.Tensor, starts: list[int], ends: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Item i's slots are `table[table_rows[i], starts[i]:ends[i]]`.

    Returns (indptr [n + 1], indices [sum of lengths]), int32, on the table's device. The lengths
    come from the host, so the output size is known and nothing waits on the device.
    """
    device = table.device
    lens = [e - s for s, e in zip(starts, ends)]
    indptr_host = [0, *itertools.accumulate(lens)]
    total = indptr_host[-1]
    indptr = torch.tensor(indptr_host, dtype=torch.int32, device=device)
    if total == 0:
        return indptr, torch.empty(0, dtype=torch.int32, device=device)
    item = torch.repeat_interleave(
        torch.arange(len(lens), device=device),
        torch.tensor(lens, device=device),
        output_size=total,
    )
    offset = torch.tensor(starts, dtype=torch.int64, device=device) - indptr[:-1].long()
    cols = torch.arange(total, device=device) + offset[item]
    return indptr, table[table_rows.long()[item], cols].to(torch.int32)
