"""A request's user-facing result, in two halves that meet over ZMQ.

The detokenizer process turns the scheduler's per-step token outputs into `ResultDelta`s
(`ResponseBuilder`): new text, new ids, logprob entries with their token text. The client
(`Engine`, and through it the HTTP server) reassembles them into SGLang's
`{"text", "output_ids", "meta_info"}` (`RequestResult`). Deltas keep each step's message small
however long the output grows.
"""

from __future__ import annotations

import time

from runtime.detokenizer import IncrementalDecoder, find_stop, stop_holdback
from runtime.io_struct import ResultDelta, TokenOutput
from runtime.sampling.sampling_params import SamplingParams


class ResponseBuilder:
    """Detokenizer side: keeps one request's decoder and turns each output into a delta."""

    def __init__(
        self,
        rid: str,
        tokenizer,
        params: SamplingParams,
        return_text_in_logprobs: bool = False,
    ) -> None:
        self.rid = rid
        self.tokenizer = tokenizer
        self.params = params
        self.text_in_logprobs = return_text_in_logprobs
        self.decoder = IncrementalDecoder(
            tokenizer, params.skip_special_tokens, params.spaces_between_special_tokens
        )
        self.last: TokenOutput | None = None
        self.sent_text = ""

    @property
    def finished(self) -> bool:
        return self.last is not None and self.last.finish_reason is not None

    def add(self, out: TokenOutput) -> ResultDelta:
        self.last = out
        ids = out.new_token_ids
        fr = out.finish_reason
        trim = not self.params.no_stop_trim
        if trim and fr is not None and fr.type == "stop" and isinstance(fr.matched, int) and ids:
            ids = ids[:-1]  # the matched stop token is not part of the text
        self.decoder.push(ids)
        if fr is not None:
            self.decoder.flush()
        text = self.text()
        offset = len(self.sent_text) if text.startswith(self.sent_text) else 0
        self.sent_text = text
        delta = ResultDelta(
            rid=self.rid,
            text_offset=offset,
            text_delta=text[offset:],
            output_ids=list(out.new_token_ids),
            prompt_tokens=out.prompt_tokens,
            completion_tokens=out.completion_tokens,
            cached_tokens=out.cached_tokens,
            finish_reason=fr.to_dict() if fr is not None else None,
            queue_time=out.queue_time,
            kv_tokens_kept=out.kv_tokens_kept,
        )
        if out.input_token_logprobs is not None:
            delta.input_token_logprobs = [self._entry(lp, t) for lp, t in out.input_token_logprobs]
            delta.input_top_logprobs = self._tops(out.input_top_logprobs or [])
        if out.output_token_logprobs:
            delta.output_token_logprobs = [
                self._entry(lp, t) for lp, t in out.output_token_logprobs
            ]
            delta.output_top_logprobs = self._tops(out.output_top_logprobs or [])
        return delta

    def text(self) -> str:
        """The text that is safe to show: stop strings cut, a possible stop start held back."""
        text = self.decoder.text
        stops = self.params.stop
        if not stops:
            return text
        fr = self.last.finish_reason if self.last else None
        if fr is not None and fr.type == "stop" and isinstance(fr.matched, str):
            hit = find_stop(text, [fr.matched])
            if hit is None:
                return text
            return text[: hit[0] + (len(hit[1]) if self.params.no_stop_trim else 0)]
        if fr is None:  # streaming: hold back what may be the start of a stop string
            return text[: len(text) - stop_holdback(text, stops)]
        return text

    def _entry(self, logprob, token_id) -> list:
        txt = self.tokenizer.decode([token_id]) if self.text_in_logprobs else None
        return [logprob, token_id, txt]

    def _tops(self, tops: list) -> list:
        return [None if t is None else [self._entry(lp, tid) for lp, tid in t] for t in tops]


class RequestResult:
    """Client side: folds a request's deltas into SGLang's result dict."""

    def __init__(self, rid: str, return_logprob: bool = False, top_logprobs: bool = False) -> None:
        self.rid = rid
        self.return_logprob = return_logprob
        self.top_logprobs = top_logprobs
        self.text = ""
        self.output_ids: list[int] = []
        self.meta: dict = {"id": rid}
        self.finish_reason: dict | None = None
        self.input_token_logprobs: list = []
        self.input_top_logprobs: list = []
        self.output_token_logprobs: list = []
        self.output_top_logprobs: list = []
        self.created = time.perf_counter()
        self.first_token_time: float | None = None
        self.prev_token_time: float | None = None  # before the last delta with tokens
        self.last_token_time: float | None = None
        self.queue_time: float | None = None  # as the scheduler measured it

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def apply(self, d: ResultDelta) -> None:
        self.text = self.text[: d.text_offset] + d.text_delta
        self.output_ids += d.output_ids
        self.meta.update(
            prompt_tokens=d.prompt_tokens,
            completion_tokens=d.completion_tokens,
            cached_tokens=d.cached_tokens,
        )
        if d.kv_tokens_kept is not None:
            self.meta["kv_tokens_kept"] = d.kv_tokens_kept
        self.finish_reason = d.finish_reason
        if d.queue_time is not None:
            self.queue_time = d.queue_time
        if d.input_token_logprobs is not None:
            self.input_token_logprobs = d.input_token_logprobs
            self.input_top_logprobs = d.input_top_logprobs or []
        self.output_token_logprobs += d.output_token_logprobs
        self.output_top_logprobs += d.output_top_logprobs
        if d.output_ids:
            now = time.perf_counter()
            if self.first_token_time is None:
                self.first_token_time = now
            self.prev_token_time, self.last_token_time = self.last_token_time, now

    def result(self) -> dict:
        meta = {**self.meta, "finish_reason": self.finish_reason}
        if self.return_logprob:
            meta["input_token_logprobs"] = self.input_token_logprobs
            meta["output_token_logprobs"] = self.output_token_logprobs
            if self.top_logprobs:
                meta["input_top_logprobs"] = self.input_top_logprobs
                meta["output_top_logprobs"] = self.output_top_logprobs
        return {"text": self.text, "output_ids": list(self.output_ids), "meta_info": meta}
