"""The dfs-weight order of waiting requests: heaviest subtree first.

Each waiting request ends at the deepest tree node its prompt matches. A node weighs as many
requests as end at or below it; walking the tree depth first, heaviest child first, puts
requests that share a prefix next to each other, so they run together while it is cached.
"""

from __future__ import annotations

from collections.abc import Sequence

from radix.radix_cache import TreeNode


def dfs_weight_order(ends: Sequence[TreeNode]) -> list[int]:
    """Indices into `ends` (each request's matched node) in dfs-weight order."""
    by_node: dict[int, list[int]] = {}
    weight: dict[int, int] = {}
    root = None
    for i, node in enumerate(ends):
        by_node.setdefault(id(node), []).append(i)
        while node is not None:
            weight[id(node)] = weight.get(id(node), 0) + 1
            if node.parent is None:
                root = node
            node = node.parent
    if root is None:  # no tree: arrival order
        return list(range(len(ends)))
    out: list[int] = []
    stack = [root]
    while stack:
        node = stack.pop()
        out.extend(by_node.get(id(node), []))
        kids = [c for c in node.children.values() if id(c) in weight]
        stack.extend(sorted(kids, key=lambda c: weight[id(c)]))  # heaviest popped first
    return out
