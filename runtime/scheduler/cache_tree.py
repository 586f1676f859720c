"""The radix tree as the cache page shows it: each node's text, size, hits, locks and pins."""

from __future__ import annotations

from radix import RadixCache
from runtime.scheduler.pins import PinTable

EXCERPT_CHARS = 80


def _excerpt(text: str) -> str:
    if len(text) <= EXCERPT_CHARS:
        return text
    half = EXCERPT_CHARS // 2
    return text[:half] + " … " + text[-half:]


def cache_tree(
    tree: RadixCache, pins: PinTable, tokenizer, depth: int | None, min_tokens: int
) -> dict:
    """JSON-ready tree. `last_access` is the tree's logical clock (larger: more recent);
    `locked` means a running request or a pin holds the node; `pinned`, a pin does."""
    if depth is not None and (not isinstance(depth, int) or depth < 0):
        raise ValueError(f"depth: must be an integer >= 0, got {depth!r}")
    if not isinstance(min_tokens, int) or min_tokens < 0:
        raise ValueError(f"min_tokens: must be an integer >= 0, got {min_tokens!r}")
    pinned = pins.pinned_node_ids()

    def convert(node: dict) -> dict:
        ids = node.pop("token_ids")
        node["tokens"] = len(ids)
        node["text"] = _excerpt(tokenizer.decode(ids)) if ids else ""
        node["locked"] = node.pop("lock_ref") > 0
        node["pinned"] = node["id"] in pinned
        node["id"] = str(node["id"])
        node["children"] = [convert(c) for c in node["children"]]
        return node

    root = convert(tree.snapshot(depth, min_tokens))
    return {
        "root": root,
        "total_tokens": tree.total_size(),
        "evictable_tokens": tree.evictable_size(),
        "pinned_tokens": pins.pinned_tokens(),
        "pins": pins.list(),
    }
