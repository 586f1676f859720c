"""A request as the scheduler sees it: its tokens, its place in the KV pool, when it is done."""

from __future__ import annotations

import time

import torch

from runtime.detokenizer import IncrementalDecoder, find_stop
from runtime.io_struct import FinishReason, TokenizedGenerateRequest


class Req:
    def __init__(self, inp: TokenizedGenerateRequest, tokenizer, eos_ids: set[int]) -> None:
        self.rid = inp.rid
        self.input_ids = inp.input_ids
        self.params = inp.params
        self.return_logprob = inp.return_logprob
        self.top_logprobs_num = inp.top_logprobs_num if inp.return_logprob else 0
        start = inp.logprob_start_len
        self.logprob_start_len = (
            len(self.input_ids) if (start < 0 or not inp.return_logprob) else start
        )
        self.output_ids: list[int] = []
        self.req_pool_idx: int | None = None
        self.kv_len = 0  # tokens whose KV is written
        self.cache_owned_len = 0  # leading KV slots owned by the prefix cache, not by this request
        self.prefix_handle = None  # the locked cache node those slots hang from
        self.extend_len = 0  # tokens this request computes in the current extend batch
        self.cached_tokens = 0  # prompt tokens reused from the cache
        # KV compression: the spec it runs with (None: exact KV), its state while it holds
        # compacted KV, how many positions its table dropped (a later token's table column is
        # its position minus this), and the prompt KV tokens it kept, for its meta_info.
        self.kv_compression: dict | None = None
        self.kv_state = None  # runtime.kv_compression.state.CompressionState
        self.kv_dropped = 0
        self.kv_tokens_kept: int | None = None
        self.finished: FinishReason | None = None
        self.end_ids = (set() if self.params.ignore_eos else set(eos_ids)) | set(
            self.params.stop_token_ids
        )
        self.grammar = None  # a GrammarMatcher once the request's constraint is compiled
        self.generator = None
        if self.params.seed is not None:
            self.generator = torch.Generator().manual_seed(self.params.seed)
        self.stop_decoder = None
        if self.params.stop:
            p = self.params
            self.stop_decoder = IncrementalDecoder(
                tokenizer, p.skip_special_tokens, p.spaces_between_special_tokens
            )
        # logprobs gathered during prefill, sent with the first output
        self.input_token_logprobs: list = []
        self.input_top_logprobs: list = []
        self.sent_input_logprobs = False
        self.arrival = time.perf_counter()
        self.queue_time: float | None = None  # seconds waited before its first prefill

    @property
    def fill_ids(self) -> list[int]:
        return self.input_ids + self.output_ids

    @property
    def fill_len(self) -> int:
        """len(fill_ids), without building the list."""
        return len(self.input_ids) + len(self.output_ids)

    @property
    def prefill_done(self) -> bool:
        """All tokens but the one about to be sampled have KV (also after a retraction)."""
        return self.kv_len >= self.fill_len

    def match_ids(self) -> list[int]:
        """The tokens a cached prefix may cover: at least one must be computed to get logits,
        and input logprobs need the logits from their start on."""
        ids = self.fill_ids
        limit = len(ids) - 1
        if (
            self.return_logprob
            and not self.sent_input_logprobs
            and self.logprob_start_len < len(self.input_ids)
        ):
            limit = min(limit, max(self.logprob_start_len - 1, 0))
        return ids[:limit]

    def banned_ids(self) -> list[int]:
        if len(self.output_ids) < self.params.min_new_tokens:
            return sorted(self.end_ids)
        return []

    def append_token(self, token_id: int) -> None:
        """Records a sampled token and decides whether the request is done."""
        self.output_ids.append(token_id)
        p = self.params
        if self.grammar is not None:
            if not self.grammar.accept_token(token_id):  # masked logits make this unreachable
                self.finished = FinishReason("abort", message="the grammar rejected a token")
                return
            if self.grammar.is_terminated():
                self.finished = FinishReason("stop", matched=token_id)
                return
        if token_id in self.end_ids:  # the sampler bans these before min_new_tokens
            self.finished = FinishReason("stop", matched=token_id)
            return
        if self.stop_decoder is not None:
            start = max(0, len(self.stop_decoder.text) - max(len(s) for s in p.stop))
            self.stop_decoder.push([token_id])
            hit = find_stop(self.stop_decoder.text, p.stop, start)
            if hit is not None and len(self.output_ids) >= p.min_new_tokens:
                self.finished = FinishReason("stop", matched=hit[1])
                return
        if len(self.output_ids) >= p.max_new_tokens:
            self.finished = FinishReason("length", length=p.max_new_tokens)
