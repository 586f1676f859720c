"""Bounds for what a JSON schema leaves open, so a small model cannot write forever.

Greedy decoding of `{"population": integer}` can write digits until `max_new_tokens` runs out,
and the client gets JSON it cannot parse. Before compiling, every integer without a bound is
held to a signed 64-bit range, every number without one to +-1e15 (and, in both backends, at
most six decimals), and, with `--max-json-string-length`, every free string to that length.
Bounds the schema gives are kept as they are.
"""

from __future__ import annotations

import json

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
NUMBER_LIMIT = 10**15
_LOWER = ("minimum", "exclusiveMinimum")
_UPPER = ("maximum", "exclusiveMaximum")
_STRING_SET = ("maxLength", "enum", "const", "pattern", "format")


def _types(node: dict) -> set[str]:
    kind = node.get("type")  # a property may be called "type": then it is a dict
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    return {kind} if isinstance(kind, str) else set()


def _bound(node, max_string_length: int | None):
    if isinstance(node, list):
        return [_bound(x, max_string_length) for x in node]
    if not isinstance(node, dict):
        return node
    node = {k: _bound(v, max_string_length) for k, v in node.items()}
    types = _types(node)
    if types & {"integer", "number"} and not types - {"integer", "number", "null"}:
        lo, hi = (INT64_MIN, INT64_MAX) if "number" not in types else (-NUMBER_LIMIT, NUMBER_LIMIT)
        if not any(k in node for k in _LOWER):
            node["minimum"] = lo
        if not any(k in node for k in _UPPER):
            node["maximum"] = hi
    if types == {"string"} and max_string_length and not any(k in node for k in _STRING_SET):
        node["maxLength"] = max_string_length
    return node


def bound_json_schema(
    spec: str, max_string_length: int | None = None, field: str = "json_schema"
) -> str:
    """The schema (or every schema inside a structural tag) with its open integers, numbers
    (and strings) bounded; ValueError naming `field` when it is not JSON."""
    try:
        schema = json.loads(spec)
    except json.JSONDecodeError as e:
        raise ValueError(f"{field}: not valid JSON ({e})") from None
    return json.dumps(_bound(schema, max_string_length))
