"""In-process runtime: the scheduler runs in a background thread; `generate` talks to it by queue."""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import uuid
from collections.abc import Iterator

from runtime.model_loader.loader import load_tokenizer
from runtime.model_runner import ModelRunner
from runtime.response import ResponseBuilder
from runtime.sampling.sampling_params import SamplingParams
from runtime.scheduler.req import GenerateInput, ReqOutput
from runtime.scheduler.scheduler import Scheduler
from runtime.server_args import ServerArgs

logger = logging.getLogger(__name__)

_STOP = object()


class Engine:
    """`Engine(model_path=None, **server_args)`: SGLang's offline engine over our scheduler."""

    def __init__(self, model_path: str | None = None, **kwargs) -> None:
        self.server_args = ServerArgs.from_kwargs(model_path=model_path, **kwargs)
        logging.basicConfig(level=self.server_args.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.runner = ModelRunner(self.server_args)
        self.tokenizer = load_tokenizer(self.runner.model_folder, self.server_args.tokenizer_path)
        eos = set(self.runner.config.eos_token_ids)
        if self.tokenizer.eos_token_id is not None:
            eos.add(self.tokenizer.eos_token_id)
        self.scheduler = Scheduler(self.runner, self.tokenizer, eos)
        self.context_len = self.runner.context_len
        self._inbox: queue.Queue = queue.Queue()
        self._routes: dict[str, queue.Queue] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()

    # ---- scheduler thread ----

    def _loop(self) -> None:
        sched = self.scheduler
        while True:
            try:
                msg = self._inbox.get(block=not sched.has_work())
            except queue.Empty:
                msg = None
            while msg is not None:
                if msg is _STOP:
                    self._abort_everything()
                    return
                self._handle(msg)
                try:
                    msg = self._inbox.get_nowait()
                except queue.Empty:
                    msg = None
            if sched.has_work():
                self._dispatch(sched.step())

    def _handle(self, msg) -> None:
        kind, payload = msg
        if kind == "add":
            try:
                self.scheduler.add_request(payload)
            except Exception as e:
                self._route(payload.rid, e)
        elif kind == "abort":
            self._dispatch(self.scheduler.abort_request(payload))

    def _abort_everything(self) -> None:
        sched = self.scheduler
        for req in [*sched.waiting, *sched.active_reqs()]:
            self._dispatch(sched.abort_request(req.rid))

    def _route(self, rid: str, item) -> None:
        with self._lock:
            q = self._routes.get(rid)
        if q is not None:
            q.put((rid, item))

    def _dispatch(self, outputs: list[ReqOutput]) -> None:
        for out in outputs:
            self._route(out.rid, out)

    # ---- public API ----

    def generate(
        self,
        prompt: str | list[str] | None = None,
        sampling_params: dict | list[dict] | None = None,
        input_ids: list[int] | list[list[int]] | None = None,
        return_logprob: bool = False,
        logprob_start_len: int | None = None,
        top_logprobs_num: int | None = None,
        stream: bool = False,
        rid: str | list[str] | None = None,
        return_text_in_logprobs: bool = False,
    ) -> dict | list[dict] | Iterator[dict]:
        """One prompt gives a dict (a list of n with n > 1); a batch gives a list.

        With `stream=True` it yields a dict per step carrying the cumulative text so far
        (with `index` when several sequences stream at once); the last one has finish_reason.
        """
        batch, prompts = self._prompt_ids(prompt, input_ids)
        params_list = self._params(sampling_params, len(prompts))
        rids = self._rids(rid, len(prompts))
        if top_logprobs_num is not None and (not isinstance(top_logprobs_num, int) or top_logprobs_num < 0):
            raise ValueError(f"top_logprobs_num: must be an integer >= 0, got {top_logprobs_num!r}")
        inputs = []
        for ids, params, r in zip(prompts, params_list, rids):
            params.check_lengths(len(ids), self.context_len, self.runner.config.vocab_size)
            start = -1 if logprob_start_len is None else logprob_start_len
            if not isinstance(start, int) or start >= max(len(ids), 1) or start < -1:
                raise ValueError(f"logprob_start_len: must be in [-1, {len(ids) - 1}], got {start!r}")
            for i in range(params.n):
                child = params
                if params.n > 1:
                    child = SamplingParams(**{**params.__dict__, "n": 1})
                    if params.seed is not None:
                        child.seed = params.seed + i
                inputs.append(GenerateInput(
                    rid=r if params.n == 1 else f"{r}-{i}",
                    input_ids=ids,
                    params=child,
                    return_logprob=return_logprob,
                    logprob_start_len=start,
                    top_logprobs_num=top_logprobs_num or 0,
                ))
        builders = {
            inp.rid: ResponseBuilder(inp.rid, self.tokenizer, inp.params, return_logprob,
                                     return_text_in_logprobs)
            for inp in inputs
        }
        q = self._submit(inputs)
        if stream:
            return self._stream(q, builders)
        results = self._wait(q, builders)
        ordered = [results[inp.rid] for inp in inputs]
        if not batch and len(ordered) == 1:
            return ordered[0]
        return ordered

    def _submit(self, inputs: list[GenerateInput]) -> queue.Queue:
        if self._closed:
            raise RuntimeError("the engine is shut down")
        q: queue.Queue = queue.Queue()
        with self._lock:
            for inp in inputs:
                if inp.rid in self._routes:
                    raise ValueError(f"rid: {inp.rid!r} is already running")
            for inp in inputs:
                self._routes[inp.rid] = q
        for inp in inputs:
            self._inbox.put(("add", inp))
        return q

    def _next(self, q: queue.Queue, builders: dict[str, ResponseBuilder]) -> ResponseBuilder:
        rid, item = q.get()
        if isinstance(item, Exception):
            self._unroute(builders)
            for other in builders:
                if other != rid:
                    self.abort_request(other)
            raise item
        b = builders[rid]
        b.add(item)
        if b.finished:
            with self._lock:
                self._routes.pop(rid, None)
        return b

    def _unroute(self, builders) -> None:
        with self._lock:
            for rid in builders:
                self._routes.pop(rid, None)

    def _wait(self, q, builders) -> dict[str, dict]:
        try:
            while not all(b.finished for b in builders.values()):
                self._next(q, builders)
        except BaseException:
            for rid, b in builders.items():
                if not b.finished:
                    self.abort_request(rid)
            raise
        return {rid: b.result() for rid, b in builders.items()}

    def _stream(self, q, builders) -> Iterator[dict]:
        many = len(builders) > 1
        index = {rid: i for i, rid in enumerate(builders)}
        try:
            while not all(b.finished for b in builders.values()):
                b = self._next(q, builders)
                chunk = b.result()
                if many:
                    chunk["index"] = index[b.rid]
                yield chunk
        finally:
            for rid, b in builders.items():
                if not b.finished:
                    self.abort_request(rid)

    def abort_request(self, rid: str) -> None:
        """Stops a request wherever it is; its caller gets finish_reason `abort`."""
        self._inbox.put(("abort", rid))

    def _prompt_ids(self, prompt, input_ids) -> tuple[bool, list[list[int]]]:
        if (prompt is None) == (input_ids is None):
            raise ValueError("prompt / input_ids: give exactly one of them")
        if prompt is not None:
            if isinstance(prompt, str):
                return False, [self.tokenizer.encode(prompt)]
            if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
                return True, [self.tokenizer.encode(p) for p in prompt]
            raise ValueError("prompt: must be a string or a non-empty list of strings")
        vocab = self.runner.config.vocab_size

        def check(ids) -> list[int]:
            if not ids or not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocab for t in ids):
                raise ValueError(f"input_ids: must be non-empty lists of token ids in [0, {vocab})")
            return list(ids)

        if isinstance(input_ids, list) and input_ids and all(isinstance(x, list) for x in input_ids):
            return True, [check(x) for x in input_ids]
        return False, [check(input_ids)]

    @staticmethod
    def _params(sampling_params, n: int) -> list[SamplingParams]:
        if isinstance(sampling_params, list):
            if len(sampling_params) != n:
                raise ValueError(f"sampling_params: got {len(sampling_params)} for {n} prompts")
            return [SamplingParams.from_dict(p) for p in sampling_params]
        if sampling_params is not None and not isinstance(sampling_params, dict):
            raise ValueError("sampling_params: must be a dict or a list of dicts")
        return [SamplingParams.from_dict(sampling_params) for _ in range(n)]

    @staticmethod
    def _rids(rid, n: int) -> list[str]:
        if rid is None:
            return [uuid.uuid4().hex for _ in range(n)]
        rids = [rid] if isinstance(rid, str) else list(rid)
        if len(rids) != n or len(set(rids)) != n:
            raise ValueError(f"rid: need {n} distinct ids, got {rid!r}")
        return rids

    def get_server_info(self) -> dict:
        sched = self.scheduler
        return {
            **dataclasses.asdict(self.server_args),
            "max_total_tokens": self.runner.max_total_tokens,
            "context_length": self.context_len,
            "model_folder": self.runner.model_folder,
            "load_seconds": self.runner.load_seconds,
            "num_waiting_reqs": len(sched.waiting),
            "num_running_reqs": len(sched.active_reqs()),
            "kv_free_tokens": self.runner.kv_pool.available_size(),
            **sched.stats,
        }

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._inbox.put(_STOP)
        self._thread.join(timeout=30)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def __del__(self) -> None:
        try:
            self.shutdown()
        except Exception:
            pass


