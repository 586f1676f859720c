"""The grammar backend interface, the compile cache, and the vocabulary bitmask both backends fill.

A backend compiles a spec once (regex, JSON schema, EBNF) into a reusable grammar and makes a
matcher per request from it. Per decode step the scheduler has every constrained request's
matcher set its bits in one int32 bitmask (32 tokens a word) and masks the batch's logits at once.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from runtime.constrained.json_bounds import bound_json_schema

logger = logging.getLogger(__name__)

CONSTRAINT_KINDS = ("regex", "json_schema", "ebnf", "structural_tag")


class GrammarCompileTimeout(ValueError):
    """The spec did not compile within the deadline: a property of the spec, so it is cached."""


class GrammarMatcher(ABC):
    """One request's position in its grammar. The scheduler owns it: it fills the mask before
    each sampling step, then accepts the sampled token (or rolls back forced ones)."""

    @abstractmethod
    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        """Sets the bits of the tokens allowed next in bitmask[row] (cleared by the caller)."""

    @abstractmethod
    def accept_token(self, token_id: int) -> bool:
        """Advances past a token; False (and no change) when the grammar does not allow it."""

    @abstractmethod
    def is_terminated(self) -> bool:
        """The grammar has ended: only the end-of-sequence token could follow."""

    @abstractmethod
    def jump_forward_string(self) -> str:
        """Text the grammar forces next whatever the model would pick ('' when none)."""

    @abstractmethod
    def rollback(self, num_tokens: int) -> None:
        """Forgets the last accepted tokens."""


class GrammarBackend(ABC):
    """Compiles specs for one tokenizer. `compile(kind, spec)` (kind in CONSTRAINT_KINDS) runs
    in the compile process (or on the cache's worker thread), returns an immutable compiled
    grammar that many requests share, and raises ValueError naming what is wrong with a bad
    spec; `matcher(compiled)` is cheap and makes the per-request state. A backend whose
    compiled grammar crosses processes for less than compiling it again overrides `serialize`
    and `deserialize`; by default the compile process only proves a spec compiles in time, and
    the caller compiles it again."""

    name = ""

    def __init__(self, tokenizer, vocab_size: int) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size

    @abstractmethod
    def compile(self, kind: str, spec: str):
        """The compiled grammar; ValueError for a spec that does not compile."""

    def serialize(self, compiled) -> bytes | None:
        """The compiled grammar as bytes another process with the same tokenizer can load, or
        None: compile the spec again there."""
        return None

    def deserialize(self, data: bytes):
        """The compiled grammar `serialize` wrote."""
        raise TypeError(f"the {self.name} backend's grammars are compiled again, not loaded")

    @abstractmethod
    def matcher(self, compiled) -> GrammarMatcher:
        """A fresh matcher at the start of the grammar."""


class GrammarCache:
    """Compiles on a worker thread, so a request waits for its grammar without stalling the
    batch; identical specs share one compilation (also while it is still running). With a
    `compile_timeout` (seconds, > 0) that thread hands each spec to a compile process and gives
    up on it at the deadline (see `compile_worker`); a spec refused so stays refused while it is
    cached, so sending it again costs nothing. Other failures are retried on the next request."""

    def __init__(
        self,
        backend: GrammarBackend,
        max_entries: int = 512,
        max_json_string_length: int | None = None,
        compile_timeout: float = 0,
    ) -> None:
        self.backend = backend
        self.max_entries = max_entries
        self.max_json_string_length = max_json_string_length
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grammar")
        self.entries: OrderedDict[tuple[str, str], Future] = OrderedDict()
        self.worker = None
        if compile_timeout > 0:
            from runtime.constrained.compile_worker import CompileWorker

            self.worker = CompileWorker(backend, compile_timeout)

    def get(self, kind: str, spec: str) -> Future:
        key = (kind, spec)
        fut = self.entries.get(key)
        if fut is None or (fut.done() and _retry(fut.exception())):
            fut = self.pool.submit(self._compile, kind, spec)
            self.entries[key] = fut
            while len(self.entries) > self.max_entries:
                self.entries.popitem(last=False)
        self.entries.move_to_end(key)
        return fut

    def _compile(self, kind: str, spec: str):
        if kind in ("json_schema", "structural_tag"):  # a tag's schemas are bounded the same
            spec = bound_json_schema(spec, self.max_json_string_length, kind)
        if self.worker is not None:
            return self.worker.compile(kind, spec)
        return self.backend.compile(kind, spec)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self.worker is not None:
            self.worker.close()  # a compile the thread still waits on then fails at once


def _retry(error: BaseException | None) -> bool:
    return error is not None and not isinstance(error, GrammarCompileTimeout)


def bitmask_width(vocab_size: int) -> int:
    return (vocab_size + 31) // 32


def allocate_bitmask(batch: int, vocab_size: int) -> torch.Tensor:
    return torch.zeros(batch, bitmask_width(vocab_size), dtype=torch.int32)


_SHIFTS = torch.arange(32, dtype=torch.int64)


def allowed_mask(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[batch, words] int32 bitmask -> [batch, vocab] bool, on the bitmask's device."""
    shifts = _SHIFTS.to(bitmask.device)
    bits = (bitmask.to(torch.int64)[:, :, None] >> shifts) & 1
    return bits.bool().reshape(bitmask.shape[0], -1)[:, :vocab_size]


def batch_allowed_mask(matchers: list, vocab_size: int) -> torch.Tensor | None:
    """[batch, vocab] bool of what each row's matcher allows (everything where it is None);
    None when no row is constrained."""
    constrained = [i for i, m in enumerate(matchers) if m is not None]
    if not constrained:
        return None
    bitmask = allocate_bitmask(len(constrained), vocab_size)
    for row, i in enumerate(constrained):
        matchers[i].fill_bitmask(bitmask, row)
    allowed = torch.ones(len(matchers), vocab_size, dtype=torch.bool)
    allowed[constrained] = allowed_mask(bitmask, vocab_size)
    return allowed
