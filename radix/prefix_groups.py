"""Groups of requests that sit under one radix-tree prefix, for cascade attention.

Requests whose locked paths pass through the same node hold the same KV slots for that node's
whole prefix, so a decode step can read those slots once for all of them. Each request joins at
most one group (single-level cascade); the grouping chosen is the one that saves the most key
reads, `(rows - 1) * prefix length` summed over groups.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from radix.radix_cache import TreeNode


def _path(node: TreeNode) -> list[TreeNode]:
    """Root-first nodes below the root down to `node`."""
    path = []
    while node.parent is not None:
        path.append(node)
        node = node.parent
    path.reverse()
    return path


def shared_prefix_groups(
    nodes: Sequence[TreeNode | None], min_len: int
) -> list[tuple[list[int], int]]:
    """nodes[i]: the deepest node request i holds locked (None: it shares nothing).

    Returns (rows, prefix length in tokens) per group of two or more rows; a prefix shorter than
    `min_len` is not worth its own pass and is never grouped.
    """
    paths = {i: _path(n) for i, n in enumerate(nodes) if n is not None}

    def best(level: int, depth: int, rows: list[int]) -> tuple[int, list]:
        here = (0, [])
        if len(rows) >= 2 and depth >= min_len:
            here = ((len(rows) - 1) * depth, [(rows, depth)])
        by_child: dict[int, list[int]] = defaultdict(list)
        for r in rows:
            if len(paths[r]) > level:
                by_child[id(paths[r][level])].append(r)
        saved, groups = 0, []
        for child_rows in by_child.values():
            if len(child_rows) >= 2:
                child = paths[child_rows[0]][level]
                s, g = best(level + 1, depth + len(child.key), child_rows)
                saved, groups = saved + s, groups + g
        return here if here[0] >= saved else (saved, groups)

    return best(0, 0, sorted(paths))[1]
