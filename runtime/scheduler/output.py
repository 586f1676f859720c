"""What a step tells its callers: token outputs, and the input logprobs gathered on the way.

A request's input logprobs are collected while its prompt is prefilled (possibly over several
chunks) and sent once, with its first output after the prompt has been seen.
"""

from __future__ import annotations

import torch

from runtime.io_struct import TokenOutput
from runtime.scheduler.req import Req


def input_logprob_positions(req: Req) -> range:
    """Prompt positions of this extend whose next-token logprob the request asked for: the
    logprob of token j comes from the logits at position j - 1."""
    if not req.return_logprob or req.sent_input_logprobs:
        return range(0)
    start, end = req.kv_len, req.kv_len + req.extend_len
    lo = max(req.logprob_start_len, 1) - 1
    return range(max(lo, start), min(len(req.input_ids) - 1, end))


def record_input_logprobs(req: Req, logits: torch.Tensor, positions: range) -> None:
    logprobs = torch.log_softmax(logits, dim=-1)
    targets = torch.tensor([req.input_ids[p + 1] for p in positions], device=logits.device)
    chosen = logprobs.gather(1, targets[:, None]).squeeze(1).tolist()
    req.input_token_logprobs += list(zip(chosen, targets.tolist()))
    if req.top_logprobs_num:
        vals, idx = logprobs.topk(req.top_logprobs_num, dim=-1)
        req.input_top_logprobs += [list(zip(v, i)) for v, i in zip(vals.tolist(), idx.tolist())]


def make_output(req: Req, new_ids: list[int]) -> TokenOutput:
    out = TokenOutput(
        rid=req.rid,
        new_token_ids=new_ids,
        prompt_tokens=len(req.input_ids),
        completion_tokens=len(req.output_ids),
        cached_tokens=req.cached_tokens,
        finish_reason=req.finished,
        queue_time=req.queue_time,
        kv_tokens_kept=req.kv_tokens_kept,
    )
    prompt_seen = req.kv_len >= len(req.input_ids) or req.finished
    if req.return_logprob and not req.sent_input_logprobs and prompt_seen:
        first = [(None, req.input_ids[0])] if req.logprob_start_len == 0 else []
        out.input_token_logprobs = first + req.input_token_logprobs
        if req.top_logprobs_num:
            out.input_top_logprobs = ([None] if first else []) + req.input_top_logprobs
        req.sent_input_logprobs = True
    return out
