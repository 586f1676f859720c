"""The compile process: ordinary specs come back usable, an overrun is refused and its process
replaced, a bad spec keeps its message, and the cache holds a refusal without compiling again."""

from __future__ import annotations

import json
import time

import pytest

from runtime.constrained.base import GrammarCache, GrammarCompileTimeout
from runtime.constrained.compile_worker import CompileWorker
from runtime.constrained.registry import create_grammar_backend

VOCAB = 49152
PERSON = json.dumps(
    {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
)
# Fifty optional strings, each with its own length-bounded pattern: several seconds to compile in
# both backends on this machine, and a schema a client could plausibly send.
SLOW_SCHEMA = json.dumps(
    {
        "type": "object",
        "properties": {
            f"p{i}": {"type": "string", "pattern": f"[a-z]{{1,{60 + i}}}"} for i in range(50)
        },
    }
)
TIMEOUT = 1.0


@pytest.fixture(scope="module")
def tokenizer():
    from runtime.model_loader.loader import load_tokenizer, prepare_model_folder

    return load_tokenizer(prepare_model_folder(None))


@pytest.fixture(scope="module", params=["xgrammar", "outlines"])
def backend(request, tokenizer):
    return create_grammar_backend(request.param, tokenizer, VOCAB)


@pytest.fixture(scope="module")
def worker(backend):
    """One per backend for the whole module: every start costs the child its imports."""
    w = CompileWorker(backend, TIMEOUT)
    yield w
    w.close()


def _accepts(backend, compiled, tokenizer, text: str) -> bool:
    m = backend.matcher(compiled)
    return all(m.accept_token(t) for t in tokenizer.encode(text))


def test_a_grammar_compiled_in_the_process_matches_like_one_compiled_here(
    worker, backend, tokenizer
):
    text = '{"name": "Al", "age": 3}' if backend.name == "xgrammar" else '{"name":"Al","age":3}'
    compiled = worker.compile("json_schema", PERSON)
    assert _accepts(backend, compiled, tokenizer, text)
    assert not _accepts(backend, compiled, tokenizer, '{"age"')
    assert _accepts(backend, worker.compile("regex", r"[0-9]+"), tokenizer, "123")


def test_a_bad_spec_keeps_its_message_and_the_process(worker):
    worker.compile("regex", "[0-9]+")
    pid, restarts = worker.proc.pid, worker.restarts
    with pytest.raises(ValueError, match=r"^json_schema: ") as e:
        worker.compile("json_schema", '{"type": "object", "properties": 3}')
    assert not isinstance(e.value, GrammarCompileTimeout)
    assert worker.proc.pid == pid and worker.restarts == restarts


def test_an_overrun_is_refused_and_the_process_replaced(worker, backend, tokenizer):
    worker.compile("regex", "[0-9]+")  # started: the deadline counts the compile alone
    old, restarts = worker.proc, worker.restarts
    t = time.monotonic()
    with pytest.raises(
        GrammarCompileTimeout, match=r"^json_schema: grammar did not compile within 1 s$"
    ):
        worker.compile("json_schema", SLOW_SCHEMA)
    assert time.monotonic() - t < TIMEOUT + 5  # the deadline, plus killing the process
    assert old.poll() is not None  # killed, not left compiling
    assert worker.restarts == restarts + 1 and worker.proc.poll() is None
    assert _accepts(backend, worker.compile("regex", "[a-z]+"), tokenizer, "abc")


def test_a_process_that_died_is_replaced_at_the_next_compile(worker):
    worker.compile("regex", "[0-9]+")
    restarts = worker.restarts
    worker.proc.kill()
    worker.proc.wait()
    assert worker.compile("regex", "[0-9]+") is not None
    assert worker.restarts == restarts + 1


def test_the_cache_keeps_a_refusal_and_compiles_other_specs(tokenizer):
    cache = GrammarCache(
        create_grammar_backend("xgrammar", tokenizer, VOCAB), compile_timeout=TIMEOUT
    )
    try:
        slow = cache.get("json_schema", SLOW_SCHEMA)
        ok = cache.get("json_schema", PERSON)  # queued behind the slow one
        assert isinstance(slow.exception(timeout=60), GrammarCompileTimeout)
        assert ok.result(timeout=60) is not None
        assert cache.get("json_schema", SLOW_SCHEMA) is slow  # refused again at once
        assert cache.worker.restarts == 1
    finally:
        cache.shutdown()
