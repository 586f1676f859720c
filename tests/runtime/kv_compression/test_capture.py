"""The queries a compressing request keeps while its prompt is prefilled, over chunks."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from runtime.kv_compression.capture import CompressionState, query_capture


def test_capture_keeps_the_last_window_across_chunks():
    state = CompressionState(start=0, window=5, num_layers=2)
    plain = SimpleNamespace(kv_state=None)
    req = SimpleNamespace(kv_state=state)
    tokens = torch.arange(20.0)[:, None, None].expand(20, 3, 2)  # token t's query is t
    # chunk 1: positions 0..3 (a plain request's 6 rows come first in the batch)
    capture = query_capture([plain, req], [6, 4])
    batch_q = torch.cat([torch.full((6, 3, 2), -1.0), tokens[0:4]])
    for layer in range(2):
        capture.record(layer, batch_q)
    assert state.queries[0][:, 0, 0].tolist() == [0, 1, 2, 3]
    # chunk 2: positions 4..6, shorter than the window: earlier queries fill it up
    capture = query_capture([req], [3])
    for layer in range(2):
        capture.record(layer, tokens[4:7])
    assert state.queries[1][:, 0, 0].tolist() == [2, 3, 4, 5, 6]
    assert query_capture([plain], [6]) is None  # nothing to capture: no overhead
