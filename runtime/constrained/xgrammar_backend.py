"""Grammars through xgrammar (the default): regex, JSON schema and EBNF, with jump-forward."""

from __future__ import annotations

import json
import re

import torch
import xgrammar as xgr

from runtime.constrained.base import GrammarBackend, GrammarMatcher

_LOCATION = re.compile(r"^\[[^\]]*\] \S+:\d+: ")  # "[16:45:27] /project/cpp/x.cc:83: "


class XGrammarMatcher(GrammarMatcher):
    def __init__(self, matcher: xgr.GrammarMatcher) -> None:
        self.m = matcher

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        self.m.fill_next_token_bitmask(bitmask, row)

    def accept_token(self, token_id: int) -> bool:
        return self.m.accept_token(token_id)

    def is_terminated(self) -> bool:
        return self.m.is_terminated()

    def jump_forward_string(self) -> str:
        return self.m.find_jump_forward_string()

    def rollback(self, num_tokens: int) -> None:
        self.m.rollback(num_tokens)


class XGrammarBackend(GrammarBackend):
    name = "xgrammar"

    def __init__(self, tokenizer, vocab_size: int) -> None:
        super().__init__(tokenizer, vocab_size)
        self._set_info(xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size))

    def _set_info(self, info: xgr.TokenizerInfo) -> None:
        self.info = info
        self.compiler = xgr.GrammarCompiler(info, max_threads=1)

    def __reduce__(self):
        # What compiling needs, without the tokenizer: the compile process skips transformers.
        return (_compiling_backend, (self.info.serialize_json(), self.vocab_size))

    # No serialize: a compiled grammar's JSON form (~2 MB for a dozen-field schema) takes about
    # ten times the compile to write and read back, so the compile process only proves a spec
    # compiles in time and the scheduler compiles it again (see compile_worker).

    def compile(self, kind: str, spec: str):
        if kind == "json_schema":
            try:
                json.loads(spec)
            except json.JSONDecodeError as e:
                raise ValueError(f"json_schema: not valid JSON ({e})") from None
        try:
            if kind == "regex":
                return self.compiler.compile_regex(spec)
            if kind == "json_schema":
                # One space after ':' and ',' and none elsewhere: what models write, and fixed
                # separators leave more for jump-forward than optional whitespace would.
                return self.compiler.compile_json_schema(spec, any_whitespace=False)
            if kind == "ebnf":
                return self.compiler.compile_grammar(spec)
            if kind == "structural_tag":
                return self.compiler.compile_structural_tag(spec)
        except (RuntimeError, ValueError) as e:
            msg = _LOCATION.sub("", str(e).strip().splitlines()[0] if str(e).strip() else repr(e))
            raise ValueError(f"{kind}: {msg}") from None
        raise ValueError(f"{kind}: unknown constraint kind")

    def matcher(self, compiled) -> GrammarMatcher:
        return XGrammarMatcher(xgr.GrammarMatcher(compiled))


def _compiling_backend(info_json: str, vocab_size: int) -> XGrammarBackend:
    """An unpickled backend: it compiles, with no tokenizer beside it."""
    backend = XGrammarBackend.__new__(XGrammarBackend)
    GrammarBackend.__init__(backend, None, vocab_size)
    backend._set_info(xgr.TokenizerInfo.deserialize_json(info_json))
    return backend
