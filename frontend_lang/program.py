"""What `@function` makes of a program: `run` one, or `run_batch` many in parallel threads,
with the batch's common opening cached once first."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

from frontend_lang.default_backend import get_default_backend
from frontend_lang.interpreter import MIN_HINT_CHARS, ProgramState
from frontend_lang.ir import calls_model


class Program:
    """What `@function` makes of `def prog(s, ...)`."""

    def __init__(self, func) -> None:
        self.func = func
        self.__name__ = getattr(func, "__name__", "program")
        self.__doc__ = func.__doc__

    def __call__(self, *args, **kwargs):
        return self.func(*args, **kwargs)

    def run(
        self,
        *args,
        backend=None,
        stream: bool = False,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        min_p: float | None = None,
        stop: str | list[str] | None = None,
        **kwargs,
    ) -> ProgramState:
        """Runs the program; with `stream=True` returns at once and streams via `text_iter`."""
        defaults = {
            k: v
            for k, v in {
                "max_new_tokens": max_new_tokens,
                "temperature": temperature,
                "top_p": top_p,
                "top_k": top_k,
                "min_p": min_p,
                "stop": stop,
            }.items()
            if v is not None
        }
        state = self._start(backend or get_default_backend(), defaults, stream, args, kwargs)
        if not stream and state._error is not None:
            raise state._error
        return state

    def _start(self, backend, defaults: dict, stream: bool, args, kwargs) -> ProgramState:
        """Runs the body (on a thread of its own when streaming); errors stay in the state."""
        state = ProgramState(backend, defaults, stream)

        def body() -> None:
            try:
                self.func(state, *args, **kwargs)
            except Exception as e:
                state.sync()
                if state._error is None:
                    state._error = e
            finally:
                state._finish()

        if stream:
            threading.Thread(target=body, name=f"{self.__name__}-run", daemon=True).start()
        else:
            body()
        return state

    def run_batch(
        self,
        batch_kwargs: list[dict],
        backend=None,
        num_threads: int | str = "auto",
        progress_bar: bool = False,
        **defaults,
    ) -> list[ProgramState]:
        """Runs one program per kwargs dict in parallel; a failed one reports through its
        state's `error()` and the others go on. The programs' common opening text is sent
        once first, so that the batch reuses it from the cache."""
        backend = backend or get_default_backend()
        if backend is None:
            raise ValueError("backend: pass one or call set_default_backend() first")
        defaults = {k: v for k, v in defaults.items() if v is not None}
        if num_threads == "auto":
            num_threads = max(8, (os.cpu_count() or 1) * 4)
        self._cache_common_prefix(backend, batch_kwargs)
        bar = None
        if progress_bar:
            from tqdm import tqdm

            bar = tqdm(total=len(batch_kwargs), desc=self.__name__)

        def one(kw: dict) -> ProgramState:
            state = self._start(backend, defaults, False, (), kw)
            if bar is not None:
                bar.update(1)
            return state

        with ThreadPoolExecutor(max_workers=min(num_threads, len(batch_kwargs) or 1)) as pool:
            states = list(pool.map(one, batch_kwargs))
        if bar is not None:
            bar.close()
        return states

    def _cache_common_prefix(self, backend, batch_kwargs: list[dict]) -> None:
        """Runs each program up to its first gen / select without calling the model."""
        openings = []
        for kw in batch_kwargs[:64]:
            tracer = _Tracer(backend)
            try:
                self.func(tracer, **kw)
            except _StopTracing:
                pass
            except Exception:
                return
            openings.append(tracer.text)
        if len(openings) < 2:
            return
        common = os.path.commonprefix(openings)
        if len(common) >= MIN_HINT_CHARS:
            backend.cache_prefix(common)


class _StopTracing(Exception):
    pass


class _Tracer(ProgramState):
    """Executes text and roles in place and stops at the first model call."""

    def __init__(self, backend) -> None:
        super().__init__(backend)
        self._worker.shutdown(wait=False)
        self.text = ""

    def __iadd__(self, expr) -> ProgramState:
        if calls_model(expr):
            raise _StopTracing
        self._execute(expr)
        self.text = self._text
        return self

    def __getitem__(self, name):
        raise _StopTracing

    def fork(self, n):
        raise _StopTracing
