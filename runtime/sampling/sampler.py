"""Turns a batch of next-token logits into tokens, one request's parameters per row."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from runtime.sampling.sampling_params import SamplingParams


@dataclass
class SampleRow:
    """What the sampler reads of one request."""

    params: SamplingParams
    input_ids: list[int]
    output_ids: list[int]
    generator: torch.Generator | None
    banned_ids: list[int]  # tokens forbidden this step (end tokens before min_new_tokens)


@dataclass
class SampleResult:
    token_ids: list[int]
    logprobs: list[float] | None  # of the chosen tokens, under the unmodified distribution
    top_logprobs: list[list[tuple[float, int]]] | None


def apply_penalties(logits: torch.Tensor, row: SampleRow) -> None:
    """In place on one row: repetition over prompt + output, frequency/presence over output."""
    p = row.params
    device = logits.device
    if row.output_ids and (p.frequency_penalty or p.presence_penalty):
        counts = torch.bincount(
            torch.tensor(row.output_ids, device=device), minlength=logits.shape[-1]
        ).to(logits.dtype)
        logits -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(logits.dtype)
    if p.repetition_penalty != 1:
        seen = torch.tensor(sorted(set(row.input_ids) | set(row.output_ids)), device=device)
        if seen.numel():
            vals = logits[seen]
            logits[seen] = torch.where(
                vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty
            )


def apply_logit_bias(logits: torch.Tensor, bias: dict[int, float]) -> None:
    """In place on one row, as OpenAI has it: the bias is added to the token's logit."""
    ids = torch.tensor(list(bias), device=logits.device)
    logits[ids] += torch.tensor(list(bias.values()), device=logits.device, dtype=logits.dtype)


def filter_probs(
    probs: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor
):
    """Zeroes what top-k, top-p and min-p exclude; returns (sorted probs, their token ids)."""
    sorted_p, sorted_ids = probs.sort(dim=-1, descending=True)
    rank = torch.arange(probs.shape[-1], device=probs.device)[None, :]
    drop = rank >= top_k[:, None]
    drop |= (sorted_p.cumsum(-1) - sorted_p) > top_p[:, None]  # keeps at least the first
    drop |= sorted_p < (min_p * sorted_p[:, 0])[:, None]
    return sorted_p.masked_fill(drop, 0.0), sorted_ids


class Sampler:
    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def sample(
        self,
        logits: torch.Tensor,
        rows: list[SampleRow],
        top_logprobs_num: list[int],
        want_logprobs: bool,
        allowed: torch.Tensor | None = None,
    ) -> SampleResult:
        """logits: [batch, vocab] float32, one row per entry of `rows`; `allowed`: an optional
        [batch, vocab] bool mask (grammars), applied to the whole batch at once."""
        raw_logprobs = torch.log_softmax(logits, dim=-1) if want_logprobs else None
        adjusted = any(r.params.adjusts_logits or r.banned_ids for r in rows)
        if adjusted or allowed is not None:
            logits = logits.clone()
            if allowed is not None:
                logits.masked_fill_(~allowed.to(logits.device), float("-inf"))
            for i, r in enumerate(rows):
                if r.params.has_penalties:
                    apply_penalties(logits[i], r)
                if r.params.logit_bias:
                    apply_logit_bias(logits[i], r.params.logit_bias)
                if r.banned_ids:
                    logits[i, r.banned_ids] = float("-inf")
        next_ids = logits.argmax(dim=-1)
        sampled = [i for i, r in enumerate(rows) if not r.params.is_greedy]
        if sampled:
            next_ids[sampled] = self._sample_rows(logits[sampled], [rows[i] for i in sampled])
        ids = next_ids.tolist()
        if raw_logprobs is None:
            return SampleResult(ids, None, None)
        chosen = raw_logprobs.gather(1, next_ids[:, None]).squeeze(1).tolist()
        k = max(top_logprobs_num, default=0)
        tops = None
        if k > 0:
            vals, idx = raw_logprobs.topk(k, dim=-1)
            vals, idx = vals.tolist(), idx.tolist()
            tops = [list(zip(vals[i][:n], idx[i][:n])) for i, n in enumerate(top_logprobs_num)]
        return SampleResult(ids, chosen, tops)

    def _sample_rows(self, logits: torch.Tensor, rows: list[SampleRow]) -> torch.Tensor:
        device = logits.device
        temp = torch.tensor([r.params.temperature for r in rows], device=device)
        probs = torch.softmax(logits / temp[:, None], dim=-1)
        filtered = any(r.params.top_k > 0 or r.params.top_p < 1 or r.params.min_p > 0 for r in rows)
        if filtered:
            top_k = torch.tensor(
                [r.params.top_k if r.params.top_k > 0 else self.vocab_size for r in rows],
                device=device,
            )
            top_p = torch.tensor([float(r.params.top_p) for r in rows], device=device)
            min_p = torch.tensor([float(r.params.min_p) for r in rows], device=device)
            probs, order = filter_probs(probs, top_k, top_p, min_p)
        out = torch.empty(len(rows), dtype=torch.int64, device=device)
        unseeded = [i for i, r in enumerate(rows) if r.generator is None]
        if unseeded:
            out[unseeded] = torch.multinomial(probs[unseeded], 1).squeeze(1)
        for i, r in enumerate(rows):
            if r.generator is not None:
                # A request's own generator makes its draws independent of the batch around it.
                out[i] = torch.multinomial(probs[i], 1, generator=r.generator)[0]
        if filtered:
            out = order.gather(1, out[:, None]).squeeze(1)
        return out
