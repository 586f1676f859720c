"""The client half of a runtime: validates and tokenizes here, routes results back to callers.

The scheduler and the detokenizer run in child processes, ZMQ between them:
  Engine --add/abort/call--> scheduler --token outputs--> detokenizer --text deltas--> Engine
`Engine` is SGLang's offline engine, and the HTTP server's tokenizer manager: the server's
handlers await `async_generate` on the event loop while one receiver thread routes results.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import logging
import queue
import shutil
import subprocess
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import zmq

from runtime.cache_control import CacheControl
from runtime.detokenizer_process import spawn_detokenizer_process
from runtime.input_processor import InputProcessor
from runtime.io_struct import (
    AbortRequest,
    BatchTextOutput,
    CallReply,
    CallRequest,
    GenerateRequest,
    RequestError,
    ResultDelta,
    SchedulerInit,
    SchedulerReady,
    ShutdownRequest,
    TokenizedGenerateRequest,
)
from runtime.model_loader.loader import (
    load_generation_defaults,
    load_tokenizer,
    prepare_model_folder,
)
from runtime.response import RequestResult
from runtime.scheduler.process import spawn_scheduler_process
from runtime.server_args import ServerArgs

logger = logging.getLogger(__name__)


class ServerBusy(RuntimeError):
    """Too many requests are open: the caller should retry later (HTTP 503)."""


class Engine(CacheControl):
    """`Engine(model_path=None, **server_args)`: SGLang's offline engine over our scheduler."""

    def __init__(self, model_path: str | None = None, **kwargs) -> None:
        self.server_args = ServerArgs.from_kwargs(model_path=model_path, **kwargs)
        self._closed = True
        self._closing = False
        self._send_lock = threading.Lock()
        self._routes: dict[str, Callable] = {}  # rid or ticket -> where its messages go
        self._routes_lock = threading.Lock()
        self._tickets = itertools.count()
        self._dead: str | None = None
        self._receiver: threading.Thread | None = None
        self._procs: list[subprocess.Popen] = []
        # One thread tokenizes for asyncio callers: off the event loop, and one at a time.
        self._tokenizer_pool = ThreadPoolExecutor(1, thread_name_prefix="tokenizer")
        # Hooks for the HTTP server: metrics see every delta; a dead child takes the server down.
        self.on_delta: Callable[[RequestResult, ResultDelta], None] | None = None
        self.on_death: Callable[[str], None] | None = None
        # Convert once here, so the child only loads a folder.
        folder = prepare_model_folder(self.server_args.model_path, self.server_args.cache_dir)
        self._tmp = tempfile.mkdtemp(prefix="radixserve-")
        self._zmq = zmq.Context()
        self._send = self._zmq.socket(zmq.PUSH)
        self._recv = self._zmq.socket(zmq.PULL)
        in_addr, out_addr = f"ipc://{self._tmp}/in", f"ipc://{self._tmp}/out"
        detok_addr = f"ipc://{self._tmp}/detok"
        self._send.bind(in_addr)
        self._recv.bind(out_addr)
        a = self.server_args
        self._procs = [
            spawn_scheduler_process(in_addr, detok_addr),
            spawn_detokenizer_process(folder, a.tokenizer_path, a.log_level, detok_addr, out_addr),
        ]
        self._closed = False
        atexit.register(self.shutdown)
        try:
            # The settings travel over the socket: nothing of them shows on a command line.
            self._send_init(SchedulerInit(a.scheduler_args(model_path=folder)))
            self.tokenizer = load_tokenizer(folder, a.tokenizer_path, a.chat_template)
            self.info = self._wait_ready()
        except BaseException:
            self.shutdown()
            raise
        self.context_len = self.info["context_length"]
        self.vocab_size = self.info["vocab_size"]
        self.input_processor = InputProcessor(
            self.tokenizer,
            self.context_len,
            self.vocab_size,
            self.server_args.max_fanout,
            load_generation_defaults(folder),
        )
        self._receiver = threading.Thread(
            target=self._receive_loop, name="engine-receiver", daemon=True
        )
        self._receiver.start()

    def _dead_child(self) -> str | None:
        for name, p in zip(("scheduler", "detokenizer"), self._procs):
            if p.poll() is not None:
                return f"{name} process exited with code {p.returncode}"
        return None

    def _send_init(self, init: SchedulerInit) -> None:
        # A PUSH socket holds a message until its peer connects; wait for that, not forever.
        while not self._send.poll(500, zmq.POLLOUT):
            if why := self._dead_child():
                raise RuntimeError(f"{why} while starting")
        self._send.send_pyobj(init)

    def _wait_ready(self) -> dict:
        while not self._recv.poll(500):
            if why := self._dead_child():
                raise RuntimeError(f"{why} while loading")
        msg = self._recv.recv_pyobj()
        if not isinstance(msg, SchedulerReady):
            raise RuntimeError(f"runtime failed to start: {msg.why}")
        return msg.info

    # ---- receiving ----

    def _receive_loop(self) -> None:
        while not self._closed:
            try:
                if not self._recv.poll(500):
                    if why := self._dead_child():
                        if not self._closing:
                            self._fail_all(why.replace("exited", "died"))
                            if self.on_death is not None:
                                self.on_death(self._dead)
                        return
                    continue
                msg = self._recv.recv_pyobj()
            except zmq.ZMQError:
                return
            if isinstance(msg, BatchTextOutput):
                for delta in msg.deltas:
                    self._route(delta.rid, delta)
            elif isinstance(msg, RequestError):
                self._route(msg.rid, msg.error)
            elif isinstance(msg, CallReply):
                self._route(msg.ticket, msg.value)

    def _fail_all(self, why: str) -> None:
        logger.error("%s; failing its %d open request(s)", why, len(self._routes))
        self._dead = why
        with self._routes_lock:
            routes, self._routes = self._routes, {}
        for rid, sink in routes.items():
            sink((rid, RuntimeError(why)))

    def _route(self, rid: str, item) -> None:
        with self._routes_lock:
            sink = self._routes.get(rid)
        if sink is not None:
            sink((rid, item))

    def _post(self, msg) -> None:
        if self._closed or self._dead:
            raise RuntimeError(self._dead or "the engine is shut down")
        with self._send_lock:
            self._send.send_pyobj(msg)

    # ---- public API ----

    def generate(
        self, prompt: str | list[str] | None = None, sampling_params=None, **fields
    ) -> dict | list[dict] | Iterator[dict]:
        """One prompt gives a dict (a list of n with n > 1); a batch gives a list. `fields` are
        the other `GenerateRequest` fields (`input_ids`, `return_logprob`, `stream`, `rid`...).

        With `stream=True` it yields a dict per step carrying the cumulative text so far
        (with `index` when several sequences stream at once); the last one has finish_reason.
        """
        return self.generate_request(GenerateRequest(prompt, sampling_params, **fields))

    def generate_request(self, req: GenerateRequest) -> dict | list[dict] | Iterator[dict]:
        batch, inputs, results = self._prepare(req)
        q: queue.Queue = queue.Queue()
        sink = q.put  # one bound method, so `_expire` knows these routes as its own
        self._submit(inputs, sink)
        if req.timeout is not None:
            timer = threading.Timer(req.timeout, self._expire, (list(results), sink, req.timeout))
            timer.daemon = True
            timer.start()
        if req.stream:
            return self._stream(q, results)
        try:
            while not all(b.finished for b in results.values()):
                self._accept(q.get(), results)
        except BaseException:
            self._abort_unfinished(results)
            raise
        return self._results(batch, inputs, results)

    async def async_generate(
        self, prompt: str | list[str] | None = None, sampling_params=None, **fields
    ) -> dict | list[dict] | AsyncIterator[dict]:
        """`generate` for asyncio callers: awaits the result, or with `stream=True` returns an
        async iterator; a cancelled or abandoned call aborts its requests."""
        return await self.async_generate_request(GenerateRequest(prompt, sampling_params, **fields))

    async def async_generate_request(
        self, req: GenerateRequest
    ) -> dict | list[dict] | AsyncIterator[dict]:
        loop = asyncio.get_running_loop()
        # Tokenizing a long prompt must not hold up the event loop (health checks, signals).
        batch, inputs, results = await self.run_in_tokenizer(self._prepare, req)
        aq: asyncio.Queue = asyncio.Queue()

        def sink(item) -> None:
            loop.call_soon_threadsafe(aq.put_nowait, item)

        self._submit(inputs, sink)
        if req.timeout is not None:
            loop.call_later(req.timeout, self._expire, list(results), sink, req.timeout)
        if req.stream:
            return self._astream(aq, results)
        try:
            while not all(b.finished for b in results.values()):
                self._accept(await aq.get(), results)
        except BaseException:
            self._abort_unfinished(results)
            raise
        return self._results(batch, inputs, results)

    async def run_in_tokenizer(self, fn: Callable, *args):
        """Runs tokenizer work (a chat template, say) off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._tokenizer_pool, fn, *args)

    def _prepare(self, req: GenerateRequest):
        """Validates and tokenizes; returns (is batch, inputs, a RequestResult per rid)."""
        batch, inputs = self.input_processor.process(req)
        top = bool(req.top_logprobs_num)
        results = {inp.rid: RequestResult(inp.rid, req.return_logprob, top) for inp in inputs}
        return batch, inputs, results

    def _submit(self, inputs: list[TokenizedGenerateRequest], sink: Callable) -> None:
        """Routes the requests' outputs to `sink((rid, item))` and sends them to the scheduler."""
        limit = self.server_args.max_queued_requests
        with self._routes_lock:
            for inp in inputs:
                if inp.rid in self._routes:
                    raise ValueError(f"rid: {inp.rid!r} is already running")
            open_now = sum(isinstance(k, str) for k in self._routes)
            if open_now + len(inputs) > limit:
                raise ServerBusy(
                    f"the server has {open_now} requests open, its limit is {limit} "
                    "(--max-queued-requests); retry later"
                )
            for inp in inputs:
                self._routes[inp.rid] = sink
        for inp in inputs:
            self._post(inp)

    def _expire(self, rids: list[str], sink: Callable, timeout: float) -> None:
        """A request's `timeout` ran out: aborts what of it still runs."""
        with self._routes_lock:
            open_rids = [r for r in rids if self._routes.get(r) is sink]
        for rid in open_rids:
            self.abort_request(rid, f"timeout: no answer within {timeout:g} s")

    def _accept(self, message, results: dict[str, RequestResult]) -> RequestResult:
        """Applies one routed message; an error fails the whole call."""
        rid, item = message
        if isinstance(item, Exception):
            raise item
        r = results[rid]
        r.apply(item)
        if self.on_delta is not None:
            self.on_delta(r, item)
        if r.finished:
            with self._routes_lock:
                self._routes.pop(rid, None)
        return r

    def _abort_unfinished(self, results) -> None:
        with self._routes_lock:
            for rid in results:
                self._routes.pop(rid, None)
        for rid, b in results.items():
            if not b.finished and not (self._closed or self._dead):
                self.abort_request(rid)

    @staticmethod
    def _results(batch: bool, inputs, results) -> dict | list[dict]:
        ordered = [results[inp.rid].result() for inp in inputs]
        return ordered[0] if not batch and len(ordered) == 1 else ordered

    @staticmethod
    def _chunk(b: RequestResult, index: dict[str, int]) -> dict:
        chunk = b.result()
        if len(index) > 1:
            chunk["index"] = index[b.rid]
        return chunk

    def _stream(self, q: queue.Queue, results) -> Iterator[dict]:
        index = {rid: i for i, rid in enumerate(results)}
        try:
            while not all(b.finished for b in results.values()):
                yield self._chunk(self._accept(q.get(), results), index)
        finally:
            self._abort_unfinished(results)

    async def _astream(self, aq: asyncio.Queue, results) -> AsyncIterator[dict]:
        index = {rid: i for i, rid in enumerate(results)}
        try:
            while not all(b.finished for b in results.values()):
                yield self._chunk(self._accept(await aq.get(), results), index)
        finally:
            self._abort_unfinished(results)

    def abort_request(self, rid: str, message: str | None = None) -> None:
        """Stops a request wherever it is; its caller gets finish_reason `abort`."""
        if not (self._closed or self._dead):
            self._post(AbortRequest(rid, message))

    def abort_all(self) -> None:
        """Aborts every request this client has open."""
        with self._routes_lock:
            rids = [r for r in self._routes if isinstance(r, str)]
        for rid in rids:
            self.abort_request(rid)

    def _call(self, name: str, **args):
        """Runs a scheduler method between two of its steps and returns its result."""
        ticket = ("call", next(self._tickets))  # never equal to a request id (a str)
        q: queue.Queue = queue.Queue()
        with self._routes_lock:
            self._routes[ticket] = q.put
        try:
            self._post(CallRequest(ticket, name, args))
            _, value = q.get(timeout=60)
        finally:
            with self._routes_lock:
                self._routes.pop(ticket, None)
        if isinstance(value, Exception):
            raise value
        return value

    def get_server_info(self) -> dict:
        """Settings, pool sizes, cache hit rate, token usage and counters."""
        return self._call("server_info")

    def flush_cache(self) -> bool:
        """Empties the prefix cache; False (nothing done) while requests are queued or running."""
        return self._call("flush_cache")

    def shutdown(self) -> None:
        """Stops the child processes (aborting what runs) and removes the socket folder."""
        if self._closed:
            return
        self._closing = True
        try:
            with self._send_lock:
                self._send.send_pyobj(ShutdownRequest(), flags=zmq.NOBLOCK)
        except zmq.Again:
            pass  # the child is not listening; it is terminated below
        for p in self._procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._closed = True
        self._tokenizer_pool.shutdown(wait=False, cancel_futures=True)
        if self._receiver is not None:
            self._receiver.join(timeout=2)
        if self._routes:
            self._fail_all("the engine was shut down")
        self._send.close(linger=0)
        self._recv.close(linger=0)
        self._zmq.term()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
