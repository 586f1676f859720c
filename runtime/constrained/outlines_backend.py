"""Grammars through outlines-core: regex and JSON schema (as a regex), compiled to an index
over the vocabulary. Jump-forward comes from the bytes every allowed token starts with."""

from __future__ import annotations

import json
import os
import pickle

import torch
from outlines_core import Guide, Index, Vocabulary
from outlines_core.json_schema import build_regex_from_schema

from runtime.constrained.base import GrammarBackend, GrammarMatcher
from runtime.constrained.number_ranges import integer_regex, number_regex

JUMP_SCAN_LIMIT = 1024  # with more tokens allowed than this, nothing is forced


def _gpt2_byte_decoder() -> dict[str, int]:
    """Byte-level BPE writes each byte as a printable character; this undoes it."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def token_bytes(tokenizer) -> dict[int, bytes]:
    """The bytes each ordinary token stands for (special tokens left out)."""
    vocab = tokenizer.get_vocab()
    special = set(tokenizer.all_special_ids)
    byte_level = any("Ġ" in t for t in list(vocab)[:5000])
    decoder = _gpt2_byte_decoder()
    out = {}
    for tok, i in vocab.items():
        if i in special:
            continue
        if byte_level:
            try:
                out[i] = bytes(decoder[c] for c in tok)
            except KeyError:
                out[i] = tok.encode()
        elif tok.startswith("<0x") and tok.endswith(">") and len(tok) == 6:
            out[i] = bytes([int(tok[3:5], 16)])  # sentencepiece byte fallback
        else:
            out[i] = tok.replace("\u2581", " ").encode()
    return out


def _bounds_as_patterns(node, patterns: list[str]):
    """A copy of the schema where bounded numbers are strings with a range pattern (outlines-core
    ignores minimum / maximum); their quotes are taken off the compiled regex afterwards."""
    if isinstance(node, list):
        return [_bounds_as_patterns(x, patterns) for x in node]
    if not isinstance(node, dict):
        return node
    node = {k: _bounds_as_patterns(v, patterns) for k, v in node.items()}
    kind = node.get("type")
    bounded = any(k in node for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"))
    if kind in ("integer", "number") and bounded:
        lo, hi = node.get("minimum"), node.get("maximum")
        if kind == "integer":
            if "exclusiveMinimum" in node:
                lo = node["exclusiveMinimum"] + 1
            if "exclusiveMaximum" in node:
                hi = node["exclusiveMaximum"] - 1
            rx = integer_regex(lo, hi)
        else:
            if "exclusiveMinimum" in node or "exclusiveMaximum" in node:
                raise ValueError("exclusive bounds of a number are not supported by outlines")
            rx = number_regex(lo, hi)
        patterns.append(rx)
        return {"type": "string", "pattern": rx}
    return node


def schema_regex(spec: str) -> str:
    """The regex of a JSON schema, compact (no whitespace between tokens), bounds enforced."""
    patterns: list[str] = []
    schema = _bounds_as_patterns(json.loads(spec), patterns)
    regex = build_regex_from_schema(json.dumps(schema), whitespace_pattern="")
    for rx in dict.fromkeys(patterns):  # replace() takes every place a range stands in
        quoted = f'("{rx}")'
        if quoted not in regex:
            raise ValueError("could not place a number range in the schema's regex")
        regex = regex.replace(quoted, f"({rx})")
    return regex


class OutlinesMatcher(GrammarMatcher):
    def __init__(self, backend: OutlinesBackend, index: Index) -> None:
        self.backend = backend
        self.guide = Guide(index)
        self.ended = False

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        target = bitmask[row]
        self.guide.write_mask_into(target.data_ptr(), target.numel(), target.element_size())

    def accept_token(self, token_id: int) -> bool:
        if self.ended:
            return False
        if token_id == self.backend.eos_id:  # allowed once the regex has matched in full
            self.ended = self.guide.is_finished()
            return self.ended
        if not self.guide.accepts_tokens([token_id]):
            return False
        self.guide.advance(token_id, return_tokens=False)
        return True

    def is_terminated(self) -> bool:
        return self.ended

    def jump_forward_string(self) -> str:
        allowed = self.guide.get_tokens()
        if len(allowed) > JUMP_SCAN_LIMIT or self.backend.eos_id in allowed:
            return ""
        pieces = [self.backend.bytes_of.get(t, b"") for t in allowed]
        prefix = os.path.commonprefix(pieces) if pieces else b""
        return prefix.decode("utf-8", errors="ignore")

    def rollback(self, num_tokens: int) -> None:
        if num_tokens and self.ended:  # the end token never advanced the guide
            self.ended = False
            num_tokens -= 1
        if num_tokens:
            self.guide.rollback_state(num_tokens)


class OutlinesBackend(GrammarBackend):
    name = "outlines"

    def __init__(self, tokenizer, vocab_size: int) -> None:
        super().__init__(tokenizer, vocab_size)
        self.eos_id = tokenizer.eos_token_id
        self.bytes_of = token_bytes(tokenizer)
        by_bytes: dict[bytes, list[int]] = {}
        for i, b in self.bytes_of.items():
            if b and i < vocab_size:
                by_bytes.setdefault(b, []).append(i)
        self.vocabulary = Vocabulary(self.eos_id, by_bytes)

    def __reduce__(self):
        # What compiling needs, without the tokenizer: the compile process skips transformers.
        return (_compiling_backend, (self.vocabulary, self.eos_id, self.vocab_size))

    def compile(self, kind: str, spec: str):
        if kind in ("ebnf", "structural_tag"):
            raise ValueError(
                f"{kind}: the outlines grammar backend takes regex and json_schema only"
            )
        if kind == "json_schema":
            try:
                spec = schema_regex(spec)
            except (ValueError, TypeError) as e:
                raise ValueError(f"json_schema: {e}") from None
        try:
            return Index(spec, self.vocabulary)
        except (ValueError, RuntimeError) as e:
            raise ValueError(f"{kind}: {e}") from None

    def serialize(self, compiled) -> bytes:
        # An index pickles in ~1 ms, where compiling it takes tens of ms to seconds.
        return pickle.dumps(compiled)

    def deserialize(self, data: bytes):
        return pickle.loads(data)

    def matcher(self, compiled) -> GrammarMatcher:
        return OutlinesMatcher(self, compiled)


def _compiling_backend(vocabulary: Vocabulary, eos_id: int, vocab_size: int) -> OutlinesBackend:
    """An unpickled backend: it compiles and serializes; its matchers would lack token bytes."""
    backend = OutlinesBackend.__new__(OutlinesBackend)
    GrammarBackend.__init__(backend, None, vocab_size)
    backend.eos_id, backend.bytes_of, backend.vocabulary = eos_id, {}, vocabulary
    return backend
