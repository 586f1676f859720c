"""A model runner with no model, for driving the real scheduler in milliseconds.

Its KV pool stores each token's id as its "key", and its next token is a hash of the whole
sequence it finds through the request-to-token table. So a request whose table points at the
wrong slots (a bad prefix match, a slot freed too early and reused) writes different tokens
than `expected_output` predicts, and the tests see it.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from kernels.forward_batch import ForwardBatch
from runtime.memory_pool import KVPool, ReqToTokenPool
from runtime.server_args import SchedulerArgs

VOCAB = 61


def next_token(seq: list[int]) -> int:
    return sum((i + 1) * t for i, t in enumerate(seq)) * 7 % VOCAB


def expected_output(prompt: list[int], max_new_tokens: int) -> list[int]:
    seq = list(prompt)
    for _ in range(max_new_tokens):
        seq.append(next_token(seq))
    return seq[len(prompt) :]


class StubRunner:
    def __init__(self, args: SchedulerArgs) -> None:
        self.args = args
        self.device = torch.device("cpu")
        self.config = SimpleNamespace(vocab_size=VOCAB)
        self.req_to_token_pool = ReqToTokenPool(args.max_running_requests, 512, self.device)
        self.kv_pool = KVPool(args.max_total_tokens, 1, 1, 1, torch.float32, self.device)
        self.forwards = 0

    def forward(self, batch: ForwardBatch, logit_rows: torch.Tensor | None = None) -> torch.Tensor:
        self.forwards += 1
        ids = batch.input_ids.to(torch.float32)[:, None, None]
        batch.kv_cache.set_kv(0, batch.out_cache_loc, ids, ids)
        keys, _ = batch.kv_cache.get_kv(0)
        ext = batch.extend_lens_cpu or [1] * len(batch.seq_lens_cpu)
        logits, row = [], 0
        for i, (n, e) in enumerate(zip(batch.seq_lens_cpu, ext)):
            slots = batch.req_to_token[batch.req_pool_indices[i], :n]
            seq = [int(t) for t in keys[slots, 0, 0].tolist()]
            for j in range(e):  # the token row at position n - e + j sees seq[: n - e + j + 1]
                out = torch.full((VOCAB,), -10.0)
                out[next_token(seq[: n - e + j + 1])] = 10.0
                logits.append(out)
            row += e
        all_rows = torch.stack(logits)
        return all_rows if logit_rows is None else all_rows[logit_rows]
