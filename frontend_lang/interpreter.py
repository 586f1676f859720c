"""Program state: each state executes what is added to it on a worker thread of its own, so
forks run in parallel and `run(stream=True)` streams while the program goes on. Reading a
variable or the text waits for the work queued before it."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from frontend_lang.backend.base import BackendError
from frontend_lang.ir import Gen, Role, RoleBegin, RoleEnd, Select

MIN_HINT_CHARS = 64  # a common prefix shorter than this is not worth a request of its own
PLAIN_ROLES = {"system": "SYSTEM: ", "user": "USER: ", "assistant": "ASSISTANT: "}


class ProgramError(RuntimeError):
    """A call inside a program failed; the message names it."""


class ProgramState:
    """The `s` of a program: `s += ...`, `s["name"]`, `s.text()`, `s.messages()`, `s.fork(n)`."""

    def __init__(self, backend, defaults: dict | None = None, stream: bool = False) -> None:
        if backend is None:
            raise ValueError("backend: pass one to run() or call set_default_backend() first")
        self.backend = backend
        self.defaults = dict(defaults or {})
        self.stream = stream
        self._text = ""
        self._vars: dict = {}
        self._meta: dict = {}
        self._messages: list[dict] = []
        self._role: str | None = None
        self._role_start = 0
        self._error: Exception | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="program")
        self._pending: list[Future] = []
        self._events: queue.Queue = queue.Queue()  # (var name or None, text piece) for streams
        self._done = threading.Event()

    # ---- adding ----

    def __iadd__(self, expr) -> ProgramState:
        self._pending.append(self._worker.submit(self._run, expr))
        return self

    def _run(self, expr) -> None:
        if self._error is not None:
            return  # a failed program stops at its first error
        try:
            self._execute(expr)
        except Exception as e:
            self._error = e

    def _execute(self, expr) -> None:
        if isinstance(expr, str):
            self._append(expr)
        elif isinstance(expr, (list, tuple)):
            for e in expr:
                self._execute(e)
        elif isinstance(expr, Gen):
            self._gen(expr)
        elif isinstance(expr, Select):
            self._select(expr)
        elif isinstance(expr, RoleBegin):
            self._role_begin(expr.role)
        elif isinstance(expr, RoleEnd):
            self._role_end(expr.role)
        elif isinstance(expr, Role):
            if expr.content is None:
                raise ValueError(f"{expr.role}(): give the content, or use `with s.{expr.role}():`")
            self._role_begin(expr.role)
            self._execute(expr.content)
            self._role_end(expr.role)
        else:
            raise TypeError(f"s += {type(expr).__name__}: add text, gen(), select() or a role")

    def _append(self, text: str, var: str | None = None) -> None:
        self._text += text
        self._events.put((var, text))

    def _template(self):
        return getattr(self.backend, "chat_template", None)

    def _role_begin(self, role: str) -> None:
        if self._role is not None:
            raise ValueError(f"{role}: the {self._role} message is still open; end it first")
        t = self._template()
        first = not self._messages and not self._text
        self._append(t.role_begin(role, first) if t else PLAIN_ROLES[role])
        self._role, self._role_start = role, len(self._text)

    def _role_end(self, role: str) -> None:
        if self._role != role:
            raise ValueError(f"{role}_end: no {role} message is open")
        self._messages.append({"role": role, "content": self._text[self._role_start :]})
        t = self._template()
        self._append(t.role_end(role) if t else "\n")
        self._role = None

    def _gen(self, g: Gen) -> None:
        params = {**self.defaults, **g.sampling}
        extra = {
            "return_logprob": g.return_logprob,
            "logprob_start_len": g.logprob_start_len,
            "top_logprobs_num": g.top_logprobs_num,
            "tools": g.tools,
            "tool_choice": g.tool_choice,
        }
        if self._role == "assistant" and self._template() is None:
            params.setdefault("stop", [])  # the plain format ends a turn at a new line
        if params.get("n", 1) > 1:
            self._gen_n(g, params, extra)
            return
        try:
            if self.stream:
                out, shown = None, 0
                for out in self.backend.generate_stream(self._text, params, **extra):
                    self._append(out["text"][shown:], g.name)
                    shown = len(out["text"])
                text = out["text"] if out else ""
            else:
                out = self.backend.generate(self._text, params, **extra)
                text = out["text"]
                self._append(text, g.name)
        except (BackendError, ValueError) as e:
            raise ProgramError(f"gen({g.name!r}) failed: {e}") from e
        if g.name is not None:
            self._vars[g.name] = text
            self._meta[g.name] = out["meta_info"] if out else {}
            if out and "tool_calls" in out:
                self._meta[g.name] = {**self._meta[g.name], "tool_calls": out["tool_calls"]}

    def _gen_n(self, g: Gen, params: dict, extra: dict) -> None:
        """n samples in one request that shares the prompt; the text goes on with the first."""
        try:
            outs = self.backend.generate(self._text, params, **extra)
        except (BackendError, ValueError) as e:
            raise ProgramError(f"gen({g.name!r}) failed: {e}") from e
        self._append(outs[0]["text"], g.name)
        if g.name is not None:
            self._vars[g.name] = [o["text"] for o in outs]
            self._meta[g.name] = [o["meta_info"] for o in outs]

    def _select(self, sel: Select) -> None:
        try:
            index, meta = self.backend.select(self._text, sel.choices, sel.choices_method)
        except (BackendError, ValueError) as e:
            raise ProgramError(f"select({sel.name!r}) failed: {e}") from e
        self._append(sel.choices[index], sel.name)
        if sel.name is not None:
            self._vars[sel.name] = sel.choices[index]
            self._meta[sel.name] = meta

    # ---- roles as blocks ----

    def _role_block(self, role: str):
        state = self

        class _Block:
            def __enter__(self):
                state.__iadd__(RoleBegin(role))
                return state

            def __exit__(self, *exc):
                state.__iadd__(RoleEnd(role))

        return _Block()

    def system(self, content=None):
        return (
            self._role_block("system")
            if content is None
            else self.__iadd__(Role("system", content))
        )

    def user(self, content=None):
        return self._role_block("user") if content is None else self.__iadd__(Role("user", content))

    def assistant(self, content=None):
        return (
            self._role_block("assistant")
            if content is None
            else self.__iadd__(Role("assistant", content))
        )

    # ---- reading ----

    def sync(self) -> None:
        """Waits for everything added so far."""
        for f in list(self._pending):
            f.result()

    def error(self) -> Exception | None:
        self.sync()
        return self._error

    def _checked(self) -> None:
        self.sync()
        if self._error is not None:
            raise self._error

    def __getitem__(self, name: str):
        self._checked()
        if name not in self._vars:
            raise KeyError(f"{name!r}: no gen() or select() stored a variable of that name")
        return self._vars[name]

    def get_var(self, name: str):
        return self[name]

    def get_meta_info(self, name: str) -> dict:
        self._checked()
        return self._meta[name]

    def text(self) -> str:
        self._checked()
        return self._text

    def messages(self) -> list[dict]:
        self._checked()
        return list(self._messages)

    def text_iter(self, var_name: str | None = None) -> Iterator[str]:
        """Yields text as it is added (only `var_name`'s generations when given)."""
        while True:
            try:
                var, piece = self._events.get(timeout=0.05)
            except queue.Empty:
                if self._done.is_set() and self._events.empty():
                    break
                continue
            if piece and (var_name is None or var == var_name):
                yield piece
        if self._error is not None:
            raise self._error

    async def text_async_iter(self, var_name: str | None = None):
        """`text_iter` for asyncio code: the waiting happens off the event loop."""
        import asyncio

        it = self.text_iter(var_name)
        sentinel = object()
        while True:
            piece = await asyncio.to_thread(next, it, sentinel)
            if piece is sentinel:
                return
            yield piece

    # ---- forks ----

    def fork(self, n: int) -> ProgramStateGroup:
        """`n` copies that go on in parallel from here; the prefix is computed once first."""
        self._checked()
        if len(self._text) >= MIN_HINT_CHARS:
            self.backend.cache_prefix(self._text)
        forks = []
        for _ in range(n):
            f = ProgramState(self.backend, self.defaults, self.stream)
            f._text, f._vars, f._meta = self._text, dict(self._vars), dict(self._meta)
            f._messages, f._role, f._role_start = list(self._messages), self._role, self._role_start
            forks.append(f)
        return ProgramStateGroup(self, forks)

    def _finish(self) -> None:
        self.sync()
        self._done.set()
        self._worker.shutdown(wait=False)


class ProgramStateGroup:
    def __init__(self, parent: ProgramState, forks: list[ProgramState]) -> None:
        self.parent = parent
        self.forks = forks

    def __getitem__(self, i: int) -> ProgramState:
        return self.forks[i]

    def __len__(self) -> int:
        return len(self.forks)

    def __iter__(self):
        return iter(self.forks)

    def join(self) -> None:
        """Waits for every fork; the parent gets each variable as a list, one per fork."""
        for f in self.forks:
            f._checked()
        names = {name for f in self.forks for name in f._vars}
        for name in names:
            self.parent._vars[name] = [f._vars.get(name) for f in self.forks]
