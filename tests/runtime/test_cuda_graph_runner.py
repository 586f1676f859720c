"""The decode-graph runner's fixed buffers, padding and metadata refills, checked on the CPU.

Capture and replay are stood in for by `EagerGraph` (re-running the captured function on the
same buffers), so everything but the CUDA graph itself runs: a padded decode batch replayed
through the Triton backend's graph metadata gives the eager step's logits. On CUDA the same
runs on the GPU (real capture is covered by the whole-model test in tests/kernels).
"""

from __future__ import annotations

import os

import pytest
import torch

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

from kernels.forward_batch import ForwardBatch, ForwardMode  # noqa: E402
from runtime.cuda_graph_runner import CudaGraphRunner, capture_sizes  # noqa: E402
from runtime.model_runner import ModelRunner  # noqa: E402
from runtime.server_args import ServerArgs  # noqa: E402


class EagerGraph:
    """Replays by re-running the captured function on the runner's fixed buffers."""

    def __init__(self, fn, pool=None) -> None:
        self.fn = fn
        self.output = fn()
        self.replays = 0

    def replay(self) -> None:
        self.output.copy_(self.fn())
        self.replays += 1


def test_capture_sizes_cover_every_batch_up_to_the_largest():
    assert capture_sizes(4) == [1, 2, 4]
    sizes = capture_sizes(160)
    assert sizes[:5] == [1, 2, 4, 8, 16] and sizes[-1] == 160 and sizes == sorted(set(sizes))
    assert capture_sizes(3) == [1, 2, 3]


def _batch(runner, mode, ids, positions, locs, rows, seq_lens, prefix=None, ext=None):
    return ForwardBatch(
        mode=mode,
        input_ids=torch.tensor(ids, device=DEVICE),
        positions=torch.tensor(positions, device=DEVICE),
        out_cache_loc=locs.to(DEVICE),
        req_pool_indices=torch.tensor(rows, device=DEVICE),
        seq_lens=torch.tensor(seq_lens, device=DEVICE),
        req_to_token=runner.req_to_token_pool.req_to_token,
        kv_cache=runner.kv_pool,
        seq_lens_cpu=seq_lens,
        prefix_lens_cpu=prefix or [],
        extend_lens_cpu=ext or [],
    )


@pytest.fixture(scope="module")
def runner():
    args = ServerArgs(
        device=DEVICE,
        dtype="float32",
        # dense weights: a quantized layer takes another kernel from 4 rows, and the replay pads
        # three rows to four
        quantization="none",
        attention_backend="triton",
        disable_cuda_graph=True,  # runner.forward stays eager: the reference here
        max_total_tokens=256,
        max_running_requests=4,
        cuda_graph_max_bs=4,
        disable_packed_gemm=True,
        log_level="error",
    )
    return ModelRunner(args)


def _prefill(runner, prompts, shared=None):
    """Prefills each prompt in its own request slot with one more KV slot for a decode step.
    `shared`: (row, of row, tokens) takes the first tokens' slots from an earlier row."""
    table = runner.req_to_token_pool.req_to_token
    rows, locs = [], []
    for i, p in enumerate(prompts):
        row = runner.req_to_token_pool.alloc()
        reuse = shared[2] if shared and shared[0] == i else 0
        slots = runner.kv_pool.alloc(len(p) + 1 - reuse)  # the prompt, then one decoded token
        if reuse:
            slots = torch.cat([locs[shared[1]][:reuse], slots])
        table[row, : len(p) + 1] = slots.to(DEVICE)
        rows.append(row)
        locs.append(slots)
        prefill = _batch(
            runner, ForwardMode.EXTEND, p[reuse:], list(range(reuse, len(p))),
            slots[reuse:-1], [row], [len(p)], [reuse], [len(p) - reuse],
        )  # fmt: skip
        runner.forward(prefill, torch.arange(len(p) - reuse, device=DEVICE))
    return rows, locs


def _replay_and_compare(runner, graphs, decode, key):
    eager = runner.forward(decode(), torch.arange(3, device=DEVICE))  # an eager step
    before = graphs.graphs[key].replays
    replayed = graphs.replay(decode())  # three rows padded to the graph of four
    assert graphs.graphs[key].replays == before + 1
    assert replayed.shape == eager.shape
    # a batch of four sums in another order than one of three: float32 rounding only
    assert torch.allclose(replayed, eager, atol=1e-3, rtol=1e-4), (replayed - eager).abs().max()
    assert replayed.argmax(-1).tolist() == eager.argmax(-1).tolist()


@pytest.mark.slow
def test_padded_replay_matches_the_eager_decode_step(runner):
    prompts = [[1, 2, 3, 4, 5], [9, 8, 7], [100, 200, 300, 400, 500, 600, 700]]
    rows, locs = _prefill(runner, prompts)
    lens = [len(p) for p in prompts]

    def decode() -> ForwardBatch:
        return _batch(
            runner, ForwardMode.DECODE, [11, 12, 13], lens,
            torch.stack([s[-1] for s in locs]), rows, [n + 1 for n in lens],
        )  # fmt: skip

    graphs = CudaGraphRunner(runner, graph_type=EagerGraph)
    assert sorted(graphs.graphs) == [(b, c) for b in (1, 2, 4) for c in (False, True)]
    _replay_and_compare(runner, graphs, decode, (4, False))
    for r in rows:
        runner.req_to_token_pool.free(r)


@pytest.mark.slow
def test_cascade_replay_matches_the_eager_cascade_step(runner):
    """Rows 0 and 2 share a six-token prefix (one group); row 1 shares nothing."""
    prompts = [[1, 2, 3, 4, 5, 6], [9, 8, 7], [1, 2, 3, 4, 5, 6, 50, 60]]
    rows, locs = _prefill(runner, prompts, shared=(2, 0, 6))
    lens = [len(p) for p in prompts]

    def decode() -> ForwardBatch:
        batch = _batch(
            runner, ForwardMode.DECODE, [11, 12, 13], lens,
            torch.stack([s[-1] for s in locs]), rows, [n + 1 for n in lens],
        )  # fmt: skip
        batch.prefix_groups = [([0, 2], 6)]
        return batch

    graphs = CudaGraphRunner(runner, graph_type=EagerGraph)
    assert graphs.can_run(decode())
    _replay_and_compare(runner, graphs, decode, (4, True))
    # slot lists longer than the graph buffers: the step runs eagerly instead
    too_long = decode()
    too_long.seq_lens_cpu = [runner.max_total_tokens, 2, 2]
    too_long.prefix_groups = []
    assert not graphs.can_run(too_long)
    for r in rows:
        runner.req_to_token_pool.free(r)
