"""Open JSON schema values get bounds before compiling; the bounds hold in both backends."""

from __future__ import annotations

import json

import pytest

from runtime.constrained.json_bounds import INT64_MAX, INT64_MIN, NUMBER_LIMIT, bound_json_schema

CITY = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "population": {"type": "integer"},
        "area": {"type": "number"},
        "rank": {"type": "integer", "minimum": 1},
        "code": {"type": "string", "pattern": "[A-Z]{3}"},
        "tags": {"type": "array", "items": {"anyOf": [{"type": "integer"}, {"type": "null"}]}},
    },
}


def test_open_values_get_bounds_and_given_ones_stay():
    out = json.loads(bound_json_schema(json.dumps(CITY), max_string_length=40))
    props = out["properties"]
    assert props["population"] == {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX}
    assert props["area"]["minimum"] == -NUMBER_LIMIT and props["area"]["maximum"] == NUMBER_LIMIT
    assert props["rank"] == {"type": "integer", "minimum": 1, "maximum": INT64_MAX}
    assert props["city"]["maxLength"] == 40
    assert "maxLength" not in props["code"]  # a pattern already says what the string is
    assert props["tags"]["items"]["anyOf"][0]["maximum"] == INT64_MAX


def test_strings_stay_open_without_the_flag_and_bad_json_names_the_field():
    out = json.loads(bound_json_schema(json.dumps(CITY)))
    assert "maxLength" not in out["properties"]["city"]
    with pytest.raises(ValueError, match="^json_schema: not valid JSON"):
        bound_json_schema("{")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["xgrammar", "outlines"])
def test_an_endless_integer_is_refused_by_both_backends(name):
    from runtime.constrained.base import GrammarCache
    from runtime.constrained.registry import create_grammar_backend
    from runtime.model_loader.loader import load_tokenizer, prepare_model_folder

    tok = load_tokenizer(prepare_model_folder(None))
    cache = GrammarCache(create_grammar_backend(name, tok, 49152))
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    matcher = cache.backend.matcher(cache.get("json_schema", json.dumps(schema)).result())
    sep = ":" if name == "outlines" else ": "  # outlines writes JSON without whitespace
    accepted = 0
    for t in tok.encode('{"n"' + sep + "9" * 40, add_special_tokens=False):
        if not matcher.accept_token(t):
            break
        accepted += 1
    digits = tok.decode(tok.encode('{"n"' + sep + "9" * 40)[:accepted]).count("9")
    assert 0 < digits <= 19  # a signed 64-bit integer has at most 19 digits
    cache.shutdown()


def test_a_property_called_type_and_a_structural_tag_are_bounded():
    schema = {"type": "object", "properties": {"type": {"type": "integer"}}}
    bounded = json.loads(bound_json_schema(json.dumps(schema)))
    assert bounded["properties"]["type"]["maximum"] == 2**63 - 1
    tag = {
        "type": "structural_tag",
        "format": {"type": "tag", "content": {"type": "json_schema", "json_schema": schema}},
    }
    out = json.loads(bound_json_schema(json.dumps(tag), None, "structural_tag"))
    assert out["format"]["content"]["json_schema"]["properties"]["type"]["minimum"] == -(2**63)
    with pytest.raises(ValueError, match="^structural_tag: not valid JSON"):
        bound_json_schema("{", None, "structural_tag")
