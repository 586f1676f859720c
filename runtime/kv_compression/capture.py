"""What compression needs from the prefill: per layer, the queries of the prompt's last
positions (SnapKV and PyramidKV score every prompt position by the attention they pay it).
The keys need no capture: they stay in the KV pool until the request is compressed."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class CompressionState:
    """A compressed request's bookkeeping from admission until its KV is released."""

    start: int  # first position compression may drop: the cached prefix it shares ends here
    window: int  # how many trailing queries the method scores with (0: none)
    num_layers: int
    # per layer, post-rotary queries of the last positions computed so far, [<= window, H, D]
    queries: list[torch.Tensor | None] = field(default_factory=list)
    # after compaction, when layers keep different counts (PyramidKV): per layer the first
    # table column it does not read, and the column where reading resumes
    holes: tuple[list[int], int] | None = None
    # H2O: attention accumulated per layer, KV head and private column, [layers, Hkv, width]
    scores: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.queries = [None] * self.num_layers


class QueryCapture:
    """Set on an extend batch's `query_capture`; the attention layer hands it each layer's
    queries. items: (state, first token row, end row) of each compressing request."""

    def __init__(self, items: list[tuple[CompressionState, int, int]]) -> None:
        self.items = items

    def record(self, layer_id: int, q: torch.Tensor, batch=None) -> None:
        """q: [num_tokens, num_heads, head_dim], post-rotary."""
        for state, lo, hi in self.items:
            w = state.window
            new = q[max(lo, hi - w) : hi].to(torch.float32, copy=True)
            old = state.queries[layer_id]
            if old is not None and new.shape[0] < w:  # a short last chunk: keep earlier ones
                new = torch.cat([old, new])[-w:]
            state.queries[layer_id] = new


def query_capture(reqs, extend_lens: list[int]) -> QueryCapture | None:
    """The capture for an extend batch, or None when no request in it compresses."""
    items, row = [], 0
    for req, ext in zip(reqs, extend_lens):
        state = req.kv_state
        if state is not None and state.window > 0:
            items.append((state, row, row + ext))
        row += ext
    return QueryCapture(items) if items else None
