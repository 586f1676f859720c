"""Constrained requests waiting for their grammar, which compiles on a worker thread (in a
compile process under a deadline, with `--grammar-compile-timeout`).

A request whose grammar is compiled joins the waiting queue at once; the others wait here so the
batch keeps running meanwhile. A spec that fails to compile, or not in time, fails its request
only.
"""

from __future__ import annotations

import concurrent.futures

from runtime.constrained.base import GrammarBackend, GrammarCache
from runtime.scheduler.req import Req


class GrammarQueue:
    def __init__(
        self,
        backend: GrammarBackend,
        max_json_string_length: int | None = None,
        compile_timeout: float = 0,
    ) -> None:
        self.cache = GrammarCache(
            backend, max_json_string_length=max_json_string_length, compile_timeout=compile_timeout
        )
        self.pending: list[tuple[Req, concurrent.futures.Future]] = []

    def add(self, req: Req) -> bool:
        """True when the request is ready to run now; False when it waits here. A spec that
        compiled before and failed raises its ValueError here, before any output."""
        kind, spec = req.params.constraint
        future = self.cache.get(kind, spec)
        if not future.done():
            self.pending.append((req, future))
            return False
        self._attach(req, future)
        return True

    def _attach(self, req: Req, future: concurrent.futures.Future) -> None:
        try:
            req.grammar = self.cache.backend.matcher(future.result())
        except ValueError as e:
            raise ValueError(f"sampling_params.{e}") from None

    def poll(self, idle: bool) -> tuple[list[Req], list[tuple[str, Exception]]]:
        """(requests whose grammar is ready, (rid, error) of those whose spec did not compile).
        With nothing else to run (`idle`), waits a little for a compilation instead of spinning."""
        if idle:
            concurrent.futures.wait(
                [f for _, f in self.pending],
                timeout=0.05,
                return_when=concurrent.futures.FIRST_COMPLETED,
            )
        ready, errors, still = [], [], []
        for req, future in self.pending:
            if not future.done():
                still.append((req, future))
                continue
            try:
                self._attach(req, future)
                ready.append(req)
            except (ValueError, RuntimeError) as e:  # RuntimeError: no compile process
                errors.append((req.rid, e))
        self.pending = still
        return ready, errors

    def remove(self, rid: str) -> Req | None:
        for i, (req, _) in enumerate(self.pending):
            if req.rid == rid:
                del self.pending[i]
                return req
        return None

    def shutdown(self) -> None:
        """Drops queued compilations; the process need not wait for them to exit."""
        self.cache.shutdown()
