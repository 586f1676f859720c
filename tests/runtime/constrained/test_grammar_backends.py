"""The grammar backends on the default model's tokenizer: masks, acceptance, errors, jump-forward."""

from __future__ import annotations

import json

import pytest

from runtime.constrained.base import GrammarCache, allocate_bitmask, allowed_mask
from runtime.constrained.registry import create_grammar_backend

VOCAB = 49152
PERSON = json.dumps(
    {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
)


@pytest.fixture(scope="module")
def tokenizer():
    from runtime.model_loader.loader import load_tokenizer, prepare_model_folder

    return load_tokenizer(prepare_model_folder(None))


@pytest.fixture(scope="module", params=["xgrammar", "outlines"])
def backend(request, tokenizer):
    return create_grammar_backend(request.param, tokenizer, VOCAB)


def test_bitmask_decodes_bit_i_of_word_w_as_token_32w_plus_i():
    ids = [0, 5, 31, 32, 33, 1000, VOCAB - 1]
    bm = allocate_bitmask(2, VOCAB)
    for t in ids:  # in int64, then wrapped to int32: bit 31 is the word's sign bit
        word = int(bm[1, t // 32]) & 0xFFFFFFFF | 1 << (t % 32)
        bm[1, t // 32] = word - (1 << 32) if word >= 1 << 31 else word
    mask = allowed_mask(bm, VOCAB)
    assert mask.shape == (2, VOCAB) and not mask[0].any()
    assert mask[1].nonzero().flatten().tolist() == ids


def test_mask_follows_the_grammar(backend, tokenizer):
    m = backend.matcher(backend.compile("regex", r"[0-9]+"))
    bm = allocate_bitmask(1, VOCAB)
    m.fill_bitmask(bm, 0)
    allowed = allowed_mask(bm, VOCAB)[0].nonzero().flatten().tolist()
    assert allowed and all(tokenizer.decode([t]).isdigit() for t in allowed)
    assert tokenizer.eos_token_id not in allowed  # one digit at least
    assert m.accept_token(tokenizer.encode("7")[0])
    assert not m.accept_token(tokenizer.encode("x")[0])
    bm.zero_()
    m.fill_bitmask(bm, 0)
    assert allowed_mask(bm, VOCAB)[0, tokenizer.eos_token_id]  # may end now
    assert not m.is_terminated()
    assert m.accept_token(tokenizer.eos_token_id) and m.is_terminated()


def test_json_text_is_accepted_and_rollback_undoes(backend, tokenizer):
    m = backend.matcher(backend.compile("json_schema", PERSON))
    text = '{"name": "Al", "age": 3}' if backend.name == "xgrammar" else '{"name":"Al","age":3}'
    ids = tokenizer.encode(text)
    for t in ids:
        assert m.accept_token(t)
    m.rollback(2)
    for t in ids[-2:]:
        assert m.accept_token(t)
    assert m.accept_token(tokenizer.eos_token_id) and m.is_terminated()


def test_jump_forward_offers_forced_text(backend):
    m = backend.matcher(backend.compile("json_schema", PERSON))
    forced = m.jump_forward_string()
    # xgrammar sees the whole forced run; outlines the bytes all allowed tokens share
    assert forced == ('{"name": "' if backend.name == "xgrammar" else "{")
    free = backend.matcher(backend.compile("regex", r"[a-z]+"))
    assert free.jump_forward_string() == ""


@pytest.mark.parametrize(
    "kind,spec",
    [("regex", "(a"), ("json_schema", "{bad"), ("json_schema", json.dumps({"type": "objec"}))],
)
def test_bad_specs_raise_value_error_naming_the_kind(backend, kind, spec):
    with pytest.raises(ValueError, match=f"^{kind}: "):
        backend.compile(kind, spec)


def test_cache_compiles_once_and_retries_failures(backend):
    cache = GrammarCache(backend)
    a, b = cache.get("regex", "[ab]+"), cache.get("regex", "[ab]+")
    assert a is b and a.result() is not None
    bad = cache.get("regex", "(")
    assert isinstance(bad.exception(), ValueError)
    assert cache.get("regex", "(") is not bad  # a failure is not cached for good
    cache.shutdown()


@pytest.mark.parametrize(
    "lo,hi",
    [(0, 9999), (1, 5), (-50, 50), (1000, 2100), (None, None), (5, None), (-7, -2), (None, 10)],
)
def test_integer_ranges_match_exactly(lo, hi):
    import re

    from runtime.constrained.number_ranges import integer_regex

    rx = re.compile(integer_regex(lo, hi))
    for v in range(-3000, 12000):
        inside = (lo is None or v >= lo) and (hi is None or v <= hi)
        assert bool(rx.fullmatch(str(v))) == inside, (lo, hi, v)
    assert not rx.fullmatch("007") and not rx.fullmatch("-0")


def test_number_ranges_and_outlines_schema_bounds():
    import re

    from runtime.constrained.number_ranges import number_regex
    from runtime.constrained.outlines_backend import schema_regex

    rx = number_regex(0, 100)
    for v, inside in [("0", 1), ("99.9", 1), ("100", 1), ("100.0", 1), ("100.5", 0), ("101", 0)]:
        assert bool(re.fullmatch(rx, v)) == bool(inside), v
    rx = number_regex(-100, 100)  # the open numbers' bounds are of this kind: -1e15..1e15
    for v, inside in [("-99.5", 1), ("-100", 1), ("-100.5", 0), ("-101", 0), ("50.25", 1)]:
        assert bool(re.fullmatch(rx, v)) == bool(inside), v
    schema = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 9}}}
    regex = schema_regex(json.dumps(schema))
    assert re.fullmatch(regex, '{"n":7}') and not re.fullmatch(regex, '{"n":12}')
    nine = {"type": "integer", "maximum": 9}
    two = {"type": "object", "properties": {"a": nine, "b": nine}}  # one range in two places
    regex = schema_regex(json.dumps(two))
    assert re.fullmatch(regex, '{"a":1,"b":2}') and not re.fullmatch(regex, '{"a":1,"b":22}')
    with pytest.raises(ValueError, match="exclusive"):
        schema_regex(json.dumps({"type": "number", "exclusiveMinimum": 0}))
