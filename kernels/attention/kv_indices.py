"""KV slots: flat slot lists for kernels that read the paged pool through `indptr` + `indices`,
and rows read by slot."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch


def host_indptr(lengths: Sequence[int]) -> torch.Tensor:
    """Offsets `[len(lengths) + 1]` (int32, on the CPU) of items of these lengths."""
    return torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32)


def shared_prefix_lens(num_rows: int, prefix_groups: list[tuple[list[int], int]]) -> list[int]:
    """Per batch row, the length of the radix prefix its group shares (0 outside every group)."""
    lens = [0] * num_rows
    for rows, length in prefix_groups:
        for r in rows:
            lens[r] = length
    return lens


def ragged_kv_indices(
    table: torch.Tensor, table_rows: torch.Tensor, starts: list[int], ends: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Item i's slots are `table[table_rows[i], starts[i]:ends[i]]`.

    Returns (indptr [n + 1] int32 on the CPU, indices [sum of lengths] int32 on the table's
    device). The lengths come from the host, so the output size is known and nothing waits on
    the device. The indptr stays on the host: FlashInfer's planners read it there (a device one
    would be copied back, a sync), and the Triton backend sends it over without waiting.
    """
    device = table.device
    lens = [e - s for s, e in zip(starts, ends)]
    indptr = host_indptr(lens)
    total = int(indptr[-1])
    if total == 0:
        return indptr, torch.empty(0, dtype=torch.int32, device=device)
    # One copy to the device: each item's length and its column offset.
    host = torch.tensor([lens, starts], dtype=torch.int64)
    host[1] -= indptr[:-1]
    lens_d, offset = host.to(device, non_blocking=True)
    item = torch.repeat_interleave(
        torch.arange(len(lens), device=device), lens_d, output_size=total
    )
    cols = torch.arange(total, device=device) + offset[item]
    return indptr, table[table_rows.long()[item], cols].to(torch.int32)


def without_holes(
    indptr: torch.Tensor, indices: torch.Tensor, holes: list[tuple[int, int, int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The slot lists with entries left out: holes are (item, first offset left out within the
    item, offset where it resumes). indptr on the host as `ragged_kv_indices` gives it."""
    lens = (indptr[1:] - indptr[:-1]).tolist()
    keep = torch.ones(indices.numel(), dtype=torch.bool)
    for item, lo, hi in holes:
        base = int(indptr[item])
        keep[base + lo : base + hi] = False
        lens[item] -= hi - lo
    return host_indptr(lens), indices[keep.to(indices.device)]


def gather_rows(buffer: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """`buffer[slots]` for `slots` of any shape, through index_select: on the CPU, advanced
    indexing with a 2-D index ran 7-8x slower for a decode batch's KV reads."""
    return buffer.index_select(0, slots.reshape(-1)).view(*slots.shape, *buffer.shape[1:])
