"""The decode-graph runner's fixed buffers, padding and metadata refills, checked on the CPU.

Capture and replay are stood in for by `EagerGraph` (re-running the captured function on the
same buffers), so everything but the CUDA graph itself runs: a padded decode batch replayed
through the Triton backend's graph metadata gives the eager step's logits.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from runtime.cuda_graph_runner import CudaGraphRunner, capture_sizes  # noqa: E402
from runtime.forward_batch import ForwardBatch, ForwardMode  # noqa: E402
from runtime.model_runner import ModelRunner  # noqa: E402
from runtime.server_args import ServerArgs  # noqa: E402


class EagerGraph:
    """Replays by re-running the captured function on the runner's fixed buffers."""

    def __init__(self, fn, pool=None) -> None:
        self.fn = fn
        self.output = fn()

    def replay(self) -> None:
        self.output.copy_(self.fn())


def test_capture_sizes_cover_every_batch_up_to_the_largest():
    assert capture_sizes(4) == [1, 2, 4]
    sizes = capture_sizes(160)
    assert sizes[:5] == [1, 2, 4, 8, 16] and sizes[-1] == 160 and sizes == sorted(set(sizes))
    assert capture_sizes(3) == [1, 2, 3]


def _batch(runner, mode, ids, positions, locs, rows, seq_lens, prefix=None, ext=None):
    return ForwardBatch(
        mode=mode,
        input_ids=torch.tensor(ids),
        positions=torch.tensor(positions),
        out_cache_loc=locs,
        req_pool_indices=torch.tensor(rows),
        seq_lens=torch.tensor(seq_lens),
        req_to_token_pool=runner.req_to_token_pool,
        kv_pool=runner.kv_pool,
        seq_lens_cpu=seq_lens,
        prefix_lens_cpu=prefix or [],
        extend_lens_cpu=ext or [],
    )


@pytest.mark.slow
def test_padded_replay_matches_the_eager_decode_step():
    args = ServerArgs(
        device="cpu",
        attention_backend="triton",
        max_total_tokens=256,
        max_running_requests=4,
        cuda_graph_max_bs=4,
        disable_packed_gemm=True,
        log_level="error",
    )
    runner = ModelRunner(args)
    prompts = [[1, 2, 3, 4, 5], [9, 8, 7], [100, 200, 300, 400, 500, 600, 700]]
    table = runner.req_to_token_pool.req_to_token
    rows, locs = [], []
    for p in prompts:
        row = runner.req_to_token_pool.alloc()
        slots = runner.kv_pool.alloc(len(p) + 1)  # the prompt, then one decoded token
        table[row, : len(p) + 1] = slots
        rows.append(row)
        locs.append(slots)
    lens = [len(p) for p in prompts]
    prefill = _batch(
        runner, ForwardMode.EXTEND, sum(prompts, []), [i for n in lens for i in range(n)],
        torch.cat([s[:-1] for s in locs]), rows, lens, [0] * 3, lens,
    )  # fmt: skip
    runner.forward(prefill, torch.arange(sum(lens)))

    def decode() -> ForwardBatch:
        return _batch(
            runner, ForwardMode.DECODE, [11, 12, 13], lens,
            torch.stack([s[-1] for s in locs]), rows, [n + 1 for n in lens],
        )  # fmt: skip

    eager = runner.forward(decode(), torch.arange(3))
    graphs = CudaGraphRunner(runner, graph_type=EagerGraph)
    assert sorted(graphs.graphs) == [1, 2, 4]
    replayed = graphs.replay(decode())  # three rows padded to the graph of four
    assert replayed.shape == eager.shape
    # a batch of four sums in another order than one of three: float32 rounding only
    assert torch.allclose(replayed, eager, atol=1e-3, rtol=1e-4), (replayed - eager).abs().max()
    assert replayed.argmax(-1).tolist() == eager.argmax(-1).tolist()
