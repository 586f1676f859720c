"""Turns a `GenerateRequest` into the tokenized requests the scheduler runs, naming bad fields.

A prompt list is a batch; `n > 1` fans a prompt out into `n` requests (rids `rid-0`...) with
seeds `seed + i`. Everything is checked here, in the caller's process, so the scheduler only
ever sees requests it can run.
"""

from __future__ import annotations

import uuid

from runtime.io_struct import GenerateRequest, TokenizedGenerateRequest
from runtime.sampling.sampling_params import SamplingParams


class InputProcessor:
    def __init__(
        self,
        tokenizer,
        context_len: int,
        vocab_size: int,
        max_fanout: int,
        default_params: dict | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.context_len = context_len
        self.vocab_size = vocab_size
        self.max_fanout = max_fanout
        # the model's generation_config.json: what a request does not set
        self.default_params = default_params or {}

    def process(self, req: GenerateRequest) -> tuple[bool, list[TokenizedGenerateRequest]]:
        """(whether the caller sent a batch, one tokenized request per sequence to generate)."""
        if req.timeout is not None and (
            not isinstance(req.timeout, (int, float))
            or isinstance(req.timeout, bool)
            or req.timeout <= 0
        ):
            raise ValueError(f"timeout: must be a number of seconds > 0, got {req.timeout!r}")
        batch, prompts = self._prompt_ids(req.prompt, req.input_ids)
        params_list = self._params(req.sampling_params, len(prompts))
        fanout = sum(p.n for p in params_list)
        if fanout > self.max_fanout:
            name = "n" if len(prompts) == 1 else "prompt / n"
            raise ValueError(
                f"{name}: asks for {fanout} sequences; one request may start at most "
                f"{self.max_fanout} (see --max-fanout)"
            )
        rids = self._rids(req.rid, len(prompts))
        top = req.top_logprobs_num
        if top is not None and (not isinstance(top, int) or not 0 <= top <= self.vocab_size):
            raise ValueError(
                f"top_logprobs_num: must be an integer in [0, {self.vocab_size}], got {top!r}"
            )
        start = -1 if req.logprob_start_len is None else req.logprob_start_len
        out = []
        for ids, params, rid in zip(prompts, params_list, rids):
            params.check_lengths(len(ids), self.context_len, self.vocab_size)
            if not isinstance(start, int) or start >= max(len(ids), 1) or start < -1:
                raise ValueError(
                    f"logprob_start_len: must be in [-1, {len(ids) - 1}], got {start!r}"
                )
            for i in range(params.n):
                child = params
                if params.n > 1:
                    child = SamplingParams(**{**params.__dict__, "n": 1})
                    if params.seed is not None:
                        child.seed = params.seed + i
                out.append(
                    TokenizedGenerateRequest(
                        rid=rid if params.n == 1 else f"{rid}-{i}",
                        input_ids=ids,
                        params=child,
                        return_logprob=req.return_logprob,
                        logprob_start_len=start,
                        top_logprobs_num=top or 0,
                        return_text_in_logprobs=req.return_text_in_logprobs,
                    )
                )
        return batch, out

    def _prompt_ids(self, prompt, input_ids) -> tuple[bool, list[list[int]]]:
        if (prompt is None) == (input_ids is None):
            raise ValueError("prompt / input_ids: give exactly one of them")
        if prompt is not None:
            is_batch = isinstance(prompt, list)
            texts = prompt if is_batch else [prompt]
            if not texts or not all(isinstance(p, str) for p in texts):
                raise ValueError("prompt: must be a string or a non-empty list of strings")
            encoded = [self.tokenizer.encode(p) for p in texts]
            if not all(encoded):
                raise ValueError("prompt: a prompt encodes to no tokens; give some text")
            return is_batch, encoded
        vocab = self.vocab_size

        def check(ids) -> list[int]:
            if not ids or not all(
                isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocab for t in ids
            ):
                raise ValueError(f"input_ids: must be non-empty lists of token ids in [0, {vocab})")
            return list(ids)

        if (
            isinstance(input_ids, list)
            and input_ids
            and all(isinstance(x, list) for x in input_ids)
        ):
            return True, [check(x) for x in input_ids]
        return False, [check(input_ids)]

    def _params(self, sampling_params, n: int) -> list[SamplingParams]:
        def build(p) -> SamplingParams:
            if p is not None and not isinstance(p, dict):
                raise ValueError("sampling_params: must be a dict or a list of dicts")
            given = {
                k: v for k, v in (p or {}).items() if v is not None or k not in self.default_params
            }
            return SamplingParams.from_dict({**self.default_params, **given})

        if isinstance(sampling_params, list):
            if len(sampling_params) != n:
                raise ValueError(f"sampling_params: got {len(sampling_params)} for {n} prompts")
            return [build(p) for p in sampling_params]
        return [build(sampling_params) for _ in range(n)]

    @staticmethod
    def _rids(rid, n: int) -> list[str]:
        if rid is None:
            return [uuid.uuid4().hex for _ in range(n)]
        rids = [rid] if isinstance(rid, str) else list(rid)
        if len(rids) != n or len(set(rids)) != n:
            raise ValueError(f"rid: need {n} distinct ids, got {rid!r}")
        return rids
