"""The grammar backend interface, the compile cache, and the vocabulary bitmask both backends fill.

A backend compiles a spec once (regex, JSON schema, EBNF) into a reusable grammar and makes a
matcher per request from it. Per decode step the scheduler has every constrained request's
matcher set its bits in one int32 bitmask (32 tokens a word) and masks the batch's logits at once.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

import torch

logger = logging.getLogger(__name__)

CONSTRAINT_KINDS = ("regex", "json_schema", "ebnf")


class GrammarMatcher:
    """One request's position in its grammar."""

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        """Sets the bits of the tokens allowed next in bitmask[row] (cleared by the caller)."""
        raise NotImplementedError

    def accept_token(self, token_id: int) -> bool:
        """Advances past a token; False (and no change) when the grammar does not allow it."""
        raise NotImplementedError

    def is_terminated(self) -> bool:
        """The grammar has ended: only the end-of-sequence token could follow."""
        raise NotImplementedError

    def jump_forward_string(self) -> str:
        """Text the grammar forces next whatever the model would pick ('' when none)."""
        raise NotImplementedError

    def rollback(self, num_tokens: int) -> None:
        """Forgets the last accepted tokens."""
        raise NotImplementedError


class GrammarBackend:
    """Compiles specs for one tokenizer. `compile` raises ValueError for a bad spec."""

    name = ""

    def __init__(self, tokenizer, vocab_size: int) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size

    def compile(self, kind: str, spec: str):
        raise NotImplementedError

    def matcher(self, compiled) -> GrammarMatcher:
        raise NotImplementedError


class GrammarCache:
    """Compiles on a worker thread, so a request waits for its grammar without stalling the
    batch; identical specs share one compilation (also while it is still running)."""

    def __init__(self, backend: GrammarBackend, max_entries: int = 512) -> None:
        self.backend = backend
        self.max_entries = max_entries
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grammar")
        self.entries: OrderedDict[tuple[str, str], Future] = OrderedDict()

    def get(self, kind: str, spec: str) -> Future:
        key = (kind, spec)
        fut = self.entries.get(key)
        if fut is None or (fut.done() and fut.exception() is not None):
            fut = self.pool.submit(self.backend.compile, kind, spec)
            self.entries[key] = fut
            while len(self.entries) > self.max_entries:
                self.entries.popitem(last=False)
        self.entries.move_to_end(key)
        return fut

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def bitmask_width(vocab_size: int) -> int:
    return (vocab_size + 31) // 32


def allocate_bitmask(batch: int, vocab_size: int) -> torch.Tensor:
    return torch.zeros(batch, bitmask_width(vocab_size), dtype=torch.int32)


def set_allowed_bits(bitmask: torch.Tensor, row: int, token_ids: torch.Tensor) -> None:
    """Sets the bits of `token_ids` (int64) in bitmask[row], for backends that list tokens."""
    words = torch.zeros(bitmask.shape[1] * 32, dtype=torch.bool)
    words[token_ids] = True
    bitmask[row] = bits_to_words(words.view(-1, 32))


_SHIFTS = torch.arange(32, dtype=torch.int64)


def bits_to_words(bits: torch.Tensor) -> torch.Tensor:
    """[n, 32] bool -> [n] int32 words, bit i of word w standing for token 32 * w + i."""
    words = (bits.to(torch.int64) << _SHIFTS).sum(-1)
    return torch.where(words >= 1 << 31, words - (1 << 32), words).to(torch.int32)


def allowed_mask(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[batch, words] int32 bitmask -> [batch, vocab] bool, on the bitmask's device."""
    shifts = _SHIFTS.to(bitmask.device)
    bits = (bitmask.to(torch.int64)[:, :, None] >> shifts) & 1
    return bits.bool().reshape(bitmask.shape[0], -1)[:, :vocab_size]


def create_grammar_backend(name: str, tokenizer, vocab_size: int) -> GrammarBackend | None:
    if name == "none":
        return None
    if name == "xgrammar":
        from runtime.constrained.xgrammar_backend import XGrammarBackend

        return XGrammarBackend(tokenizer, vocab_size)
    if name == "outlines":
        from runtime.constrained.outlines_backend import OutlinesBackend

        return OutlinesBackend(tokenizer, vocab_size)
    raise ValueError(f"grammar_backend: unknown backend {name!r}")
