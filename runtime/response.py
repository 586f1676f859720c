"""Builds the user-facing result of one request from the scheduler's per-step outputs."""

from __future__ import annotations

from runtime.detokenizer import IncrementalDecoder, find_stop, stop_holdback
from runtime.sampling.sampling_params import SamplingParams
from runtime.scheduler.req import ReqOutput


class ResponseBuilder:
    """Keeps one request's text, ids and logprobs; `result()` is SGLang's `{"text", "meta_info"}`."""

    def __init__(
        self,
        rid: str,
        tokenizer,
        params: SamplingParams,
        return_logprob: bool,
        return_text_in_logprobs: bool = False,
    ) -> None:
        self.rid = rid
        self.tokenizer = tokenizer
        self.params = params
        self.return_logprob = return_logprob
        self.text_in_logprobs = return_text_in_logprobs
        self.decoder = IncrementalDecoder(
            tokenizer, params.skip_special_tokens, params.spaces_between_special_tokens
        )
        self.output_ids: list[int] = []
        self.last: ReqOutput | None = None
        self.input_token_logprobs: list = []
        self.input_top_logprobs: list = []
        self.output_token_logprobs: list = []
        self.output_top_logprobs: list = []

    @property
    def finished(self) -> bool:
        return self.last is not None and self.last.finish_reason is not None

    def add(self, out: ReqOutput) -> None:
        self.last = out
        self.output_ids += out.new_token_ids
        ids = out.new_token_ids
        fr = out.finish_reason
        if fr is not None and fr.type == "stop" and isinstance(fr.matched, int) and ids:
            ids = ids[:-1]  # the matched stop token is not part of the text
        self.decoder.push(ids)
        if fr is not None:
            self.decoder.flush()
        if out.input_token_logprobs is not None:
            self.input_token_logprobs = out.input_token_logprobs
            self.input_top_logprobs = out.input_top_logprobs or []
        if out.output_token_logprobs:
            self.output_token_logprobs += out.output_token_logprobs
            self.output_top_logprobs += out.output_top_logprobs or []

    def text(self) -> str:
        text = self.decoder.text
        stops = self.params.stop
        if not stops:
            return text
        fr = self.last.finish_reason if self.last else None
        if fr is not None and fr.type == "stop" and isinstance(fr.matched, str):
            hit = find_stop(text, [fr.matched])
            return text[: hit[0]] if hit else text
        if fr is None:  # streaming: hold back what may be the start of a stop string
            return text[: len(text) - stop_holdback(text, stops)]
        return text

    def _entry(self, logprob, token_id) -> list:
        txt = self.tokenizer.decode([token_id]) if self.text_in_logprobs else None
        return [logprob, token_id, txt]

    def _tops(self, tops: list) -> list:
        return [None if t is None else [self._entry(lp, tid) for lp, tid in t] for t in tops]

    def result(self) -> dict:
        out = self.last
        meta = {
            "id": self.rid,
            "prompt_tokens": out.prompt_tokens,
            "completion_tokens": out.completion_tokens,
            "cached_tokens": out.cached_tokens,
            "finish_reason": out.finish_reason.to_dict() if out.finish_reason else None,
        }
        if self.return_logprob:
            meta["input_token_logprobs"] = [
                self._entry(lp, t) for lp, t in self.input_token_logprobs
            ]
            meta["output_token_logprobs"] = [
                self._entry(lp, t) for lp, t in self.output_token_logprobs
            ]
            if self.input_top_logprobs or self.output_top_logprobs:
                meta["input_top_logprobs"] = self._tops(self.input_top_logprobs)
                meta["output_top_logprobs"] = self._tops(self.output_top_logprobs)
        return {"text": self.text(), "output_ids": list(self.output_ids), "meta_info": meta}
